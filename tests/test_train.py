"""The training loop, end to end through the command line, on Tiny Shakespeare shards."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import hellaswag
import train_gpt2 as tg
from gptkit import checkpoint, rundir
from gptkit.tokenizer import gpt2_tokenizer
from helpers import (ROOT, SMALL, TRAIN, assert_same_tensors, command, final_state, make_examples, preempted_copy,
                     train, write_jsonl)
from plot import read_log

pytestmark = pytest.mark.slow  # the trainer in every test (torchrun, signals, compiling in processes of their own)


def test_loss_falls_on_tiny_shakespeare(data, tmp_path):
    train(data, tmp_path, "--max-steps", 40, "--max-lr", "3e-3", "--eval-interval", 20, "-B", 8,
          "--total-batch-size", 512, "--sample-interval", 40, "--num-samples", 1)
    losses = read_log(tmp_path)["train"]
    assert sorted(losses) == list(range(40))
    assert losses[0] > 10.5  # log(50257) = 10.8 at initialisation
    assert sum(losses[i] for i in range(35, 40)) / 5 < 7.5
    val = read_log(tmp_path)["val"]
    assert sorted(val) == [0, 20, 40] and val[40] < val[0] - 3


def test_exact_resume_after_stop_at(data, tmp_path):
    train(data, tmp_path / "straight", "--max-steps", 8, "--eval-interval", 4)
    train(data, tmp_path / "split", "--max-steps", 8, "--eval-interval", 4, "--stop-at", 4)
    assert rundir.checkpoint_paths(str(tmp_path / "split"))[-1].endswith("ckpt_000004.pt")
    r = train(data, tmp_path / "split", "--max-steps", 8, "--eval-interval", 4, "--resume")
    assert "resuming from" in r.stdout
    for kind in ("train", "val"):  # every logged loss identical to the last digit
        assert read_log(tmp_path / "split")[kind] == read_log(tmp_path / "straight")[kind]
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "split")
    assert_same_tensors(a["model"], b["model"])
    assert a["step"] == b["step"] == 8
    for p in a["optimizer"]["state"]:
        assert_same_tensors(a["optimizer"]["state"][p], b["optimizer"]["state"][p])
    lines = (tmp_path / "split" / "log.txt").read_text().splitlines()
    assert lines.count("0 train " + f"{read_log(tmp_path / 'straight')['train'][0]:.6f}") == 1  # appended, not truncated


@pytest.mark.parametrize("nproc", [1, 2])
def test_sigterm_checkpoints_and_resumes_exactly(data, tmp_path, nproc):
    args = ["--max-steps", 8, "--eval-interval", 0, "-B", 4, "--total-batch-size", 512]
    train(data, tmp_path / "straight", *args, nproc=nproc)
    out = tmp_path / "killed"
    proc = subprocess.Popen(command(nproc) + ["--data-dir", data, "--out-dir", str(out), *SMALL, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, done = time.time() + 300, []
    while time.time() < deadline and proc.poll() is None and len(done) < 3:
        done = (out / "log.txt").read_text().splitlines() if (out / "log.txt").exists() else []
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to every rank
    stdout, stderr = proc.communicate(timeout=300)
    if nproc == 1:
        assert proc.returncode == 0, stderr
    assert "stopped by a signal" in stdout, stderr[-3000:]
    # steps 0..k-1 were logged, so the signal came during step k (a step takes far longer than the 10 ms poll):
    # step k is finished and checkpointed as ckpt_{k+1}, and no step runs after it
    k = len(done)
    assert final_state(out)["step"] == k + 1 and sorted(read_log(out)["train"]) == list(range(k + 1))
    train(data, out, *args, "--resume", nproc=nproc)
    assert read_log(out)["train"] == read_log(tmp_path / "straight")["train"]
    assert_same_tensors(final_state(out)["model"], final_state(tmp_path / "straight")["model"])


@pytest.fixture(scope="module")
def ddp_run(data, tmp_path_factory):
    """Two DDP ranks for 3 steps, a checkpoint after each; 256 tokens per step: 2 ranks x 2 micro-batches of 2 x 32."""
    out = tmp_path_factory.mktemp("ddp")
    r = train(data, out, "--max-steps", 3, "--eval-interval", 3, "--checkpoint-interval", 1, nproc=2)
    assert "2 ranks x 2 accumulation steps" in r.stdout
    return out


def test_ddp_matches_one_process_and_resumes_on_one(data, ddp_run, tmp_path):
    # the same 256 tokens per step in 1 rank x 4 micro-batches
    r = train(data, tmp_path / "single", "--max-steps", 3, "--eval-interval", 3)
    assert "1 ranks x 4 accumulation steps" in r.stdout
    single = read_log(tmp_path / "single")["train"]
    # all-reduce sums in another order than one process does: on AVX-512 CPUs a weight moved by 1.3e-6 in 3 steps
    # (AdamW turns a near-zero gradient's rounding into a step); a real fault moves weights by the lr, 1e-3
    assert_same_tensors(final_state(ddp_run)["model"], final_state(tmp_path / "single")["model"], atol=1e-5)
    assert all(abs(read_log(ddp_run)["train"][s] - single[s]) < 1e-5 for s in range(3))
    # a job on 2 ranks, preempted after its checkpoint of step 1, continued on 1 rank: its loader position, 2 rounds
    # of 2 x (2 x 32) tokens, becomes 4 rounds of 2 x 32, and each step still sees the same 256 tokens
    preempted_copy(ddp_run, tmp_path / "moved", step=1)
    r = train(data, tmp_path / "moved", "--max-steps", 3, "--eval-interval", 3, "--resume")
    assert "1 ranks x 4 accumulation steps" in r.stdout and "at step 1" in r.stdout
    assert_same_tensors(final_state(tmp_path / "moved")["model"], final_state(tmp_path / "single")["model"], atol=1e-5)
    assert all(abs(read_log(tmp_path / "moved")["train"][s] - single[s]) < 1e-5 for s in range(3))


def test_two_nodes_on_localhost_equal_one_node_with_two_processes(data, ddp_run, tmp_path):
    args = ["--data-dir", data, *SMALL, "--max-steps", "3", "--eval-interval", "3"]
    port = str(29500 + os.getpid() % 1000)
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}",
                               "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
                               "--rdzv-id=two-nodes", TRAIN, "--out-dir", str(tmp_path / "two"), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), outputs[0][1][-3000:] + outputs[1][1][-3000:]
    # the same up to float rounding (one process per node runs on more threads than torchrun --standalone's)
    two, one = read_log(tmp_path / "two"), read_log(ddp_run)  # one node: the fixture's run
    assert {k: sorted(v) for k, v in two.items()} == {k: sorted(v) for k, v in one.items()}
    assert all(two[k][s] == pytest.approx(one[k][s], abs=1e-5) for k in ("train", "val") for s in one[k])
    assert_same_tensors(final_state(tmp_path / "two")["model"], final_state(ddp_run)["model"], atol=1e-5)


# two FSDP ranks, the loss in chunks (its weight gradient is made in the forward pass), sharded checkpoints of steps
# 2 and 4: made once for the tests that load, convert and resume them
FSDP_RUN = ["--fsdp", "--max-steps", 4, "--eval-interval", 4, "--loss-chunk-size", 40, "--checkpoint-interval", 2]


@pytest.fixture(scope="module")
def fsdp_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    train(data, out, *FSDP_RUN, nproc=2)
    return out


def test_fsdp_trains_and_its_sharded_checkpoint_loads_in_one_process(data, fsdp_run, tmp_path):
    assert sorted(os.listdir(fsdp_run / "ckpt_000004")) == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]
    ckpt = final_state(fsdp_run)
    losses = read_log(fsdp_run)["train"]
    assert losses[3] < losses[0]
    # converted to one file by its command line: the same state
    r = subprocess.run([sys.executable, "-m", "gptkit.checkpoint", str(fsdp_run / "ckpt_000004"),
                        str(tmp_path / "one.pt")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    one = checkpoint.load_checkpoint(str(tmp_path / "one.pt"))
    assert_same_tensors(one["model"], ckpt["model"])
    assert one["step"] == 4 and one["optimizer"]["state"].keys() == ckpt["optimizer"]["state"].keys()
    # one process, the raw model, the full logits: the same val loss on the same val batches as the two FSDP ranks
    model = tg.load_model(str(tmp_path / "one.pt")).eval()
    total = 0.0
    for rank in range(2):
        loader = tg.DataLoaderLite(2, 32, rank, 2, "val", data)
        for _ in range(2):
            with torch.no_grad():
                total += model(*loader.next_batch())[1].item() / 4
    assert total == pytest.approx(ckpt["val_loss"], abs=1e-5)
    assert read_log(fsdp_run)["val"][4] == pytest.approx(total, abs=1e-4)


def test_fsdp_resumes_from_its_shards_on_another_number_of_ranks(data, fsdp_run, tmp_path):
    # the job stopped after its checkpoint of step 2 (2 ranks' shards) moves twice: 1 rank reads those shards and
    # writes its own of step 3, which 2 ranks read to finish
    run = preempted_copy(fsdp_run, tmp_path / "moved", step=2)
    for stop_at, ranks in ((3, 1), (4, 2)):
        assert (run / f"ckpt_{stop_at - 1:06d}" / "meta.pt").exists()
        r = train(data, run, *FSDP_RUN, "--resume", "--stop-at", stop_at, nproc=ranks, torchrun=True)
        assert f"at step {stop_at - 1}" in r.stdout and f"{ranks} ranks x {4 // ranks} accumulation steps" in r.stdout
    resumed, straight = read_log(run)["train"], read_log(fsdp_run)["train"]
    assert sorted(resumed) == [0, 1, 2, 3]
    assert all(resumed[s] == pytest.approx(straight[s], abs=1e-5) for s in range(4)), (resumed, straight)


def test_hellaswag_during_ddp_training_matches_the_command_line_on_its_checkpoint(data, tmp_path):
    examples = make_examples(10, seed=4)
    write_jsonl(tmp_path / "hellaswag_val.jsonl", examples)
    train(data, tmp_path / "run", "--max-steps", 3, "--eval-interval", 0, "--hellaswag-interval", 2,
          "--hellaswag-dir", tmp_path, "--hellaswag-batch-size", 3, nproc=2)
    hella = read_log(tmp_path / "run")["hella"]
    assert sorted(hella) == [0, 2, 3]
    model = tg.load_model(str(tmp_path / "run")).eval()
    result = hellaswag.evaluate(hellaswag.gpt_logits_fn(model), examples, gpt2_tokenizer(), "cpu")
    assert hella[3] == round(result["acc_norm"], 4)
    r = train(data, tmp_path / "other", "--hellaswag-interval", 1, "--hellaswag-dir", tmp_path / "none", check=False)
    assert r.returncode == 1 and "--hellaswag-dir" in r.stderr and "--hellaswag-interval 0" in r.stderr


def test_compile_with_val_loss_hellaswag_and_samples(data, tmp_path):
    write_jsonl(tmp_path / "hellaswag_val.jsonl", make_examples(6, seed=5))
    r = subprocess.run(command(1) + ["--data-dir", data, "--out-dir", str(tmp_path / "run"), *SMALL, "--compile",
                                     "--max-steps", "4", "--eval-interval", "2", "--hellaswag-interval", "2",
                                     "--hellaswag-dir", str(tmp_path), "--sample-interval", "2", "--num-samples", "1",
                                     "--sample-tokens", "5"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "TORCH_LOGS": "recompiles"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(read_log(tmp_path / "run")["val"]) == [0, 2, 4]
    assert sorted(read_log(tmp_path / "run")["hella"]) == [0, 2, 4]
    assert r.stdout.count("rank 0 sample 0") == 2
    # one graph for val loss (no grad), one for training: nothing recompiles after that
    assert r.stderr.count("Recompiling function") == 1, r.stderr[-3000:]


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_checkpoint_that_runs_code_is_refused(data, tmp_path):
    evil = tmp_path / "ckpt_000001.pt"
    torch.save({"model": {}, "payload": RunsCode()}, evil)
    with pytest.raises(ValueError, match="refusing to load"):
        checkpoint.load_checkpoint(str(evil))
    r = train(data, tmp_path / "run", "--init-from", evil, check=False, small=False)
    assert r.returncode == 1 and "refusing to load" in r.stderr
    assert not (tmp_path / "pwned").exists() and not (ROOT / "pwned").exists()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path):
    train(data, tmp_path, "--max-steps", 2, "--eval-interval", 0)
    good = tmp_path / "ckpt_000002.pt"
    before = good.read_bytes()
    # an absurd learning rate: the first update overflows the weights, the next loss is nan
    r = train(data, tmp_path, "--max-steps", 20, "--eval-interval", 0, "--max-lr", "1e38", "--grad-clip", "1e38",
              "--resume", check=False)
    assert r.returncode == 1
    assert "error: loss is nan at step 3" in r.stderr and f"last good checkpoint is {good}" in r.stderr
    assert rundir.checkpoint_paths(str(tmp_path)) == [str(good)] and good.read_bytes() == before


def run_main(capsys, data, out_dir, *args):
    """train_gpt2.main in this process (no interpreter start-up): its exit code and what it wrote to stderr."""
    try:
        code = tg.main(["--data-dir", data, "--out-dir", str(out_dir), *SMALL, *map(str, args)])
    except SystemExit as e:  # argparse
        code = e.code
    return code, capsys.readouterr().err


def test_clear_errors(data, tmp_path, capsys):
    cases = [
        (["--total-batch-size", 300], "--total-batch-size 300 is not divisible by B*T*world_size = 2*32*1 = 64"),
        (["--data-dir", tmp_path / "nothing"], "fineweb.py"),
        (["--resume"], "--resume: no checkpoint"),
        (["--model", "gpt5"], "invalid choice: 'gpt5'"),
        (["-T", 512], "longer than the model's block_size 256"),
        (["--loss-chunk-size", -1], "--loss-chunk-size: must be 0 (off) or positive, not -1"),
        (["-B", 0], "argument -B/--batch-size: must be positive or auto, not 0"),
        (["--cpu-offload"], "--cpu-offload moves FSDP's shards off the GPUs: it needs --fsdp on cuda"),
    ]
    for args, message in cases:
        code, err = run_main(capsys, data, tmp_path / "run", *args)
        assert code != 0 and message in err, (args, err)
        assert "Traceback" not in err and message in err.strip().splitlines()[-1]  # one line, last
    assert run_main(capsys, data, tmp_path / "run", "--max-steps", 1, "--eval-interval", 0)[0] == 0
    code, err = run_main(capsys, data, tmp_path / "run", "--model", "mini", "--resume")
    assert code == 1 and "checkpoint of another model" in err
    code, err = run_main(capsys, data, tmp_path / "run", "--max-steps", 1)
    assert code == 1 and "already holds checkpoints; pass --resume" in err


def test_keep_checkpoints_prunes_the_oldest(data, tmp_path):
    train(data, tmp_path, "--max-steps", 5, "--eval-interval", 0, "--checkpoint-interval", 1, "--keep-checkpoints", 2)
    assert [os.path.basename(p) for p in rundir.checkpoint_paths(str(tmp_path))] == \
        ["ckpt_000004.pt", "ckpt_000005.pt"]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_a_sharded_save_killed_halfway_is_never_resumed_from(data, tmp_path):
    args = ["--fsdp", "--max-steps", 50, "--eval-interval", 0, "--checkpoint-interval", 1, "--keep-checkpoints", 50]
    import psutil

    job = subprocess.Popen(command(2) + ["--data-dir", data, "--out-dir", str(tmp_path), *SMALL, *map(str, args)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and job.poll() is None:
        if len(rundir.checkpoint_paths(str(tmp_path))) >= 2 and list(tmp_path.glob("ckpt_*.tmp")):
            # kill -9 the launcher and both ranks (torchrun starts them in sessions of their own) mid-save
            for proc in psutil.process_iter(["cmdline"]):
                if str(tmp_path) in " ".join(proc.info["cmdline"] or []):
                    proc.kill()
            break
    job.wait()
    assert job.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-save"
    time.sleep(1)  # the ranks' exit
    partial = list(tmp_path.glob("ckpt_*.tmp"))
    newest = rundir.newest_checkpoint(str(tmp_path))
    assert partial and int(newest[-6:]) < int(partial[0].name[5:11])  # the half-written one is not taken
    step = checkpoint.load_meta(newest)["step"]
    r = train(data, tmp_path, *args, "--resume", "--stop-at", step + 1, nproc=2)
    assert f"at step {step}" in r.stdout and final_state(tmp_path)["step"] == step + 1


def test_fsdp_in_bf16_with_the_modern_recipe_samples_and_hellaswag_resumes_exactly(data, tmp_path):
    # bf16 is what --dtype auto picks on a CPU with bf16 units (and on a GPU); the modern recipe brings Muon's shards;
    # samples and HellaSwag gather the sharded weights (and score on both ranks) between the steps
    write_jsonl(tmp_path / "hellaswag_val.jsonl", make_examples(6, seed=9))
    args = ["--fsdp", "--dtype", "bfloat16", "--recipe", "modern", "--max-steps", 4, "--eval-interval", 2,
            "--hellaswag-interval", 2, "--hellaswag-dir", tmp_path, "--sample-interval", 2, "--num-samples", 1,
            "--sample-tokens", 4, "--checkpoint-interval", 2]
    straight = train(data, tmp_path / "straight", *args, nproc=2)
    assert straight.stdout.count("rank 0 sample 0") == 2 and straight.stdout.count("rank 1 sample 0") == 2
    preempted_copy(tmp_path / "straight", tmp_path / "split", step=2)
    r = train(data, tmp_path / "split", *args, "--resume", nproc=2)
    assert "resuming from" in r.stdout and "at step 2" in r.stdout
    a, b = read_log(tmp_path / "straight"), read_log(tmp_path / "split")
    assert a["train"][3] < a["train"][0] and sorted(a["hella"]) == [0, 2, 4] and a == b
    weights = final_state(tmp_path / "straight")["model"]
    assert all(t.dtype == torch.float32 for t in weights.values())  # the master weights stay fp32
    assert_same_tensors(weights, final_state(tmp_path / "split")["model"])


def test_init_from_a_checkpoint_takes_that_models_batch_and_lr(data, tmp_path):
    train(data, tmp_path / "tiny", "--max-steps", 1, "--eval-interval", 0)
    # no --model, --max-lr or --total-batch-size: the defaults of the tiny preset, not of gpt2 (--model's default)
    r = train(data, tmp_path / "tuned", "--init-from", tmp_path / "tiny", "-B", 8, "-T", 256, "--max-steps", 1,
              "--warmup-steps", 1, "--eval-interval", 0, "--hellaswag-interval", 0, "--sample-interval", 0,
              small=False)
    assert "(tiny)" in r.stdout and "total batch 16,384 tokens = 8 x 256 x 1 ranks x 8 accumulation" in r.stdout
    assert "max lr 0.001 " in r.stdout and "| lr 1.0000e-03 |" in r.stdout
    assert final_state(tmp_path / "tuned")["args"]["max_lr"] == 1e-3


def test_train_in_process_restores_the_signal_handlers(data, tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert tg.main(["--data-dir", data, "--out-dir", str(tmp_path), *SMALL, "--max-steps", "2",
                    "--eval-interval", "2"]) == 0
    assert sorted(read_log(tmp_path)["val"]) == [0, 2]  # a notebook can call main() and keep its own handlers
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_second_job_on_a_live_run_directory_is_refused_until_the_first_dies(data, tmp_path):
    args = ["--data-dir", data, "--out-dir", str(tmp_path), *SMALL, "--max-steps", 500, "--eval-interval", 0,
            "--checkpoint-interval", 1]
    first = subprocess.Popen(command(1) + list(map(str, args)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(rundir.checkpoint_paths(str(tmp_path))) < 1 and time.time() < deadline:
            time.sleep(0.05)
        log_before = (tmp_path / "log.txt").read_text()
        second = subprocess.run(command(1) + list(map(str, args)) + ["--resume"], capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 1 and second.stderr.strip().splitlines() == [
            f"error: another job is training in {tmp_path} (it holds {tmp_path}/.lock); wait for it to end or stop "
            "it, then --resume, or choose another --out-dir"]
        assert (tmp_path / "log.txt").read_text().startswith(log_before)  # only the first job writes
    finally:
        first.kill()  # kill -9: no clean-up of any kind
        first.wait()
    r = train(data, tmp_path, "--max-steps", 500, "--eval-interval", 0, "--resume", "--stop-at",
              final_state(tmp_path)["step"] + 1)
    assert "resuming from" in r.stdout
