"""
GPT-2 (124M) pretraining from scratch, in one file, in the order of the lecture ("Let's reproduce GPT-2"):

    1. the model     GPTConfig, CausalSelfAttention, MLP, Block, GPT, the size presets
    2. the data      token shards written by fineweb.py -> (B, T) batches
    3. training      the LR schedule and the loop: gradient accumulation, DDP / FSDP, bf16 autocast, val loss,
                     HellaSwag and samples every N steps, checkpoints
    4. command line  every knob, with defaults that reproduce the GPT-2 124M run on 10B FineWeb-Edu tokens

    python train_gpt2.py --quickstart             # a small GPT on Tiny Shakespeare, minutes on a laptop CPU
    python fineweb.py                              # FineWeb-Edu 10B -> edu_fineweb10B/ (the video's data)
    torchrun --standalone --nproc_per_node=8 train_gpt2.py   # GPT-2 124M on 10B tokens, as in the video
    python train_gpt2.py --resume                  # continue the run in --out-dir from its newest checkpoint
    python plot.py log                             # the curves of log/log.txt, beside GPT-2's and GPT-3's HellaSwag
    python sample.py -m log                        # samples from the newest checkpoint (hellaswag.py -m log scores it)

Beyond the lecture (the KV cache, the chunked loss, checkpoints and resuming, layered settings, torchrun and FSDP, the
device's choices, export, MFU, stop signals, the modern recipe): gptkit/, one call away. Importing runs nothing.
Every stage of the lecture, up to this file: python stages/stage.py
"""

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn import functional as F

import fineweb
import hellaswag
from gptkit import (checkpoint, chunked_loss, cpu, distributed, flops, hardware, hf, memory, modern, rundir,
                    sampling, settings, tracking)
from gptkit.cli import HelpFormatter, non_negative_float, non_negative_int, positive_float, positive_int
from gptkit.shards import ShardCursor, corpus_prefix, find_shards
from gptkit.signals import StopRequest
from gptkit.tokenizer import gpt2_tokenizer

# -----------------------------------------------------------------------------
# 1. The model
# -----------------------------------------------------------------------------


PADDED_VOCAB_SIZE = 50304  # GPT-2's 50257 rounded up to a multiple of 128: faster matmuls; the extra rows are never targets


@dataclass
class GPTConfig:
    block_size: int = 1024  # maximum sequence length
    vocab_size: int = PADDED_VOCAB_SIZE
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    attention: str = "flash"  # or "manual": the lecture's first version, the same numbers, slower (--attention)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head = config.n_head
        self.config = config  # shared by the whole model: config.attention picks the implementation
        self.layer_idx = layer_idx  # which slot of a KV cache this layer writes
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for all heads in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.RESIDUAL_PROJECTION = True  # gets the scaled-down init, see GPT._init_weights
        # The video registers the causal mask as a buffer named "bias" (Hugging Face's name for it). It is no
        # parameter, it would be saved with every checkpoint, and flash attention never reads it: here the mask
        # is made where it is used.

    def forward(self, x, cache=None, mask=None):
        B, T, C = x.size()  # batch size, sequence length, embedding dimension (n_embd)
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size): every head attends on its own
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        # mask: None is causal; an explicit bool mask serves several sequences packed in one row (HellaSwag)
        if cache is not None:  # sampling: attend over the cached earlier positions too (gptkit/sampling.py)
            y = cache.attend(self.layer_idx, q, k, v)
        elif self.config.attention == "manual":
            # the lecture's first version: every (T, T) score in memory, each token sees only the past
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, n_head, T, T)
            if mask is None:
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
            y = att @ v  # (B, n_head, T, head_size): a weighted sum of the values
        else:
            # flash attention: the same softmax(q @ k^T / sqrt(head_size)) @ v without materialising the scores
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 used the tanh approximation of GELU
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.RESIDUAL_PROJECTION = True

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: attention (tokens talk to each other), then the MLP (each token thinks)."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, mask=None):
        x = x + self.attn(self.ln_1(x), cache, mask)  # the residual stream stays a clean sum
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
            wpe=nn.Embedding(config.block_size, config.n_embd),  # learned position embeddings
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: the input embedding and the output projection are one matrix (saves 30% of 124M)
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        self.loss_chunk_size = 0  # the trainer's --loss-chunk-size: 0 computes the loss from the full logits

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "RESIDUAL_PROJECTION", False):
                # each block adds to the residual stream twice: keep its variance from growing with depth
                std *= (2 * self.config.n_layer) ** -0.5
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        """idx (B, T) token ids -> (logits (B, T, vocab_size), mean cross-entropy against targets (B, T) or None).
        With loss_chunk_size set, the loss is computed without ever holding all the logits: (None, loss)."""
        x = self.hidden_states(idx)  # (B, T, n_embd)
        if targets is not None and self.loss_chunk_size:
            return None, chunked_loss.chunked_cross_entropy(x, self.lm_head.weight, targets, self.loss_chunk_size)
        logits = self.lm_head(x)  # (B, T, vocab_size)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    def hidden_states(self, idx, pos=None, mask=None, cache=None):
        """The transformer without its head: (B, T) token ids -> (B, T, n_embd) after the final LayerNorm.
        Several sequences can share one row (HellaSwag packs a context and its four endings): pass their
        positions pos (B, T) and a boolean attention mask (B, 1, T, T) saying which tokens each may see.
        With a KV cache (sampling), the tokens continue the cached ones."""
        pos = sampling.positions(idx, self.config.block_size, pos, cache)  # (T,): 0 .. T-1 unless packed or cached
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C) + (T, C), broadcast over B
        for block in self.transformer.h:
            x = block(x, cache, mask)
        return self.transformer.ln_f(x)

    def num_params(self):
        """Parameters, counting the tied wte / lm_head matrix once."""
        return sum(p.numel() for p in self.parameters())

    def generate(self, prompts, max_new_tokens, **options):
        """Continue a batch of prompts (lists of token ids) with a KV cache; options (temperature, top_k, top_p,
        stop_token, generator, on_token) are those of gptkit.sampling.generate."""
        return sampling.generate(self, prompts, max_new_tokens, **options)

    @classmethod
    def from_pretrained(cls, name_or_dir):
        """OpenAI's GPT-2 weights through transformers: a hub name ("gpt2", "gpt2-medium", "gpt2-large",
        "gpt2-xl") or a directory written by save_pretrained (or by export_hf)."""
        hf_model = hf.from_pretrained(name_or_dir)
        hc = hf_model.config
        model = cls(GPTConfig(block_size=hc.n_positions, vocab_size=hc.vocab_size, n_layer=hc.n_layer,
                              n_head=hc.n_head, n_embd=hc.n_embd))
        sd = model.state_dict()
        sd_hf = {k: v for k, v in hf_model.state_dict().items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
        if set(sd_hf) != set(sd):
            raise ValueError(f"{name_or_dir}: parameter names differ from GPT-2's: {sorted(set(sd_hf) ^ set(sd))[:5]}")
        with torch.no_grad():
            for k, v in sd_hf.items():
                # OpenAI's checkpoints use Conv1D, whose weight is the transpose of nn.Linear's
                sd[k].copy_(v.t() if k.endswith(hf.CONV1D_WEIGHTS) else v)
        return model

    def configure_optimizers(self, weight_decay, learning_rate, device_type, fused=True):
        """AdamW with GPT-3's betas. Weight decay only on 2-D tensors (matmul weights, embeddings); biases and
        LayerNorm gains are left alone. The fused kernel does the whole update in one launch where supported."""
        params = [p for p in self.parameters() if p.requires_grad]  # a tied matrix appears once
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.95), eps=1e-8,
                                 fused=fused and device_type in ("cuda", "cpu"))


# Named model sizes. GPT-2 from the GPT-2 paper; GPT-3 from Table 2.1 of the GPT-3 paper ("Language Models
# are Few-Shot Learners"), with its batch size (in tokens) and learning rate as training defaults.
# The tiny presets train usefully on a laptop CPU.
#                 n_layer n_head n_embd block_size batch_tokens max_lr
PRESETS = {
    "tiny":          (4,     4,    128,   256,       16_384,     1e-3),
    "mini":          (6,     6,    384,   256,       32_768,     1e-3),
    "gpt2":          (12,    12,   768,   1024,     524_288,     6e-4),
    "gpt2-medium":   (24,    16,   1024,  1024,     524_288,     3e-4),
    "gpt2-large":    (36,    20,   1280,  1024,     524_288,     2.5e-4),
    "gpt2-xl":       (48,    25,   1600,  1024,     524_288,     2e-4),
    "gpt3-125m":     (12,    12,   768,   2048,     524_288,     6e-4),   # paper: 0.5M tokens
    "gpt3-350m":     (24,    16,   1024,  2048,     524_288,     3e-4),
    "gpt3-760m":     (24,    16,   1536,  2048,     524_288,     2.5e-4),
    "gpt3-1.3b":     (24,    32,   2048,  2048,   1_048_576,     2e-4),   # 1M
    "gpt3-2.7b":     (32,    32,   2560,  2048,   1_048_576,     1.6e-4),
    "gpt3-6.7b":     (32,    32,   4096,  2048,   2_097_152,     1.2e-4), # 2M
    "gpt3-13b":      (40,    40,   5120,  2048,   2_097_152,     1e-4),   # the table's 5140 is a typo: 40 x 128
    "gpt3-175b":     (96,    96,   12288, 2048,   3_145_728,     6e-5),   # 3.2M, rounded to 1536 x 2048
}


def preset(name, vocab_size=PADDED_VOCAB_SIZE):
    """Returns (GPTConfig, batch_tokens, max_lr) for a preset name."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset '{name}'; known presets: {', '.join(PRESETS)}")
    n_layer, n_head, n_embd, block_size, batch_tokens, max_lr = PRESETS[name]
    config = GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
    return config, batch_tokens, max_lr


def preset_of(config):
    """The name of the preset with config's shape (the vocabulary may be padded or not), or None."""
    shape = (config.n_layer, config.n_head, config.n_embd, config.block_size)
    return next((name for name, p in PRESETS.items() if p[:4] == shape), None)


def load_model(name_or_path):
    """Every reader's way to a model: one of our checkpoint files, a run directory (its newest checkpoint), a
    Hugging Face GPT-2 directory, an OpenAI model name (gpt2, gpt2-medium, gpt2-large, gpt2-xl), or one of our
    other presets (tiny, mini, gpt3-*) with fresh random weights, a chance-level baseline."""
    if name_or_path in PRESETS and not name_or_path.startswith("gpt2") and not os.path.exists(name_or_path):
        return GPT(preset(name_or_path)[0])
    path = rundir.newest_in_run(name_or_path)
    if checkpoint.is_checkpoint(path):
        return model_from_checkpoint(checkpoint.load_checkpoint(path))
    return GPT.from_pretrained(path)


def model_from_config(config):
    """A fresh model for a config dict (a checkpoint's): the lecture's GPT, or with --recipe modern's switches on,
    gptkit/modern.py's."""
    return modern.ModernGPT(modern.ModernConfig(**config)) if modern.is_modern(config) else GPT(GPTConfig(**config))


def model_from_checkpoint(ckpt):
    model = model_from_config(ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model


def starting_model(args):
    """The weights a run starts from: with --resume the newest checkpoint in --out-dir, else --init-from's model,
    else a fresh model of the --model preset. Returns (model, the checkpoint or None)."""
    if not args.resume and not args.eval_only and rundir.checkpoint_paths(args.out_dir):
        raise ValueError(f"{args.out_dir} already holds checkpoints; pass --resume to continue that run, "
                         "or choose another --out-dir")
    if args.resume:
        path = rundir.newest_checkpoint(args.out_dir)
        if os.path.isdir(path):  # sharded: the weights are loaded once the model is on its ranks (in train)
            meta = checkpoint.load_meta(path)
            return model_from_config(meta["config"]), meta
        need = checkpoint.MODEL_KEYS if args.eval_only else checkpoint.RESUME_KEYS  # a missing key: one line
        ckpt = checkpoint.load_checkpoint(path, need)
        return model_from_checkpoint(ckpt), ckpt
    if args.init_from:
        model = load_model(args.init_from)
        modern.check_switches_match(args, model.config, f"--init-from {args.init_from}")
        return model, None
    return model_from_config(asdict(modern.with_switches(preset(args.model, args.vocab_size)[0], args))), None


def print0(*args):
    """print on rank 0 only: under torchrun every rank runs this file, and one speaks for all."""
    if int(os.environ.get("RANK", 0)) == 0:
        print(*args, flush=True)


# -----------------------------------------------------------------------------
# 2. The data
# -----------------------------------------------------------------------------


class DataLoaderLite(ShardCursor):
    """(B, T) batches of inputs and next-token targets from the shards of one split ("train" or "val") in
    data_dir, for rank of world_size. Each shard is cut into chunks of B*T tokens (+1 for the last target); which
    chunk comes next is ShardCursor's bookkeeping (gptkit/shards.py): the ranks taking turns, epochs, --shuffle,
    reset() for val, a state_dict() for resuming. Without --shuffle the order is the lecture's: shard after shard,
    front to back."""

    def __init__(self, B, T, rank, world_size, split, data_dir, shuffle=False, seed=0, vocab_size=None):
        super().__init__(find_shards(data_dir, split), B, T, rank, world_size, shuffle, seed)
        self.vocab_size = vocab_size

    def next_batch(self):
        B, T = self.B, self.T
        path, tokens, chunk = self.next_chunk()
        buf = tokens[chunk * B * T : (chunk + 1) * B * T + 1]
        if self.vocab_size is not None and int(buf.max()) >= self.vocab_size:
            raise ValueError(f"shard {path} holds token id {int(buf.max())}, outside the model's vocabulary of "
                             f"{self.vocab_size}")
        buf = torch.from_numpy(buf.astype(np.int64))  # uint16 on disk -> int64 for the embedding lookup
        x = buf[:-1].view(B, T)  # inputs
        y = buf[1:].view(B, T)  # targets: the next token at every position
        return x, y


# -----------------------------------------------------------------------------
# 3. Training
# -----------------------------------------------------------------------------


def get_lr(step, warmup_steps, max_steps, max_lr, min_lr):
    """GPT-3's schedule: linear warmup to max_lr, then cosine decay to min_lr at max_steps, min_lr after that."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def print_samples(model, device, autocast, num_samples, sample_tokens, rank, prompt="Hello, I'm a language model,"):
    """Continue the prompt num_samples times by sample_tokens tokens, each sampled among the 50 most likely (top-k
    50, as Hugging Face's pipeline does), with a KV cache (model.generate). Every rank writes its own."""
    enc = gpt2_tokenizer()
    # a generator of its own: the samples leave the training's random numbers alone, and differ between ranks
    generator = torch.Generator(device).manual_seed(42 + rank)
    model.eval()
    with distributed.unsharded(model), autocast:  # FSDP: the full weights, for the generation only
        out = model.generate([enc.encode(prompt)] * num_samples, sample_tokens, top_k=50, generator=generator)
    for i, row in enumerate(out):
        print(f"rank {rank} sample {i}: {enc.decode(row)}", flush=True)
    model.train()


def evaluate_val_loss(model, val_loader, autocast, device, eval_steps, world_size):
    """Mean loss over the first eval_steps val batches, the same batches every time, averaged over the ranks."""
    model.eval()
    val_loader.reset()
    total = torch.zeros((), device=device)
    with torch.no_grad():
        for _ in range(eval_steps):
            x, y = val_loader.next_batch()
            with autocast:
                _, loss = model(x.to(device), y.to(device))
            total += loss / eval_steps
    model.train()
    return distributed.all_reduce_mean(total, world_size).item()


def evaluate_hellaswag(model, examples, autocast, device, rank, world_size, batch_size):
    """acc_norm: the share of examples whose right ending has the lowest mean loss per ending token, batch_size
    examples a forward pass (hellaswag.py); rank k scores examples k, k + N, ... and the counts are summed over the
    ranks. Returns hellaswag.evaluate's counts and shares."""
    model.eval()
    with distributed.unsharded(model):
        result = hellaswag.evaluate(hellaswag.gpt_logits_fn(model, autocast), examples, gpt2_tokenizer(), device,
                                    batch_size, rank, world_size)
    model.train()
    return result


def save_checkpoint(model, optimizer, train_loader, step, val_loss, args, scaler):
    """The run after step updates, in args.out_dir: the weights with the config that builds the model for them, and
    what continuing exactly needs besides: the optimizer's state, the loader's place, the RNG, the settings and
    float16's loss scale. One file, or with --fsdp a folder in which every rank writes its own shards
    (gptkit/checkpoint.py)."""
    # the config as a plain dict: the video pickles the GPTConfig object, which torch.load only unpickles with
    # weights_only=False (torch >= 2.6 refuses it by default: unpickling a class can run code)
    meta = {"config": asdict(model.config), "step": step, "args": vars(args), "val_loss": val_loss,
            "train_loader": train_loader.state_dict(), "rng": {"torch": torch.get_rng_state()},
            "scaler": scaler.state_dict()}
    path = checkpoint.save(model, optimizer, meta, args.out_dir, step, args.keep_checkpoints, args.fsdp)
    print0(f"saved {path}")


def append_log(records, step, kind, value, **figures):
    """One event of the run: `{step} {train|val|hella} {value}` in log.txt, and on the dashboards with the step's
    other figures (gptkit/tracking.py). Only rank 0 keeps records (the others pass None)."""
    if records is not None:
        records.record(step, kind, value, **figures)


def train(args, model, ckpt, device, rank, world_size, stop):
    """model: the plain module on this rank's device (ckpt: the checkpoint it was loaded from, to resume); under
    torchrun it is wrapped in DDP or sharded by FSDP here. stop: the StopRequest of main. Returns the last val loss."""
    info = hardware.probe(device)  # bf16 autocast where the device multiplies bf16 natively, float16 on older GPUs
    choices = hardware.decide(info, args.dtype, args.fused_adamw, args.compile, args.attention)
    batch_line = None
    if args.batch_size == "auto":  # the largest micro-batch that fits every rank's memory, by the memory plan
        capacity = distributed.smallest(hardware.memory_capacity(device, args.device_memory), world_size, device)
        args.batch_size, batch_line = memory.auto_batch_size(model.config, args, world_size,
                                                             choices.dtype != torch.float32, capacity)
    B, T, vocab_size = args.batch_size, args.seq_len, model.config.vocab_size
    if args.total_batch_size % (B * T * world_size):
        raise ValueError(f"--total-batch-size {args.total_batch_size} is not divisible by B*T*world_size = "
                         f"{B}*{T}*{world_size} = {B * T * world_size}; change -B, -T or --total-batch-size")
    grad_accum_steps = args.total_batch_size // (B * T * world_size)
    # everything that can be wrong with the inputs shows up here, on every rank together (one line from rank 0)
    with distributed.same_outcome(world_size) as seen:
        tracking.check_installed(args.wandb, args.tensorboard)
        if args.quickstart or args.finetune:
            fineweb.tinyshakespeare_shards(args.data_dir)  # made from input.txt by the first rank to get there
        train_loader = None if args.eval_only else \
            DataLoaderLite(B, T, rank, world_size, "train", args.data_dir, args.shuffle, args.seed, vocab_size)
        val_loader = DataLoaderLite(B, T, rank, world_size, "val", args.data_dir, vocab_size=vocab_size) \
            if args.eval_interval else None
        examples = hellaswag.load_val_examples(args.hellaswag_dir, model.config.block_size) \
            if args.hellaswag_interval else None
        if args.sample_interval:
            gpt2_tokenizer()  # samples need it: a missing tokenizer is said now, not at the first sample
        # several nodes: every rank must read the same shards as rank 0
        seen["shards"] = [os.path.basename(p) for d in (train_loader, val_loader) if d for p in d.paths]
    # DDP (a copy per rank, gradients averaged) or FSDP (every parameter sharded over the ranks): gptkit/distributed.py
    wrapped = distributed.wrap_model(model, args.fsdp, world_size, device, args.activation_checkpointing,
                                     choices.dtype, args.cpu_offload)
    if args.muon:
        optimizer = modern.MuonAdamW(model, args.weight_decay, args.max_lr, args.muon_lr, args.muon_weight_decay,
                                     choices.fused_adamw, args.adamw_lr_scale)
    else:  # the lecture's AdamW, for a modern model too (it only looks at the parameters)
        optimizer = GPT.configure_optimizers(model, args.weight_decay, args.max_lr, info.type, choices.fused_adamw)
    autocast = torch.autocast(info.type, dtype=choices.dtype, enabled=choices.dtype != torch.float32)
    scaler = torch.amp.GradScaler(info.type, enabled=choices.grad_scaler)  # float16: the loss scaled for backward
    start_step, val_loss = 0, None
    if ckpt is not None:  # the weights, optimizer, data position, RNG and loss scale where the checkpoint left them
        path = rundir.newest_checkpoint(args.out_dir)
        checkpoint.restore(path, ckpt, model, optimizer, train_loader, scaler)
        start_step, val_loss = ckpt["step"], ckpt.get("val_loss")
        print0(f"resuming from {path} at step {start_step}")
    best_val_loss = val_loss  # for --save-best
    # HellaSwag and the samples call the plain model: their shapes differ from the training's and would make
    # torch.compile compile again and again (the video turned --compile off for them)
    train_model = torch.compile(wrapped) if choices.compile else wrapped
    print0(f"model: {model.num_params() / 1e6:.1f}M parameters ({preset_of(model.config) or 'custom shape'}), "
           f"T={T} | total batch {args.total_batch_size:,} tokens = {B} x {T} x {world_size} ranks x "
           f"{grad_accum_steps} accumulation steps | max lr {args.max_lr:g} | device {device}")
    print0(hardware.describe(info, choices) + (f"\n{batch_line}" if batch_line else ""))  # -B auto's choice
    for line in memory.startup_lines(model.config, model.num_params(), args, world_size, device,
                                     choices.dtype != torch.float32):
        print0(line)
    end_step = start_step if args.eval_only else min(args.max_steps, args.stop_at or args.max_steps)
    if start_step >= end_step and not args.eval_only:
        print0(f"nothing to do: the run is at step {start_step} and --max-steps is {args.max_steps}; "
               "to train further, resume with a larger --max-steps")
        return val_loss
    lock, records, skipped_steps, stopping = None, None, 0, False
    if not args.eval_only:
        os.makedirs(args.out_dir, exist_ok=True)
        if rank == 0:
            # a second job on this directory stops here, and so does a disk without room for a checkpoint
            lock = rundir.claim_run_dir(args.out_dir, memory.checkpoint_bytes(model.config, args.muon))
            records = tracking.RunRecords(args.out_dir, vars(args), start_step, {  # log.txt, run.json, dashboards
                "corpus": corpus_prefix(args.data_dir), "n_params": model.num_params()})
    for step in range(start_step, end_step + 1):
        last_step = step == end_step or stopping  # --stop-at and a stop signal end the run early, with a checkpoint
        final = step == args.max_steps or args.eval_only  # the trained model: every evaluation, whatever the intervals
        if args.eval_interval and (final or (step % args.eval_interval == 0 and not last_step)):
            val_loss = evaluate_val_loss(train_model, val_loader, autocast, device, args.eval_steps, world_size)
            print0(f"step {step:5d} | val loss {val_loss:.4f}")
            append_log(records, step, "val", val_loss)
            if args.save_best and not args.eval_only and (best_val_loss is None or val_loss < best_val_loss):
                best_val_loss = val_loss  # fine-tuning: keep the weights that did best, not the last ones
                save_checkpoint(model, optimizer, train_loader, step, val_loss, args, scaler)
        if args.hellaswag_interval and (final or (step % args.hellaswag_interval == 0 and not last_step)):
            result = evaluate_hellaswag(model, examples, autocast, device, rank, world_size, args.hellaswag_batch_size)
            print0(f"step {step:5d} | HellaSwag acc_norm {result['correct_norm']}/{result['n']} = "
                   f"{result['acc_norm']:.4f}")
            append_log(records, step, "hella", result["acc_norm"])
        if args.sample_interval and (final or (step > 0 and step % args.sample_interval == 0 and not last_step)):
            print_samples(model, device, autocast, args.num_samples, args.sample_tokens, rank, args.sample_prompt)
        # every rank takes part: FSDP's ranks each write their shards (one file: rank 0 writes it, gptkit/checkpoint.py)
        if step > start_step and not args.save_best and (last_step or (args.checkpoint_interval and
                                                                       step % args.checkpoint_interval == 0)):
            save_checkpoint(model, optimizer, train_loader, step, val_loss, args, scaler)  # the last val loss measured
        if last_step:
            if stopping:
                print0(f"stopped by a signal after step {step - 1}; " + ("the best checkpoint is kept"
                                                                         if args.save_best else "continue with --resume"))
            break
        t0 = time.time()
        optimizer.zero_grad()
        loss_accum = torch.zeros((), device=device)
        for micro_step in range(grad_accum_steps):  # backward() adds each micro-batch's gradients to the last
            x, y = train_loader.next_batch()
            if device.startswith("cuda"):  # from page-locked memory the copy runs asynchronously, beside GPU work
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            # average the gradients across ranks after the last micro-batch only, not after every one
            distributed.set_gradient_sync(wrapped, micro_step == grad_accum_steps - 1)
            with autocast:  # matmuls in bf16 (or float16), the weights and the loss in fp32
                _, loss = train_model(x, y)
            loss = loss / grad_accum_steps  # the step's loss is the mean over the micro-batches, not their sum
            loss_accum += loss.detach()
            scaler.scale(loss).backward()  # float16: scaled up so that small gradients do not flush to zero
        # one all-reduce carries the loss for the log and whether any rank was asked to stop: read now, after the
        # forward and backward passes, so that a signal during this step stops the run after this step
        stats = torch.stack([loss_accum, torch.tensor(float(stop.requested), device=device)])
        loss_value, stop_votes = distributed.all_reduce_mean(stats, world_size).tolist()  # one host sync
        if not math.isfinite(loss_value):
            last = rundir.checkpoint_paths(args.out_dir)
            raise FloatingPointError(f"loss is {loss_value} at step {step}; stopping before the update. The last "
                                     f"good checkpoint is {last[-1] if last else 'none'}; lower --max-lr or check "
                                     "the data")
        scaler.unscale_(optimizer)  # float16: the gradients back at their true size before clipping
        # one bad batch must not throw the model far: the gradient's norm over all parameters is capped
        norm = distributed.full_tensor(torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)).item()
        if args.schedule == "wsd":
            lr = modern.wsd_lr(step, args.warmup_steps, args.max_steps, args.max_lr, args.min_lr, args.cooldown_frac)
        else:
            lr = get_lr(step, args.warmup_steps, args.max_steps, args.max_lr, args.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # Muon's groups run at their own multiple of the LR
        if hardware.scaled_step(scaler, optimizer):  # float16: no update when a gradient overflowed
            skipped_steps += 1
            print0(f"step {step:5d} | float16 gradients overflowed: update skipped, loss scale lowered to "
                   f"{scaler.get_scale():g} ({skipped_steps} skipped in this run)")
        if device.startswith("cuda"):
            torch.cuda.synchronize()  # wait for the GPU's queue: an honest step time
        dt = time.time() - t0
        tokens_per_sec = args.total_batch_size / dt
        use = flops.utilization(model.config, T, tokens_per_sec / world_size, device)  # per device
        print0(f"step {step:5d} | loss {loss_value:.6f} | lr {lr:.4e} | norm {norm:.4f} | dt {dt * 1000:.0f}ms | "
               f"tok/sec {tokens_per_sec:,.0f} | " + (f"mfu {use['mfu']:.1%}" if "mfu" in use
                                                      else f"{use['tflops']:.3f} TFLOP/s"))
        append_log(records, step, "train", loss_value, lr=lr, grad_norm=norm, tokens_per_sec=tokens_per_sec, **use)
        if step == start_step + 1 and end_step - step > 2:  # the first step compiled; this one is typical
            print0(f"about {dt * (end_step - step - 1) / 60:.1f} more minutes for {end_step - step - 1} steps "
                   f"at {dt:.2f}s a step")
        stopping = stop_votes > 0
    if records is not None:
        records.close()
        lock.release()
    if world_size > 1:
        dist.barrier()  # no rank tears the process group down while rank 0 still writes its checkpoint
    return val_loss


# -----------------------------------------------------------------------------
# 4. Command line
# -----------------------------------------------------------------------------


def build_parser():
    p = argparse.ArgumentParser(description="Train GPT-2 (or a GPT-3-sized model) from scratch. The defaults "
                                "reproduce the GPT-2 124M run: 19,073 steps of 524,288 FineWeb-Edu tokens. "
                                "Several GPUs: torchrun --standalone --nproc_per_node=8 train_gpt2.py ...",
                                formatter_class=HelpFormatter)
    settings.add_arguments(p)  # --quickstart, --finetune
    m = p.add_argument_group("model")
    m.add_argument("--model", default="gpt2", choices=PRESETS, metavar="NAME",
                   help=f"model preset: {', '.join(PRESETS)}")
    m.add_argument("--vocab-size", type=positive_int, default=PADDED_VOCAB_SIZE,
                   help="vocabulary rows of a fresh model: GPT-2's 50257 tokens, padded to 50304 for faster matmuls")
    m.add_argument("--attention", default="flash", choices=["flash", "manual"],
                   help="scaled_dot_product_attention, or the lecture's first version (q @ k^T, mask, softmax, @ v)")
    m.add_argument("--init-from", help="start from these weights instead of --model's fresh ones: an OpenAI model "
                                       "name (gpt2, gpt2-xl, ...), a Hugging Face GPT-2 directory, a checkpoint file "
                                       "or a run directory; batch size and LR default to that model's preset")
    d = p.add_argument_group("data")
    d.add_argument("--data-dir", default="edu_fineweb10B", help="directory of token shards made by fineweb.py")
    d.add_argument("--shuffle", action="store_true", help="permute shard and chunk order every epoch (seeded)")
    o = p.add_argument_group("optimization")
    o.add_argument("--total-batch-size", type=positive_int,
                   help="tokens per optimizer step, reached by gradient accumulation (default: the preset's; "
                        "524,288 for gpt2)")
    o.add_argument("-B", "--batch-size", type=memory.batch_size_arg, default="auto",
                   help="micro-batch: sequences per forward pass per rank; auto: the largest that fits the device by "
                        "the memory plan (--device-memory)")
    o.add_argument("-T", "--seq-len", type=positive_int, help="sequence length (default: the model's block_size)")
    o.add_argument("--max-steps", "--steps", type=positive_int, default=19073,
                   help="optimizer steps (19,073 x 524,288 = 10B tokens)")
    o.add_argument("--warmup-steps", type=non_negative_int, default=715, help="linear LR warmup steps")
    o.add_argument("--max-lr", type=positive_float, help="peak learning rate (default: the preset's; 6e-4 for gpt2)")
    o.add_argument("--min-lr", type=non_negative_float,
                   help="final learning rate of the cosine decay (default: max-lr / 10)")
    o.add_argument("--weight-decay", type=non_negative_float, default=0.1, help="AdamW weight decay on 2-D parameters")
    o.add_argument("--grad-clip", type=positive_float, default=1.0, help="clip the global gradient norm to this")
    r = p.add_argument_group("evaluation and samples (an interval of 0 turns it off)")
    r.add_argument("--eval-interval", type=non_negative_int, default=250, help="steps between val loss evaluations")
    r.add_argument("--eval-steps", type=positive_int, default=20, help="val micro-batches per evaluation")
    r.add_argument("--hellaswag-interval", type=non_negative_int, default=250,
                   help="steps between HellaSwag evaluations")
    r.add_argument("--hellaswag-dir", default=hellaswag.DEFAULT_CACHE,
                   help="folder for hellaswag_val.jsonl (downloaded there if missing, from the folder URL in "
                        "HELLASWAG_URL if set)")
    r.add_argument("--hellaswag-batch-size", type=positive_int, default=16, help="HellaSwag examples per forward pass")
    r.add_argument("--sample-interval", type=non_negative_int, default=250, help="steps between printed samples")
    r.add_argument("--sample-prompt", default="Hello, I'm a language model,", help="prompt for the samples")
    r.add_argument("--num-samples", type=positive_int, default=4, help="samples per rank")
    r.add_argument("--sample-tokens", type=positive_int, default=32, help="new tokens per sample")
    r.add_argument("--eval-only", action="store_true",
                   help="evaluate the starting model once (--init-from RUN, --resume, or a preset) and exit: val "
                        "loss, HellaSwag and samples, each unless its interval is 0; nothing is written")
    s = p.add_argument_group("system")
    s.add_argument("--seed", type=int, default=1337, help="seed for the initial weights and data shuffling")
    hardware.add_arguments(s)  # --device, --dtype, --tf32, --compile, --fused-adamw: what runs where
    chunked_loss.add_arguments(s)  # --loss-chunk-size: beyond the lecture, a system knob
    # beyond the lecture: each module adds its own flags
    checkpoint.add_arguments(p)  # --out-dir, --resume, --checkpoint-interval, --stop-at, ...
    distributed.add_arguments(p)  # --fsdp, --cpu-offload, --activation-checkpointing
    memory.add_arguments(p)  # --plan, --nproc, --device-memory
    tracking.add_arguments(p)  # --wandb, --tensorboard
    modern.add_arguments(p)  # --recipe, --rotary, --muon, --schedule, ...
    return p


def parse_args(argv=None):
    """The run's settings, in one place: the defaults above, then --quickstart's or --finetune's, the modern
    recipe's, a resumed run's saved ones, and the flags on the command line (gptkit/settings.py). Settings that
    follow from the model (batch size, LR, sequence length) are filled in once it is loaded (main)."""
    return settings.resolve(build_parser(), argv)


def main(argv=None):
    cpu.keep_freed_memory()  # a step's large buffers are reused, not page-faulted in again every step (gptkit/cpu.py)
    try:
        args = parse_args(argv)
        if args.plan:  # an untied head (--recipe modern) counts too
            config, batch_tokens, max_lr = preset(args.model, args.vocab_size)
            settings.fill_model_defaults(args, config, batch_tokens, max_lr)
            memory.print_plan(args.model, modern.with_switches(config, args), args)
            return 0
        # from the start: a Ctrl-C during set-up is acknowledged too, and the training loop reads it
        with StopRequest(announce=print0) as stop:
            rank, world_size = distributed.rank_and_world_size()  # set by torchrun
            distributed.check_arguments(args)  # --fsdp, --cpu-offload, --device under torchrun
            # NCCL between GPUs, gloo between CPU processes; each rank on its own GPU
            device = distributed.setup_distributed(args.device, args.cpu_offload)
            torch.set_float32_matmul_precision("high" if args.tf32 else "highest")  # TF32 matmuls on Ampere and newer
            torch.manual_seed(args.seed)  # the same initial weights every run, on every rank
            with distributed.same_outcome(world_size) as seen:  # a problem on some ranks only: one line from rank 0
                model, ckpt = starting_model(args)
                _, batch_tokens, max_lr = preset(preset_of(model.config) or args.model)  # --init-from gpt2-xl: its own
                settings.fill_model_defaults(args, model.config, batch_tokens, max_lr)
                # several nodes: every rank must resume from the same checkpoint as rank 0
                seen["checkpoint"] = ckpt and os.path.basename(rundir.newest_checkpoint(args.out_dir))
            model.loss_chunk_size = args.loss_chunk_size
            model.config.attention = args.attention  # a loaded model too
            train(args, model.to(device), ckpt, device, rank, world_size, stop)
    except (ValueError, OSError, FloatingPointError) as e:  # OSError: a missing file, a full disk, ...
        if distributed.rank_and_world_size()[0] == 0:  # under torchrun every rank finds the same problem
            print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # a second Ctrl-C
        print(f"aborted: {e}", file=sys.stderr)
        return 130
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
