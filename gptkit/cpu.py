"""The CPU path, where learners first run this project: glibc's malloc told to keep the memory a step frees, and
bf16 autocast where the CPU multiplies bf16 in hardware (--dtype auto).

By default glibc serves every block above its mmap threshold (at most 32 MiB) straight from the kernel and hands
it back on free. A training step frees and allocates the same large buffers every time (the tiny preset's
8 x 256 x 50,304 fp32 logits alone are 412 MB), so each step page-faults all of them in again, a large share of
the quick start's CPU time on a small machine (docs/benchmarks.md). With mmap off and the heap never trimmed, a freed
block is reused as it is, for some more peak memory (bench/cpu_limits.py measures both).

Sampling reads every weight once per new token, at a few rows: there oneDNN's own linear kernel on weights it has laid
out once (PackedLinear, packed_linears) reads them much faster than F.linear. It is reached through PyTorch's
private torch.ops.mkldnn operators (_reorder_linear_weight, _linear_pointwise, _is_mkldnn_bf16_supported), which
the CPU build ships; can_pack says where they apply.
"""

import contextlib
import ctypes
import re

import torch
import torch.nn as nn
from torch.distributed.tensor import DTensor
from torch.nn import functional as F

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_MAX = -4


def keep_freed_memory():
    """Ask glibc to keep freed memory for reuse: no mmap for large blocks, no trimming of the heap. Call it at
    start-up, before the large allocations. Returns whether it applied (False off glibc: macOS, Windows, musl)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process already has: no search for it
    except (OSError, AttributeError, TypeError):  # no mallopt (macOS), or no such handle (Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1


# CPU features that multiply bf16 in hardware, as /proc/cpuinfo names them: Intel's AMX tiles, AVX-512's bf16
# dot products, ARM's BF16 instructions. Without one, bf16 would be converted in software: fp32 stays the default.
BF16_UNITS = ("amx_bf16", "avx512_bf16", "bf16")


def bf16_matmul_unit(cpuinfo="/proc/cpuinfo"):
    """The first of BF16_UNITS this CPU has, or None (also where there is no /proc/cpuinfo: macOS, Windows)."""
    try:
        with open(cpuinfo) as f:
            found = re.search(r"^(?:flags|Features)\s*:(.*)$", f.read(), re.M)
    except OSError:
        return None
    flags = set(found.group(1).split()) if found else set()
    return next((unit for unit in BF16_UNITS if unit in flags), None)


class PackedLinear(nn.Module):
    """An nn.Linear whose weight oneDNN lays out once for its own kernel (on a CPU). At the few rows of a decode
    step it reads the weights far faster than F.linear, close to the machine's memory bandwidth (bench/cpu_limits.py,
    docs/benchmarks.md). In bf16 the same numbers as F.linear, bit for bit; in fp32 oneDNN adds in its own order, so
    the outputs differ from F.linear's by rounding (about 1e-6 of their largest value). With gelu=True it also applies GPT-2's tanh GELU to its output, inside the same kernel
    (on the fp32 sums, before rounding to bf16), one operation and one pass fewer per block."""

    def __init__(self, linear, rows, gelu=False):
        super().__init__()
        self.weight, self.bias, self.gelu = linear.weight, linear.bias, gelu
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows)  # a copy, laid out

    def forward(self, x):
        if torch.compiler.is_compiling():  # inductor takes this op on frozen weights only, and lays them out itself
            y = F.linear(x, self.weight, self.bias)
            return F.gelu(y, approximate="tanh") if self.gelu else y
        post_op, algorithm = ("gelu", "tanh") if self.gelu else ("none", "")
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, post_op, [], algorithm)


def can_pack(weight):
    """Whether oneDNN can take this weight: on a CPU with oneDNN, fp32, or bf16 where oneDNN multiplies bf16. Not
    under autocast, which runs the plain modules in bf16 (sampling during training), nor an FSDP shard."""
    if (weight.device.type != "cpu" or not torch.backends.mkldnn.is_available() or torch.is_autocast_enabled("cpu")
            or isinstance(weight, DTensor)):
        return False
    return weight.dtype == torch.float32 or (weight.dtype == torch.bfloat16
                                             and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def available_memory():
    """Bytes of memory the system could hand out now (Linux's MemAvailable), or None where it does not say (macOS,
    Windows)."""
    try:
        with open("/proc/meminfo") as f:
            return int(re.search(r"^MemAvailable:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024
    except (OSError, AttributeError):
        return None


def is_tanh_gelu(module):
    return type(module) is nn.GELU and module.approximate == "tanh"


@contextlib.contextmanager
def packed_linears(model, rows):
    """While sampling on a CPU, every plain nn.Linear of the model is a PackedLinear, put back afterwards; an MLP's
    c_fc takes over the GELU after it (the MLP's gelu is an nn.Identity meanwhile). The weights are held once more,
    laid out (for gpt2: 237 MB in bf16, 474 MB in fp32), so where that copy would take more than half of
    the memory still available, the model samples as it is; elsewhere too."""
    linears = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if type(child) is nn.Linear and can_pack(child.weight)]
    copy_bytes = sum(child.weight.numel() * child.weight.element_size() for _, _, child in linears)
    available = available_memory()
    if available is not None and copy_bytes > available // 2:
        linears = []
    swaps = []  # (parent, name, the module, what stands in for it)
    for parent, name, child in linears:
        gelu = name == "c_fc" and is_tanh_gelu(getattr(parent, "gelu", None))
        swaps.append((parent, name, child, PackedLinear(child, rows, gelu)))
        if gelu:
            swaps.append((parent, "gelu", parent.gelu, nn.Identity()))
    try:
        for parent, name, _, stand_in in swaps:
            setattr(parent, name, stand_in)
        yield model
    finally:
        for parent, name, child, _ in swaps:
            setattr(parent, name, child)
