"""hellaswag.py: rendering, batched and sharded scoring against a one-example-at-a-time reference."""

import json
import os
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoModelForCausalLM

import hellaswag
import train_gpt2 as tg
from gptkit.hf import export_hf
from gptkit.tokenizer import GPT2_VOCAB_SIZE, gpt2_tokenizer
from helpers import ROOT, in_process, main_in_process, make_examples, write_jsonl

enc = gpt2_tokenizer()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tg.GPT(tg.GPTConfig(block_size=128, vocab_size=GPT2_VOCAB_SIZE, n_layer=2, n_head=2, n_embd=32)).eval()


def reference(model, example):
    """The straightforward way: one ending per forward pass, no padding."""
    ctx = enc.encode(example["ctx"])
    sums, means = [], []
    for ending in example["endings"]:
        end = enc.encode(" " + ending)
        tokens = torch.tensor([ctx + end])
        with torch.no_grad():
            logits, _ = model(tokens)
        losses = F.cross_entropy(logits[0, len(ctx) - 1 : -1], tokens[0, len(ctx):], reduction="none")
        sums.append(losses.sum().item())
        means.append(losses.mean().item())
    return torch.tensor(sums), torch.tensor(means)


def test_batched_scoring_matches_one_example_at_a_time(model):
    examples = make_examples(11)
    sums, means = hellaswag.score(hellaswag.gpt_logits_fn(model), examples, enc, batch_size=4, device="cpu")
    assert sums.shape == means.shape == (11, 4)
    for i, ex in enumerate(examples):
        ref_sum, ref_mean = reference(model, ex)
        assert torch.allclose(sums[i], ref_sum, atol=1e-4) and torch.allclose(means[i], ref_mean, atol=1e-5)
        assert sums[i].argmin() == ref_sum.argmin() and means[i].argmin() == ref_mean.argmin()
    result = hellaswag.evaluate(hellaswag.gpt_logits_fn(model), examples, enc, "cpu", batch_size=4)
    labels = torch.tensor([ex["label"] for ex in examples])
    assert result["n"] == 11
    assert result["correct"] == (sums.argmin(1) == labels).sum().item()
    assert result["correct_norm"] == (means.argmin(1) == labels).sum().item()


def test_rendering_and_packing():
    ex = {"ctx": "A man sits down.", "endings": ["He reads.", "b", "c", "d"], "label": 0}
    rows, ctx_len = hellaswag.render(ex, enc)
    ctx = enc.encode("A man sits down.")
    assert rows[0] == ctx + enc.encode(" He reads.") and rows[1] == ctx + enc.encode(" b")
    assert ctx_len == len(ctx)
    tokens, positions, segments, _ = hellaswag.pack(ex, enc)
    he_reads = enc.encode(" He reads.")
    assert tokens == ctx + he_reads + enc.encode(" b") + enc.encode(" c") + enc.encode(" d")
    assert positions[len(ctx) + len(he_reads)] == len(ctx)  # the second ending starts where the context ends
    assert segments == [0] * len(ctx) + [1] * len(he_reads) + [2, 3, 4]


DDP_SCRIPT = """
import json, sys, torch, torch.distributed as dist
sys.path.insert(0, {root!r})
import hellaswag, train_gpt2 as tg
from gptkit.tokenizer import gpt2_tokenizer
dist.init_process_group("gloo")
model = tg.load_model({ckpt!r}).eval()
examples = hellaswag.load_examples({data!r})
r = hellaswag.evaluate(hellaswag.gpt_logits_fn(model), examples, gpt2_tokenizer(), "cpu", batch_size=2,
                       rank=dist.get_rank(), world_size=dist.get_world_size())
json.dump(r, open({out!r} + str(dist.get_rank()), "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_process_ddp_gives_the_same_totals(model, tmp_path):
    examples = make_examples(9, seed=1)
    data = write_jsonl(tmp_path / "hellaswag_val.jsonl", examples)
    ckpt = tmp_path / "ckpt_000000.pt"
    torch.save({"model": model.state_dict(), "config": asdict(model.config)}, ckpt)
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(root=str(ROOT), ckpt=str(ckpt), data=str(data), out=str(tmp_path / "r")))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    single = hellaswag.evaluate(hellaswag.gpt_logits_fn(model), examples, enc, "cpu", batch_size=2)
    for rank in range(2):
        assert json.loads((tmp_path / f"r{rank}").read_text()) == single


def test_our_model_and_its_hugging_face_export_score_identically(model, tmp_path):
    examples = make_examples(6, seed=2)
    export_hf(model, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    a = hellaswag.score(hellaswag.gpt_logits_fn(model), examples, enc, 3, "cpu")
    b = hellaswag.score(hellaswag.hf_logits_fn(hf), examples, enc, 3, "cpu")
    assert torch.allclose(a[0], b[0], atol=1e-4) and torch.allclose(a[1], b[1], atol=1e-5)
    assert torch.equal(a[1].argmin(1), b[1].argmin(1))


def run_cli(*args):
    """python hellaswag.py args..., in this process (its main, as the command line calls it)."""
    argv = list(map(str, args))
    return in_process(lambda: hellaswag.main(argv), ["hellaswag.py", *argv])


@pytest.mark.slow
def test_command_line_on_a_checkpoint_and_an_hf_directory(model, tmp_path):
    examples = make_examples(7, seed=3)
    write_jsonl(tmp_path / "hellaswag_val.jsonl", examples)
    torch.save({"model": model.state_dict(), "config": asdict(model.config)}, tmp_path / "ckpt_000010.pt")
    export_hf(model, tmp_path / "hf")
    expected = hellaswag.evaluate(hellaswag.gpt_logits_fn(model), examples, enc, "cpu")
    line = f"7 examples | acc {expected['acc']:.4f} ({expected['correct']}/7) | acc_norm {expected['acc_norm']:.4f}"
    for model_arg in (tmp_path, tmp_path / "ckpt_000010.pt", tmp_path / "hf"):
        r = run_cli("-m", model_arg, "--cache-dir", tmp_path, "--device", "cpu", "--batch-size", 3)
        assert r.returncode == 0, r.stderr
        assert line in r.stdout and "examples/s" in r.stdout
    r = run_cli("-m", tmp_path, "--cache-dir", tmp_path, "--device", "cpu", "--limit", 2)
    assert "2 examples" in r.stdout
    # the trainer's own code on the same checkpoint, in one command
    r = main_in_process(list(map(str, ["--init-from", tmp_path, "--eval-only", "--hellaswag-dir", tmp_path,
                                       "--eval-interval", 0, "--sample-interval", 0, "--device", "cpu",
                                       "--out-dir", tmp_path / "nothing"])))
    assert r.returncode == 0, r.stderr
    assert f"HellaSwag acc_norm {expected['correct_norm']}/7 = {expected['acc_norm']:.4f}" in r.stdout
    assert not (tmp_path / "nothing").exists()  # --eval-only writes nothing


@pytest.mark.slow
def test_one_fixed_shape_gives_the_same_scores_and_compiles_once(model, tmp_path):
    examples = make_examples(7, seed=8)
    pad_to = hellaswag.packed_length(examples, enc)
    assert pad_to % 64 == 0 and pad_to >= max(len(hellaswag.pack(ex, enc)[0]) for ex in examples)
    fixed = hellaswag.score(hellaswag.gpt_logits_fn(model), examples, enc, 3, "cpu", pad_to=pad_to)
    bucketed = hellaswag.score(hellaswag.gpt_logits_fn(model), examples, enc, 3, "cpu")
    assert torch.allclose(fixed[0], bucketed[0], atol=1e-4) and torch.allclose(fixed[1], bucketed[1], atol=1e-5)

    write_jsonl(tmp_path / "hellaswag_val.jsonl", examples)
    torch.save({"model": model.state_dict(), "config": asdict(model.config)}, tmp_path / "ckpt_000001.pt")
    r = subprocess.run([sys.executable, str(ROOT / "hellaswag.py"), "-m", str(tmp_path), "--cache-dir", str(tmp_path),
                        "--device", "cpu", "--batch-size", "3", "--compile"], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "TORCH_LOGS": "recompiles"})
    assert r.returncode == 0, r.stderr[-3000:]
    expected = hellaswag.evaluate(hellaswag.gpt_logits_fn(model), examples, enc, "cpu")
    assert f"acc_norm {expected['acc_norm']:.4f} ({expected['correct_norm']}/7)" in r.stdout
    assert "Recompiling" not in r.stderr


def test_bad_input(tmp_path):
    good = json.dumps({"ctx": "a", "endings": ["b", "c", "d", "e"], "label": 1})
    cases = {
        '{"ctx": "a", "endings": ["b", "c"': "line 2: not valid JSON",
        json.dumps({"ctx": "a", "endings": ["b", "c", "d", "e"], "label": 4}): "line 2: label 4 is outside 0..3",
        json.dumps({"ctx": "a", "endings": ["b", "", "d", "e"], "label": 0}): "line 2: ending 1 is empty",
        json.dumps({"ctx": "a", "endings": ["b", "c", "d"], "label": 0}): "line 2: expected 'endings' to be a list of 4",
    }
    for bad, message in cases.items():
        path = tmp_path / "hellaswag_val.jsonl"
        path.write_text(good + "\n" + bad + "\n")
        with pytest.raises(ValueError, match=message):
            hellaswag.load_examples(path)
    r = run_cli("-m", "gpt2", "--cache-dir", tmp_path / "empty")  # offline: no file, no download
    assert r.returncode == 1
    assert f"offline, put the file at {tmp_path / 'empty' / 'hellaswag_val.jsonl'}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
