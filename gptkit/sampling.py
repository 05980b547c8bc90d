"""Sampling from a GPT: a preallocated KV cache, temperature / top-k / top-p, and batched generation."""

import torch
from torch.nn import functional as F


class KVCache:
    """Keys and values of every layer for the positions already seen, so that each new token costs one position of
    compute instead of re-running the whole prefix. Preallocated to max_len, so that shapes stay static (friendly
    to torch.compile). CausalSelfAttention writes its layer's slot through update()."""

    def __init__(self, config, batch_size, max_len, device, dtype):
        shape = (config.n_layer, batch_size, config.n_head, max_len, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0  # how many positions are filled

    def positions(self, T):
        """Positions (T,) of the next T tokens, and the (T, max_len) bool mask of what each may attend to: the
        cached positions up to and including its own."""
        max_len = self.k.size(3)
        if self.pos + T > max_len:
            raise ValueError(f"KV cache holds {max_len} positions; cannot add {T} after {self.pos}")
        pos = torch.arange(self.pos, self.pos + T, device=self.k.device)
        return pos, torch.arange(max_len, device=self.k.device)[None, :] <= pos[:, None]

    def update(self, layer, k, v):
        """Store k, v (B, n_head, T, head_dim) of `layer` at the next T positions; return all max_len of them."""
        T = k.size(2)
        self.k[layer, :, :, self.pos : self.pos + T] = k
        self.v[layer, :, :, self.pos : self.pos + T] = v
        return self.k[layer], self.v[layer]


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """logits (B, vocab) -> (B,) next token ids. temperature 0 is greedy."""
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


def next_token_logits(model, idx, cache):
    """(B, T) new tokens -> (B, vocab) logits for the token after them; the cache takes their keys and values."""
    x = model.hidden_states(idx, cache=cache)
    return model.lm_head(x[:, -1, :])  # only the last position is needed


@torch.no_grad()
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
    cache = KVCache(model.config, B, total, device, model.lm_head.weight.dtype)
    start = min(lens)
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
