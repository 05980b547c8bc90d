"""The CPU path, where learners first run this project: glibc's malloc told to keep the memory a step frees, and
bf16 autocast where the CPU multiplies bf16 in hardware (--dtype auto).

By default glibc serves every block above its mmap threshold (at most 32 MiB) straight from the kernel and hands
it back on free. A training step frees and allocates the same large buffers every time (the tiny preset's
8 x 256 x 50,304 fp32 logits alone are 412 MB), so each step page-faults all of them in again, a large share of
the quick start's CPU time on a small machine (docs/benchmarks.md). With mmap off and the heap never trimmed, a freed
block is reused as it is, for some more peak memory (bench/cpu_limits.py measures both).
"""

import ctypes
import re

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
