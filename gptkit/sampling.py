"""Sampling from a GPT: a preallocated KV cache, the positions of the tokens a forward pass adds, temperature / top-k /
top-p, and batched generation."""

import torch
from torch.nn import functional as F

from gptkit import cpu
from gptkit.tokenizer import GPT2_VOCAB_SIZE


class KVCache:
    """Keys and values of every layer for the positions already seen, so that each new token costs one position of
    compute instead of re-running the whole prefix. Preallocated to max_len; attention reads only the filled
    positions. CausalSelfAttention hands its layer's new q, k, v to attend()."""

    def __init__(self, config, batch_size, max_len, device, dtype):
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.layers = list(zip(self.k.unbind(0), self.v.unbind(0)))  # each layer's (k, v) views, made once
        self.start = self.pos = 0  # the forward pass's new tokens go to positions start .. pos-1

    def positions(self, T):
        """Positions (T,) of the next T tokens, for which the cache now makes room: a forward pass calls it once,
        then every layer stores its keys and values there (attend)."""
        if self.pos + T > self.k.size(3):
            raise ValueError(f"KV cache holds {self.k.size(3)} positions; cannot add {T} after {self.pos}")
        self.start, self.pos = self.pos, self.pos + T
        return torch.arange(self.start, self.pos, device=self.k.device)

    def attend(self, layer, q, k, v):
        """Store k, v (B, n_head, T, head_dim) of `layer` at the positions made room for, and return the attention
        of q (the same shape) over every filled position, in q's dtype."""
        T, start, end = k.size(2), self.start, self.pos
        keys, values = self.layers[layer]  # (B, n_head, max_len, head_dim)
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        # one new token sees everything before it; several (a prompt) see the past and each other causally
        mask = None if T == 1 else torch.ones(T, end, dtype=torch.bool, device=q.device).tril(diagonal=start)
        y = F.scaled_dot_product_attention(q.to(keys.dtype), keys[:, :, :end], values[:, :, :end], attn_mask=mask)
        return y.to(q.dtype)


def positions(idx, block_size, pos=None, cache=None):
    """Where each of idx's (B, T) tokens sits, for the position embedding (or rotation): after the cached ones when
    sampling with a KV cache, pos when the caller packs several sequences in a row, else 0 .. T-1, which must fit
    the model's block_size."""
    T = idx.size(1)
    if cache is not None:
        return cache.positions(T)
    if pos is not None:
        return pos
    if T > block_size:
        raise ValueError(f"sequence of {T} tokens is longer than block_size {block_size}")
    return torch.arange(T, device=idx.device)


def cache_dtype(weight_dtype, device):
    """The KV cache's dtype: the weights' on a GPU; on a CPU fp32, or bf16 for bf16 weights where the CPU has AMX.
    At one query row the CPU's bf16 attention kernel is slower than the fp32 one without AMX (AVX-512 BF16 only),
    and faster with AMX tiles, which PyTorch's CPU flash attention uses for bf16 (docs/benchmarks.md)."""
    if device.type != "cpu" or (weight_dtype == torch.bfloat16 and cpu.bf16_matmul_unit() == "amx_bf16"):
        return weight_dtype
    return torch.float32


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """logits (B, vocab) -> (B,) next token ids. temperature 0 is greedy. top_k keeps the k most likely tokens,
    top_p the smallest set of them whose probability adds up to top_p (the nucleus); the draw is from what is kept,
    renormalised."""
    if temperature == 0:  # max, not argmax: the same first index of the largest, and faster on a CPU
        return logits.float().max(dim=-1).indices
    # a positive temperature keeps the order, so the candidates are chosen on the raw logits, in their own dtype,
    # and only the kept ones are divided: top-k 50 divides 50 numbers a row, not GPT-2's 50,257
    candidates = None  # (B, n) vocabulary ids of the kept tokens, most likely first; None: the whole vocabulary
    if top_k is not None:
        logits, candidates = torch.topk(logits, min(top_k, logits.size(-1)))  # (B, k), sorted
    elif top_p is not None:
        logits, candidates = torch.sort(logits, dim=-1, descending=True)
    probs = F.softmax(logits.float() / temperature, dim=-1)
    if top_p is not None:
        probs = probs.masked_fill(probs.cumsum(dim=-1) - probs > top_p, 0.0)  # the top token is always kept
    choice = draw(probs, generator)
    return choice if candidates is None else candidates.gather(1, choice[:, None]).squeeze(1)


def draw(weights, generator=None):
    """(B, n) non-negative weights -> (B,) one index per row, drawn with probability proportional to its weight:
    the first position where the running sum reaches a uniform draw from (0, row sum]. torch.multinomial gives the
    same distribution, but draws a random number per entry of GPT-2's vocabulary: a large share of a CPU decode step
    (docs/benchmarks.md); this draws one per row."""
    cumulative = weights.cumsum(dim=-1)
    u = (1 - torch.rand(weights.size(0), 1, generator=generator, device=weights.device)) * cumulative[:, -1:]
    return torch.searchsorted(cumulative, u).squeeze(1)  # a zero weight never reaches it first


def next_token_logits(model, idx, cache):
    """(B, T) new tokens -> (B, vocab) logits for the token after them; the cache takes their keys and values. Only
    the tokenizer's ids: the rows that pad GPT-2's 50,257 to 50,304 are no token (early in training one of them can
    be among the 50 most likely), so they are never drawn."""
    x = model.hidden_states(idx, cache=cache)
    return model.lm_head(x[:, -1, :])[:, :GPT2_VOCAB_SIZE]  # only the last position is needed


@torch.inference_mode()  # no_grad, and none of the bookkeeping autograd would need later: less time per operation
def generate(model, prompts, max_new_tokens, temperature=1.0, top_k=None, top_p=None, stop_token=None,
             generator=None, on_token=None):
    """Continue each prompt (a list of token-id lists, lengths may differ) with up to max_new_tokens tokens.
    temperature 0 is greedy decoding; top_k / top_p filter the distribution; sampling draws from `generator` (a
    seeded torch.Generator on the model's device) for reproducible samples. A row stops early at `stop_token`
    (not returned). `on_token(tokens)` is called after every step with one entry per row: the new token id, or
    None where the row is still reading its prompt or has stopped. Returns a list of token lists, prompt
    included. Generation ends at the model's block_size. A (B, T) tensor of token ids works as prompts too."""
    if torch.is_tensor(prompts):  # what Hugging Face users pass
        prompts = prompts.tolist()
    block_size = model.config.block_size
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    lens = [len(p) for p in prompts]
    if max(lens) > block_size:
        raise ValueError(f"prompt of {max(lens)} tokens is longer than the model's block_size {block_size}; "
                         "shorten the prompt")
    device = model.lm_head.weight.device
    B, total = len(prompts), min(max(lens) + max_new_tokens, block_size)
    # one row per prompt: prompt tokens first, then the tokens we sample
    tokens = torch.zeros((B, total), dtype=torch.long, device=device)
    is_prompt = torch.zeros((B, total), dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        is_prompt[i, : len(p)] = True
    stopped = torch.zeros(B, dtype=torch.bool, device=device)
    cache = KVCache(model.config, B, total, device, cache_dtype(model.lm_head.weight.dtype, device))
    start = min(lens)
    with cpu.packed_linears(model, B):
        logits = next_token_logits(model, tokens[:, :start], cache)  # "prefill" the prefix all rows share
        end = start
        for pos in range(start, total):
            nxt = sample_next_token(logits, temperature, top_k, top_p, generator)
            nxt = torch.where(is_prompt[:, pos], tokens[:, pos], nxt)  # rows with longer prompts keep reading them
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
                logits = next_token_logits(model, nxt[:, None], cache)
    out = []
    for i, p in enumerate(prompts):
        gen = tokens[i, len(p) : min(end, len(p) + max_new_tokens)].tolist()
        if stop_token is not None and stop_token in gen:
            gen = gen[: gen.index(stop_token)]
        out.append(list(p) + gen)
    return out
