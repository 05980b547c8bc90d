"""The lecture's speed ladder: each speed-up of the video's second hour added on top of the ones before, on one
model, one batch and the same tokens, timed after a warm-up. The lecture measured about 1000 ms down to about
90 ms per step on an A100 (gpt2, B=16, T=1024); this measures the same rungs on your device.

    python bench/lecture_ladder.py                                        # gpt2, B=16, T=1024, the best device
    python bench/lecture_ladder.py --model tiny -B 8 -T 256 --device cpu  # a CPU-sized look

Each rung is a switch of train_gpt2.py as well (--attention, --vocab-size, --tf32, --dtype, --compile,
--fused-adamw): the first rung is `--attention manual --vocab-size 50257 --no-tf32 --dtype float32
--no-fused-adamw`, the last is the default. A rung that changes nothing on this device (TF32 on a CPU) is still
timed, but marked "applies": false, and its speed-up is not a speed-up. The JSON is written after every rung, so
a run cut short keeps the rungs it timed; compile_s is the first step's seconds over a typical step's.
"""

import argparse
import gc
import os
import sys
from dataclasses import replace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_gpt2 as tg  # noqa: E402
from gptkit.cli import HelpFormatter  # noqa: E402
from gptkit.hardware import autodetect_device  # noqa: E402
from gptkit.tokenizer import GPT2_VOCAB_SIZE  # noqa: E402
from common import save_result  # noqa: E402
from train_throughput import measure, training_step  # noqa: E402

FIRST = dict(attention="manual", vocab_size=GPT2_VOCAB_SIZE, tf32=False, dtype=torch.float32, compile=False,
             fused=False)
# (name, what it changes, the train_gpt2.py switch), in the lecture's order
RUNGS = [
    ("fp32", {}, "--attention manual --vocab-size 50257 --no-tf32 --dtype float32 --no-fused-adamw"),
    ("tf32", {"tf32": True}, "--tf32"),
    ("bf16 autocast", {"dtype": torch.bfloat16}, "--dtype bfloat16"),
    ("torch.compile", {"compile": True}, "--compile"),
    ("flash attention", {"attention": "flash"}, "--attention flash"),
    ("vocab 50304", {"vocab_size": tg.PADDED_VOCAB_SIZE}, "--vocab-size 50304"),
    ("fused AdamW", {"fused": True}, "--fused-adamw"),
]


def applies(name, device):
    """Whether a rung changes anything on this device."""
    device_type = device.split(":")[0]
    if name == "tf32":  # tensor cores: Ampere (compute capability 8.0) and newer
        return device_type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8
    if name == "fused AdamW":
        return device_type in ("cuda", "cpu")
    return True


def make_step(config, settings, B, T, device, tokens):
    """One optimizer step with these settings, as train_gpt2.py takes it: forward, backward, clip, AdamW."""
    device_type = device.split(":")[0]
    torch.set_float32_matmul_precision("high" if settings["tf32"] else "highest")
    torch.manual_seed(0)
    model = tg.GPT(replace(config, attention=settings["attention"], vocab_size=settings["vocab_size"])).to(device)
    optimizer = model.configure_optimizers(0.1, 6e-4, device_type, fused=settings["fused"])
    forward = torch.compile(model) if settings["compile"] else model
    x, y = tokens[:, :-1].to(device), tokens[:, 1:].to(device)
    return training_step(model, forward, optimizer, x, y, settings["dtype"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", default="gpt2", help="model preset")
    parser.add_argument("-B", "--batch-size", type=int, default=16, help="micro-batch size")
    parser.add_argument("-T", "--seq-len", type=int, default=1024, help="sequence length")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per rung (the median is reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best one available)")
    parser.add_argument("--rungs", type=int, default=len(RUNGS),
                        help="time only the first N rungs (a quick look: the compiled ones come from the 4th)")
    parser.add_argument("--out", help="JSON file to write (default: bench/results/lecture_ladder_{device}_...json)")
    args = parser.parse_args()
    device = args.device or autodetect_device()
    config = tg.preset(args.model)[0]
    B, T = args.batch_size, args.seq_len
    if T > config.block_size:
        parser.error(f"-T {T} is longer than {args.model}'s block_size {config.block_size}")
    tokens = torch.randint(0, GPT2_VOCAB_SIZE, (B, T + 1), generator=torch.Generator().manual_seed(0))

    settings, rungs = dict(FIRST), []
    print(f"{'rung':16s} {'ms/step':>9s} {'tokens/s':>10s} {'vs previous':>12s} {'vs fp32':>8s}  switch")
    device_type = device.split(":")[0]
    name_of_result = f"lecture_ladder_{device_type}_{args.model}_B{B}_T{T}"
    for name, change, switch in RUNGS[: args.rungs]:
        settings.update(change)
        dt, _, first = measure(make_step(config, settings, B, T, device, tokens), device, args.warmup, args.steps)
        torch._dynamo.reset()  # every compiled rung compiles afresh
        gc.collect()
        rung = {"name": name, "ms_per_step": round(dt * 1000, 2), "tokens_per_s": round(B * T / dt, 1),
                "compile_s": round(first - dt, 1) if settings["compile"] else 0.0, "applies": applies(name, device),
                "switch": switch}
        rungs.append(rung)
        previous = f"{rungs[-2]['ms_per_step'] / rung['ms_per_step']:.2f}x" if len(rungs) > 1 else ""
        if not rung["applies"]:
            previous = "n/a here"
        print(f"{name:16s} {rung['ms_per_step']:9.1f} {rung['tokens_per_s']:10,.0f} {previous:>12s} "
              f"{rungs[0]['ms_per_step'] / rung['ms_per_step']:7.2f}x  {switch}", flush=True)
        figures = {"model": args.model, "B": B, "T": T, "steps": args.steps, "rungs": rungs}
        save_result(name_of_result, device, figures, args.out, echo=False)
    torch.set_float32_matmul_precision("highest")
    save_result(name_of_result, device, figures, args.out)


if __name__ == "__main__":
    main()
