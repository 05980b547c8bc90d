"""The memory plan: how much memory one device needs for a model, micro-batch and way of training, worked out
before anything is allocated, printed at start-up, and alone with `train_gpt2.py --plan`, with advice when it
will not fit.

Per device, in bytes, for N parameters, L layers, width C, vocabulary V, B x T tokens a micro-batch:
    weights 4N, gradients 4N, AdamW's two moments 8N   (fp32; divided by the ranks under FSDP; with --muon the
                                                       blocks' matrices keep one momentum, 4 bytes each)
    activations kept for the backward pass, per layer  (B*T*C) * 34 in bf16 (the residual stream and the two
        LayerNorm inputs in fp32, the rest bf16), * 68 in fp32 (flash attention: no T x T scores); with activation
        checkpointing only the layer's input (4 B*T*C) stays, and one layer is recomputed at a time
    the loss                                           12 bytes per logit (log-softmax and its gradient in fp32)
                                                       for B*T positions; in chunks (--loss-chunk-size) about 12
                                                       per logit of one chunk (its logits and their gradient in the
                                                       matmuls' dtype, an fp32 copy and its log-softmax; on a CPU
                                                       those two are made 32 rows at a time: 8 in fp32), and the
                                                       head's fp32 gradient 4VC
    FSDP with bf16 or fp16                             the gathered 16-bit weights of two blocks and of the root
"""

import argparse

import torch

GIB = 2**30


def parameter_count(config):
    """Parameters of the GPT in train_gpt2.py, the tied wte / lm_head counted once; of gptkit.modern's GPT too."""
    C, L, V = config.n_embd, config.n_layer, config.vocab_size
    switch = lambda name: getattr(config, name, False)  # noqa: E731  the modern recipe's switches, off for GPTConfig
    norms = 0 if switch("rmsnorm") else (4 * L + 2) * C  # LayerNorm gains and biases; RMSNorm has none here
    positions = 0 if switch("rotary") else config.block_size * C
    head = V * C if switch("untied_head") else 0
    return V * C + positions + L * (12 * C * C + 9 * C) + norms + head


def plan(config, B, T, world_size=1, fsdp=False, activation_checkpointing=False, bf16=True, loss_chunk_size=0,
         muon=False):
    """{part: bytes} for one device, and "total"."""
    n, C, L = parameter_count(config), config.n_embd, config.n_layer
    muon_matrices = L * 12 * C * C if muon else 0  # attention's and the MLP's weights: Muon keeps one buffer
    shards = world_size if fsdp else 1
    per_layer = B * T * C * (34 if bf16 else 68)
    if activation_checkpointing:
        activations = L * B * T * C * 4 + per_layer  # every block's input, and one block recomputed
    else:
        activations = L * per_layer
    activations += B * T * C * 4 * 3  # embeddings, the final LayerNorm's input and output
    parts = {
        "weights": 4 * n / shards,
        "gradients": 4 * n / shards,
        ("Muon + AdamW state" if muon else "AdamW state"): (8 * n - 4 * muon_matrices) / shards,
        "activations": activations,
        "loss": (12 * loss_chunk_size + 4 * C if loss_chunk_size else 12 * B * T) * config.vocab_size,
    }
    if fsdp and bf16:
        block = 12 * C * C + 13 * C
        parts["gathered 16-bit weights"] = 2 * (2 * block + config.vocab_size * C + config.block_size * C)
    parts["total"] = sum(parts.values())
    return parts


def checkpoint_bytes(config, muon=False):
    """About the size of a checkpoint: the fp32 weights and the optimizer state (the settings and the data position
    beside them are small)."""
    parts = plan(config, 1, 1, muon=muon)
    return parts["weights"] + parts["Muon + AdamW state" if muon else "AdamW state"]


def describe(parts, capacity=None):
    """One line: the parts and the total in GiB, and against capacity (bytes) when known."""
    text = ", ".join(f"{name} {size / GIB:.2f}" for name, size in parts.items() if name != "total")
    line = f"memory plan per device: {parts['total'] / GIB:.2f} GiB ({text})"
    if capacity:
        line += f" of {capacity / GIB:.0f} GiB"
    return line


def advice(parts, capacity, B, fsdp, activation_checkpointing, world_size):
    """What to change when the plan does not fit in capacity bytes: None when it fits."""
    if parts["total"] <= capacity:
        return None
    tips = []
    if B > 1:
        tips.append("a lower -B (the total batch stays the same: more accumulation steps)")
    if not activation_checkpointing:
        tips.append("--activation-checkpointing")
    tips.append("--loss-chunk-size 8192" if parts["loss"] > 0.1 * parts["total"] else None)
    if not fsdp:
        tips.append("--fsdp to shard weights, gradients and AdamW state over the GPUs")
    else:
        tips.append(f"more GPUs than {world_size} (the model state is split over all of them)")
    return "will not fit: try " + "; ".join(t for t in tips if t)


def plan_lines(config, args, world_size, bf16, capacity=None):
    """The plan for the trainer's settings (args: -B, -T, --fsdp, --activation-checkpointing, --loss-chunk-size),
    as the lines it prints: per device, and advice when it will not fit in capacity bytes."""
    parts = plan(config, args.batch_size, args.seq_len or config.block_size, world_size, args.fsdp,
                 args.activation_checkpointing, bf16, args.loss_chunk_size, getattr(args, "muon", False))
    tip = advice(parts, capacity, args.batch_size, args.fsdp, args.activation_checkpointing, world_size) \
        if capacity else None
    return [describe(parts, capacity)] + ([tip] if tip else [])


HEADROOM = 0.9  # -B auto plans for 90% of the memory: the CUDA context, the allocator's slack, compiled kernels


def auto_batch_size(config, args, world_size, bf16, capacity):
    """-B auto: the largest micro-batch whose plan fits in capacity bytes (HEADROOM of it) among those that keep
    --total-batch-size by gradient accumulation. Returns (B, the line that says so); a model that does not fit
    even at B=1 is an error naming what would make it fit."""
    T, total = args.seq_len, args.total_batch_size
    per_rank = total // (T * world_size) if total % (T * world_size) == 0 else 1  # else: the trainer's error
    candidates = [b for b in range(per_rank, 0, -1) if per_rank % b == 0]
    if capacity is None:  # a platform that does not say how much memory is free
        B = next(b for b in candidates if b <= 8)
        return B, f"-B auto: {B} (this platform does not say how much memory is free; -B sets it)"
    needs = lambda b: plan(config, b, T, world_size, args.fsdp, args.activation_checkpointing, bf16,  # noqa: E731
                           args.loss_chunk_size, getattr(args, "muon", False))["total"]
    B = next((b for b in candidates if needs(b) <= HEADROOM * capacity), None)
    if B is None:
        raise ValueError(f"the model does not fit in {capacity / GIB:.1f} GiB even at -B 1 (the memory plan: "
                         f"{needs(1) / GIB:.1f} GiB); try --activation-checkpointing, --loss-chunk-size 8192, --fsdp "
                         "over more GPUs, or a smaller --model or -T")
    accumulation = per_rank // B
    return B, (f"-B auto: {B}, the largest micro-batch whose memory plan fits {capacity / GIB:.1f} GiB, with "
               f"{accumulation} accumulation step{'s' * (accumulation > 1)} for the total batch of {total:,} tokens")


def batch_size_arg(text):
    """argparse type of -B: auto, or a positive number of sequences."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be positive or auto, not {text}")
    return int(text)


def print_plan(name, config, args):
    """--plan: the memory plan of the model `name` (config) for --nproc GPUs of --device-memory GiB each (80 by
    default), printed without training or a GPU; -B auto says which micro-batch fits."""
    capacity = (args.device_memory or 80) * GIB
    if args.batch_size == "auto":
        args.batch_size, line = auto_batch_size(config, args, args.nproc, args.dtype != "float32", capacity)
        print(line)
    print(f"{name}: {parameter_count(config) / 1e6:,.1f}M parameters, -B {args.batch_size}, "
          f"T={args.seq_len or config.block_size}, {args.nproc} GPUs, {'FSDP' if args.fsdp else 'DDP'}"
          f"{', activation checkpointing' if args.activation_checkpointing else ''}")
    for line in plan_lines(config, args, args.nproc, args.dtype != "float32", capacity):
        print(line)


def startup_lines(config, n_params, args, world_size, device, bf16):
    """What the trainer says about memory as it starts: the plan for this device, and a note when a CPU is given a
    GPU-sized step."""
    capacity = torch.cuda.get_device_properties(device).total_memory if device.startswith("cuda") else None
    lines = plan_lines(config, args, world_size, bf16, capacity)
    if device == "cpu" and args.total_batch_size * n_params > 1e12:
        lines.append(f"note: {args.total_batch_size:,} tokens a step through {n_params / 1e6:.0f}M parameters is a "
                     "GPU workload: on a CPU each step takes a long time (see the second step's estimate); "
                     "--quickstart is sized for a CPU")
    return lines


def add_arguments(parser):
    """The trainer's flags for planning without training."""
    g = parser.add_argument_group("memory plan")
    g.add_argument("--plan", action="store_true",
                   help="print the memory plan per GPU (weights, gradients, AdamW, activations, loss) and exit")
    g.add_argument("--nproc", type=int, default=8, help="with --plan: the number of GPUs to plan for")
    g.add_argument("--device-memory", "--gpu-memory", type=float, metavar="GIB",
                   help="plan -B auto (and --plan) for a device of this many GiB instead of the one present (default: "
                        "its free memory; with --plan, 80)")
