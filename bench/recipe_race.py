"""The lecture's recipe against the modern one (gptkit/modern.py), trained by train_gpt2.py on the same shards with
the same seed, and each modern change on its own against the lecture: val loss against tokens seen, the tokens
each run needs to reach the lecture's final val loss, and a PNG of the curves.

    python bench/recipe_race.py                                  # CPU: tiny on Tiny Shakespeare, lecture vs modern
    python bench/recipe_race.py --ablation                       # ... and every change on its own
    python bench/recipe_race.py --model gpt2 --data-dir edu_fineweb10B -B 64 -T 1024 --total-batch-size 524288 \\
        --steps 1600 --warmup-steps 100 --eval-every 100 --eval-steps 20 --target 3.28 --nproc 8 \\
        --extra-flags=--compile                                 # 8 GPUs: tokens to 3.28

Tokens to the target are read off each run's own curve (linearly between evaluations), one run per recipe: a run
that crosses the target halfway through its schedule would get there at least as soon with a schedule of half
the length, so the ratio is conservative for the faster recipe. The modern recipe is also trained once more with
half the budget and its own (shorter) schedule: "modern_half", whose final val loss answers the question directly.
Seconds are wall time per step, evaluations and start-up included; on a shared machine, --rounds N trains the
lecture and the modern recipe N times each, taking turns, and takes each one's median (the curves must repeat).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fineweb  # noqa: E402
from gptkit.cli import HelpFormatter, positive_int  # noqa: E402
from gptkit.hardware import autodetect_device  # noqa: E402
from common import RESULTS, save_result  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# each modern change on its own, as the trainer's flags
CHANGES = {
    "rotary": ["--rotary"], "qk_norm": ["--qk-norm"], "relu2": ["--relu2"], "rmsnorm": ["--rmsnorm"],
    "untied_head": ["--untied-head"], "zero_init": ["--zero-init"], "softcap": ["--softcap", "15"],
    "muon": ["--muon"], "wsd": ["--schedule", "wsd"],
}


def run_recipe(name, flags, steps, args):
    """Train one variant for steps; returns its val losses {tokens: loss} and seconds per step."""
    out = os.path.join(args.work_dir, name)
    if os.path.isdir(out):
        for f in os.listdir(out):  # a fresh run every time: the trainer refuses a directory with checkpoints
            os.remove(os.path.join(out, f))
    launcher = [sys.executable] if args.nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}"]
    command = [*launcher, os.path.join(ROOT, "train_gpt2.py"), "--model", args.model, "--data-dir",
               args.data_dir, "--out-dir", out, "-B", str(args.batch_size), "-T", str(args.seq_len),
               "--total-batch-size", str(args.total_batch_size), "--max-steps", str(steps),
               "--warmup-steps", str(args.warmup_steps), "--eval-interval", str(args.eval_every),
               "--eval-steps", str(args.eval_steps), "--hellaswag-interval", "0", "--sample-interval", "0",
               "--checkpoint-interval", "0", "--keep-checkpoints", "1", "--seed", str(args.seed),
               *args.extra_flags.split(), *flags]
    print(f"{name}: {' '.join(flags) or '(the lecture)'}", flush=True)
    start = time.time()
    r = subprocess.run(command, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{name} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    seconds = (time.time() - start) / steps
    val = {}
    with open(os.path.join(out, "log.txt")) as f:
        for line in f:
            step, kind, value = line.split()
            if kind == "val":
                val[int(step) * args.total_batch_size] = float(value)
    print(f"  final val loss {val[max(val)]:.4f}, {seconds:.2f}s a step", flush=True)
    return val, seconds


def tokens_to_reach(curve, target):
    """The tokens at which a val-loss curve {tokens: loss} first reaches target, linearly between evaluations;
    None if it never does."""
    points = sorted(curve.items())
    for (t0, l0), (t1, l1) in zip(points, points[1:]):
        if l1 <= target:
            return t0 + (t1 - t0) * (l0 - target) / (l0 - l1) if l0 > target else t0
    return None


def plot(curves, target, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, curve in curves.items():
        tokens = sorted(curve)
        main = name in ("lecture", "modern")
        ax.plot([t / 1e6 for t in tokens], [curve[t] for t in tokens], label=name,
                linewidth=2.5 if main else 1, alpha=1 if main else 0.7)
    ax.axhline(target, color="gray", linestyle="--", linewidth=1, label=f"target {target:.3f}")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("val loss")
    ax.set_ylim(top=min(max(c[t] for c in curves.values() for t in c if t > 0), target + 3))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--model", default="tiny", help="train_gpt2.py preset")
    p.add_argument("--data-dir", default=os.path.join(ROOT, "data", "tinyshakespeare"),
                   help="token shards (Tiny Shakespeare's are made from input.txt when missing)")
    p.add_argument("--work-dir", default=os.path.join(ROOT, "runs", "recipe_race"), help="where the runs go")
    p.add_argument("-B", "--batch-size", type=int, default=8, help="micro-batch")
    p.add_argument("-T", "--seq-len", type=int, default=256, help="sequence length")
    p.add_argument("--total-batch-size", type=int, default=2048, help="tokens per step")
    p.add_argument("--steps", type=int, default=240, help="the token budget, in steps")
    p.add_argument("--warmup-steps", type=int, default=20, help="LR warmup, both recipes")
    p.add_argument("--eval-every", type=int, default=20, help="steps between val losses")
    p.add_argument("--eval-steps", type=int, default=6, help="val micro-batches per val loss")
    p.add_argument("--nproc", type=int, default=1, help="GPUs per run, launched with torchrun when more than 1")
    p.add_argument("--extra-flags", default="", help="more train_gpt2.py flags for every run (--compile, ...)")
    p.add_argument("--seed", type=int, default=1337, help="the same initial weights and data order for all")
    p.add_argument("--target", type=float, help="val loss to reach (default: the lecture recipe's final one)")
    p.add_argument("--ablation", action="store_true", help="also train each modern change on its own")
    p.add_argument("--modern-flags", default="", help="extra train_gpt2.py flags for the modern run (tuning)")
    p.add_argument("--rounds", type=positive_int, default=1,
                   help="train the lecture and the modern recipe this many times each, taking turns, for their "
                        "median seconds per step")
    p.add_argument("--out", help="JSON to write, the PNG beside it (default: bench/results/recipe_race_<model>_<data>_"
                                 "<budget>k.json)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.data_dir):
        fineweb.main(["--dataset", "tinyshakespeare", "--out", args.data_dir])

    modern = ["--recipe", "modern", *args.modern_flags.split()]
    variants = {"lecture": ([], args.steps), "modern": (modern, args.steps),
                "modern_half": (modern, args.steps // 2)}
    if args.ablation:
        variants.update({name: (flags, args.steps) for name, flags in CHANGES.items()})
    curves, seconds = {}, {}
    timed = {name: [] for name in ("lecture", "modern")}
    for name, (flags, steps) in variants.items():
        curves[name], seconds[name] = run_recipe(name, flags, steps, args)
        if name in timed:
            timed[name].append(seconds[name])
    for _ in range(args.rounds - 1):  # the same runs again, in turns, for their time only
        for name in timed:
            curve, s = run_recipe(name, *variants[name], args)
            if curve != curves[name]:
                raise SystemExit(f"error: {name} did not repeat its val losses ({curve} against {curves[name]}): "
                                 "the rounds would time different runs")
            timed[name].append(s)
    seconds.update({name: statistics.median(times) for name, times in timed.items()})
    target = args.target or curves["lecture"][max(curves["lecture"])]
    reach = {name: tokens_to_reach(curve, target) for name, curve in curves.items()}
    budget = args.steps * args.total_batch_size
    rows = {name: {"final_val_loss": curves[name][max(curves[name])], "tokens_to_target": reach[name],
                   "share_of_budget": reach[name] / budget if reach[name] else None,
                   "seconds_per_step": round(seconds[name], 3), "flags": " ".join(variants[name][0]),
                   "seconds_per_step_each_round": [round(t, 3) for t in timed.get(name, [seconds[name]])],
                   # wall time to the target at this run's average step time (evaluations included)
                   "seconds_to_target": round(reach[name] / args.total_batch_size * seconds[name], 1)
                   if reach[name] else None,
                   "budget_tokens": variants[name][1] * args.total_batch_size}
            for name in curves}
    for name, row in rows.items():
        share = f"{row['share_of_budget']:.2f}" if row["share_of_budget"] else "not reached"
        print(f"{name:12s} final val {row['final_val_loss']:.4f} | tokens to {target:.4f}: {share} of the budget, "
              f"{row['seconds_to_target']} s | {row['seconds_per_step']} s a step")
    tag = f"{args.model}_{os.path.basename(os.path.normpath(args.data_dir))}_{budget // 1000}k"
    out = args.out or os.path.join(RESULTS, f"recipe_race_{tag}.json")
    png = os.path.splitext(out)[0] + ".png"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    plot(curves, target, png)
    save_result(f"recipe_race_{tag}", autodetect_device(), {
        "model": args.model, "data": args.data_dir, "budget_tokens": budget, "target_val_loss": target,
        "modern_over_lecture_tokens": (reach["modern"] / reach["lecture"]) if reach["modern"] else None,
        "modern_half_reaches_target": rows["modern_half"]["final_val_loss"] <= target,
        "modern_over_lecture_seconds": (rows["modern"]["seconds_to_target"] / rows["lecture"]["seconds_to_target"])
        if reach["modern"] and reach["lecture"] else None,
        "runs": rows, "curves": {name: {str(t): v for t, v in sorted(c.items())} for name, c in curves.items()},
        "plot": os.path.relpath(png, ROOT)}, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
