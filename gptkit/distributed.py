"""Devices and processes: the best device, torchrun's process group, DDP or FSDP2 around the model, mixed
precision, and the few collectives the training loop needs."""

import os
from contextlib import contextmanager, nullcontext

import torch
import torch.distributed as dist
from torch.distributed._composable import checkpoint
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP

from gptkit import cpu


def autodetect_device():
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def compute_dtype(device_type, dtype="auto"):
    """--dtype as a torch dtype: auto is bf16 on cuda and on CPUs that multiply bf16 in hardware, else float32."""
    if dtype == "auto":
        bf16 = device_type == "cuda" or (device_type == "cpu" and cpu.bf16_matmul_unit() is not None)
        return torch.bfloat16 if bf16 else torch.float32
    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]


def autocast_context(device_type, dtype="auto"):
    """Mixed precision for forward passes: bf16 autocast where compute_dtype says so, plain float32 elsewhere."""
    dtype = compute_dtype(device_type, dtype)
    return torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32)


def rank_and_world_size():
    """This process's rank and the number of processes, from the variables torchrun sets: (0, 1) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def setup_distributed(device=None):
    """Under torchrun, join the process group: nccl between GPUs (one per process), gloo between CPU processes.
    Returns this process's device."""
    device = device or autodetect_device()
    if "RANK" not in os.environ:
        return device
    if device == "cuda":
        device = f"cuda:{os.environ['LOCAL_RANK']}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return device


def wrap_model(model, fsdp, world_size, device, activation_checkpointing=False, dtype=torch.float32,
               cpu_offload=False):
    """DDP keeps a full copy of the model on every rank and averages the gradients; FSDP2 shards parameters,
    gradients and optimizer state across the ranks, one transformer block at a time. One process: unchanged.
    Under FSDP with dtype bf16, the gathered parameters and the compute are bf16 and gradients are reduced in
    fp32 (the sharded master weights and AdamW stay fp32); cpu_offload keeps the shards and AdamW on the CPU.
    Activation checkpointing keeps only each block's input for the backward pass and recomputes the rest there:
    about a third more compute for a fraction of the activation memory. Parameter names do not change."""
    if activation_checkpointing:
        for block in model.transformer.h:
            checkpoint(block)
    if fsdp:
        options = {}
        if dtype != torch.float32:
            options["mp_policy"] = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
        if cpu_offload:
            options["offload_policy"] = CPUOffloadPolicy()
        for block in model.transformer.h:
            fully_shard(block, **options)
        fully_shard(model, **options)
        return model
    if world_size > 1:
        return DDP(model, device_ids=[device] if device.startswith("cuda") else None)
    return model


def set_gradient_sync(model, sync):
    """Whether the next backward pass averages gradients across ranks. Gradient accumulation turns it on only for
    the last micro-batch of a step: one all-reduce per step instead of one per micro-batch."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(sync)
    elif isinstance(model, DDP):
        model.require_backward_grad_sync = sync  # set before the forward pass, which reads it


def all_reduce_mean(x, world_size):
    """x averaged over the ranks, in place (gloo has no AVG)."""
    if world_size > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x /= world_size
    return x


def full_tensor(x):
    """A sharded DTensor (FSDP's gradient norm, say) as one ordinary tensor; anything else as it is."""
    return x.full_tensor() if isinstance(x, DTensor) else x


def unsharded(model):
    """Inside, an FSDP model's own (root) parameters are whole on every rank, so that code calling its submodules
    directly (sampling, HellaSwag) works; the transformer blocks gather theirs when called, as in training."""
    return _unsharded(model) if isinstance(model, FSDPModule) else nullcontext()


@contextmanager
def _unsharded(model):
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def check_arguments(args):
    """The scale-out flags must fit how the job was launched: said before any process group starts."""
    if args.fsdp and "RANK" not in os.environ:
        raise ValueError("--fsdp shards the model across ranks: launch with torchrun --nproc_per_node=N")
    if args.cpu_offload and not (args.fsdp and (args.device or autodetect_device()) == "cuda"):
        raise ValueError("--cpu-offload moves FSDP's shards off the GPUs: it needs --fsdp on cuda")


def add_arguments(parser):
    """The trainer's flags for sharding and memory."""
    g = parser.add_argument_group("scale-out")
    g.add_argument("--fsdp", action="store_true",
                   help="shard parameters, gradients and AdamW state with FSDP2 instead of DDP; with bf16 (--dtype, "
                        "the default on cuda) parameters are gathered in bf16 and gradients reduced in fp32")
    g.add_argument("--cpu-offload", action="store_true",
                   help="with --fsdp: keep the parameter shards, gradients and AdamW state in CPU memory")
    g.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each block's activations in the backward pass instead of keeping them: less "
                        "memory (a larger -B, a larger model), about a third more compute")
