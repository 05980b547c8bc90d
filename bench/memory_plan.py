"""The memory plan (gptkit/memory.py) against the peak memory measured on this machine: for each case, a fresh
process runs two optimizer steps (fp32, the CPU path) and reports how much its peak resident memory (Linux's
VmHWM) grew.

    python bench/memory_plan.py                      # tiny, mini and gpt2 at small batches, full and chunked loss
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_gpt2 as tg  # noqa: E402
from gptkit import memory  # noqa: E402
from gptkit.cli import HelpFormatter  # noqa: E402
from common import save_result  # noqa: E402

# run in a fresh process: a process's peak only grows
MEASURE = """
import sys, torch
sys.path.insert(0, {root!r})
sys.path.insert(0, {root!r} + "/bench")
import train_gpt2 as tg
from memory_plan import peak_kib
x = torch.randint(0, 50257, ({B}, {T} + 1), generator=torch.Generator().manual_seed(0))
base = peak_kib()
model = tg.GPT(tg.preset({model!r})[0])
model.loss_chunk_size = {chunk}
optimizer = model.configure_optimizers(0.1, 1e-3, "cpu")
for _ in range(2):
    model(x[:, :-1], x[:, 1:])[1].backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
print((peak_kib() - base) * 1024)
"""
CASES = [("tiny", 16, 256, 0), ("mini", 8, 256, 0), ("gpt2", 4, 256, 0), ("tiny", 16, 256, 1024), ("mini", 8, 256, 512)]


def peak_kib():
    """This process's peak resident memory in KiB (VmHWM). Not ru_maxrss: a child started by a large process
    inherits that process's figure."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1])


def measure(model, B, T, chunk):
    """Bytes the peak memory of a fresh process grows by over two training steps."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = MEASURE.format(root=root, model=model, B=B, T=T, chunk=chunk)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(r.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.parse_args()
    rows = []
    for model, B, T, chunk in CASES:
        planned = memory.plan(tg.preset(model)[0], B, T, bf16=False, loss_chunk_size=chunk)["total"]
        measured = measure(model, B, T, chunk)
        rows.append({"model": model, "B": B, "T": T, "loss_chunk_size": chunk, "measured_gib": round(measured / 2**30, 3),
                     "planned_gib": round(planned / 2**30, 3), "planned_over_measured": round(planned / measured, 3)})
        print(json.dumps(rows[-1]), flush=True)
    save_result("memory_plan_cpu", "cpu", {"dtype": "float32", "cases": rows})


if __name__ == "__main__":
    main()
