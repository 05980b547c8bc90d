"""
Plot training runs from their log.txt: train and val loss, and HellaSwag accuracy, against reference lines.
Writes a PNG, so a run on a headless server can be looked at without Jupyter.

    python plot.py log/                       # -> log/plot.png
    python plot.py runs/a runs/b -o cmp.png   # several runs on the same axes
    python plot.py                            # the newest run under runs/ (the quick start's) or log/
"""

import argparse
import json
import os
import sys

from gptkit.cli import HelpFormatter

# OpenAI GPT-2 124M's loss on the FineWeb-Edu val shard (the lecture's figure): a reference for runs on those shards only
GPT2_124M_VAL_LOSS = 3.2924
FINEWEB_EDU_PREFIX = "edufineweb"
# HellaSwag acc_norm by model size: GPT-2 (measured the lecture's way) and GPT-3 (zero-shot, from its paper)
HELLASWAG_REFERENCES = {  # n_params bucket: ((GPT-2 name, acc), (GPT-3 name, acc))
    124e6: (("GPT-2 124M", 0.2945), ("GPT-3 125M", 0.337)),
    350e6: (("GPT-2 350M", 0.3752), ("GPT-3 350M", 0.436)),
    774e6: (("GPT-2 774M", 0.4320), ("GPT-3 760M", 0.510)),
    1558e6: (("GPT-2 1558M", 0.4889), ("GPT-3 1.3B", 0.547)),
}
KINDS = ("train", "val", "hella")
RUN_ROOTS = ("runs", "log")  # where the trainer's runs are: runs/quickstart, runs/finetune; log (the lecture's)


def newest_run(roots=RUN_ROOTS):
    """The run directory whose log.txt was written last: a root itself (log/) or a folder in it (runs/quickstart)."""
    logs = [os.path.join(d, "log.txt") for root in roots if os.path.isdir(root)
            for d in (root, *sorted(os.path.join(root, name) for name in os.listdir(root)))]
    logs = [log for log in logs if os.path.isfile(log)]
    if not logs:
        raise FileNotFoundError(f"no run found in {' or '.join(r + '/' for r in roots)} of {os.getcwd()}: train one "
                                "first (python train_gpt2.py --quickstart), or name the run directory")
    return os.path.dirname(max(logs, key=os.path.getmtime))


def read_log(path):
    """{'train': {step: loss}, 'val': {...}, 'hella': {...}} from a log.txt (or the run directory holding it).
    A step written twice (a resumed run) keeps its later value; a line that is cut short or garbled (the run is
    still writing, or died mid-line) is skipped; a series the run never wrote is an empty dict."""
    if os.path.isdir(path):
        path = os.path.join(path, "log.txt")
    series = {kind: {} for kind in KINDS}
    with open(path) as f:
        lines = f.read().split("\n")[:-1]  # the text after the last newline is a line still being written
    for line in lines:
        parts = line.split()
        if len(parts) != 3 or parts[1] not in series:
            continue
        try:
            step, value = int(parts[0]), float(parts[2])
        except ValueError:
            continue
        series[parts[1]][step] = value
    return series


def references_for(n_params):
    """The HellaSwag reference lines for the size closest to n_params (124M when unknown)."""
    if n_params is None:
        return HELLASWAG_REFERENCES[124e6]
    return HELLASWAG_REFERENCES[min(HELLASWAG_REFERENCES, key=lambda size: abs(size - n_params) / size)]


def run_info(run_dir):
    """What the trainer wrote in run.json (the corpus, the model size, the settings); {} for an older run."""
    path = os.path.join(run_dir, "run.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def run_size(run_dir):
    """Parameter count of a run's model: from run.json, else its newest checkpoint (a tied matrix counted once)."""
    if "n_params" in run_info(run_dir):
        return run_info(run_dir)["n_params"]
    from gptkit import checkpoint, rundir

    ckpts = rundir.checkpoint_paths(run_dir)
    if not ckpts:
        return None
    tensors = checkpoint.load_checkpoint(ckpts[-1])["model"].values()
    return sum({t.untyped_storage().data_ptr(): t.numel() for t in tensors}.values())


def plain_log_ticks(ax):
    """Tick labels like 3, 4, 6 instead of 3x10^0 on a log-scale y axis."""
    from matplotlib.ticker import FormatStrFormatter

    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))


def plot_runs(run_dirs, out_png=None, n_params=None):
    """Train/val loss on a log scale, with OpenAI GPT-2 124M's val loss where the runs trained on FineWeb-Edu
    (on any other corpus that number says nothing, and a note says so), and HellaSwag with the GPT-2 and GPT-3
    lines for the model size (from the first run unless n_params is given), when a run logged any.
    Writes out_png if given; returns the matplotlib Figure (its lines carry exactly the logged series)."""
    from matplotlib.figure import Figure

    series = {run: read_log(run) for run in run_dirs}
    with_hella = any(s["hella"] for s in series.values())
    fig = Figure(figsize=(14 if with_hella else 8, 5), layout="constrained")
    axes = fig.subplots(1, 2 if with_hella else 1, squeeze=False)[0]
    loss_ax = axes[0]
    for run, logged in series.items():
        name = os.path.basename(os.path.normpath(run))
        for kind, ax in (("train", loss_ax), ("val", loss_ax), ("hella", axes[-1])):
            if logged[kind]:
                steps = sorted(logged[kind])
                ax.plot(steps, [logged[kind][s] for s in steps], label=f"{name} {kind}", alpha=0.8,
                        marker=None if kind == "train" else "o", markersize=3)
    corpora = sorted({run_info(run).get("corpus", "an unknown corpus") for run in run_dirs})
    if corpora == [FINEWEB_EDU_PREFIX]:
        loss_ax.axhline(GPT2_124M_VAL_LOSS, color="red", linestyle="--",
                        label=f"OpenAI GPT-2 124M val ({GPT2_124M_VAL_LOSS})")
        loss_ax.set_title("loss")
    else:
        loss_ax.set_title(f"loss (no GPT-2 line: its {GPT2_124M_VAL_LOSS} is a FineWeb-Edu val loss; "
                          f"data here: {', '.join(corpora)})", fontsize=10)
    loss_ax.set(yscale="log", xlabel="step", ylabel="loss")
    plain_log_ticks(loss_ax)
    if with_hella:
        hella_ax = axes[1]
        if n_params is None and run_dirs:
            n_params = run_size(run_dirs[0])
        for (label, acc), color in zip(references_for(n_params), ("red", "green")):
            hella_ax.axhline(acc, color=color, linestyle="--", label=f"{label} ({acc})")
        hella_ax.axhline(0.25, color="gray", linestyle=":", label="chance (0.25): 1 of 4 endings")
        hella_ax.set(xlabel="step", ylabel="acc_norm", title="HellaSwag")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    if out_png:
        fig.savefig(out_png, dpi=100)
    return fig


def summarize(run_dir):
    """One line: the lowest train and val loss and the best HellaSwag, with their steps."""
    series = read_log(run_dir)
    parts = [os.path.normpath(run_dir)]
    for kind, best, label in (("train", min, "min train loss"), ("val", min, "min val loss"),
                              ("hella", max, "max HellaSwag")):
        if series[kind]:
            step = best(series[kind], key=series[kind].get)
            parts.append(f"{label} {series[kind][step]:.4f} (step {step})")
    return " | ".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("runs", nargs="*", help="run directories (or their log.txt files); default: the newest run "
                                                "under runs/ or log/")
    parser.add_argument("-o", "--out", help="PNG to write (default: plot.png in the first run directory)")
    parser.add_argument("--n-params", type=float, help="model size for the HellaSwag reference lines "
                                                       "(default: from the run's checkpoint, else 124M)")
    args = parser.parse_args(argv)
    try:
        args.runs = args.runs or [newest_run()]
    except FileNotFoundError as e:
        parser.error(str(e))
    for run in args.runs:
        log = os.path.join(run, "log.txt") if os.path.isdir(run) else run
        if not os.path.isfile(log):
            parser.error(f"no log file at {log}")
    out = args.out or os.path.join(args.runs[0] if os.path.isdir(args.runs[0]) else os.path.dirname(args.runs[0]),
                                   "plot.png")
    plot_runs(args.runs, out, args.n_params)
    for run in args.runs:
        print(summarize(run))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
