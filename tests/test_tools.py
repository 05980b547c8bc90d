"""The tools people use next: a complete Hugging Face export, lm-evaluation-harness, wandb / TensorBoard,
fine-tuning. All offline, on tiny runs made by the trainer."""

import glob
import json
import os
import struct
import subprocess
import sys

import pytest
import torch

import hellaswag
import train_gpt2 as tg
from gptkit.tokenizer import gpt2_tokenizer
from helpers import ROOT, TRAIN, final_state, make_examples, train, write_jsonl
from plot import read_log

pytestmark = pytest.mark.slow  # training runs and exports in subprocesses
UNICODE_TEXT = "Hello wörld — café ☃ 日本語, emoji 🤖, tabs\tand  double spaces\n\nnew paragraph’s “quotes”"


@pytest.fixture(scope="module")
def exported(data, tmp_path_factory):
    """A tiny run trained for a few steps, and its export through the command line."""
    tmp = tmp_path_factory.mktemp("export")
    train(data, tmp / "run", "--max-steps", 3, "--eval-interval", 0)
    r = subprocess.run([sys.executable, "-m", "gptkit.hf", str(tmp / "run"), str(tmp / "hf")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return tg.load_model(str(tmp / "run")).eval(), tmp / "hf"


def test_export_is_complete_and_loads_offline(exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    ours, out = exported
    for name in ("config.json", "model.safetensors", "generation_config.json", "vocab.json", "merges.txt"):
        assert (out / name).exists(), name
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.encode(UNICODE_TEXT) == gpt2_tokenizer().encode_ordinary(UNICODE_TEXT)
    idx = torch.tensor([tokenizer.encode(UNICODE_TEXT)])
    with torch.no_grad():
        theirs = AutoModelForCausalLM.from_pretrained(out).eval()(idx).logits
        torch.testing.assert_close(theirs, ours(idx)[0][..., : theirs.size(-1)], atol=1e-5, rtol=1e-5)
    generator = pipeline("text-generation", model=str(out), device="cpu")
    text = generator("ROMEO:", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    expected = gpt2_tokenizer().decode(ours.generate([gpt2_tokenizer().encode("ROMEO:")], 5, temperature=0)[0])
    assert text == expected


def test_lm_eval_log_likelihoods_equal_our_models(exported):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    ours, out = exported
    requests = [("ROMEO: What say you", " to this?"), ("First Citizen:", " Before we proceed any further"),
                ("The quick brown fox", " jumps over the lazy dog."), ("café", " ☃ 日本語")]
    lm = HFLM(pretrained=str(out), device="cpu", batch_size=2)
    results = lm.loglikelihood([Instance("loglikelihood", {}, request, i) for i, request in enumerate(requests)])
    enc = gpt2_tokenizer()
    for (context, continuation), (logprob, _) in zip(requests, results):
        ctx, cont = enc.encode(context), enc.encode(continuation)
        with torch.no_grad():
            logits, _ = ours(torch.tensor([ctx + cont]))
        logprobs = torch.log_softmax(logits[0, len(ctx) - 1 : -1, : enc.n_vocab].double(), dim=-1)
        assert logprob == pytest.approx(logprobs.gather(1, torch.tensor(cont)[:, None]).sum().item(), abs=1e-4)


TASK = """task: shakespeare_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{ctx}}}}"
doc_to_choice: "{{{{endings}}}}"
doc_to_target: label
metric_list:
  - metric: acc
"""


def test_lm_eval_command_line_on_a_local_task(exported, tmp_path):
    ours, out = exported
    examples = make_examples(12, seed=11)
    write_jsonl(tmp_path / "choice.jsonl", examples)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "shakespeare_choice.yaml").write_text(TASK.format(data=tmp_path / "choice.jsonl"))
    r = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={out}",
                        "--tasks", "shakespeare_choice", "--include_path", str(tmp_path / "tasks"), "--device", "cpu",
                        "--batch_size", "4", "--output_path", str(tmp_path / "results")],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf-cache")})
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(open(glob.glob(str(tmp_path / "results" / "**" / "*.json"), recursive=True)[0]).read())
    acc = result["results"]["shakespeare_choice"]["acc,none"]
    # the same context + " " + ending scoring as hellaswag.py's acc (summed log-likelihood)
    ref = hellaswag.evaluate(hellaswag.gpt_logits_fn(ours), examples, gpt2_tokenizer(), "cpu")
    assert acc == pytest.approx(ref["acc"])


def wandb_history(run_dir):
    """The logged rows of an offline wandb run, read from its .wandb file (a LevelDB-style log of protobufs)."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for path in sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))):
        data, pos, pending = open(path, "rb").read(), 7, b""  # a 7-byte file header, then 32 KiB blocks
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # a block's tail too short for a record header is padding
                pos += 32768 - pos % 32768
                continue
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            if kind == 0:
                break
            pending += data[pos + 7 : pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):  # a whole record, or the last piece of one
                record = wandb_internal_pb2.Record()
                record.ParseFromString(pending)
                pending = b""
                if record.WhichOneof("record_type") == "history":
                    rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                 for item in record.history.item})
    return rows


def test_tensorboard_and_wandb_mirror_log_txt_and_continue_after_a_resume(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["--max-steps", 6, "--eval-interval", 2, "--tensorboard", "--wandb", "tests"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    train(data, tmp_path, *args, "--stop-at", 3, env=env)
    first_id = json.loads((tmp_path / "run.json").read_text())["wandb_id"]
    train(data, tmp_path, *args, "--resume", env=env)
    assert json.loads((tmp_path / "run.json").read_text())["wandb_id"] == first_id  # the same wandb run goes on
    logged = read_log(tmp_path)

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    for tag, kind in (("train/loss", "train"), ("val/loss", "val")):
        scalars = {e.step: e.value for e in events.Scalars(tag)}
        assert sorted(scalars) == sorted(logged[kind])  # one point a step, across the resume
        assert all(scalars[s] == pytest.approx(logged[kind][s], abs=1e-4) for s in scalars)
    assert {"train/lr", "train/grad_norm", "train/tokens_per_sec", "train/tflops"} <= set(events.Tags()["scalars"])

    rows = wandb_history(tmp_path)
    assert len(glob.glob(str(tmp_path / "wandb" / f"offline-run-*-{first_id}"))) == 2  # one per job, one run id
    for kind, name in (("train", "train/loss"), ("val", "val/loss")):
        values = {row["trainer/step"]: row[name] for row in rows if name in row}
        assert values.keys() == logged[kind].keys()
        assert all(values[s] == pytest.approx(logged[kind][s], abs=1e-4) for s in values)
    config = json.loads((tmp_path / "run.json").read_text())["args"]
    assert config["wandb"] == "tests" and config["tensorboard"] is True


def test_tracking_without_its_package_fails_in_one_line(data, tmp_path):
    for flag, package in ((["--tensorboard"], "tensorboard"), (["--wandb", "p"], "wandb")):
        code = (f"import sys; sys.modules[{package!r}] = None; sys.argv = ['train_gpt2.py'] + sys.argv[1:]; "
                f"sys.path.insert(0, {str(ROOT)!r}); import train_gpt2; sys.exit(train_gpt2.main())")
        r = subprocess.run([sys.executable, "-c", code, "--data-dir", data, "--out-dir", str(tmp_path), "--model",
                            "tiny", *flag], capture_output=True, text=True, timeout=300)
        assert r.returncode == 1 and r.stderr.strip().splitlines() == [
            f"error: {flag[0]} needs the {package} package: pip install {package} (or: pip install -e '.[track]')"]
        assert not (tmp_path / "log.txt").exists()


def test_finetune_recipe_from_a_tiny_checkpoint(data, tmp_path):
    train(data, tmp_path / "pretrained", "--max-steps", 2, "--eval-interval", 0)
    r = subprocess.run([sys.executable, TRAIN, "--finetune", "--init-from", str(tmp_path / "pretrained"),
                        "--data-dir", data, "--out-dir", str(tmp_path / "tuned"), "-B", "4", "-T", "64",
                        "--total-batch-size", "512", "--max-steps", "12", "--eval-interval", "4", "--max-lr", "2e-3",
                        "--min-lr", "2e-3", "--sample-interval", "0"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    val = read_log(tmp_path / "tuned")["val"]
    assert sorted(val) == [0, 4, 8, 12] and val[12] < val[0] - 0.5
    best = min(val, key=val.get)
    ckpt = final_state(tmp_path / "tuned")  # only the best is kept (FINETUNE's keep_checkpoints=1)
    assert os.listdir(tmp_path / "tuned").count(f"ckpt_{best:06d}.pt") == 1 and ckpt["step"] == best
    assert ckpt["args"]["max_lr"] == ckpt["args"]["min_lr"] == 2e-3 and ckpt["args"]["warmup_steps"] == 0
    assert sum(f.startswith("ckpt_") for f in os.listdir(tmp_path / "tuned")) == 1
