"""What the device can do, and what a run uses there: the dtype (and a gradient scaler for float16), the attention
kernel, fused AdamW, torch.compile. One function of the device's properties decides (decide), so that the tests
can fake a T4, a V100, an A100, an H100, a Mac or a CPU with or without bf16 units; the trainer says the outcome in
one start-up line (describe).

    GPU compute capability 8.0 and up (A100, H100, RTX 30xx/40xx): bf16 autocast, no scaler needed
    below 8.0 (T4 7.5, V100 7.0, RTX 20xx 7.5): float16 autocast with torch.amp.GradScaler; bf16 is only
        emulated there (torch.cuda.is_bf16_supported() says yes all the same): slow, and no flash attention
    a Mac (MPS): bf16 autocast where the installed torch supports it on MPS, else float32
    a CPU: bf16 autocast where it multiplies bf16 in hardware (gptkit/cpu.py), else float32
"""

import argparse
import warnings
from dataclasses import dataclass

import torch

from gptkit import cpu

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def autodetect_device():
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@dataclass(frozen=True)
class DeviceInfo:
    """The properties the choices depend on."""
    type: str  # cuda, mps or cpu
    name: str
    capability: tuple = None  # CUDA compute capability, (7, 5) for a T4
    bf16_unit: str = None  # a CPU's bf16 matmul unit (gptkit/cpu.py), or None
    mps_bf16: bool = False  # bf16 autocast works on this Mac with this torch


def probe(device):
    """The DeviceInfo of a device string (cuda, cuda:1, mps, cpu) on this machine."""
    device_type = device.split(":")[0]
    if device_type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return DeviceInfo("cuda", props.name, (props.major, props.minor))
    if device_type == "mps":
        return DeviceInfo("mps", "Apple GPU (MPS)", mps_bf16=_mps_autocast_supports_bf16())
    return DeviceInfo("cpu", "CPU", bf16_unit=cpu.bf16_matmul_unit())


def _mps_autocast_supports_bf16():
    """torch turns autocast off with a warning for a dtype it cannot run on MPS (bf16 needs macOS 14 and a recent
    torch): try it on a small matmul."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with torch.autocast("mps", dtype=torch.bfloat16):
                x = torch.ones(2, 2, device="mps")
                return (x @ x).dtype == torch.bfloat16
    except (RuntimeError, UserWarning, TypeError):
        return False


def memory_capacity(device, device_memory=None):
    """Bytes a run may fill on device, for -B auto: device_memory GiB when given (planning for another device), else
    the GPU's free memory, what MPS recommends, or the RAM available; None where the platform does not say."""
    if device_memory:
        return device_memory * 2**30
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(device)[0]
    if device == "mps":
        return torch.mps.recommended_max_memory()
    return cpu.available_memory()


@dataclass(frozen=True)
class Choices:
    dtype: torch.dtype  # autocast dtype of forward passes (float32: no autocast)
    grad_scaler: bool  # float16: scale the loss so that small gradients do not flush to zero
    attention: str  # the scaled_dot_product_attention kernel expected, in words
    fused_adamw: bool
    compile: bool
    notes: tuple = ()  # why a request was not followed, or what it costs


def decide(info, dtype="auto", fused_adamw=True, compile=False, attention="flash"):
    """The run's choices on a device of these properties, for the --dtype, --fused-adamw, --compile and --attention
    asked for."""
    notes = []
    if dtype == "auto":
        if info.type == "cuda":
            dtype = "bfloat16" if info.capability >= (8, 0) else "float16"
        elif info.type == "mps":
            dtype = "bfloat16" if info.mps_bf16 else "float32"
        else:
            dtype = "bfloat16" if info.bf16_unit else "float32"
    elif dtype == "bfloat16" and info.type == "cuda" and info.capability < (8, 0):
        notes.append(f"bf16 is emulated below compute capability 8.0 (this GPU: {_sm(info)}): slow; float16 is "
                     "native")
    if compile and info.type == "cuda" and info.capability < (7, 0):
        compile = False
        notes.append(f"--compile off: torch.compile's GPU kernels (Triton) need compute capability 7.0 ({_sm(info)})")
    return Choices(DTYPES[dtype], dtype == "float16", _attention_kernel(info, dtype, attention),
                   fused_adamw and info.type in ("cuda", "cpu"), compile, tuple(notes))


def _attention_kernel(info, dtype, attention):
    if attention == "manual":
        return "manual (the lecture's first version)"
    if info.type == "cuda":
        if dtype != "float32" and info.capability >= (8, 0):
            return "flash attention (FlashAttention-2)"
        return "memory-efficient attention (flash attention needs compute capability 8.0 and bf16/fp16)"
    return f"scaled_dot_product_attention on {info.type}"


def _sm(info):
    return f"{info.capability[0]}.{info.capability[1]}"


def describe(info, choices):
    """The one start-up line: what runs where, and why where it is not the obvious."""
    where = info.name + (f" (compute capability {_sm(info)})" if info.capability else "")
    if info.type == "cpu":
        where += f" with bf16 matmul unit {info.bf16_unit}" if info.bf16_unit else " without a bf16 matmul unit"
    precision = {torch.bfloat16: "bf16 autocast", torch.float32: "float32",
                 torch.float16: "float16 autocast with a gradient scaler"}[choices.dtype]
    parts = [f"device: {where}", precision, f"attention: {choices.attention}",
             "fused AdamW" if choices.fused_adamw else "AdamW (not fused)",
             "torch.compile" if choices.compile else "eager (--compile to compile)"]
    return " | ".join(parts) + "".join(f"; note: {n}" for n in choices.notes) + " (--dtype overrides)"


def compute_dtype(device, dtype="auto"):
    """--dtype as a torch dtype on this device (sampling and HellaSwag: no training, so no scaler)."""
    return decide(probe(device), dtype).dtype


def autocast_context(device, dtype="auto"):
    """Mixed precision for forward passes as decide says, plain float32 where it says float32."""
    dtype = compute_dtype(device, dtype)
    return torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)


def scaled_step(scaler, optimizer):
    """optimizer.step() through the gradient scaler (float16; a plain step when it is off). Returns whether the step
    was skipped because a gradient overflowed; the scale is then halved (and raised again after 2,000 good steps)."""
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() < scale


def add_arguments(group):
    """The trainer's flags for what runs where."""
    group.add_argument("--device", help="cuda, mps or cpu (default: the best one available)")
    group.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                       help="autocast dtype for forward passes; auto: bfloat16 on GPUs of compute capability 8.0 and "
                            "up, float16 with a gradient scaler on older ones (T4, V100), bfloat16 on a Mac where "
                            "MPS supports it and on CPUs with bf16 matmul units (AMX, AVX-512 BF16, ARM BF16), "
                            "float32 elsewhere")
    group.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                       help="TF32 tensor cores for fp32 matmuls (Ampere and newer GPUs)")
    group.add_argument("--compile", action="store_true", help="torch.compile the model for training and val loss")
    group.add_argument("--fused-adamw", action=argparse.BooleanOptionalAction, default=True,
                       help="AdamW's fused kernel: the whole update in one launch (cuda, cpu)")
