"""Helpers shared by the test modules (which never import each other)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
# Tiny Shakespeare and the tiktoken files; SHARED_DIR points elsewhere (bench/gpu_check.sh on a GPU machine)
SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
TINY_SHAKESPEARE = ROOT / "input.txt"  # the same file as SHARED / "data" / "tinyshakespeare.txt", shipped
TRAIN = str(ROOT / "train_gpt2.py")

# a tiny model on tiny batches: every step takes a fraction of a second on CPU
SMALL_ANY_DTYPE = ["--model", "tiny", "-B", "2", "-T", "32", "--total-batch-size", "256", "--warmup-steps", "2",
                   "--max-lr", "1e-3", "--eval-steps", "2", "--sample-interval", "0", "--checkpoint-interval", "0",
                   "--hellaswag-interval", "0"]
# in fp32: the tests compare runs across ranks, splits, resumes and commits, which bf16's rounding would blur
# (--dtype auto takes bf16 on CPUs with bf16 units; test_cpu.py tests that)
SMALL = [*SMALL_ANY_DTYPE, "--dtype", "float32"]


def command(nproc, torchrun=False):
    """The trainer in one plain process, or under torchrun in nproc gloo processes (torchrun even for one)."""
    if nproc == 1 and not torchrun:
        return [sys.executable, TRAIN]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", TRAIN]


def train(data, out_dir, *args, nproc=1, torchrun=False, check=True, small=True, **kw):
    """Run train_gpt2.py on the shards in data with SMALL's settings (then args) into out_dir."""
    r = subprocess.run(command(nproc, torchrun) + ["--data-dir", str(data), "--out-dir", str(out_dir),
                                         *(SMALL if small else []), *map(str, args)],
                       capture_output=True, text=True, timeout=600, **kw)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def final_state(out_dir):
    from gptkit import checkpoint, rundir

    return checkpoint.load_checkpoint(rundir.checkpoint_paths(str(out_dir))[-1])


def assert_same_tensors(a, b, atol=0.0):
    """Two state dicts (or dicts of optimizer state) hold the same keys and tensors, bit for bit by default."""
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=lambda m: f"{k}: {m}")


def make_examples(n, seed=0):
    """HellaSwag-shaped examples cut from Tiny Shakespeare: a line as context, four other lines as endings."""
    lines = [l.strip() for l in TINY_SHAKESPEARE.read_text().splitlines() if len(l) > 20]
    g = torch.Generator().manual_seed(seed)
    pick = lambda: lines[torch.randint(len(lines), (1,), generator=g).item()]  # noqa: E731
    return [{"ctx": pick(), "endings": [pick() for _ in range(4)], "label": torch.randint(4, (1,), generator=g).item()}
            for _ in range(n)]


def write_jsonl(path, examples):
    path.write_text("".join(json.dumps({"ind": i, **ex}) + "\n" for i, ex in enumerate(examples)))
    return path


def copy_tracked_files(dest):
    """What a fresh clone holds: the scripts, gptkit/, play.ipynb and input.txt; no data/, no runs/."""
    dest.mkdir()
    for name in ("train_gpt2.py", "fineweb.py", "hellaswag.py", "sample.py", "plot.py", "play.ipynb", "input.txt"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "gptkit", dest / "gptkit", ignore=shutil.ignore_patterns("__pycache__"))
    return dest
