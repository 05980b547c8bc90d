"""Helpers shared by the test modules (which never import each other)."""

import contextlib
import io
import json
import os
import runpy
import shutil
import subprocess
import sys
import traceback
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


# a run that needs a process of its own: compiling (dynamo's caches and limits are per process), dashboards
# (wandb and tensorboard keep global state)
OWN_PROCESS = ("--compile", "--wandb", "--tensorboard")


def train(data, out_dir, *args, nproc=1, torchrun=False, check=True, small=True, **kw):
    """Run train_gpt2.py on the shards in data with SMALL's settings (then args) into out_dir: under torchrun in
    nproc processes, else in this process (train_gpt2.main, as a notebook calls it: no second start of Python and
    torch) unless the run needs a process of its own (OWN_PROCESS, or subprocess arguments in kw). Returns what
    subprocess.run returns: the exit status, stdout and stderr."""
    argv = ["--data-dir", str(data), "--out-dir", str(out_dir), *(SMALL if small else []), *map(str, args)]
    if nproc == 1 and not torchrun and not kw and not set(argv) & set(OWN_PROCESS):
        r = main_in_process(argv)
    else:
        r = subprocess.run(command(nproc, torchrun) + argv, capture_output=True, text=True, timeout=600, **kw)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def main_in_process(argv):
    """train_gpt2.main(argv) in this process, as a CompletedProcess (see in_process)."""
    import train_gpt2

    return in_process(lambda: train_gpt2.main(argv), ["train_gpt2.py", *argv])


def script_in_process(path, argv, cwd, env):
    """python path argv... from cwd with env's variables set, in this process, as a CompletedProcess (in_process)."""
    def run():
        with contextlib.chdir(cwd):
            runpy.run_path(str(path), run_name="__main__")

    saved_argv, saved_env = sys.argv, dict(os.environ)
    sys.argv = [str(path), *argv]
    os.environ.update(env)
    try:
        return in_process(run, sys.argv)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)


def in_process(run, args):
    """run() with its output captured, as subprocess.run would give it for a process of its own: the exit status
    (SystemExit's code, 1 for an exception, whose traceback goes to stderr), stdout and stderr. What a run sets for
    the whole process (the RNG, the matmul precision) is put back after it."""
    out, err = io.StringIO(), io.StringIO()
    rng, precision = torch.get_rng_state(), torch.get_float32_matmul_precision()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run() or 0
        except SystemExit as e:  # argparse's errors, sys.exit(...)
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        except Exception:  # what a process would die of
            traceback.print_exc()
            code = 1
    torch.set_rng_state(rng)
    torch.set_float32_matmul_precision(precision)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def final_state(out_dir):
    from gptkit import checkpoint, rundir

    return checkpoint.load_checkpoint(rundir.checkpoint_paths(str(out_dir))[-1])


def preempted_copy(run, dest, step):
    """A copy of the run directory run as the job left it when it was stopped right after its checkpoint of step:
    the later checkpoints gone, and log.txt up to the line of the first step trained after it."""
    from gptkit import rundir

    shutil.copytree(run, dest)
    for path in rundir.checkpoint_paths(str(dest)):
        if int(os.path.basename(path)[5:11]) > step:
            rundir.remove(path)
    lines = (dest / "log.txt").read_text().splitlines(keepends=True)  # "{step} {kind} {value}"
    end = next((i for i, line in enumerate(lines) if line.split()[1] == "train" and int(line.split()[0]) >= step),
               len(lines))
    (dest / "log.txt").write_text("".join(lines[:end]))
    return dest


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
