"""Shared by the benchmark scripts: where results go and what is recorded with every figure."""

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys

import torch

# BENCH_RESULTS sends them elsewhere (bench/gpu_check.sh: straight into the folder the GPU machine returns)
RESULTS = os.environ.get("BENCH_RESULTS") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def device_name(device):
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def save_result(name, device, figures, path=None, echo=True):
    """Write bench/results/{name}.json (or path) with the figures and how they were made, and print it (echo);
    return the path."""
    record = {
        "command": " ".join(shlex.quote(a) for a in ["python"] + sys.argv),
        "device": device_name(device),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None,
        **figures,
    }
    path = path or os.path.join(RESULTS, f"{name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    if echo:
        print(json.dumps(record, indent=2))
    return path
