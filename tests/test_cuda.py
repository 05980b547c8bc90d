"""What only a GPU can show: bf16 autocast, float16 with the gradient scaler, the device's own choices, fused
AdamW, torch.compile and resume on CUDA. Skipped without one. The tests that compile are marked slow:
bench/gpu_check.sh runs the others first, under a short limit, and these in a part of their own."""

import os
import subprocess

import pytest
import torch

import train_gpt2 as tg
from gptkit import hardware
from gptkit.tokenizer import GPT2_VOCAB_SIZE
from helpers import SMALL, command, final_state, make_examples, train, write_jsonl
from plot import read_log

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_bf16_autocast_stays_close_to_fp32():
    torch.manual_seed(0)
    model = tg.GPT(tg.preset("gpt2")[0]).cuda().eval()
    idx = torch.randint(0, GPT2_VOCAB_SIZE, (4, 256), device="cuda")
    with torch.no_grad():
        _, loss32 = model(idx[:, :-1], idx[:, 1:])
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss16 = model(idx[:, :-1], idx[:, 1:])
    assert abs(loss16.item() - loss32.item()) < 0.02


def test_fused_adamw_on_cuda_matches_the_for_loop_update():
    torch.manual_seed(0)
    fused = tg.GPT(tg.preset("tiny")[0]).cuda()
    plain = tg.GPT(tg.preset("tiny")[0]).cuda()
    plain.load_state_dict(fused.state_dict())
    opt_fused = fused.configure_optimizers(0.1, 1e-3, "cuda")
    groups = [{"params": [p for p in plain.parameters() if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in plain.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    opt_plain = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    idx = torch.randint(0, 50257, (4, 64), device="cuda")
    for model, opt in ((fused, opt_fused), (plain, opt_plain)):
        for _ in range(3):
            model(idx[:, :-1], idx[:, 1:])[1].backward()
            opt.step()
            opt.zero_grad()
    for (name, a), b in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_the_choices_follow_this_gpu_s_compute_capability():
    info = hardware.probe("cuda")
    choices = hardware.decide(info)
    native_bf16 = torch.cuda.get_device_capability() >= (8, 0)
    assert choices.dtype == (torch.bfloat16 if native_bf16 else torch.float16) and choices.grad_scaler != native_bf16
    assert choices.fused_adamw and info.name == torch.cuda.get_device_name()


def test_float16_with_the_gradient_scaler_trains_and_saves_the_scale(data, tmp_path):
    r = train(data, tmp_path, "--device", "cuda", "--dtype", "float16", "--max-steps", "6", "--eval-interval", "6")
    assert "float16 autocast with a gradient scaler" in r.stdout
    log = read_log(tmp_path)
    assert log["train"][5] < log["train"][0] and log["val"][6] < 10.5
    assert final_state(tmp_path)["scaler"]["scale"] > 0


@pytest.mark.slow
def test_compiled_greedy_generation_equals_eager():
    torch.manual_seed(0)
    model = tg.GPT(tg.preset("tiny")[0]).cuda().eval()
    prompts = [[1, 2, 3, 4], [5, 6]]
    eager = model.generate(prompts, 24, temperature=0)
    model.hidden_states = torch.compile(model.hidden_states)
    assert model.generate(prompts, 24, temperature=0) == eager


@pytest.mark.slow
def test_bf16_compiled_training_resumes_on_cuda(data, tmp_path):
    write_jsonl(tmp_path / "hellaswag_val.jsonl", make_examples(8, seed=7))
    args = ["--device", "cuda", "--dtype", "bfloat16", "--compile", "-B", "8", "-T", "128", "--total-batch-size",
            "2048", "--max-lr", "3e-3", "--max-steps", "12", "--eval-interval", "6", "--hellaswag-interval", "6",
            "--hellaswag-dir", tmp_path, "--sample-interval", "6"]
    train(data, tmp_path / "straight", *args)
    r = subprocess.run(command(1) + ["--data-dir", data, "--out-dir", str(tmp_path / "split"), *SMALL,
                                     *map(str, args), "--stop-at", "6"], capture_output=True, text=True,
                       env={**os.environ, "TORCH_LOGS": "recompiles"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("Recompiling function") <= 1, r.stderr[-3000:]  # val (no grad) then train
    train(data, tmp_path / "split", *args, "--resume")
    straight, split = read_log(tmp_path / "straight"), read_log(tmp_path / "split")
    assert straight["train"][11] < straight["train"][0] - 1
    assert sorted(split["hella"]) == [0, 6, 12]
    # bf16 + compile is not bit-exact across processes, but resuming must not derail the run
    assert abs(split["train"][11] - straight["train"][11]) < 0.05
