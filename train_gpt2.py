"""
GPT-2 (124M) pretraining from scratch, in one file, in the order of the lecture:

    1. the model     GPTConfig, the transformer blocks, GPT, presets, OpenAI weights, sampling
    2. the data      token shards on disk -> (B, T) batches
    3. training      AdamW, the LR schedule, DDP / FSDP, checkpoints, the loop
    4. command line  every knob, with defaults that reproduce the GPT-2 124M run on 10B FineWeb-Edu tokens

Run `python train_gpt2.py --help` for the training flags. Importing this file only defines things.
"""

import argparse
import json
import math
import os
import pickle
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import tiktoken
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_optimizer_state_dict)
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

import hellaswag

# -----------------------------------------------------------------------------
# 1. The model
# -----------------------------------------------------------------------------

EOT_TOKEN = 50256  # GPT-2's <|endoftext|>, which also starts every document in our shards
GPT2_VOCAB_SIZE = 50257  # the real GPT-2 vocabulary
PADDED_VOCAB_SIZE = 50304  # rounded up to a multiple of 128: faster matmuls, the extra rows are never targets


@dataclass
class GPTConfig:
    block_size: int = 1024  # maximum sequence length (n_ctx)
    vocab_size: int = PADDED_VOCAB_SIZE
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head = config.n_head
        self.layer_idx = layer_idx  # which slot of a KVCache this layer writes
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.RESIDUAL_PROJECTION = True  # gets the scaled-down init, see GPT._init_weights

    def forward(self, x, cache=None, mask=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim): every head attends independently
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # sampling: attend over every cached position as well
        if mask is None:
            # training: flash attention with the causal mask built in
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # an explicit mask: positions of the KV cache not yet written, or sequences packed into one row
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
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
    """Pre-LayerNorm transformer block: attention (tokens talk) then MLP (each token thinks)."""

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


class KVCache:
    """Keys and values of every layer for positions already seen, so each new token costs one
    position of compute instead of re-running the whole prefix. Preallocated to `max_len` so that
    shapes stay static (friendly to torch.compile)."""

    def __init__(self, config, batch_size, max_len, device, dtype):
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0  # how many positions are filled

    def attn_mask(self, T):
        """(T, max_len) bool: new query i (at position pos+i) may see cached positions <= pos+i."""
        max_len = self.k.size(3)
        if self.pos + T > max_len:
            raise ValueError(f"KV cache holds {max_len} positions; cannot add {T} after {self.pos}")
        q_pos = torch.arange(self.pos, self.pos + T, device=self.k.device)
        return torch.arange(max_len, device=self.k.device)[None, :] <= q_pos[:, None]

    def update(self, layer, k, v):
        T = k.size(2)
        self.k[layer, :, :, self.pos : self.pos + T] = k
        self.v[layer, :, :, self.pos : self.pos + T] = v
        return self.k[layer], self.v[layer]


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of the logits x @ weight.T against targets, without ever holding all the logits.

    The logits are the largest activation in GPT-2 training: (B*T, 50304), 3.3 GB in fp32 at B=16, T=1024, kept
    for the backward pass. Here they are made chunk_size rows at a time, and each chunk's gradient is taken at
    once (d loss / d logits = (softmax - one_hot(target)) / N) and pushed through the matmul, so only the
    gradients of x (N, C) and weight (V, C) wait for backward. Under autocast the matmuls run in bf16 like
    lm_head's would; the softmax and the weight gradient's running sum are fp32. torch.compile turns each
    chunk's softmax, loss and gradient into one kernel between the matmuls; run eagerly, every step of it
    is a pass over the chunk, and the saving is only memory."""

    @staticmethod
    def forward(ctx, x, weight, targets, chunk_size, with_grad):
        # x (N, C), weight (V, C), targets (N,); with_grad: whether backward will be called (no_grad evals skip it)
        N = x.size(0)
        vocab_ids = torch.arange(weight.size(0), device=x.device)
        loss = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x) if with_grad else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if with_grad else None
        for start in range(0, N, chunk_size):
            xs, ts = x[start : start + chunk_size], targets[start : start + chunk_size]
            z = xs @ weight.t()  # (n, V): the only logits in memory, in the matmuls' dtype (bf16 under autocast)
            logits = z.float()
            lse = torch.logsumexp(logits, dim=-1)  # (n,)
            loss += (lse - logits.gather(1, ts[:, None]).squeeze(1)).sum()  # -log softmax at the targets
            if with_grad:
                # softmax - one_hot, as one elementwise expression that torch.compile fuses into a single kernel
                grad = torch.exp(logits - lse[:, None]) - (vocab_ids[None, :] == ts[:, None]).float()
                grad = (grad / N).to(z.dtype)
                grad_x[start : start + chunk_size] = grad @ weight
                grad_w += grad.t() @ xs
        ctx.weight_dtype = weight.dtype
        ctx.save_for_backward(grad_x, grad_w)
        return loss / N

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_loss, (grad_w * grad_loss).to(ctx.weight_dtype), None, None, None


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
                wpe=nn.Embedding(config.block_size, config.n_embd),  # learned position embeddings
                h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: the input embedding and the output projection are one matrix (saves 30% of 124M)
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "RESIDUAL_PROJECTION", False):
                # each block adds twice to the residual stream: keep its variance from growing with depth
                std *= (2 * self.config.n_layer) ** -0.5
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None, cache=None, last_only=False, loss_chunk_size=0):
        """idx: (B, T) token ids. Returns (logits, loss): logits (B, T, vocab_size), or (B, 1, vocab_size)
        with last_only; loss is the mean cross-entropy against targets (B, T), or None. With targets and a
        loss_chunk_size, the loss is computed loss_chunk_size positions at a time and logits is None."""
        x = self.hidden_states(idx, cache)
        if targets is not None and loss_chunk_size:
            loss = ChunkedCrossEntropy.apply(x.flatten(0, 1), self.lm_head.weight, targets.flatten(),
                                             loss_chunk_size, torch.is_grad_enabled())
            return None, loss
        if last_only:
            x = x[:, [-1], :]  # sampling only needs the next-token distribution
        logits = self.lm_head(x)  # (B, T, vocab_size)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    def hidden_states(self, idx, cache=None, pos=None, mask=None):
        """The transformer without its head: (B, T) token ids -> (B, T, n_embd) after the final LayerNorm.
        Several sequences can share one row (HellaSwag packs a context and its four endings): pass their
        positions pos (B, T) and a boolean attention mask (B, 1, T, T) saying which tokens each one may see."""
        T = idx.size(1)
        if cache is not None:
            pos = torch.arange(cache.pos, cache.pos + T, device=idx.device)
            mask = cache.attn_mask(T)  # the cache is at most block_size long
        elif pos is None:
            if T > self.config.block_size:
                raise ValueError(f"sequence of {T} tokens is longer than block_size {self.config.block_size}")
            pos = torch.arange(T, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C) + (T, C) or (B, T, C)
        for block in self.transformer.h:
            x = block(x, cache, mask)
        if cache is not None:
            cache.pos += T
        return self.transformer.ln_f(x)

    def num_params(self):
        """Parameters, counting the tied wte/lm_head matrix once."""
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_pretrained(cls, name_or_dir):
        """OpenAI GPT-2 weights through transformers: a hub name ("gpt2", "gpt2-medium", "gpt2-large",
        "gpt2-xl") or a directory written by `save_pretrained` (or by our `export_hf`)."""
        from transformers import GPT2LMHeadModel

        if os.path.isdir(name_or_dir):
            config_path = os.path.join(name_or_dir, "config.json")
            model_type = None
            if os.path.isfile(config_path):
                with open(config_path) as f:
                    model_type = json.load(f).get("model_type")
            if model_type != "gpt2":
                raise ValueError(
                    f"{name_or_dir} is not a GPT-2 checkpoint directory: expected a config.json with "
                    f'"model_type": "gpt2" (write one with save_pretrained or export_hf)'
                )
        hf = GPT2LMHeadModel.from_pretrained(name_or_dir)
        hc = hf.config
        config = GPTConfig(block_size=hc.n_positions, vocab_size=hc.vocab_size,
                           n_layer=hc.n_layer, n_head=hc.n_head, n_embd=hc.n_embd)
        model = cls(config)
        sd = model.state_dict()
        sd_hf = {k: v for k, v in hf.state_dict().items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
        if set(sd_hf) != set(sd):
            raise ValueError(f"{name_or_dir}: parameter names differ from GPT-2's: {sorted(set(sd_hf) ^ set(sd))[:5]}")
        with torch.no_grad():
            for k, v in sd_hf.items():
                # OpenAI's checkpoints use Conv1D, whose weight is the transpose of nn.Linear's
                sd[k].copy_(v.t() if k.endswith(CONV1D_WEIGHTS) else v)
        return model

    @torch.no_grad()
    def generate(self, prompts, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                 stop_token=None, generator=None, on_token=None):
        """Continue each prompt (a list of token-id lists, lengths may differ) with up to max_new_tokens
        tokens. temperature 0 is greedy decoding; top_k / top_p filter the distribution; sampling draws
        from `generator` (a seeded torch.Generator on the model's device) for reproducible samples.
        A row stops early at `stop_token` (which is not returned). `on_token(tokens)` is called after every
        step with one entry per row: the new token id, or None where the row is still reading its prompt
        or has stopped. Returns a list of token lists, prompt included. Generation ends at block_size."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        lens = [len(p) for p in prompts]
        if max(lens) > self.config.block_size:
            raise ValueError(f"prompt of {max(lens)} tokens is longer than the model's block_size "
                             f"{self.config.block_size}; shorten the prompt")
        device = self.lm_head.weight.device
        B, total = len(prompts), min(max(lens) + max_new_tokens, self.config.block_size)
        # one row per prompt: prompt tokens first, then the tokens we sample
        tokens = torch.zeros((B, total), dtype=torch.long, device=device)
        is_prompt = torch.zeros((B, total), dtype=torch.bool, device=device)
        for i, p in enumerate(prompts):
            tokens[i, : len(p)] = torch.tensor(p, dtype=torch.long)
            is_prompt[i, : len(p)] = True
        stopped = torch.zeros(B, dtype=torch.bool, device=device)
        cache = KVCache(self.config, B, total, device, self.lm_head.weight.dtype)
        start = min(lens)
        logits, _ = self(tokens[:, :start], cache=cache, last_only=True)  # "prefill" the shared prefix
        end = start
        for pos in range(start, total):
            nxt = sample_next_token(logits[:, -1, :], temperature, top_k, top_p, generator)
            # rows with longer prompts keep reading their prompt instead of sampling
            nxt = torch.where(is_prompt[:, pos], tokens[:, pos], nxt)
            tokens[:, pos] = nxt
            new = ~is_prompt[:, pos] & ~stopped
            end = pos + 1
            if on_token is not None:
                on_token([t if n else None for t, n in zip(nxt.tolist(), new.tolist())])
            if stop_token is not None:
                stopped |= new & (nxt == stop_token)
                if stopped.all():
                    break
            if end < total:
                logits, _ = self(nxt[:, None], cache=cache, last_only=True)
        out = []
        for i, p in enumerate(prompts):
            row = tokens[i, : min(end, len(p) + max_new_tokens)].tolist()
            gen = row[len(p):]
            if stop_token is not None and stop_token in gen:
                gen = gen[: gen.index(stop_token)]
            out.append(list(p) + gen)
        return out


# Conv1D layers in OpenAI's checkpoints (their weights are stored transposed)
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gpt2_tokenizer():
    """tiktoken's GPT-2 BPE. It downloads two files on first use; offline, TIKTOKEN_CACHE_DIR points at a copy."""
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:
        raise FileNotFoundError(f"could not load the GPT-2 tokenizer ({type(e).__name__}); offline, set "
                                "TIKTOKEN_CACHE_DIR to a folder holding tiktoken's cached GPT-2 files") from None


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """logits: (B, vocab) -> (B,) next token ids."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        # nucleus: keep the smallest set of tokens whose probability adds up to top_p
        sorted_logits, order = torch.sort(logits, descending=True)
        sorted_probs = F.softmax(sorted_logits, dim=-1)
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p  # the top token is always kept
        drop = drop.scatter(1, order, drop)  # from sorted order back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


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


def export_hf(model, out_dir):
    """Write a Hugging Face GPT-2 directory (config.json + model.safetensors) that
    transformers.AutoModelForCausalLM.from_pretrained(out_dir) loads. Padded vocab rows are dropped."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    vocab = min(c.vocab_size, GPT2_VOCAB_SIZE)
    hc = GPT2Config(vocab_size=vocab, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                    n_head=c.n_head, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                    attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=EOT_TOKEN, eos_token_id=EOT_TOKEN,
                    tie_word_embeddings=True)
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().float().cpu()
        if k.endswith(CONV1D_WEIGHTS):
            v = v.t()
        if k in ("transformer.wte.weight", "lm_head.weight"):
            v = v[:vocab]
        sd[k] = v.contiguous()
    hf = GPT2LMHeadModel(hc)
    hf.load_state_dict(sd, strict=False)  # strict=False: some transformers versions keep attn.bias buffers
    hf.save_pretrained(out_dir)


# Throughput accounting. Forward + backward of a dense transformer costs about 6 FLOPs per parameter per
# token, plus the attention scores 12 * n_layer * n_head * head_dim * T (PaLM paper, appendix B).
# dense, no sparsity; the first key found in the device name wins (the PCIe H100 runs at lower clocks)
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}


def flops_per_token(config, T=None):
    """Training FLOPs per token at sequence length T (default block_size): 6N + 12*L*H*Q*T, where N
    excludes the position embeddings (a lookup, not a matmul)."""
    C, L, T = config.n_embd, config.n_layer, T or config.block_size
    n = config.vocab_size * C + L * (12 * C * C + 13 * C) + 2 * C  # wte(=lm_head) + blocks + ln_f
    return 6 * n + 12 * L * C * T


def peak_flops(device_name):
    """Peak dense bf16 FLOP/s for a GPU name such as 'NVIDIA H100 80GB HBM3', or None if unknown (CPU)."""
    for key, flops in PEAK_BF16_FLOPS.items():
        if key in device_name:
            return flops
    return None


# -----------------------------------------------------------------------------
# 2. The data
# -----------------------------------------------------------------------------

MAKE_SHARDS_HINT = ("make them with `python fineweb.py` (FineWeb-Edu) or `python fineweb.py --dataset tinyshakespeare` "
                    "and pass that directory with --data-dir")


def find_shards(data_dir, split):
    """Shard files {prefix}_{split}_{index:06d}.npy in data_dir, in index order."""
    pattern = re.compile(rf"^.+_{split}_(\d{{6}})\.npy$")
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data directory {data_dir} does not exist; {MAKE_SHARDS_HINT}")
    shards = sorted((f for f in os.listdir(data_dir) if pattern.match(f)), key=lambda f: pattern.match(f).group(1))
    if not shards:
        raise FileNotFoundError(f"no {split} shards (*_{split}_NNNNNN.npy) in {data_dir}; {MAKE_SHARDS_HINT}")
    return [os.path.join(data_dir, f) for f in shards]


def open_shard(path):
    """Memory-map a uint16 token shard: pages are read from disk only when a batch touches them."""
    try:
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"shard {path} is empty or truncated ({e}); delete it and re-run fineweb.py") from None
    if tokens.dtype != np.uint16 or tokens.ndim != 1:
        raise ValueError(f"shard {path} holds {tokens.dtype} with shape {tokens.shape}; expected a 1-D uint16 "
                         "array of token ids (re-make it with fineweb.py)")
    return tokens


class DataLoader:
    """(B, T) batches of inputs and next-token targets from token shards, for one rank of world_size.

    Each shard is cut into chunks of B*T tokens (+1 for the last target). Chunks are dealt out in rounds:
    in round r, rank k reads chunk r*world_size + k, so ranks never overlap and together cover the shard
    (all but a tail shorter than one round). One pass over all shards is an epoch. With shuffle, the shard
    order and the chunk order are permuted every epoch by a generator seeded with (seed, epoch), the same on
    every rank. Without it, the order is the lecture's: shard after shard, front to back."""

    def __init__(self, data_dir, B, T, split, rank=0, world_size=1, shuffle=False, seed=0, vocab_size=None):
        self.B, self.T, self.rank, self.world_size = B, T, rank, world_size
        self.shuffle, self.seed, self.vocab_size = shuffle, seed, vocab_size
        self.paths = find_shards(data_dir, split)
        self.rounds = []  # full rounds of chunks in each shard
        for path in self.paths:
            n = len(open_shard(path))
            rounds = (n - 1) // (B * T * world_size)
            if rounds == 0:
                raise ValueError(f"shard {path} has {n:,} tokens, fewer than one batch on every rank needs "
                                 f"(B*T*world_size + 1 = {B * T * world_size + 1:,}); lower B or T")
            self.rounds.append(rounds)
        self.reset()

    def reset(self):
        self.epoch, self.shard, self.round = 0, 0, 0
        self._plan_epoch()
        self._open_current_shard()

    def state_dict(self):
        """Where the next batch comes from: enough to continue a run exactly."""
        return {"epoch": self.epoch, "shard": self.shard, "round": self.round,
                "B": self.B, "T": self.T, "world_size": self.world_size, "shuffle": self.shuffle, "seed": self.seed}

    def load_state_dict(self, state):
        """Continue where state left off. Without shuffle, B, T and the number of ranks may differ from the run
        that saved it (a job resumed on fewer GPUs): the position is kept in tokens, rounded up to a whole
        round of this run, so that no token is read twice and fewer than B*T*world_size are skipped."""
        for key in ("shuffle", "seed"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"data loader state was saved with {key}={state[key]}, this run has "
                                 f"{key}={getattr(self, key)}; resume with the same setting")
        saved = {key: state.get(key, getattr(self, key)) for key in ("B", "T", "world_size")}
        if self.shuffle and saved != {"B": self.B, "T": self.T, "world_size": self.world_size}:
            raise ValueError(f"data loader state was saved with B={saved['B']}, T={saved['T']} on "
                             f"{saved['world_size']} ranks, this run has B={self.B}, T={self.T} on {self.world_size}; "
                             "--shuffle permutes chunks of B*T tokens dealt to the ranks, so resume a shuffled run "
                             "with the same -B, -T and number of ranks")
        saved_round_tokens = saved["B"] * saved["T"] * saved["world_size"]
        round_tokens = self.B * self.T * self.world_size
        self.epoch, self.shard = state["epoch"], state["shard"]
        self.round = -(-state["round"] * saved_round_tokens // round_tokens)  # ceil: the first round not yet read
        self._plan_epoch()
        if self.round >= self.rounds[self.shard_order[self.shard]]:
            self._next_shard()  # the rest of this shard is shorter than one of our rounds
        else:
            self._open_current_shard()

    def _plan_epoch(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.shard_order = rng.permutation(len(self.paths)) if self.shuffle else np.arange(len(self.paths))

    def _open_current_shard(self):
        i = int(self.shard_order[self.shard])
        self.tokens = open_shard(self.paths[i])
        n_chunks = self.rounds[i] * self.world_size
        rng = np.random.default_rng([self.seed, self.epoch, i])
        self.chunk_order = rng.permutation(n_chunks) if self.shuffle else np.arange(n_chunks)

    def next_batch(self):
        B, T = self.B, self.T
        chunk = int(self.chunk_order[self.round * self.world_size + self.rank])
        buf = self.tokens[chunk * B * T : (chunk + 1) * B * T + 1]
        if self.vocab_size is not None and int(buf.max()) >= self.vocab_size:
            raise ValueError(f"shard {self.paths[self.shard_order[self.shard]]} holds token id {int(buf.max())}, "
                             f"outside the model's vocabulary of {self.vocab_size}")
        buf = torch.from_numpy(buf.astype(np.int64))  # uint16 on disk -> int64 for the embedding lookup
        x = buf[:-1].view(B, T)  # inputs
        y = buf[1:].view(B, T)  # targets: the next token at every position
        self.round += 1
        if self.round == self.rounds[self.shard_order[self.shard]]:
            self._next_shard()
        return x, y

    def _next_shard(self):
        self.round, self.shard = 0, self.shard + 1
        if self.shard == len(self.paths):  # the end of an epoch
            self.epoch, self.shard = self.epoch + 1, 0
            self._plan_epoch()
        self._open_current_shard()


# -----------------------------------------------------------------------------
# 3. Training
# -----------------------------------------------------------------------------


def get_lr(step, warmup_steps, max_steps, max_lr, min_lr):
    """GPT-3's schedule: linear warmup to max_lr, then cosine decay to min_lr at max_steps."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def configure_optimizer(model, weight_decay, lr, device_type):
    """AdamW with GPT-3's betas. Weight decay only on 2-D tensors (matmul weights, embeddings); biases and
    LayerNorm gains are left alone. The fused kernel does the whole update in one launch where supported."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=device_type in ("cuda", "cpu"))


def autodetect_device():
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def autocast_context(device_type, dtype="auto"):
    """Mixed precision for forward passes: bf16 autocast on cuda by default, plain float32 elsewhere."""
    dtype = {"auto": torch.bfloat16 if device_type == "cuda" else torch.float32,
             "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    return torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32)


def setup_distributed(device):
    """torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them this is a single process.
    Returns (rank, world_size, device): one GPU per process, nccl between GPUs, gloo between CPU processes."""
    if "RANK" not in os.environ:
        return 0, 1, device or autodetect_device()
    rank, local_rank, world_size = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    device = device or autodetect_device()
    if device == "cuda":
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return rank, world_size, device


# Checkpoints: one file per step, ckpt_{step:06d}.pt, holding only tensors, numbers, strings, lists and dicts, so
# that torch.load(weights_only=True) reads it without running any code from the file.

def checkpoint_paths(out_dir):
    """The checkpoints in out_dir, oldest first."""
    if not os.path.isdir(out_dir):
        return []
    return [os.path.join(out_dir, f) for f in sorted(os.listdir(out_dir)) if re.fullmatch(r"ckpt_\d{6}\.pt", f)]


def load_checkpoint(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"refusing to load {path}: it holds objects other than tensors and plain data, which "
                         f"could run code when unpickled ({str(e).splitlines()[0]})") from None


def load_model(name_or_path):
    """Every reader's way to a model: one of our checkpoint files, a run directory (its latest checkpoint),
    a Hugging Face GPT-2 directory, an OpenAI model name (gpt2, gpt2-medium, gpt2-large, gpt2-xl), or one of
    our other presets (tiny, mini, gpt3-*) with fresh random weights, a chance-level baseline."""
    path = name_or_path
    if path in PRESETS and not path.startswith("gpt2") and not os.path.exists(path):
        return GPT(preset(path)[0])
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "config.json")):
        ckpts = checkpoint_paths(path)
        if not ckpts:
            raise ValueError(f"{path} holds neither checkpoints (ckpt_*.pt) nor a Hugging Face config.json")
        path = ckpts[-1]
    if os.path.isfile(path):
        return model_from_checkpoint(load_checkpoint(path))
    return GPT.from_pretrained(path)


def model_from_checkpoint(ckpt):
    model = GPT(GPTConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model


class StopRequest:
    """Turns SIGTERM / SIGINT (preemption, a SLURM time limit, Ctrl-C) into a flag the loop checks after each step."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.handle)

    def handle(self, signum, frame):
        self.requested = True


def train(args):
    rank, world_size, device = setup_distributed(args.device)
    device_type = device.split(":")[0]
    master = rank == 0
    log = print if master else (lambda *a, **k: None)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and newer

    # the model: a preset with fresh weights, or weights to start from
    ckpt = None
    if args.resume:
        ckpts = checkpoint_paths(args.out_dir)
        if not ckpts:
            raise ValueError(f"--resume: no checkpoint (ckpt_*.pt) in {args.out_dir}; start without --resume")
        ckpt = load_checkpoint(ckpts[-1])
        config = GPTConfig(**ckpt["config"])
        if args.init_from is None and config != preset(args.model)[0]:
            raise ValueError(f"{ckpts[-1]} is a checkpoint of another model ({config}); resume with the --model "
                             f"that wrote it, not '{args.model}'")
        model = model_from_checkpoint(ckpt)
        log(f"resuming from {ckpts[-1]} at step {ckpt['step']}")
    elif args.init_from:
        model = load_model(args.init_from)
        config = model.config
    else:
        if checkpoint_paths(args.out_dir):
            raise ValueError(f"{args.out_dir} already holds checkpoints; pass --resume to continue that run, "
                             "or choose another --out-dir")
        config = preset(args.model)[0]
        model = GPT(config)

    # the batch: total_batch_size tokens per optimizer step, in micro-batches of B x T on each rank
    B, T = args.batch_size, args.seq_len or config.block_size
    if T > config.block_size:
        raise ValueError(f"--seq-len {T} is longer than the model's block_size {config.block_size}")
    if args.total_batch_size % (B * T * world_size):
        raise ValueError(f"--total-batch-size {args.total_batch_size} is not divisible by B*T*world_size = "
                         f"{B}*{T}*{world_size} = {B * T * world_size}; change -B, -T or --total-batch-size")
    grad_accum_steps = args.total_batch_size // (B * T * world_size)
    log(f"total batch {args.total_batch_size:,} tokens = {B} x {T} x {world_size} ranks x {grad_accum_steps} "
        f"accumulation steps")
    train_loader = DataLoader(args.data_dir, B, T, "train", rank, world_size, args.shuffle, args.seed, config.vocab_size)
    val_loader = DataLoader(args.data_dir, B, T, "val", rank, world_size, vocab_size=config.vocab_size)

    # distribute: DDP keeps a full copy per rank and averages gradients; FSDP shards parameters, gradients and
    # optimizer state across ranks, one transformer block at a time
    model.to(device)
    raw_model = model  # the unwrapped module: for checkpoints, sampling and HellaSwag
    if args.fsdp:
        if world_size == 1:
            raise ValueError("--fsdp shards the model across ranks: launch with torchrun --nproc_per_node=N, N > 1")
        for block in model.transformer.h:
            fully_shard(block)
        fully_shard(model)
    elif world_size > 1:
        model = DDP(model, device_ids=[device] if device_type == "cuda" else None)
    optimizer = configure_optimizer(raw_model, args.weight_decay, args.max_lr, device_type)
    start_step = 0
    if ckpt is not None:
        set_optimizer_state_dict(raw_model, optimizer, ckpt["optimizer"], options=StateDictOptions(full_state_dict=True))
        train_loader.load_state_dict(ckpt["train_loader"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        start_step = ckpt["step"]
    train_model = torch.compile(model) if args.compile else model
    autocast = autocast_context(device_type, args.dtype)

    if args.hellaswag_interval:
        try:
            hella_examples = hellaswag.load_examples(hellaswag.data_path("val", args.hellaswag_dir))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e}; or turn HellaSwag off with --hellaswag-interval 0") from None
        longest = hellaswag.longest_row(hella_examples, gpt2_tokenizer())
        if longest > config.block_size:
            raise ValueError(f"HellaSwag examples need {longest} positions, more than block_size "
                             f"{config.block_size}; use --hellaswag-interval 0 with this model")

    flops = flops_per_token(config, T)
    peak = peak_flops(torch.cuda.get_device_name(device)) if device_type == "cuda" else None
    os.makedirs(args.out_dir, exist_ok=True)
    log_file = open(os.path.join(args.out_dir, "log.txt"), "a") if master else None  # append: never lose a run's history
    stop = StopRequest()
    val_loss = ckpt.get("val_loss") if ckpt else None
    end_step = min(args.max_steps, args.stop_at or args.max_steps)

    def write_log(line):
        if master:
            log_file.write(line + "\n")
            log_file.flush()

    def all_reduce_mean(x):
        if world_size > 1:
            dist.all_reduce(x, op=dist.ReduceOp.SUM)  # gloo has no AVG
            x /= world_size
        return x

    def evaluate(step):
        nonlocal val_loss
        train_model.eval()
        val_loader.reset()  # the same val batches every time
        total = torch.zeros((), device=device)
        with torch.no_grad():
            for _ in range(args.eval_steps):
                x, y = val_loader.next_batch()
                with autocast:
                    _, loss = train_model(x.to(device), y.to(device), loss_chunk_size=args.loss_chunk_size)
                total += loss / args.eval_steps
        val_loss = all_reduce_mean(total).item()
        train_model.train()
        log(f"step {step:5d} | val loss {val_loss:.4f}")
        write_log(f"{step} val {val_loss:.4f}")

    def evaluate_hellaswag(step):
        # the raw (uncompiled) module: HellaSwag's shapes would recompile the training graph
        raw_model.eval()
        result = hellaswag.evaluate(hellaswag.gpt_logits_fn(raw_model, autocast), hella_examples, gpt2_tokenizer(),
                                    device, args.hellaswag_batch_size, rank, world_size)
        raw_model.train()
        log(f"step {step:5d} | HellaSwag acc_norm {result['correct_norm']}/{result['n']} = {result['acc_norm']:.4f}")
        write_log(f"{step} hella {result['acc_norm']:.4f}")

    def print_samples(step):
        raw_model.eval()
        enc = gpt2_tokenizer()
        tokens = enc.encode(args.sample_prompt)
        generator = torch.Generator(device).manual_seed(42 + rank)  # each rank writes different samples
        with autocast:
            out = raw_model.generate([tokens] * args.num_samples, args.sample_tokens, top_k=50, generator=generator)
        for i, row in enumerate(out):
            print(f"rank {rank} sample {i} (step {step}): {enc.decode(row)}")
        raw_model.train()

    def save_checkpoint(step):
        # FSDP: gather the full (unsharded) weights and optimizer state; every rank takes part, rank 0 writes
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = {
            "model": get_model_state_dict(raw_model, options=options),
            "optimizer": get_optimizer_state_dict(raw_model, optimizer, options=options),
            "config": asdict(config), "step": step, "args": vars(args), "val_loss": val_loss,
            "train_loader": train_loader.state_dict(), "rng": {"torch": torch.get_rng_state()},
        }
        if master:
            state["model"]["lm_head.weight"] = state["model"]["transformer.wte.weight"]  # tied: store it once
            path = os.path.join(args.out_dir, f"ckpt_{step:06d}.pt")
            tmp = path + ".tmp"
            torch.save(state, tmp)
            os.replace(tmp, path)  # a checkpoint is either whole or absent
            for old in checkpoint_paths(args.out_dir)[: -args.keep_checkpoints]:
                os.remove(old)
            log(f"saved {path}")

    for step in range(start_step, end_step):
        if args.eval_interval and step % args.eval_interval == 0:
            evaluate(step)
        if args.hellaswag_interval and step % args.hellaswag_interval == 0:
            evaluate_hellaswag(step)
        if args.sample_interval and step % args.sample_interval == 0 and step > 0:
            print_samples(step)

        # one optimizer step over grad_accum_steps micro-batches
        t0 = time.time()
        train_model.train()
        optimizer.zero_grad(set_to_none=True)
        loss_accum = torch.zeros((), device=device)
        for micro_step in range(grad_accum_steps):
            x, y = train_loader.next_batch()
            if device_type == "cuda":  # from page-locked memory the copy runs asynchronously, beside GPU work
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            # average gradients across ranks only after the last micro-batch, not after every one
            sync = micro_step == grad_accum_steps - 1
            if args.fsdp:
                raw_model.set_requires_gradient_sync(sync)
            elif world_size > 1:
                model.require_backward_grad_sync = sync
            with autocast:
                _, loss = train_model(x, y, loss_chunk_size=args.loss_chunk_size)
            loss = loss / grad_accum_steps  # the step's loss is the mean over all micro-batches, not their sum
            loss_accum += loss.detach()
            loss.backward()
        # one all-reduce carries the loss for logging and whether any rank was asked to stop
        stats = all_reduce_mean(torch.stack([loss_accum, torch.tensor(float(stop.requested), device=device)]))
        loss_value, stop_votes = stats.tolist()  # one device-to-host copy per step
        stop_now = stop_votes > 0
        if not math.isfinite(loss_value):
            last = checkpoint_paths(args.out_dir)
            raise FloatingPointError(f"loss is {loss_value} at step {step}; stopping before the update. The last good "
                                     f"checkpoint is {last[-1] if last else 'none'}; lower --max-lr or check the data")
        norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), args.grad_clip)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        lr = get_lr(step, args.warmup_steps, args.max_steps, args.max_lr, args.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        if device_type == "cuda":
            torch.cuda.synchronize()
        dt = time.time() - t0
        tokens_per_sec = grad_accum_steps * B * T * world_size / dt
        achieved = flops * tokens_per_sec / world_size  # per device
        speed = f"mfu {achieved / peak:.1%}" if peak else f"{achieved / 1e12:.3f} TFLOP/s"
        log(f"step {step:5d} | loss {loss_value:.6f} | lr {lr:.4e} | norm {norm.item():.4f} | dt {dt * 1000:.0f}ms | "
            f"tok/sec {tokens_per_sec:,.0f} | {speed}")
        write_log(f"{step} train {loss_value:.6f}")

        done = step + 1
        if stop_now or done == end_step or (args.checkpoint_interval and done % args.checkpoint_interval == 0):
            if done == args.max_steps:
                if args.eval_interval:
                    evaluate(done)  # the final model's val loss
                if args.hellaswag_interval:
                    evaluate_hellaswag(done)
                if args.sample_interval:
                    print_samples(done)
            save_checkpoint(done)
        if stop_now:
            log(f"stopped by a signal after step {step}; continue with --resume")
            break
    if log_file:
        log_file.close()


# -----------------------------------------------------------------------------
# 4. Command line
# -----------------------------------------------------------------------------

# --quickstart: the tiny preset on Tiny Shakespeare, a couple of minutes on a laptop CPU. It only changes
# defaults; any flag given on the command line still wins.
QUICKSTART = dict(model="tiny", data_dir="data/tinyshakespeare", out_dir="runs/quickstart", batch_size=8,
                  seq_len=256, total_batch_size=2048, max_steps=100, warmup_steps=10,
                  eval_interval=25, eval_steps=4, hellaswag_interval=0, sample_interval=50, num_samples=2,
                  sample_tokens=48, checkpoint_interval=50, sample_prompt="ROMEO:")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train GPT-2 (or a GPT-3-sized model) from scratch. Defaults reproduce "
                                "the GPT-2 124M run: 19,073 steps of 524,288 FineWeb-Edu tokens. "
                                "Several GPUs: torchrun --standalone --nproc_per_node=8 train_gpt2.py ...")
    p.add_argument("--quickstart", action="store_true",
                   help="CPU quick start: the tiny preset on Tiny Shakespeare (data/tinyshakespeare, made by "
                        "`python fineweb.py --dataset tinyshakespeare`) for a couple of minutes")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="gpt2", help=f"model preset: {', '.join(PRESETS)}")
    m.add_argument("--init-from", help="start from these weights instead: an OpenAI model name (gpt2, gpt2-xl, ...), "
                                       "a Hugging Face GPT-2 directory, a checkpoint file or a run directory")
    d = p.add_argument_group("data")
    d.add_argument("--data-dir", default="edu_fineweb10B", help="directory of token shards made by fineweb.py")
    d.add_argument("--shuffle", action="store_true", help="permute shard and chunk order every epoch (seeded)")
    o = p.add_argument_group("optimization")
    o.add_argument("--total-batch-size", type=int, help="tokens per optimizer step (default: the preset's; 524,288 "
                                                        "for gpt2); reached by gradient accumulation")
    o.add_argument("-B", "--batch-size", type=int, default=64, help="micro-batch: sequences per forward pass per rank")
    o.add_argument("-T", "--seq-len", type=int, help="sequence length (default: the model's block_size)")
    o.add_argument("--max-steps", type=int, default=19073, help="optimizer steps (19,073 x 524,288 = 10B tokens)")
    o.add_argument("--warmup-steps", type=int, default=715, help="linear LR warmup steps")
    o.add_argument("--max-lr", type=float, help="peak learning rate (default: the preset's; 6e-4 for gpt2)")
    o.add_argument("--min-lr", type=float, help="final learning rate of the cosine decay (default: max-lr / 10)")
    o.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay on 2-D parameters")
    o.add_argument("--grad-clip", type=float, default=1.0, help="clip the global gradient norm to this")
    r = p.add_argument_group("evaluation, samples and checkpoints (an interval of 0 turns it off)")
    r.add_argument("--eval-interval", type=int, default=250, help="steps between val loss evaluations")
    r.add_argument("--eval-steps", type=int, default=20, help="val micro-batches per evaluation")
    r.add_argument("--hellaswag-interval", type=int, default=250, help="steps between HellaSwag evaluations")
    r.add_argument("--hellaswag-dir", default=hellaswag.DEFAULT_CACHE,
                   help="folder for hellaswag_val.jsonl (downloaded there if missing)")
    r.add_argument("--hellaswag-batch-size", type=int, default=16, help="HellaSwag examples per forward pass")
    r.add_argument("--sample-interval", type=int, default=250, help="steps between printed samples")
    r.add_argument("--sample-prompt", default="Hello, I'm a language model,", help="prompt for the samples")
    r.add_argument("--num-samples", type=int, default=4, help="samples per rank")
    r.add_argument("--sample-tokens", type=int, default=32, help="new tokens per sample")
    r.add_argument("--checkpoint-interval", type=int, default=5000,
                   help="steps between checkpoints (one is always written at the end and on SIGTERM/SIGINT)")
    r.add_argument("--keep-checkpoints", type=int, default=3, help="keep only the newest K checkpoints")
    r.add_argument("--out-dir", default="log", help="run directory: log.txt and ckpt_*.pt")
    r.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out-dir")
    r.add_argument("--stop-at", type=int,
                   help="end this invocation after this step with a checkpoint (the LR schedule still runs to "
                        "--max-steps); split a run into jobs and continue with --resume")
    s = p.add_argument_group("system")
    s.add_argument("--seed", type=int, default=1337, help="seed for the initial weights and data shuffling")
    s.add_argument("--device", help="cuda, mps or cpu (default: the best one available)")
    s.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                   help="autocast dtype for forward passes (auto: bfloat16 on cuda, float32 elsewhere)")
    s.add_argument("--compile", action="store_true", help="torch.compile the model for training and val loss")
    s.add_argument("--loss-chunk-size", type=int, default=0,
                   help="compute the loss this many positions at a time, never holding all B*T x 50304 logits "
                        "(less memory, room for a larger -B; faster with --compile, which fuses it, slower without); "
                        "0: the full logits, as in the lecture")
    s.add_argument("--fsdp", action="store_true", help="shard the model with FSDP2 (one shard per rank) instead of DDP")

    pre, _ = p.parse_known_args(argv)
    if pre.quickstart:
        p.set_defaults(**QUICKSTART)
    args = p.parse_args(argv)
    if args.model not in PRESETS:
        p.error(f"unknown model preset '{args.model}'; known presets: {', '.join(PRESETS)}")
    _, batch_tokens, max_lr = preset(args.model)
    args.total_batch_size = args.total_batch_size or batch_tokens
    args.max_lr = args.max_lr or max_lr
    args.min_lr = args.max_lr / 10 if args.min_lr is None else args.min_lr
    for name in ("batch_size", "max_steps", "total_batch_size", "eval_steps", "keep_checkpoints",
                 "hellaswag_batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.loss_chunk_size < 0:
        p.error("--loss-chunk-size must be 0 (off) or positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        train(args)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
