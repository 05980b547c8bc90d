"""The CPU path against this machine's own limits, measured in one run: the limits (a large matmul in fp32 and in
bf16, a large memory read), then what learners run, each as a fraction of the limit that bounds it (the quick
starts run first, while this process is still small):
  - a training step (forward, backward, AdamW) of the mini preset (6 x 384) and of gpt2: achieved FLOP/s against
    the matmul peak of its dtype, with glibc's malloc set as the trainer sets it;
  - sampling with the KV cache (gpt2 shape), greedy and top-k 50 (sample.py's default), the weights in fp32 and
    in bf16 (sample.py --dtype): tokens/s against the memory bound (each decode step reads every weight once),
    and (--before REV) the same by the code of an earlier commit, whose fp32 greedy tokens must be today's;
  - the quick start (`train_gpt2.py --quickstart`) as it is, with --dtype float32, with the loss in one chunk
    (--loss-chunk-size B*T), (--before REV) as it was at
    an earlier commit, and the lecture's own code (stage 15) on the same settings, side by side: wall, user and
    kernel time, peak memory and the final val loss.

    python bench/cpu_limits.py --before 01190b4       # -> bench/results/cpu_limits.json
    python bench/cpu_limits.py --skip-quickstart --steps 3
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import train_gpt2 as tg  # noqa: E402
from gptkit import cpu, flops, memory  # noqa: E402
from gptkit.cli import HelpFormatter  # noqa: E402
from gptkit.tokenizer import GPT2_VOCAB_SIZE  # noqa: E402
from common import save_result  # noqa: E402
from train_throughput import measure  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def best_seconds(fn, repeats):
    """The fastest of `repeats` timed calls after two untimed ones: a limit is what the machine can do at best (on
    a shared machine the median of even a large matmul moved by half between runs)."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_gflops(n, dtype, repeats):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / best_seconds(lambda: a @ b, repeats) / 1e9


def read_gbs(gib, repeats):
    """GB/s of summing a gib-GiB fp32 tensor: every byte read once, from memory (it is far larger than the caches)."""
    x = torch.ones(gib * 2**28)
    return x.numel() * 4 / best_seconds(x.sum, repeats) / 1e9


def train_step_figures(model_name, B, T, dtype, steps, peaks):
    """Median step time of a preset on random tokens, as tokens/s and as a share of the dtype's matmul peak."""
    torch.manual_seed(0)
    model = tg.GPT(tg.preset(model_name)[0])
    optimizer = model.configure_optimizers(0.1, 1e-3, "cpu")
    x, y = torch.randint(0, GPT2_VOCAB_SIZE, (2, B, T))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            _, loss = model(x, y)
        loss.backward()
        optimizer.step()

    seconds, _, _ = measure(step, "cpu", 2, steps)  # the heap settles in the first steps
    achieved = flops.flops_per_token(model.config, T) * B * T / seconds / 1e9
    return {"ms_per_step": round(seconds * 1000), "tokens_per_s": round(B * T / seconds),
            "gflops": round(achieved, 1), "fraction_of_peak": round(achieved / peaks[dtype], 3)}


# run in a child process inside a checkout (this one or --before's), so that each is timed with its own code; one
# child times every variant (dtype:top_k, top_k 0 greedy), each on a model of its own, and prints them in order
SAMPLING_CHILD = """
import json, sys, time, torch
sys.path.insert(0, ".")
import train_gpt2 as tg
from gptkit.tokenizer import GPT2_VOCAB_SIZE
name, batch, new_tokens, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), []
for variant in sys.argv[4:]:
    dtype, top_k = getattr(torch, variant.split(":")[0]), int(variant.split(":")[1])
    torch.manual_seed(0)
    model = tg.GPT(tg.preset(name, vocab_size=GPT2_VOCAB_SIZE)[0]).to(dtype).eval()
    prompts = torch.randint(0, GPT2_VOCAB_SIZE, (batch, 8)).tolist()
    how = dict(temperature=0) if top_k == 0 else dict(top_k=top_k, generator=torch.Generator().manual_seed(0))
    model.generate(prompts, 4, **how)  # warm-up
    t0 = time.perf_counter()
    tokens = model.generate(prompts, new_tokens, **how)
    runs.append({"seconds": time.perf_counter() - t0, "tokens": tokens})
print(json.dumps(runs))
"""


# how each sampling variant draws its tokens: top_k 0 is greedy
SAMPLING_MODES = {"": 0, "_top_k_50": 50}


def sampling_runs(checkout, model_name, batch, new_tokens, variants):
    """KV-cache decoding of random prompts (random weights in each variant's dtype), greedy or top-k (a seeded
    generator), by the code in checkout, every (dtype, top_k) variant in one child: {variant: {seconds, tokens}}."""
    r = subprocess.run([sys.executable, "-c", SAMPLING_CHILD, model_name, str(batch), str(new_tokens),
                        *(f"{dtype}:{top_k}" for dtype, top_k in variants)], cwd=checkout, capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise SystemExit(f"error: sampling failed in {checkout}:\n{r.stderr[-2000:]}")
    return dict(zip(variants, json.loads(r.stdout.splitlines()[-1])))


def sampling_figures(runs, model_name, batch, new_tokens, read_limit_gbs, dtype):
    """tokens/s (the median run) against the memory bound: one read of every weight per decode step."""
    seconds = sorted(run["seconds"] for run in runs)[len(runs) // 2]
    weight_bytes = memory.parameter_count(tg.preset(model_name, vocab_size=GPT2_VOCAB_SIZE)[0]) * DTYPES[dtype].itemsize
    bound = batch * read_limit_gbs * 1e9 / weight_bytes
    tokens_per_s = batch * new_tokens / seconds
    return {"tokens_per_s": round(tokens_per_s, 1), "bound_tokens_per_s": round(bound, 1),
            "fraction_of_bound": round(tokens_per_s / bound, 3), "weight_mb": weight_bytes // 2**20}


# the quick start's settings (gptkit/settings.py QUICKSTART, the tiny preset) in the flags of the lecture's own
# code, stage 15 (stages/), with its CPU defaults: fp32, AdamW unfused, glibc's malloc as it comes
LECTURE_QUICKSTART = ["--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--data-dir", "data/tinyshakespeare",
                      "-B", "8", "-T", "256", "--total-batch-size", "2048", "--warmup-steps", "10", "--max-lr", "1e-3",
                      "--eval-interval", "25", "--eval-steps", "4", "--hellaswag-interval", "0", "--sample-interval",
                      "50", "--num-samples", "2", "--max-length", "48", "--checkpoint-interval", "50"]


def quickstart_command(checkout, steps, out_dir, flags):
    """The quick start of checkout's train_gpt2.py, or with checkout None the lecture's (stage 15) on its settings."""
    if checkout is None:
        return [sys.executable, os.path.join("stages", "out", "15", "train_gpt2.py"), *LECTURE_QUICKSTART,
                "--steps", str(steps), "--log-dir", out_dir]
    return [sys.executable, "train_gpt2.py", "--quickstart", "--max-steps", str(steps), "--out-dir", out_dir, *flags]


def quickstart_figures(checkout, steps, out_dir, flags=()):
    """One quick start (quickstart_command) in a child process: wall, user and kernel seconds, peak memory (MiB)
    and its last val loss. Its shards are made beforehand, untimed (prepare_shards)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(quickstart_command(checkout, steps, out_dir, flags), cwd=checkout or ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT})  # stage 15 imports hellaswag.py
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"error: the quick start failed:\n{output[-2000:]}")
    val = re.findall(r"val loss ([\d.]+)", output)
    return {"wall_s": round(time.perf_counter() - t0, 1), "user_s": round(usage.ru_utime, 1),
            "kernel_s": round(usage.ru_stime, 1), "peak_mib": usage.ru_maxrss // 1024,
            "final_val_loss": float(val[-1])}


def prepare_shards(checkout):
    """The checkout's quick-start shards (data/tinyshakespeare, from its input.txt), by its own fineweb.py."""
    subprocess.run([sys.executable, "fineweb.py", "--dataset", "tinyshakespeare"], cwd=checkout, check=True,
                   stdout=subprocess.DEVNULL)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n x n matmuls")
    parser.add_argument("--read-gib", type=int, default=1, help="GiB summed for the memory read")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats of each limit (the fastest counts)")
    parser.add_argument("--models", nargs="+", default=["mini", "gpt2"], help="presets of the training step")
    parser.add_argument("-B", "--batch-size", type=int, default=8, help="training step: sequences")
    parser.add_argument("-T", "--seq-len", type=int, default=256, help="training step: tokens per sequence")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per dtype (the median counts)")
    parser.add_argument("--sample-model", default="gpt2", help="preset sampled from (random weights)")
    parser.add_argument("--sample-batch", type=int, default=4, help="sequences sampled together")
    parser.add_argument("--sample-tokens", type=int, default=100, help="new tokens per sequence")
    parser.add_argument("--sample-rounds", type=int, default=3,
                        help="runs of each sampling variant (the median counts)")
    parser.add_argument("--quickstart-steps", type=int, default=100, help="steps of each quick start (its own: 100)")
    parser.add_argument("--before", metavar="REV", help="also time sampling and the quick start of this commit (a git "
                                                        "worktree)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of quick starts, the variants alternating")
    parser.add_argument("--skip-quickstart", action="store_true", help="leave the quick starts out")
    parser.add_argument("--out", help="JSON to write (default: bench/results/cpu_limits.json)")
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        checkouts = {"now": ROOT}
        if args.before:
            checkouts = {f"before_{args.before}": os.path.join(tmp, "before"), **checkouts}
            subprocess.run(["git", "worktree", "add", "--detach", checkouts[f"before_{args.before}"], args.before],
                           cwd=ROOT, check=True)
        try:
            if not args.skip_quickstart:  # first, while this process is small: a child's peak memory includes ours
                figures["quickstart"] = quickstart_side_by_side(checkouts, args, tmp)
            cpu.keep_freed_memory()  # as train_gpt2.main does: no page faults for the buffers a step frees
            peaks = {name: matmul_gflops(args.matmul_size, dtype, args.repeats) for name, dtype in DTYPES.items()}
            read = read_gbs(args.read_gib, args.repeats)
            figures["limits"] = {"matmul_gflops": {k: round(v, 1) for k, v in peaks.items()},
                                 "read_gbs": round(read, 1), "matmul_size": args.matmul_size}
            print(figures["limits"], flush=True)
            figures["train_step"] = {"B": args.batch_size, "T": args.seq_len, **{
                model: {dtype: train_step_figures(model, args.batch_size, args.seq_len, dtype, args.steps, peaks)
                        for dtype in DTYPES} for model in args.models}}
            print(figures["train_step"], flush=True)
            figures["sampling"] = sampling_side_by_side(checkouts, args, read)
            print(figures["sampling"], flush=True)
        finally:
            if args.before:
                subprocess.run(["git", "worktree", "remove", "--force", checkouts[f"before_{args.before}"]], cwd=ROOT,
                               check=True)
    save_result("cpu_limits", "cpu", figures, args.out)


def sampling_side_by_side(checkouts, args, read):
    """Every checkout's sampling in both dtypes, greedy and top-k 50, --sample-rounds times, the checkouts
    alternating; whether fp32 greedy tokens agree."""
    variants = [(dtype, top_k) for dtype in DTYPES for top_k in SAMPLING_MODES.values()]
    runs = {name: [] for name in checkouts}
    for _ in range(args.sample_rounds):
        for name, checkout in checkouts.items():
            runs[name].append(sampling_runs(checkout, args.sample_model, args.sample_batch, args.sample_tokens,
                                            variants))
    figures = {"model": args.sample_model, "batch": args.sample_batch, "new_tokens": args.sample_tokens}
    for name in checkouts:
        figures[name] = {dtype + mode: sampling_figures([run[dtype, top_k] for run in runs[name]], args.sample_model,
                                                        args.sample_batch, args.sample_tokens, read, dtype)
                         for dtype in DTYPES for mode, top_k in SAMPLING_MODES.items()}
    if args.before:
        figures["float32_greedy_tokens_as_before"] = (runs[f"before_{args.before}"][0]["float32", 0]["tokens"]
                                                      == runs["now"][0]["float32", 0]["tokens"])
    return figures


def quickstart_side_by_side(checkouts, args, tmp):
    """The quick start of every checkout, this one's with --dtype float32, and the lecture's code on its settings,
    --rounds times, alternating."""
    variants = {name: (checkout, []) for name, checkout in checkouts.items()}
    variants["now_float32"] = (ROOT, ["--dtype", "float32"])
    variants["now_loss_chunk"] = (ROOT, ["--loss-chunk-size", "2048"])  # the quick start's B*T
    variants["lecture_stage_15"] = (None, [])
    for checkout in checkouts.values():
        prepare_shards(checkout)
    subprocess.run([sys.executable, os.path.join("stages", "stage.py"), "15"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)  # writes stages/out/15/train_gpt2.py
    runs = {name: [] for name in variants}
    for i in range(args.rounds):
        for name, (checkout, flags) in variants.items():
            runs[name].append(quickstart_figures(checkout, args.quickstart_steps, os.path.join(tmp, f"{name}{i}"),
                                                 flags))
            print(name, runs[name][-1], flush=True)
    return {"steps": args.quickstart_steps, **runs}


if __name__ == "__main__":
    main()
