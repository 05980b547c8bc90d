"""The benchmark scripts still run and still read what the trainer prints (tiny shapes; speed is not asserted)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import ROOT, TINY_SHAKESPEARE

pytestmark = pytest.mark.slow  # the benchmark scripts in subprocesses


def bench(tmp_path, script, *args):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / script), *map(str, args)], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "BENCH_RESULTS": str(tmp_path)})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def result(tmp_path, name):
    return json.loads((tmp_path / f"{name}.json").read_text())


def test_trainer_speed_reads_the_trainers_step_lines(tmp_path):
    bench(tmp_path, "trainer_speed.py", "--model", "tiny", "-B", 2, "-T", 32, "--total-batch-size", 128,
          "--steps", 4, "--skip", 1, "--device", "cpu", "--label", "chunked", "--", "--loss-chunk-size", 16)
    figures = result(tmp_path, "trainer_speed_cpu_tiny_B2_T32_chunked")
    assert figures["timed_steps"] == 3 and figures["tokens_per_s"] > 0 and figures["achieved_tflops"] > 0
    assert figures["command"].startswith("python") and figures["date"] and figures["torch"]


def test_train_throughput_and_profile(tmp_path):
    bench(tmp_path, "train_throughput.py", "--model", "tiny", "-B", 2, "-T", 32, "--warmup", 1, "--steps", 1,
          "--variants", "lecture,eager,cudnn_attention", "--label", "x")
    figures = result(tmp_path, "train_throughput_cpu_tiny_B2_T32_x")
    assert set(figures["results"]) == {"lecture", "eager"}  # cuDNN attention is cuda only
    assert figures["results"]["eager"]["speedup_vs_lecture"] > 0

    bench(tmp_path, "profile_step.py", "--model", "tiny", "-B", 2, "-T", 32, "--variant", "eager", "--warmup", 1,
          "--steps", 1, "--rows", 5)
    profile = result(tmp_path, "profile_cpu_tiny_B2_T32_eager")
    assert abs(sum(profile["share_by_kind"].values()) - 1) < 1e-3 and profile["share_by_kind"]["matmul"] > 0
    assert len(profile["top"]) == 5 and (tmp_path / "profile_cpu_tiny_B2_T32_eager.txt").read_text()

    r = subprocess.run([sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--variants", "fast"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown variants ['fast']" in r.stderr


def test_lecture_ladder_times_every_rung_and_says_which_do_nothing_here(tmp_path):
    out = tmp_path / "ladder.json"
    r = bench(tmp_path, "lecture_ladder.py", "--model", "tiny", "-B", 2, "-T", 32, "--steps", 2, "--warmup", 1,
              "--device", "cpu", "--out", out)
    ladder = json.loads(out.read_text())
    assert [rung["name"] for rung in ladder["rungs"]] == ["fp32", "tf32", "bf16 autocast", "torch.compile",
                                                           "flash attention", "vocab 50304", "fused AdamW"]
    assert all(rung["ms_per_step"] > 0 and rung["tokens_per_s"] > 0 for rung in ladder["rungs"])
    assert [rung["name"] for rung in ladder["rungs"] if not rung["applies"]] == ["tf32"]  # no tensor cores on a CPU
    assert ladder["device"] and ladder["torch"] and ladder["date"] and "lecture_ladder.py" in ladder["command"]
    assert "n/a here" in r.stdout  # TF32's line in the table


def test_memory_plan_is_within_15_percent_of_the_measured_peak():
    """Against the peak a fresh process reaches in two fp32 training steps of mini (the plan's CPU path)."""
    import train_gpt2 as tg
    from gptkit import memory

    sys.path.insert(0, str(ROOT / "bench"))
    from memory_plan import measure  # noqa: E402  (the bench's own measurement, in a fresh process)

    for model, B, T, chunk in (("mini", 8, 256, 512),):
        planned = memory.plan(tg.preset(model)[0], B, T, bf16=False, loss_chunk_size=chunk)["total"]
        assert 0.85 < planned / measure(model, B, T, chunk) < 1.15, (model, B, T, chunk)


def test_plan_on_the_command_line_with_advice():
    r = subprocess.run([sys.executable, str(ROOT / "train_gpt2.py"), "--model", "gpt3-1.3b", "-B", "16", "--plan"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "1,315.8M parameters, -B 16, T=2048, 8 GPUs, DDP" in r.stdout and "of 80 GiB" in r.stdout
    assert "will not fit: try a lower -B" in r.stdout and "--fsdp" in r.stdout
    r = subprocess.run([sys.executable, str(ROOT / "train_gpt2.py"), "--model", "gpt3-2.7b", "-B", "8", "--fsdp",
                        "--activation-checkpointing", "--plan"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "will not fit" not in r.stdout and "gathered 16-bit weights" in r.stdout


def test_checkpoint_speed_under_torchrun(tmp_path):
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(ROOT / "bench" / "checkpoint_speed.py"), "--model", "tiny", "--dir", str(tmp_path / "w")],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "BENCH_RESULTS": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    figures = result(tmp_path, "checkpoint_speed_cpu_tiny_2ranks")
    assert all(figures[k] > 0 for k in ("sharded_save_s", "sharded_load_s", "gathered_save_s", "gathered_load_s"))
    assert sorted(os.listdir(tmp_path / "w")) == ["ckpt_000001.pt", "ckpt_000002"]


def test_recipe_race_reports_tokens_to_the_lecture_target_and_plots(data, tmp_path):
    bench(tmp_path, "recipe_race.py", "--data-dir", data, "--work-dir", tmp_path / "runs", "-B", 2, "-T", 32,
          "--total-batch-size", 64, "--steps", 4, "--warmup-steps", 1, "--eval-every", 2, "--eval-steps", 1,
          "--rounds", 2)
    race = result(tmp_path, "recipe_race_tiny_ts_0k")
    assert set(race["runs"]) == {"lecture", "modern", "modern_half"}
    assert list(race["curves"]["lecture"]) == ["0", "128", "256"] and list(race["curves"]["modern_half"]) == ["0", "128"]
    assert race["target_val_loss"] == race["curves"]["lecture"]["256"] == race["runs"]["lecture"]["final_val_loss"]
    for name, run in race["runs"].items():  # between the last evaluation above the target and the first at or below
        points = [(int(t), loss) for t, loss in race["curves"][name].items()]
        first = next((i for i, (_, loss) in enumerate(points) if loss <= race["target_val_loss"]), None)
        if first is None:
            assert run["tokens_to_target"] is None
        else:
            assert points[max(first - 1, 0)][0] <= run["tokens_to_target"] <= points[first][0]
    assert race["runs"]["lecture"]["seconds_to_target"] > 0
    each = race["runs"]["modern"]["seconds_per_step_each_round"]  # trained twice, the same curve; the median time
    assert len(each) == 2 and race["runs"]["modern"]["seconds_per_step"] == pytest.approx(sum(each) / 2, abs=1e-3)
    assert "--recipe modern" in race["runs"]["modern"]["flags"] and race["runs"]["modern_half"]["budget_tokens"] == 128
    assert (tmp_path / "recipe_race_tiny_ts_0k.png").stat().st_size > 10_000


def test_optimizer_step_times_adamw_and_muon(tmp_path):
    bench(tmp_path, "optimizer_step.py", "--models", "tiny", "--steps", 1, "--device", "cpu")
    figures = result(tmp_path, "optimizer_step_cpu")["models"]["tiny"]
    assert figures["adamw_ms"] > 0 and figures["muon_adamw_ms"] > 0 and figures["gram_128x512_bfloat16_ms"] > 0


def test_lecture_stages_reads_the_stages_step_lines(tmp_path):
    bench(tmp_path, "lecture_stages.py", "--stages", 5, 7, "--stage-args",
          "--n-layer 2 --n-head 2 --n-embd 64 --num-samples 1 --max-length 10 --steps 3")
    figures = result(tmp_path, "lecture_stages_cpu")
    for n in (5, 7):
        assert figures[f"stage_{n}"]["steps"] == 3 and figures[f"stage_{n}"]["ms_per_step"] > 0
        assert figures[f"stage_{n}"]["printed"][-1].endswith(" parameters")


def test_cpu_limits_measures_the_limits_and_runs_sampling_and_the_quick_start_before_and_now(tmp_path):
    bench(tmp_path, "cpu_limits.py", "--matmul-size", 256, "--repeats", 2, "--models", "tiny", "-B", 2, "-T", 32,
          "--steps", 1, "--sample-model", "tiny", "--sample-tokens", 4, "--sample-rounds", 1, "--quickstart-steps", 2,
          "--before", "HEAD")
    figures = result(tmp_path, "cpu_limits")
    assert figures["limits"]["matmul_gflops"]["bfloat16"] > 0 and figures["limits"]["read_gbs"] > 0
    assert 0 < figures["train_step"]["tiny"]["float32"]["fraction_of_peak"]
    sampling = figures["sampling"]
    assert sampling["now"]["bfloat16"]["weight_mb"] < sampling["now"]["float32"]["weight_mb"]
    assert sampling["before_HEAD"]["float32"]["tokens_per_s"] > 0 and sampling["float32_greedy_tokens_as_before"]
    assert sampling["now"]["bfloat16_top_k_50"]["tokens_per_s"] > 0
    runs = figures["quickstart"]
    assert set(runs) == {"steps", "before_HEAD", "now", "now_float32", "now_loss_chunk", "lecture_stage_15"}
    assert runs["now"][0]["final_val_loss"] > 0 and runs["lecture_stage_15"][0]["final_val_loss"] > 0
    assert not (ROOT / ".git" / "worktrees").exists() or not os.listdir(ROOT / ".git" / "worktrees")  # removed


def test_the_gpu_check_runs_all_its_parts_on_a_cpu_and_returns_few_enough_files(tmp_path):
    """bench/gpu_check.sh's one call, as a dry run on tiny shapes without compile, in a scratch copy of the checkout
    with its .device/ made by hand (prepare would download wheels): every part ends well and writes its file, and
    they are few enough for the device tool to bring back (8 files at most, the call's own log among them)."""
    scratch = tmp_path / "checkout"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, scratch / name)
    shutil.copytree(os.environ["TIKTOKEN_CACHE_DIR"], scratch / ".device" / "tiktoken_cache")  # conftest sets it
    (scratch / ".device" / "data").mkdir()
    shutil.copy(TINY_SHAKESPEARE, scratch / ".device" / "data" / "tinyshakespeare.txt")
    out = tmp_path / "out"
    shapes = dict(DEVICE="cpu", MODEL="tiny", T="32", TRAIN_B="2", B_TOP="2", LADDER_B="2", STEPS="4", COMPILE="0")
    r = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=scratch, capture_output=True, text=True, timeout=600,
                       env={**os.environ, **shapes, "PY": sys.executable, "OUT": str(out), "WORK": str(tmp_path / "w")})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    parts = json.loads((out / "gpu_check_parts.json").read_text())["parts"]
    assert [(p["part"], p["rc"]) for p in parts] == [(p, 0) for p in ("device", "train", "step", "modern", "compiled",
                                                                       "ladder")], \
        r.stdout[-3000:] + r.stderr[-3000:]
    device = (out / "gpu_check_device.txt").read_text()  # tests/test_cuda.py, without a GPU: skipped, in two parts
    assert device.count("skipped") == 2 and "##### the CUDA tests that compile" in device
    train = json.loads((out / "gpu_check_train.json").read_text())
    assert train["resumed_from_step"] == 2 and train["last_step"] == 3 and train["resume_matches"]
    assert train["device"].endswith("threads") and train["torch"] and "--model tiny" in train["command"]
    assert train["straight"]["samples"] > 0 and len(train["straight"]["hellaswag"]) == 3
    step = result(out, "train_throughput_cpu_tiny_B2_T32_step")["results"]
    assert set(step) == {"eager", "lecture"} and step["lecture"]["speedup_vs_eager"] > 0
    modern = result(out, "train_throughput_cpu_tiny_B2_T32_modern")["results"]
    assert modern["modern_eager"]["speedup_vs_eager"] > 0
    assert [rung["name"] for rung in result(out, "lecture_ladder_cpu_tiny_B2_T32")["rungs"]] == [
        "fp32", "tf32", "bf16 autocast"]
    assert len(os.listdir(out)) <= 7
