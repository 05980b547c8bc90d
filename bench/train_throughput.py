"""Training throughput: tokens/s, FLOP/s (MFU on a known GPU) and peak memory of one optimizer step (forward,
backward, clip, AdamW) at a preset / B / T, for several configurations measured one after another in the same
process, against the lecture's final configuration (eager, since it turned torch.compile off; bf16 autocast;
fused AdamW only on cuda):

    lecture           the lecture's configuration
    lecture_compiled  the lecture's configuration with torch.compile, full logits (its --compile)
    eager             ours without compile: fused AdamW on cpu too
    eager_ac          eager with --activation-checkpointing (compiled_ac: compiled with it)
    eager_chunked     eager, with the loss computed --loss-chunk-size positions at a time (less memory)
    compiled          torch.compile(model), the trainer's --compile
    compiled_chunked  compiled, with the loss computed --loss-chunk-size positions at a time
    max_autotune      compiled with mode="max-autotune-no-cudagraphs" (tries matmul configs; slow to compile)
    cudnn_attention   compiled, scaled_dot_product_attention restricted to the cuDNN kernel (cuda only)
    modern            --recipe modern (gptkit/modern.py: its model switches, Muon beside AdamW), compiled, the
                      loss computed --loss-chunk-size positions at a time (modern_eager: not compiled)

Each variant's figures are written as soon as they exist (a run cut short keeps them), with compile_s: the first
step's seconds over a typical step's, about what compiling took.

    python bench/train_throughput.py --model tiny -B 16 -T 256                 # CPU
    python bench/train_throughput.py --model gpt2 -B 64 -T 1024 --device cuda  # one GPU
"""

import argparse
import contextlib
import gc
import os
import statistics
import sys
import time
from dataclasses import asdict

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_gpt2 as tg  # noqa: E402
from gptkit import cpu, distributed, memory, modern  # noqa: E402
from gptkit.flops import flops_per_token, peak_flops  # noqa: E402
from gptkit.tokenizer import GPT2_VOCAB_SIZE  # noqa: E402
from gptkit.cli import HelpFormatter  # noqa: E402
from common import save_result  # noqa: E402

# name: (optimizer, compile mode or None, chunked loss, attention kernel or None, activation checkpointing)
VARIANTS = {
    "lecture": ("lecture", None, False, None, False),
    "lecture_compiled": ("lecture", "default", False, None, False),
    "eager": ("ours", None, False, None, False),
    "eager_ac": ("ours", None, False, None, True),
    "eager_chunked": ("ours", None, True, None, False),
    "compiled": ("ours", "default", False, None, False),
    "compiled_ac": ("ours", "default", False, None, True),
    "compiled_chunked": ("ours", "default", True, None, False),
    "max_autotune": ("ours", "max-autotune-no-cudagraphs", False, None, False),
    "cudnn_attention": ("ours", "default", False, SDPBackend.CUDNN_ATTENTION, False),
    "modern": ("modern", "default", True, None, False),
    "modern_eager": ("modern", None, True, None, False),
}


def lecture_optimizer(model, device_type):
    """The lecture's: weight-decay groups, fused only on cuda."""
    groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=device_type == "cuda")


def variant_config(config, variant):
    """The model config a variant trains: the preset's, or with the modern recipe's model switches on."""
    if VARIANTS[variant][0] != "modern":
        return config
    return modern.ModernConfig(**asdict(config), **{k: v for k, v in modern.RECIPE.items() if k in modern.SWITCHES})


def make_step(config, B, T, device, dtype, variant, loss_chunk_size):
    """A function that runs one optimizer step of `variant` on fixed random tokens."""
    optimizer_name, compile_mode, chunked, attention, activation_checkpointing = VARIANTS[variant]
    device_type = device.split(":")[0]
    torch.manual_seed(0)
    model = tg.model_from_config(asdict(variant_config(config, variant))).to(device)
    distributed.wrap_model(model, False, 1, device, activation_checkpointing)
    if optimizer_name == "lecture":
        optimizer, dtype = lecture_optimizer(model, device_type), torch.bfloat16
    elif optimizer_name == "modern":  # as the trainer builds it for --recipe modern at its default LRs
        optimizer = modern.MuonAdamW(model, 0.1, 6e-4, 0.02, 0.0, device_type == "cuda",
                                     modern.RECIPE["adamw_lr_scale"])
    else:
        optimizer = model.configure_optimizers(0.1, 6e-4, device_type)
    model.loss_chunk_size = loss_chunk_size if chunked else 0
    forward = torch.compile(model, mode=compile_mode) if compile_mode else model
    kernel = sdpa_kernel(attention) if attention is not None else None
    x = torch.randint(0, GPT2_VOCAB_SIZE, (B, T), device=device)
    y = torch.randint(0, GPT2_VOCAB_SIZE, (B, T), device=device)
    return training_step(model, forward, optimizer, x, y, dtype, kernel)


def training_step(model, forward, optimizer, x, y, dtype, context=None):
    """A function that runs one optimizer step on x, y as the trainer does: forward under autocast (in context,
    an attention-kernel choice, say), backward, clip, AdamW; waits for the GPU so that it can be timed."""
    device_type = x.device.type

    def step():
        with context or contextlib.nullcontext(), torch.autocast(device_type, dtype=dtype,
                                                                 enabled=dtype != torch.float32):
            _, loss = forward(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device_type == "cuda":
            torch.cuda.synchronize()

    return step


def measure(step, device, warmup, steps):
    """Median seconds per call of step(), peak GPU memory in GiB (None on cpu), and the first call's seconds
    (compilation included). The first `warmup` calls are not in the median."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.startswith("cuda") else None
    return statistics.median(times[warmup:]), peak_mem, times[0]


def add_step_arguments(parser):
    """The flags that say which step make_step builds (shared with profile_step.py)."""
    parser.add_argument("--model", default="tiny", help="model preset")
    parser.add_argument("-B", "--batch-size", type=int, default=16, help="micro-batch size")
    parser.add_argument("-T", "--seq-len", type=int, default=256, help="sequence length")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--loss-chunk-size", type=int, default=8192, help="positions per loss chunk (chunked variant)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_step_arguments(parser)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="autocast dtype for ours")
    parser.add_argument("--variants", default="lecture,eager,compiled,compiled_chunked",
                        help=f"comma-separated, measured in this order; known: {', '.join(VARIANTS)}")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--label", help="appended to the result file's name (two runs at one B and T)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    cpu.keep_freed_memory()  # as train_gpt2.main does: no page faults for the buffers a step frees

    torch.set_float32_matmul_precision("high")
    config = tg.preset(args.model)[0]
    B, T, device = args.batch_size, args.seq_len, args.device
    device_type = device.split(":")[0]
    peak = peak_flops(torch.cuda.get_device_name(device)) if device_type == "cuda" else None
    name_of_result = f"train_throughput_{device_type}_{args.model}_B{B}_T{T}" + (f"_{args.label}" if args.label else "")
    figures = {"model": args.model, "B": B, "T": T, "ours_dtype": args.dtype, "loss_chunk_size": args.loss_chunk_size,
               "steps": args.steps, "results": {}}
    for name in variants:
        if VARIANTS[name][3] is not None and device_type != "cuda":
            print(f"{name}: skipped, cuda only", flush=True)
            continue
        try:
            step = make_step(config, B, T, device, getattr(torch, args.dtype), name, args.loss_chunk_size)
            dt, mem, first = measure(step, device, args.warmup, args.steps)
        except torch.OutOfMemoryError:
            figures["results"][name] = {"error": "out of memory"}
            print(name, "out of memory", flush=True)
            continue
        finally:
            step = None  # free this variant's model and optimizer before the next one
            torch._dynamo.reset()  # every variant compiles its own graphs (inductor's cache on disk may serve them)
            gc.collect()
            if device_type == "cuda":
                torch.cuda.empty_cache()
        tokens_per_sec = B * T / dt
        flops = flops_per_token(variant_config(config, name), T)
        result = {"tokens_per_s": round(tokens_per_sec, 1), "ms_per_step": round(dt * 1000, 1),
                  "achieved_tflops": round(flops * tokens_per_sec / 1e12, 4),
                  "compile_s": round(first - dt, 1) if VARIANTS[name][1] else 0.0}
        if peak:
            result["mfu"] = round(flops * tokens_per_sec / peak, 4)
        if mem is not None:  # against the memory plan that -B auto trusts (gptkit/memory.py)
            optimizer_name, _, chunked, _, activation_checkpointing = VARIANTS[name]
            planned = memory.plan(variant_config(config, name), B, T, 1, False, activation_checkpointing,
                                  args.dtype != "float32" or optimizer_name == "lecture",
                                  args.loss_chunk_size if chunked else 0, optimizer_name == "modern")["total"]
            result.update(peak_memory_gib=round(mem, 2), plan_gib=round(planned / memory.GIB, 2),
                          plan_over_peak=round(planned / memory.GIB / mem, 3))
        base = figures["results"].get(variants[0], {}).get("tokens_per_s")  # the first variant is the baseline
        if base and name != variants[0]:
            result[f"speedup_vs_{variants[0]}"] = round(tokens_per_sec / base, 2)
        figures["results"][name] = result
        print(name, result, flush=True)
        save_result(name_of_result, device, figures, echo=False)
    save_result(name_of_result, device, figures)


if __name__ == "__main__":
    main()
