"""Faults a long run meets, each reproduced on the real commands: a tokenizer pool shut down under the trainer's
stop handler, a full disk during a save, checkpoints missing a part, learning rates that cannot train, two quick
starts at once on a fresh clone, and the notebook right after the quick start."""

import os
import subprocess
import sys
import time

import nbformat
import pytest
import torch
from nbclient import NotebookClient

import sample
import train_gpt2 as tg
from gptkit import checkpoint
from helpers import ROOT, SMALL, copy_tracked_files, final_state, train
from plot import read_log

pytestmark = pytest.mark.slow  # subprocesses, a tmpfs, a notebook kernel

# The quick start's tokenizer pool under train()'s StopRequest, shut down the hard way (Pool.terminate sends
# SIGTERM to every worker still alive), twenty times, then fineweb.py itself. Workers that inherited the handler
# printed "SIGTERM: stopping after this step" and lived on, and the pool's join waited for them for ever.
POOL_UNDER_THE_STOP_HANDLER = """
import sys
import fineweb
from gptkit.signals import StopRequest, worker_pool

with StopRequest() as stop:
    for i in range(20):
        pool = worker_pool(2, fineweb._start_worker)
        if i % 2:  # a worker that has worked, and one still starting
            pool.apply_async(fineweb.tokenize_documents, (["hello world"],)).get()
        pool.terminate()
        pool.join()
    fineweb.main(["--dataset", "tinyshakespeare", "--out", sys.argv[1], "--workers", "2"])
print("stop requested:", stop.requested)
"""


def test_a_tokenizer_pool_under_the_stop_handler_ends_promptly_and_silently(tmp_path):
    start = time.time()
    r = subprocess.run([sys.executable, "-c", POOL_UNDER_THE_STOP_HANDLER, str(tmp_path / "ts")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr[-3000:]
    assert r.stdout.splitlines()[-1] == "stop requested: False" and "SIGTERM" not in r.stdout
    assert r.stdout.count("\n") == 2 and "wrote 2 shards" in r.stdout
    assert time.time() - start < 60


@pytest.fixture
def small_disk(tmp_path):
    """A 130 MB tmpfs: room for one checkpoint of the tiny model (87 MB), not for two. Needs root (CI is)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=130m", "tmpfs", str(disk)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_disk_fails_the_save_in_one_line_and_resume_works_once_there_is_room(data, small_disk):
    run = small_disk / "run"
    args = ["--max-steps", 4, "--eval-interval", 0, "--checkpoint-interval", 2]
    r = train(data, run, *args, check=False)
    assert r.returncode == 1, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert lines[0].startswith(f"error: could not write checkpoint {run}/ckpt_000004.pt: No space left on device "
                               f"(the disk mounted at {small_disk} has ")
    assert lines[0].endswith("; nothing was left half-written, and the checkpoints before it are intact: free space "
                             "(or choose another --out-dir), then --resume")
    assert sorted(os.listdir(run)) == [".lock", "ckpt_000002.pt", "log.txt", "run.json"]  # no .tmp left
    assert checkpoint.load_checkpoint(str(run / "ckpt_000002.pt"), checkpoint.RESUME_KEYS)["step"] == 2
    # --resume on the same full disk: refused before any step is run again
    log = (run / "log.txt").read_text()
    r = train(data, run, *args, "--resume", check=False)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"error: no room for a checkpoint in {run}: one needs about 87.2 MB and the disk mounted at {small_disk} has "
        f"{r.stderr.split(' has ')[1].split(' MB')[0]} MB free; free space or choose another --out-dir"]
    assert (run / "log.txt").read_text() == log
    # room again; a save killed by -9 had left its .tmp behind: the next job removes it
    subprocess.run(["mount", "-o", "remount,size=400m", str(small_disk)], check=True)
    (run / "ckpt_000003.pt.tmp").write_bytes(b"half a checkpoint")
    r = train(data, run, *args, "--resume")
    assert "resuming from" in r.stdout and final_state(run)["step"] == 4
    assert sorted(read_log(run)["train"]) == [0, 1, 2, 3] and not list(run.glob("*.tmp"))


def run_main(main, capsys, *args):
    """A command's main() in this process: its exit code and the last line it wrote to stderr."""
    try:
        code = main([*map(str, args)])
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip().splitlines()[-1] if err.strip() else ""


def test_a_checkpoint_missing_a_part_is_refused_in_one_line(data, tmp_path, capsys):
    train(data, tmp_path / "good", "--max-steps", 1, "--eval-interval", 0)
    good = torch.load(tmp_path / "good" / "ckpt_000001.pt", weights_only=True)
    for key in ("optimizer", "config", "model", "train_loader", "rng"):
        run = tmp_path / f"no_{key}"
        run.mkdir()
        path = run / "ckpt_000001.pt"
        torch.save({k: v for k, v in good.items() if k != key}, path)
        code, err = run_main(tg.main, capsys, "--data-dir", data, "--out-dir", run, *SMALL, "--max-steps", 2,
                             "--resume")
        assert code == 1 and err.startswith(f"error: {path} is not a complete checkpoint: it has no '{key}' "), err
        if key in ("config", "model"):  # what sample.py needs
            code, err = run_main(sample.main, capsys, "-m", path, "--max-new-tokens", 2, "--device", "cpu")
            assert code == 1 and f"it has no '{key}'" in err, err
    empty = tmp_path / "empty" / "ckpt_000001.pt"
    empty.parent.mkdir()
    empty.touch()
    expected = f"error: {empty} is empty (0 bytes), not a checkpoint; delete it, or resume from an older one"
    assert run_main(tg.main, capsys, "--data-dir", data, "--out-dir", empty.parent, *SMALL, "--resume") == (1, expected)
    r = subprocess.run([sys.executable, str(ROOT / "sample.py"), "-m", str(empty)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [expected]


def test_learning_rates_that_cannot_train_are_refused_naming_the_flag(data, tmp_path, capsys):
    cases = [
        (["--max-lr", 0], "argument --max-lr: must be positive, not 0"),  # was: replaced by the preset's 1e-3
        (["--max-lr", -1], "argument --max-lr: must be positive, not -1"),
        (["--min-lr", -1], "argument --min-lr: must be 0 or positive, not -1"),  # was: a negative LR
        (["--max-lr", "nan"], "argument --max-lr: must be positive, not nan"),
        (["--max-lr", 1e-4, "--min-lr", 1e-3], "error: --min-lr 0.001 is above --max-lr 0.0001"),
        (["--muon-lr", 0], "argument --muon-lr: must be positive, not 0"),
    ]
    for args, message in cases:
        code, err = run_main(tg.main, capsys, "--data-dir", data, "--out-dir", tmp_path, *SMALL, *args)
        assert code != 0 and message in err, (args, err)
    assert not os.listdir(tmp_path)
    # 0 is a fine final LR: the schedule ends at 0
    args = tg.parse_args(["--data-dir", data, "--out-dir", str(tmp_path), *SMALL, "--min-lr", "0"])
    assert args.min_lr == 0.0 and args.max_lr == 1e-3


def test_two_quick_starts_at_once_on_a_fresh_clone_both_train_then_the_notebook_finds_the_newest(tmp_path):
    clone = copy_tracked_files(tmp_path / "clone")
    (clone / "data" / "tinyshakespeare").mkdir(parents=True)  # what a failed fineweb.py leaves: an empty folder
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf-cache")}  # neither finds Tiny Shakespeare cached
    quick = ["--quickstart", "--max-steps", 2, "--eval-interval", 2, "--sample-interval", 0]
    jobs = [subprocess.Popen([sys.executable, "train_gpt2.py", *map(str, quick), *extra], cwd=clone, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for extra in ([], ["--out-dir", "runs/second"])]
    outputs = [job.communicate(timeout=600) for job in jobs]
    for job, (out, err) in zip(jobs, outputs):
        assert job.returncode == 0, err[-3000:]
        assert "resuming" not in out
    assert sum("wrote 2 shards" in out for out, _ in outputs) == 1  # one tokenized, the other found the shards
    for run in ("quickstart", "second"):
        assert sorted(read_log(clone / "runs" / run)["train"]) == [0, 1]
    newest = max(("quickstart", "second"), key=lambda r: os.path.getmtime(clone / "runs" / r / "log.txt"))
    # the notebook, top to bottom, with nothing set: it takes the newest run and says so
    nb = nbformat.read(clone / "play.ipynb", as_version=4)
    env_before = os.environ.pop("PLAY_RUNS", None)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(clone)}}).execute()
    finally:
        if env_before is not None:
            os.environ["PLAY_RUNS"] = env_before
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert f"runs: runs/{newest} | model: runs/{newest}" in text and "min val loss" in text
