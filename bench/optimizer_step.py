"""The optimizer step on its own: the lecture's fused AdamW against the modern recipe's Muon (torch.optim.Muon,
Newton-Schulz in bf16) for the hidden matrices plus AdamW for the rest, on random gradients, and one bf16 and one
fp32 matmul of the largest hidden matrix's Gram shape, which says whether bf16 Newton-Schulz is the fast path on
this device (on CPUs without bf16 units it is the slow one).

    python bench/optimizer_step.py --models tiny,mini
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_gpt2 as tg  # noqa: E402
from gptkit import modern  # noqa: E402
from gptkit.cli import HelpFormatter  # noqa: E402
from gptkit.hardware import autodetect_device  # noqa: E402
from common import save_result  # noqa: E402


def timed(fn, steps, device):
    fn()  # warm-up: optimizer state allocated
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1000


def measure(name, steps, device):
    config = tg.preset(name)[0]
    figures = {}
    for label in ("adamw", "muon_adamw"):
        switches = {k: v for k, v in modern.RECIPE.items() if k in modern.SWITCHES}
        model = modern.ModernGPT(modern.ModernConfig(**vars(config), **switches)).to(device)
        if label == "adamw":
            optimizer = tg.GPT.configure_optimizers(model, 0.1, 1e-3, device)
        else:
            optimizer = modern.MuonAdamW(model, 0.1, 1e-3, 0.02, 0.0, fused=True)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        figures[f"{label}_ms"] = round(timed(optimizer.step, steps, device), 1)
    C = config.n_embd
    for dtype in (torch.bfloat16, torch.float32):
        x = torch.randn(C, 4 * C, device=device, dtype=dtype)
        figures[f"gram_{C}x{4 * C}_{str(dtype)[6:]}_ms"] = round(timed(lambda: x @ x.T, steps, device), 2)
    print(name, figures, flush=True)
    return figures


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--models", default="tiny,mini", help="comma-separated presets")
    p.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    p.add_argument("--device", default=autodetect_device(), help="cpu, cuda or mps")
    args = p.parse_args(argv)
    results = {name: measure(name, args.steps, args.device) for name in args.models.split(",")}
    save_result(f"optimizer_step_{args.device}", args.device, {"models": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
