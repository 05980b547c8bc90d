"""The first hour of a new user, offline: every first-run command either works or fails in one clear line
(non-zero exit, no traceback, the fix named)."""

import os
import signal
import subprocess
import sys

import pytest

from helpers import ROOT, TRAIN, command, copy_tracked_files, final_state, script_in_process
from plot import read_log

pytestmark = pytest.mark.slow  # the real commands, in subprocesses
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1"}


def run(args, cwd, timeout=600, **env):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **OFFLINE, **env})


def assert_one_line_error(r, *phrases):
    assert r.returncode != 0, r.stdout[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_quickstart_is_one_command_in_a_fresh_clone_and_resumes(tmp_path):
    clone = copy_tracked_files(tmp_path / "clone")
    r = run(["train_gpt2.py", "--quickstart", "--max-steps", 20], clone)  # 20 of its 100 steps
    assert r.returncode == 0, r.stderr[-3000:]
    assert (clone / "data" / "tinyshakespeare" / "manifest.json").exists()  # made from input.txt by fineweb.py
    assert "7.3M parameters (tiny)" in r.stdout and "total batch 2,048 tokens = 8 x 256 x 1 ranks" in r.stdout
    quick = clone / "runs" / "quickstart"
    losses = read_log(quick)["train"]
    assert losses[0] > 10.5 and sum(losses[s] for s in range(15, 20)) / 5 < losses[0] - 1.5
    assert sorted(read_log(quick)["val"]) == [0, 20]
    assert r.stdout.count("rank 0 sample") == 2 and "rank 0 sample 0: ROMEO:" in r.stdout
    # a finished run: nothing to do, and how to go on
    r = run(["train_gpt2.py", "--quickstart", "--resume"], clone)
    assert r.returncode == 0 and "nothing to do" in r.stdout and "--max-steps" in r.stdout
    # --resume takes every setting from the checkpoint (tiny, B=8, T=256, ...) but the flags given
    r = run(["train_gpt2.py", "--resume", "--out-dir", "runs/quickstart", "--max-steps", 22, "--sample-interval", 0],
            clone)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in r.stdout and "8 x 256 x 1 ranks" in r.stdout and "sample" not in r.stdout
    assert sorted(read_log(quick)["train"]) == list(range(22))
    saved = final_state(quick)["args"]
    assert (saved["model"], saved["batch_size"], saved["max_steps"]) == ("tiny", 8, 22)
    # the repo moved: its complete shards (made from input.txt where it was) are used as they are
    moved = clone.rename(tmp_path / "moved")
    r = run(["train_gpt2.py", "--quickstart", "--resume", "--max-steps", 23, "--sample-interval", 0], moved)
    assert r.returncode == 0, r.stderr[-3000:]


def test_fineweb_without_input_txt_offline(tmp_path):
    clone = copy_tracked_files(tmp_path / "clone")
    (clone / "input.txt").unlink()
    r = run(["fineweb.py", "--dataset", "tinyshakespeare"], clone)
    assert_one_line_error(r, "could not download", "offline, put the file at input.txt")
    assert not (clone / "input.txt").exists() and not (clone / "input.txt.part").exists()


def test_sample_offline_and_runs_that_do_not_exist(tmp_path):
    (tmp_path / "runs").mkdir()
    sample = ROOT / "sample.py"
    assert_one_line_error(run([sample, "-m", "gpt2"], tmp_path), "could not load 'gpt2'", "offline, pass one of")
    # the same script as __main__ in this process (its one-line errors are the same code)
    assert_one_line_error(script_in_process(sample, ["-m", "log/"], tmp_path, OFFLINE),
                          "no such run, checkpoint or model directory: log/")
    assert_one_line_error(script_in_process(sample, ["-m", "runs/quickstrat"], tmp_path, OFFLINE), "no such run",
                          "runs/quickstrat")


def test_torchrun_without_shards_says_it_once_before_anything_else(tmp_path):
    r = subprocess.run(command(2) + ["--data-dir", str(tmp_path / "nothing"), "--out-dir", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, **OFFLINE})
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: data directory {tmp_path / 'nothing'} does not exist; make them with "
                      "`python fineweb.py` (FineWeb-Edu) or `python fineweb.py --dataset tinyshakespeare` and pass "
                      "that directory with --data-dir"]
    assert r.stderr.index("error:") < r.stderr.index("Failures:")  # before torchrun's own report
    assert "total batch" not in r.stdout  # no rank got as far as its batch plan


def test_the_gpt2_recipe_on_a_cpu_is_announced_and_ctrl_c_is_acknowledged_at_once(data, tmp_path):
    # what a newcomer types: the shards of the quick start, the full gpt2 recipe (524,288 tokens a step)
    proc = subprocess.Popen([sys.executable, TRAIN, "--data-dir", data, "--out-dir", str(tmp_path), "-B", "1",
                             "-T", "64", "--eval-interval", "0", "--hellaswag-interval", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any(line.startswith("note:") for line in lines):
            lines.append(proc.stdout.readline())
            assert lines[-1], proc.stderr.read()
        start = "".join(lines)
        assert "124.5M parameters (gpt2)" in start and "total batch 524,288 tokens = 1 x 64 x 1 ranks x 8192" in start
        assert "memory plan per device" in start
        assert "is a GPU workload" in lines[-1] and "--quickstart is sized for a CPU" in lines[-1]
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.readline().startswith("SIGINT: stopping after this step with a checkpoint; Ctrl-C again")
        proc.send_signal(signal.SIGINT)  # the step is far from done: a second Ctrl-C aborts it
        rest, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()  # never leave a gpt2 step running behind a failed assertion
    assert proc.returncode == 130 and "step" not in rest
    assert stderr.strip() == "aborted: SIGINT again: aborted without a checkpoint"
    assert not os.path.exists(tmp_path / "ckpt_000001.pt")


def test_tests_without_the_tokenizer_files_stop_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, **OFFLINE, "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty"),
                            "SHARED_DIR": str(tmp_path / "no-shared")})
    assert r.returncode == 4
    out = (r.stdout + r.stderr).strip().splitlines()
    assert len(out) == 1 and "TIKTOKEN_CACHE_DIR" in out[0] and "SHARED_DIR" in out[0], out


@pytest.mark.parametrize("script, flag", [
    ("train_gpt2.py", "the memory plan (--device-memory) (default: auto)"),
    ("fineweb.py", "documents sent to a worker at a time (default: 256)"),
    ("hellaswag.py", "examples per forward pass (4 rows each) (default: 16)"),
    ("sample.py", "the same seed gives the same samples (default: 42)"),
    ("plot.py", "PNG to write (default: plot.png in the first run directory)"),
    ("bench/train_throughput.py", "timed steps (default: 10)"),
])
def test_help_shows_the_defaults(script, flag):
    r = run([ROOT / script, "--help"], ROOT, timeout=120, COLUMNS="400")
    assert r.returncode == 0 and flag in r.stdout, r.stdout
