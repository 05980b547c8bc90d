"""The lecture's stages (stages/) as a learner runs them, `python stages/stage.py N --run`, with their defaults:
the loss at the first and last step, and the time per step from when the step lines arrive.

    python bench/lecture_stages.py                      # every stage -> bench/results/lecture_stages_cpu.json
    python bench/lecture_stages.py --stages 5 6 --stage-args="--n-layer 2 --n-head 2 --n-embd 64"
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
import time

from common import save_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = re.compile(r"^step +\d+ \| loss ([\d.]+)")
NOTED = re.compile(r"parameters$|loss at init|could not load|val loss|HellaSwag|saved|resuming")  # what a learner reads besides the steps


def run_stage(n, extra):
    """Run stage n as stage.py --run does; returns its figures."""
    start, stamps, losses, noted = time.time(), [], [], []
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "stages", "stage.py"), str(n), "--run", "--", *extra],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        m = STEP.match(line)
        if m:
            stamps.append(time.time())
            losses.append(float(m.group(1)))
        elif NOTED.search(line.strip()):
            noted.append(line.strip())
    if proc.wait() != 0:
        raise SystemExit(f"error: stage {n} exited with {proc.returncode}")
    figures = {"wall_s": round(time.time() - start, 1), "printed": noted}
    if len(losses) > 1:
        figures.update(steps=len(losses), first_loss=losses[0], last_loss=losses[-1],
                       ms_per_step=round(1000 * (stamps[-1] - stamps[0]) / (len(stamps) - 1)))
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", type=int, nargs="+", default=list(range(1, 16)), help="which stages")
    parser.add_argument("--stage-args", default="", help="flags for every stage (default: none, the learner's)")
    parser.add_argument("--out", help="JSON to write (default: bench/results/lecture_stages_cpu.json)")
    args = parser.parse_args()
    figures = {"stage_args": args.stage_args}
    for n in args.stages:
        figures[f"stage_{n}"] = run_stage(n, shlex.split(args.stage_args))
        print(f"stage {n}: {figures[f'stage_{n}']}", flush=True)
    save_result("lecture_stages_cpu", "cpu", figures, args.out)


if __name__ == "__main__":
    main()
