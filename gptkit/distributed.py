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

from gptkit.hardware import autodetect_device


def rank_and_world_size():
    """This process's rank and the number of processes, from the variables torchrun sets: (0, 1) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def setup_distributed(device=None, cpu_offload=False):
    """Under torchrun, join the process group: nccl between GPUs (one per process, the one of the process's
    LOCAL_RANK), gloo between CPU processes, and both with --cpu-offload (FSDP then clips and steps on CPU tensors).
    Returns this process's device."""
    device = device or autodetect_device()
    if "RANK" not in os.environ:
        return device
    if device.startswith("cuda:"):
        raise ValueError(f"--device {device} under torchrun: each rank takes the GPU of its LOCAL_RANK; pass "
                         "--device cuda (or nothing), and choose the GPUs with CUDA_VISIBLE_DEVICES")
    if device == "cuda":
        device = f"cuda:{os.environ['LOCAL_RANK']}"
        torch.cuda.set_device(device)
    backend = "gloo" if not device.startswith("cuda") else "cuda:nccl,cpu:gloo" if cpu_offload else "nccl"
    dist.init_process_group(backend=backend)
    return device


SHARED_FILES_ADVICE = ("on several nodes, the shards, the run directory (--out-dir) and --hellaswag-dir must be on a "
                       "filesystem every node shares, or copied to each node")


@contextmanager
def same_outcome(world_size):
    """Set-up as one step for all ranks. Inside, each rank notes what it sees in the dict this yields (its shards,
    its newest checkpoint); at the end one collective compares. When set-up failed on some ranks only (a file one
    node cannot see), or a rank sees something else than rank 0, every rank raises one line naming the first such
    rank and why, instead of the others waiting for it in their first collective (or training on other data).
    Failing on every rank, each raises its own error."""
    seen, error = {}, None
    try:
        yield seen
    except Exception as e:  # noqa: BLE001: raised again below, on every rank
        error = e
    if world_size > 1:
        reports = [None] * world_size
        dist.all_gather_object(reports, (error and str(error), seen))
        failed = [(rank, message) for rank, (message, _) in enumerate(reports) if message]
        if 0 < len(failed) < world_size:
            rank, message = failed[0]
            raise ValueError(f"rank {rank}: {message} ({SHARED_FILES_ADVICE})") from error
        first = reports[0][1]  # what rank 0 sees
        for rank, (_, theirs) in enumerate(reports if not failed else []):
            for what, value in theirs.items():
                if value != first[what]:
                    raise ValueError(f"rank {rank} sees {what} {_brief(value)}, rank 0 {_brief(first[what])}: "
                                     f"{SHARED_FILES_ADVICE}")
    if error is not None:
        raise error


def smallest(value, world_size, device):
    """The smallest of the ranks' values (None: unknown, the others decide): what every rank can afford."""
    if world_size > 1:
        x = torch.tensor(float("inf") if value is None else float(value), dtype=torch.float64, device=device)
        dist.all_reduce(x, op=dist.ReduceOp.MIN)
        value = None if x.item() == float("inf") else x.item()
    return value


def _brief(value):
    """A value for a one-line message: a long list as its length and first items."""
    if isinstance(value, list) and len(value) > 3:
        return f"{len(value)} ({', '.join(map(str, value[:3]))}, ...)"
    return str(value)


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
