"""The modern recipe (--recipe modern): the changes that took the GPT-2 speedrun (modded-nanogpt) from 10B tokens
to under 1B, each its own switch, beside the lecture's GPT which stays as it is.

Model switches (a GPT with any of them on is a ModernGPT; its config, saved in checkpoints, names them):
    --rotary       rotary position embeddings instead of the learned wpe table
    --qk-norm      RMSNorm on each head's queries and keys
    --relu2        ReLU(x)^2 in the MLP instead of GELU
    --rmsnorm      RMSNorm without learnable gains or biases instead of LayerNorm
    --untied-head  separate input embedding and output head
    --zero-init    output projections (and an untied head) start at zero
    --softcap C    logits squashed into (-C, C) by C * tanh(logits / C)
Training switches: --muon (Muon for the hidden weight matrices, AdamW for the rest) and --schedule wsd.

ModernGPT is whole here, not a subclass of train_gpt2.GPT: hellaswag.py, which the trainer imports, scores its
checkpoints, so it cannot import the trainer. What both models share lives in gptkit, each in one place: where a
forward pass's tokens sit (sampling.positions, which the KV cache advances), the KV cache, the chunked loss, the
names of the parameters (so that a model with every switch off loads the lecture's checkpoints, and the tests
check it is the lecture's GPT, weight for weight and logit for logit).
"""

import argparse
import math
from dataclasses import InitVar, asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from gptkit import sampling
from gptkit.chunked_loss import ROWS, chunked_cross_entropy, soft_cap_
from gptkit.cli import non_negative_float, positive_float

# what --recipe modern turns on; each one can still be turned off (--no-rotary, --softcap 0, --schedule cosine, ...)
RECIPE = dict(rotary=True, qk_norm=True, relu2=True, rmsnorm=True, untied_head=True, zero_init=True, softcap=15.0,
              muon=True, adamw_lr_scale=3.0, schedule="wsd")


@dataclass
class ModernConfig:
    """The lecture's GPTConfig (its shape) and the switches. A lecture config's `attention` is accepted and not kept:
    this model always uses scaled_dot_product_attention."""
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    attention: InitVar[str] = "flash"
    rotary: bool = False
    qk_norm: bool = False
    relu2: bool = False
    rmsnorm: bool = False
    untied_head: bool = False
    zero_init: bool = False
    softcap: float = 0.0


SWITCHES = ("rotary", "qk_norm", "relu2", "rmsnorm", "untied_head", "zero_init", "softcap")  # the model switches


def switches(args):
    """The model switches that args turn on, {name: value}: empty for the lecture's GPT."""
    return {name: getattr(args, name) for name in SWITCHES if getattr(args, name, False)}


def check_switches_match(args, config, source):
    """A loaded model (source: --init-from's) brings its own architecture: switches on the command line must agree."""
    if switches(args) and switches(args) != switches(config):
        raise ValueError(f"{source} brings its own architecture; drop the modern model switches (--recipe modern, "
                         "--rotary, ...) or start a fresh model")


def with_switches(config, args):
    """A preset's config with the model switches args turn on: a ModernConfig when any is, else config itself."""
    return ModernConfig(**asdict(config), **switches(args)) if switches(args) else config


def is_modern(config):
    """Whether a config (a dataclass or the dict a checkpoint stores) has any modern switch on."""
    c = config if isinstance(config, dict) else asdict(config)
    return any(c.get(name) for name in SWITCHES)


def norm(config):
    # RMSNorm: no mean to subtract and no gain to learn; the next matmul can scale what it needs
    return nn.RMSNorm(config.n_embd, elementwise_affine=False) if config.rmsnorm else nn.LayerNorm(config.n_embd)


def rotary_tables(pos, head_size, base=10000.0):
    """cos and sin of the rotation angles pos * base^(-2i/head_size), i < head_size/2: (..., T, head_size/2)."""
    inv_freq = base ** (-torch.arange(0, head_size, 2, device=pos.device, dtype=torch.float32) / head_size)
    angles = pos[..., None].float() * inv_freq
    return angles.cos(), angles.sin()


def rotate(x, cos, sin):
    """Rotate each pair (x1[i], x2[i]) of x (B, n_head, T, head_size) by its position's angle: the dot product of a
    rotated query and key then depends only on how far apart they are, not on where they are."""
    if cos.dim() == 3:  # per-row positions (B, T, head_size/2): broadcast over the heads
        cos, sin = cos[:, None], sin[:, None]
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class ModernAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.n_head, self.config, self.layer_idx = config.n_head, config, layer_idx
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.RESIDUAL_PROJECTION = True

    def forward(self, x, rope, cache=None, mask=None):
        B, T, C = x.size()
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        if self.config.qk_norm:  # bounded attention logits: a higher LR without the softmax saturating
            q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))
        if rope is not None:
            q, k = rotate(q, *rope), rotate(k, *rope)
        if cache is not None:
            y = cache.attend(self.layer_idx, q, k, v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class ModernMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.relu2 = config.relu2
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.RESIDUAL_PROJECTION = True

    def forward(self, x):
        h = self.c_fc(x)
        # ReLU^2: as cheap as ReLU, smooth at zero like GELU, and sparse; it trained faster in the speedrun
        h = F.relu(h).square() if self.relu2 else F.gelu(h, approximate="tanh")
        return self.c_proj(h)


class ModernBlock(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.ln_1, self.attn = norm(config), ModernAttention(config, layer_idx)
        self.ln_2, self.mlp = norm(config), ModernMLP(config)

    def forward(self, x, rope, cache=None, mask=None):
        x = x + self.attn(self.ln_1(x), rope, cache, mask)
        return x + self.mlp(self.ln_2(x))


class SoftCap(torch.autograd.Function):
    """cap * tanh(z / cap) of the head's logits z (..., vocab), in fp32 (or fp64), 32 rows at a time. The logits are
    the largest tensor of a small model's step (412 MB in fp32 at B=8, T=256): each elementwise pass over them is a
    trip to memory, while a block of 32 rows (6.4 MB) stays in the CPU's cache through all the passes the cap takes:
    several times faster than the same expression left to autograd (docs/benchmarks.md), the same numbers bit for
    bit."""

    @staticmethod
    def forward(ctx, z, cap):
        y = torch.empty(z.shape, dtype=torch.promote_types(z.dtype, torch.float32), device=z.device)
        z_rows, y_rows = z.reshape(-1, z.size(-1)), y.view(-1, z.size(-1))
        for a in range(0, z_rows.size(0), ROWS):
            soft_cap_(y_rows[a : a + ROWS].copy_(z_rows[a : a + ROWS]), cap)
        ctx.save_for_backward(y)
        ctx.cap, ctx.z_dtype = cap, z.dtype
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_tensors  # d/dz cap * tanh(z / cap) = 1 - tanh^2 = 1 - (y / cap)^2
        grad_z = torch.empty(y.shape, dtype=ctx.z_dtype, device=y.device)
        g_rows, y_rows, out_rows = grad.reshape(-1, y.size(-1)), y.view(-1, y.size(-1)), grad_z.view(-1, y.size(-1))
        for a in range(0, g_rows.size(0), ROWS):
            g = g_rows[a : a + ROWS]
            out_rows[a : a + ROWS] = torch.addcmul(g, g, y_rows[a : a + ROWS].square(),
                                                           value=-1 / ctx.cap**2)
        return grad_z, None


class SoftcapHead(nn.Linear):
    """The output head, its logits squashed into (-cap, cap): no logit can run away and saturate the softmax."""

    def __init__(self, n_embd, vocab_size, cap):
        super().__init__(n_embd, vocab_size, bias=False)
        self.cap = cap

    def forward(self, x):
        logits = super().forward(x)
        return SoftCap.apply(logits, self.cap) if self.cap else logits


class ModernGPT(nn.Module):
    """The lecture's GPT with the switches of a ModernConfig. The same interface as train_gpt2.GPT: forward, the
    loss_chunk_size attribute, hidden_states (packed rows, KV cache), generate and num_params; with the soft cap on,
    forward(idx, targets) returns (None, loss), as the chunked loss does. Without --muon the trainer gives it the
    lecture's AdamW (GPT.configure_optimizers)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        modules = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if not config.rotary:
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        modules["h"] = nn.ModuleList([ModernBlock(config, i) for i in range(config.n_layer)])
        modules["ln_f"] = norm(config)
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = SoftcapHead(config.n_embd, config.vocab_size, config.softcap)
        if not config.untied_head:  # untied, reading tokens and predicting them stop pulling one matrix two ways
            self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        self.loss_chunk_size = 0

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            residual = getattr(module, "RESIDUAL_PROJECTION", False)
            std = 0.02 * ((2 * self.config.n_layer) ** -0.5 if residual else 1.0)
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
            # zero-init: every block starts as the identity, the head as uniform predictions; they grow as needed
            if self.config.zero_init and (residual or (module is self.lm_head and self.config.untied_head)):
                torch.nn.init.zeros_(module.weight)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        x = self.hidden_states(idx)
        if targets is not None and (self.loss_chunk_size or self.config.softcap):
            # the soft cap inside the loss, in one chunk without --loss-chunk-size: the cap, the log-softmax and
            # their gradient block by block while in the CPU's cache (faster than SoftCap and F.cross_entropy)
            chunk_size = self.loss_chunk_size or targets.numel()
            return None, chunked_cross_entropy(x, self.lm_head.weight, targets, chunk_size, self.config.softcap)
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    def hidden_states(self, idx, pos=None, mask=None, cache=None):
        pos = sampling.positions(idx, self.config.block_size, pos, cache)  # as the lecture's GPT places its tokens
        x, rope = self.transformer.wte(idx), None
        if self.config.rotary:  # the positions rotate queries and keys in every layer instead of adding a vector
            rope = rotary_tables(pos, self.config.n_embd // self.config.n_head)
        else:
            x = x + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x, rope, cache, mask)
        return self.transformer.ln_f(x)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def generate(self, prompts, max_new_tokens, **options):
        return sampling.generate(self, prompts, max_new_tokens, **options)


# -----------------------------------------------------------------------------
# Training: Muon beside AdamW, and the warmup-stable-decay schedule
# -----------------------------------------------------------------------------

class MuonAdamW:
    """Muon for the 2-D weight matrices inside the blocks, AdamW for everything else (embeddings, head, biases,
    norm gains), stepped as one optimizer. Muon orthogonalises each matrix's momentum (Newton-Schulz), so that every
    direction of the matrix moves at the same rate instead of the few largest dominating the update. Iterating
    gives the two torch optimizers, which is how torch.distributed.checkpoint's state-dict helpers take several."""

    def __init__(self, model, weight_decay, learning_rate, muon_lr, muon_weight_decay, fused, adamw_lr_scale=1.0):
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        hidden = [p for n, p in params if n.startswith("transformer.h.") and p.dim() == 2]
        ids = {id(p) for p in hidden}
        rest = [p for _, p in params if id(p) not in ids]
        # each group's LR follows the schedule as a multiple of it: the trainer sets lr = schedule * lr_scale
        self.muon = torch.optim.Muon([{"params": hidden, "lr_scale": muon_lr / learning_rate}], lr=muon_lr,
                                     weight_decay=muon_weight_decay)
        lr = learning_rate * adamw_lr_scale
        self.adamw = torch.optim.AdamW(
            [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay, "lr_scale": adamw_lr_scale},
             {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0, "lr_scale": adamw_lr_scale}],
            lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=fused)

    def __iter__(self):
        return iter((self.muon, self.adamw))

    @property
    def param_groups(self):
        return self.muon.param_groups + self.adamw.param_groups

    def zero_grad(self, set_to_none=True):
        for optimizer in self:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self):
        for optimizer in self:
            optimizer.step()


def wsd_lr(step, warmup_steps, max_steps, max_lr, min_lr, cooldown_frac):
    """Warmup-stable-decay (trapezoidal): linear warmup, max_lr held, then a linear decay to min_lr over the last
    cooldown_frac of the steps. The long flat stretch learns fast; the decay harvests it at the end."""
    cooldown_start = max_steps - math.ceil(cooldown_frac * max_steps)
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    if step < cooldown_start:
        return max_lr
    return max_lr + (step - cooldown_start) / (max_steps - cooldown_start) * (min_lr - max_lr)


def add_arguments(parser):
    g = parser.add_argument_group("modern recipe (gptkit/modern.py; --recipe modern turns all of these on)")
    g.add_argument("--recipe", default="lecture", choices=["lecture", "modern"],
                   help="lecture: GPT-2 as in the video; modern: every switch below, each of which can still be "
                        "turned off on its own (--no-rotary, --softcap 0, --schedule cosine, ...)")
    on_off = dict(action=argparse.BooleanOptionalAction, default=False)
    g.add_argument("--rotary", **on_off, help="rotary position embeddings instead of the learned wpe table")
    g.add_argument("--qk-norm", **on_off, help="RMSNorm on each head's queries and keys")
    g.add_argument("--relu2", **on_off, help="ReLU(x)^2 in the MLP instead of GELU")
    g.add_argument("--rmsnorm", **on_off, help="RMSNorm without gains or biases instead of LayerNorm")
    g.add_argument("--untied-head", **on_off, help="separate input embedding and output head")
    g.add_argument("--zero-init", **on_off, help="output projections (and an untied head) start at zero")
    g.add_argument("--softcap", type=non_negative_float, default=0.0,
                   help="logits become C*tanh(logits/C) (modern: 15); 0: off")
    g.add_argument("--muon", **on_off, help="Muon (torch.optim.Muon) for the 2-D weights inside the blocks, AdamW "
                                            "for embeddings, head, biases and gains")
    g.add_argument("--muon-lr", type=positive_float, default=0.02, help="Muon's peak learning rate")
    g.add_argument("--muon-weight-decay", type=non_negative_float, default=0.0, help="Muon's decoupled weight decay")
    g.add_argument("--adamw-lr-scale", type=positive_float, default=1.0,
                   help="with --muon: AdamW's LR (embeddings, head, biases, gains) as a multiple of --max-lr; the "
                        "modern recipe's untied, zero-initialised head and its embedding learn best at 3x")
    g.add_argument("--schedule", default="cosine", choices=["cosine", "wsd"],
                   help="cosine: the lecture's warmup and cosine decay; wsd: warmup, flat, then a linear decay")
    g.add_argument("--cooldown-frac", type=float, default=0.4, help="wsd: the share of the steps spent decaying")
