"""Where a training step's time goes: torch.profiler over a few optimizer steps of one train_throughput.py
variant, after warm-up (compilation). Writes the profiler's table of the most expensive operators / kernels and
a summary of device time by kind of work (matmuls, attention, fused elementwise, optimizer, copies, other).

    python bench/profile_step.py --model tiny -B 16 -T 256                      # CPU: operators by CPU time
    python bench/profile_step.py --model gpt2 -B 64 -T 1024 --device cuda      # GPU: kernels by GPU time
"""

import argparse
import os
import re
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_gpt2 as tg  # noqa: E402
from gptkit import cpu  # noqa: E402
from gptkit.cli import HelpFormatter  # noqa: E402
from common import RESULTS, save_result  # noqa: E402
from train_throughput import VARIANTS, add_step_arguments, make_step  # noqa: E402

# the kind of work a kernel or operator does, by its name; the first pattern that matches wins
KINDS = [
    ("attention", r"flash|fmha|attention|sdpa|cudnn"),
    ("matmul", r"gemm|matmul|\bmm\b|addmm|bmm|cutlass|xmma|nvjet|linear"),
    ("optimizer and clipping", r"adam|foreach|multi_tensor|vector_norm"),
    ("copies", r"memcpy|memset|copy_|to_copy"),
    ("fused elementwise (compiled)", r"triton"),
]


def kind(name):
    for label, pattern in KINDS:
        if re.search(pattern, name, re.IGNORECASE):
            return label
    return "other"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_step_arguments(parser)
    parser.add_argument("--variant", default="compiled", choices=list(VARIANTS), help="see train_throughput.py")
    parser.add_argument("--warmup", type=int, default=3, help="unprofiled steps first (compilation happens here)")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--rows", type=int, default=30, help="rows of the operator table")
    args = parser.parse_args()
    cpu.keep_freed_memory()  # as train_gpt2.main does: no page faults for the buffers a step frees

    torch.set_float32_matmul_precision("high")
    config = tg.preset(args.model)[0]
    device_type = args.device.split(":")[0]
    step = make_step(config, args.batch_size, args.seq_len, args.device, torch.bfloat16, args.variant,
                     args.loss_chunk_size)
    for _ in range(args.warmup):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device_type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()

    events = prof.key_averages()
    metric = "self_device_time_total" if device_type == "cuda" else "self_cpu_time_total"  # microseconds

    def time_of(event):
        return getattr(event, metric)

    table = events.table(sort_by=metric, row_limit=args.rows)
    print(table)
    total = sum(time_of(e) for e in events)
    by_kind = {}
    for e in events:
        label = kind(e.key)
        by_kind[label] = by_kind.get(label, 0) + time_of(e)
    name = f"profile_{device_type}_{args.model}_B{args.batch_size}_T{args.seq_len}_{args.variant}"
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, name + ".txt"), "w") as f:
        f.write(table)
    save_result(name, args.device, {
        "model": args.model, "B": args.batch_size, "T": args.seq_len, "variant": args.variant,
        "profiled_steps": args.steps, "time": "self GPU time" if device_type == "cuda" else "self CPU time",
        "ms_per_step": round(total / 1000 / args.steps, 2),
        "share_by_kind": {k: round(v / total, 4) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "top": [{"name": e.key, "ms_per_step": round(time_of(e) / 1000 / args.steps, 3), "calls": e.count}
                for e in sorted(events, key=time_of, reverse=True)[:args.rows]],
    })


if __name__ == "__main__":
    main()
