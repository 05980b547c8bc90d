"""Throughput of the real training loop, train_gpt2.py itself (data loading, host-to-device copies, gradient
accumulation, clipping, AdamW, logging): the tokens/s and MFU it prints for every step, as a median over the
steps after the first few (compilation), on shards of random tokens that this script writes first.

    python bench/trainer_speed.py --model tiny -B 8 -T 256 --total-batch-size 8192 --steps 8     # CPU
    python bench/trainer_speed.py --model gpt2 -B 64 --steps 20 --label compiled -- --compile    # one GPU

Flags after `--` go to train_gpt2.py unchanged.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_gpt2 as tg  # noqa: E402
from gptkit.tokenizer import GPT2_VOCAB_SIZE  # noqa: E402
from gptkit.cli import HelpFormatter  # noqa: E402
from common import save_result  # noqa: E402

STEP_LINE = re.compile(r"step\s+(\d+) \| loss .* \| tok/sec ([\d,]+) \| (?:mfu ([\d.]+)%|([\d.]+) TFLOP/s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", default="tiny", help="model preset")
    parser.add_argument("-B", "--batch-size", type=int, default=8, help="micro-batch size")
    parser.add_argument("-T", "--seq-len", type=int, default=None, help="sequence length (default: block_size)")
    parser.add_argument("--total-batch-size", type=int, help="tokens per step (default: the preset's)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps to run")
    parser.add_argument("--skip", type=int, default=3, help="first steps left out of the median (compilation)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--label", default="default", help="names this configuration in the result file")
    parser.add_argument("trainer_flags", nargs="*", help="after --: more train_gpt2.py flags")
    args = parser.parse_args()
    if args.steps <= args.skip:
        parser.error("--steps must be larger than --skip")

    config, preset_batch, _ = tg.preset(args.model)
    T = args.seq_len or config.block_size
    total = args.total_batch_size or preset_batch
    with tempfile.TemporaryDirectory() as work:
        rng = np.random.default_rng(0)  # the content does not matter for speed, only that there is enough of it
        np.save(os.path.join(work, "random_val_000000.npy"),
                rng.integers(0, GPT2_VOCAB_SIZE, args.batch_size * T + 1, dtype=np.uint16))
        np.save(os.path.join(work, "random_train_000001.npy"),
                rng.integers(0, GPT2_VOCAB_SIZE, total * args.steps + 1, dtype=np.uint16))
        command = [sys.executable, tg.__file__, "--model", args.model, "--device", args.device,
                   "--data-dir", work, "--out-dir", os.path.join(work, "run"), "-B", str(args.batch_size),
                   "-T", str(T), "--total-batch-size", str(total), "--max-steps", str(args.steps),
                   "--eval-interval", "0", "--hellaswag-interval", "0", "--sample-interval", "0",
                   "--checkpoint-interval", "0", *args.trainer_flags]
        r = subprocess.run(command, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: the trainer failed:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
    steps = {int(m.group(1)): m for m in map(STEP_LINE.search, r.stdout.splitlines()) if m}
    timed = [steps[s] for s in sorted(steps) if s >= args.skip]
    if not timed:
        sys.exit(f"error: no step lines like 'step N | loss ... | tok/sec ... | mfu ...' after step {args.skip} in "
                 f"the trainer's output; STEP_LINE must follow train_gpt2.py's format:\n{r.stdout[-1500:]}")
    tokens_per_s = statistics.median(float(m.group(2).replace(",", "")) for m in timed)
    figures = {"model": args.model, "B": args.batch_size, "T": T, "total_batch_size": total, "label": args.label,
               "trainer_flags": args.trainer_flags, "timed_steps": len(timed), "tokens_per_s": round(tokens_per_s, 1)}
    if timed[0].group(3):
        figures["mfu"] = round(statistics.median(float(m.group(3)) for m in timed) / 100, 4)
    else:
        figures["achieved_tflops"] = round(statistics.median(float(m.group(4)) for m in timed), 4)
    save_result(f"trainer_speed_{args.device}_{args.model}_B{args.batch_size}_T{T}_{args.label}", args.device, figures)


if __name__ == "__main__":
    main()
