"""Where people really run the first command: a fresh multi-GPU node, several nodes, Windows (no fcntl, no
pthread_sigmask). The GPUs and the other machines are played by gloo processes, faked properties and folders."""

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading

import pytest
import torch

from gptkit import distributed, hardware, memory
from helpers import (SMALL, TRAIN, assert_same_tensors, copy_tracked_files, final_state, make_examples, train,
                     write_jsonl)
from plot import read_log


@pytest.mark.slow
def test_entry_points_and_the_quick_start_data_step_run_without_fcntl_and_pthread_sigmask(tmp_path):
    code = """if True:
        import signal, sys, warnings
        sys.modules["fcntl"] = None  # as on Windows
        del signal.pthread_sigmask
        warnings.simplefilter("ignore")  # filelock: "only soft file lock is available"
        import fineweb, hellaswag, plot, sample, train_gpt2
        fineweb.tinyshakespeare_shards(sys.argv[1])
        print("fcntl" in sys.modules and sys.modules["fcntl"] is None)
    """
    # a datasets cache of its own: a soft lock (the only kind without fcntl) is held by existing lock files
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ts")], cwd=TRAIN.rsplit(os.sep, 1)[0],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("True")
    assert sorted(f for f in os.listdir(tmp_path / "ts") if f.endswith(".npy")) == [
        "tinyshakespeare_train_000001.npy", "tinyshakespeare_val_000000.npy"]


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests = []

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def hellaswag_server(tmp_path):
    """A mirror of HellaSwag on 127.0.0.1 (HELLASWAG_URL's use): the requests it served, and its folder URL."""
    served = tmp_path / "mirror"
    served.mkdir()
    write_jsonl(served / "hellaswag_val.jsonl", make_examples(6, seed=2))
    CountingHandler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(CountingHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield CountingHandler.requests, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.mark.slow
def test_torchrun_on_a_fresh_checkout_prepares_shards_and_hellaswag_once_then_trains(tmp_path, hellaswag_server):
    requests, url = hellaswag_server
    clone = copy_tracked_files(tmp_path / "clone")  # no data/, no hellaswag/
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "train_gpt2.py", "--quickstart", *SMALL, "--max-steps", "2", "--eval-interval", "2",
                        "--hellaswag-interval", "2", "--hellaswag-batch-size", "2", "-B", "auto", "--device-memory",
                        "0.25"],
                       cwd=clone, capture_output=True, text=True, timeout=600, env={**os.environ, "HELLASWAG_URL": url})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert requests == ["/hellaswag_val.jsonl"]  # one download for both ranks
    assert "-B auto: 4, the largest micro-batch whose memory plan fits 0.2 GiB, with 1 accumulation step" in r.stdout
    assert sorted(os.listdir(clone / "hellaswag")) == ["hellaswag_val.jsonl", "hellaswag_val.jsonl.lock"]
    shards = sorted(f for f in os.listdir(clone / "data" / "tinyshakespeare") if f.endswith(".npy"))
    assert shards == ["tinyshakespeare_train_000001.npy", "tinyshakespeare_val_000000.npy"]
    log = read_log(clone / "runs" / "quickstart")
    assert sorted(log["hella"]) == [0, 2] and sorted(log["val"]) == [0, 2]


@pytest.mark.slow
@pytest.mark.parametrize("node1_has, error", [
    ("no checkpoint", "rank 1: --resume: no checkpoint"),
    ("an older checkpoint", "rank 1 sees checkpoint ckpt_000002.pt, rank 0 ckpt_000004.pt"),
    ("another shard", "rank 1 sees shards ['tinyshakespeare_train_000001.npy', 'tinyshakespeare_train_000002.npy',"),
])
def test_a_node_that_sees_other_files_than_rank_0_stops_the_resume_in_one_line(data, tmp_path, node1_has, error):
    """Two nodes on localhost, each in a folder of its own: the run directory and the shards are relative paths, as
    if they were not on a filesystem the nodes share."""
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    for node in nodes:
        shutil.copytree(data, node / "data")
    train(data, nodes[0] / "run", "--max-steps", 6, "--stop-at", 2)
    if node1_has != "no checkpoint":
        shutil.copytree(nodes[0] / "run", nodes[1] / "run")
    train(data, nodes[0] / "run", "--max-steps", 6, "--stop-at", 4, "--resume")
    if node1_has == "another shard":
        shutil.copytree(nodes[0] / "run", nodes[1] / "run", dirs_exist_ok=True)
        shutil.copy(nodes[1] / "data" / "tinyshakespeare_train_000001.npy",
                    nodes[1] / "data" / "tinyshakespeare_train_000002.npy")
    before = sorted(os.listdir(nodes[0] / "run"))
    port = str(29600 + os.getpid() % 1000)
    launch = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}",
                                "--nproc-per-node=1", "--rdzv-backend=static", "--master-addr=127.0.0.1",
                                f"--master-port={port}", TRAIN, "--data-dir", "data", "--out-dir", "run", *SMALL,
                                "--max-steps", "6", "--resume"], cwd=node, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for rank, node in enumerate(nodes)]
    outputs = [p.communicate(timeout=300) for p in launch]
    assert all(p.returncode != 0 for p in launch)
    errors = [line for line in outputs[0][1].splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and error in errors[0], outputs[0][1][-3000:]
    assert "a filesystem every node shares" in errors[0]
    assert sorted(os.listdir(nodes[0] / "run")) == before  # nothing written


def test_device_under_torchrun_is_one_gpu_per_local_rank(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ValueError, match="--device cuda:0 under torchrun: each rank takes the GPU of its LOCAL_RANK"):
        distributed.setup_distributed("cuda:0")
    backends = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: backends.append(backend))
    assert distributed.setup_distributed("cuda") == "cuda:1"
    assert distributed.setup_distributed("cuda", cpu_offload=True) == "cuda:1"
    assert distributed.setup_distributed("cpu") == "cpu"
    # FSDP's CPU offload clips and steps on CPU tensors: its group needs a CPU backend beside NCCL
    assert backends == ["nccl", "cuda:nccl,cpu:gloo", "gloo"]


T4, V100, A100, H100 = [hardware.DeviceInfo("cuda", name, capability) for name, capability in
                        [("Tesla T4", (7, 5)), ("Tesla V100", (7, 0)), ("A100", (8, 0)), ("H100", (9, 0))]]


@pytest.mark.parametrize("info, dtype, scaler, kernel", [
    (T4, torch.float16, True, "memory-efficient"),  # bf16 only emulated below 8.0: float16 with a scaler
    (V100, torch.float16, True, "memory-efficient"),
    (A100, torch.bfloat16, False, "flash attention"),
    (H100, torch.bfloat16, False, "flash attention"),
    (hardware.DeviceInfo("mps", "Apple GPU", mps_bf16=True), torch.bfloat16, False, "on mps"),
    (hardware.DeviceInfo("mps", "Apple GPU", mps_bf16=False), torch.float32, False, "on mps"),
    (hardware.DeviceInfo("cpu", "CPU", bf16_unit="amx_bf16"), torch.bfloat16, False, "on cpu"),
    (hardware.DeviceInfo("cpu", "CPU"), torch.float32, False, "on cpu"),
])
def test_auto_choices_follow_what_the_device_does_natively(info, dtype, scaler, kernel):
    choices = hardware.decide(info, compile=True)
    assert (choices.dtype, choices.grad_scaler) == (dtype, scaler) and kernel in choices.attention
    assert choices.fused_adamw == (info.type != "mps") and choices.compile and not choices.notes
    line = hardware.describe(info, choices)
    assert line.startswith(f"device: {info.name}") and "torch.compile" in line and "\n" not in line


def test_explicit_choices_are_followed_and_their_costs_said():
    assert hardware.decide(hardware.DeviceInfo("cpu", "CPU"), "float16").grad_scaler  # the tests' fp16 path
    emulated = hardware.decide(T4, "bfloat16")
    assert emulated.dtype == torch.bfloat16 and "emulated" in emulated.notes[0]
    p100 = hardware.decide(hardware.DeviceInfo("cuda", "Tesla P100", (6, 0)), compile=True, fused_adamw=False)
    assert not p100.compile and "7.0" in p100.notes[0] and not p100.fused_adamw
    assert "float32" in hardware.describe(A100, hardware.decide(A100, "float32"))
    assert "manual" in hardware.decide(H100, attention="manual").attention


# a CPU has no fast float16 matmul: the smallest step that still accumulates (two micro-batches of 16 tokens)
FP16 = ["--dtype", "float16", "-B", "1", "-T", "16", "--total-batch-size", "32", "--max-steps", "4",
        "--eval-interval", "4", "--eval-steps", "2", "--sample-interval", "0", "--checkpoint-interval", "0",
        "--warmup-steps", "2"]


@pytest.mark.slow
def test_float16_quick_start_with_the_scaler_learns_as_float32_and_resumes_exactly(data, tmp_path):
    fp16 = train(data, tmp_path / "fp16", "--quickstart", *FP16, small=False)
    assert "float16 autocast with a gradient scaler" in fp16.stdout
    train(data, tmp_path / "fp32", "--quickstart", *FP16, "--dtype", "float32", small=False)
    assert read_log(tmp_path / "fp16")["val"][4] == pytest.approx(read_log(tmp_path / "fp32")["val"][4], abs=0.02)
    train(data, tmp_path / "split", "--quickstart", *FP16, "--stop-at", 2, small=False)
    train(data, tmp_path / "split", "--quickstart", *FP16, "--resume", small=False)
    split, straight = final_state(tmp_path / "split"), final_state(tmp_path / "fp16")
    assert split["scaler"] == straight["scaler"] and split["scaler"]["scale"] > 0
    assert_same_tensors(split["model"], straight["model"])
    assert read_log(tmp_path / "split")["train"] == read_log(tmp_path / "fp16")["train"]


def test_a_float16_overflow_skips_the_update_and_lowers_the_scale(data, tmp_path, capsys, monkeypatch):
    import train_gpt2 as tg

    class Overflowing(torch.amp.GradScaler):  # a scale past float16's 65,504: the first step's gradients overflow
        def __init__(self, device, enabled):
            super().__init__(device, init_scale=2.0 ** 100, enabled=enabled)

    monkeypatch.setattr(torch.amp, "GradScaler", Overflowing)
    assert tg.main(["--data-dir", data, "--out-dir", str(tmp_path), *SMALL, *FP16, "--max-steps", "1"]) == 0
    assert "float16 gradients overflowed: update skipped, loss scale lowered to 6.33825e+29 (1 skipped in this run)" \
        in capsys.readouterr().out
    saved = final_state(tmp_path)
    assert saved["scaler"]["scale"] == 2.0 ** 99 and read_log(tmp_path)["train"][0] == pytest.approx(10.8, abs=0.5)
    torch.manual_seed(1337)  # the trainer's --seed: the model it started from
    assert_same_tensors(saved["model"], tg.GPT(tg.preset("tiny")[0]).state_dict())  # no update


@pytest.mark.parametrize("gib, B", [(80, 64), (40, 32), (24, 16), (16, 8), (12, 8), (8, 4), (5, 2)])
def test_auto_batch_size_is_the_largest_that_fits_and_keeps_the_total_batch(capsys, gib, B):
    import train_gpt2 as tg

    assert tg.main(["--plan", "--model", "gpt2", "--nproc", "1", "--device-memory", str(gib)]) == 0
    out = capsys.readouterr().out
    assert f"-B auto: {B}, the largest micro-batch whose memory plan fits {gib:.1f} GiB, with {64 // B * 8} " \
           "accumulation steps for the total batch of 524,288 tokens" in out
    planned = float(out.split("memory plan per device: ")[1].split(" GiB")[0])
    config = tg.preset("gpt2")[0]
    assert planned <= 0.9 * gib < memory.plan(config, 2 * B, 1024)["total"] / memory.GIB  # twice B would not fit


def test_a_model_too_big_even_at_one_sequence_says_what_would_fit_it(capsys):
    import train_gpt2 as tg

    assert tg.main(["--plan", "--model", "gpt2-xl", "--nproc", "1", "--device-memory", "16"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the model does not fit in 16.0 GiB even at -B 1") and "\n" not in err
    assert all(flag in err for flag in ("--activation-checkpointing", "--loss-chunk-size", "--fsdp"))


def test_the_trainer_picks_its_micro_batch_by_the_memory_it_is_given(data, tmp_path, capsys):
    import train_gpt2 as tg

    at = SMALL.index("-B")
    args = SMALL[:at] + SMALL[at + 2:]  # -B auto, the default
    assert tg.main(["--data-dir", data, "--out-dir", str(tmp_path), *args, "--device-memory", "0.25",
                    "--max-steps", "1", "--eval-interval", "0"]) == 0
    out = capsys.readouterr().out
    assert "-B auto: 4, the largest micro-batch whose memory plan fits 0.2 GiB, with 2 accumulation steps" in out
    assert "total batch 256 tokens = 4 x 32 x 1 ranks x 2 accumulation steps" in out
