"""Training throughput: tokens/s and FLOP/s (MFU on a known GPU) of one optimizer step (forward, backward,
clip, AdamW) at a preset / B / T, for our eager and compiled configurations against the lecture's final
configuration (eager: it turned torch.compile off; bf16 autocast; fused AdamW only on cuda) in the same run.

    python bench/train_throughput.py --model tiny -B 16 -T 256                 # CPU
    python bench/train_throughput.py --model gpt2 -B 64 -T 1024 --device cuda  # one GPU
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_gpt2 as tg  # noqa: E402
from common import save_result  # noqa: E402


def measure(config, B, T, device, dtype, optimizer_fn, compile_model, warmup, steps):
    """Median seconds per optimizer step on random tokens (the first `warmup` steps, compilation included,
    are not timed)."""
    torch.manual_seed(0)
    model = tg.GPT(config).to(device)
    optimizer = optimizer_fn(model)
    forward = torch.compile(model) if compile_model else model
    x = torch.randint(0, tg.GPT2_VOCAB_SIZE, (B, T), device=device)
    y = torch.randint(0, tg.GPT2_VOCAB_SIZE, (B, T), device=device)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
            _, loss = forward(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.startswith("cuda") else None
    del model, optimizer, forward
    return statistics.median(times), peak_mem


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="model preset")
    parser.add_argument("-B", "--batch-size", type=int, default=16, help="micro-batch size")
    parser.add_argument("-T", "--seq-len", type=int, default=256, help="sequence length")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="autocast dtype for ours")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    args = parser.parse_args()

    torch.set_float32_matmul_precision("high")
    config = tg.preset(args.model)[0]
    B, T, device = args.batch_size, args.seq_len, args.device
    device_type = device.split(":")[0]
    ours_dtype = getattr(torch, args.dtype)
    flops = tg.flops_per_token(config, T)
    peak = tg.peak_flops(torch.cuda.get_device_name(device)) if device_type == "cuda" else None

    def lecture_optimizer(model):  # the lecture: weight-decay groups, fused only on cuda
        groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
                  {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=device_type == "cuda")

    def our_optimizer(model):
        return tg.configure_optimizer(model, 0.1, 6e-4, device_type)

    runs = {
        "lecture": (torch.bfloat16, lecture_optimizer, False),
        "ours_eager": (ours_dtype, our_optimizer, False),
        "ours_compiled": (ours_dtype, our_optimizer, True),
    }
    figures = {"model": args.model, "B": B, "T": T, "ours_dtype": args.dtype, "steps": args.steps, "results": {}}
    for name, (dtype, optimizer_fn, compile_model) in runs.items():
        dt, mem = measure(config, B, T, device, dtype, optimizer_fn, compile_model, args.warmup, args.steps)
        tokens_per_sec = B * T / dt
        result = {"tokens_per_s": round(tokens_per_sec, 1), "ms_per_step": round(dt * 1000, 1),
                  "achieved_tflops": round(flops * tokens_per_sec / 1e12, 4)}
        if peak:
            result["mfu"] = round(flops * tokens_per_sec / peak, 4)
        if mem is not None:
            result["peak_memory_gib"] = round(mem, 2)
        figures["results"][name] = result
        print(name, result, flush=True)
    base = figures["results"]["lecture"]["tokens_per_s"]
    for name in ("ours_eager", "ours_compiled"):
        figures["results"][name]["speedup_vs_lecture"] = round(figures["results"][name]["tokens_per_s"] / base, 2)
    save_result(f"train_throughput_{device_type}_{args.model}", device, figures)


if __name__ == "__main__":
    main()
