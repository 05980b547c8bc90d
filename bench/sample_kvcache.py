"""Sampling speed: the KV-cache generator against the lecture's loop, which re-runs the whole prefix for
every new token. Same random gpt2 (124M) weights, greedy decoding, so the tokens must be identical.

    python bench/sample_kvcache.py              # 4 sequences, 8-token prompt, 200 new tokens, CPU
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_gpt2 as tg  # noqa: E402
from gptkit.tokenizer import GPT2_VOCAB_SIZE  # noqa: E402
from gptkit.cli import HelpFormatter  # noqa: E402
from common import save_result  # noqa: E402


def recompute_prefix(model, prompts, max_new_tokens):
    """The lecture's sampling loop (greedy): a full forward over the growing sequence at every step."""
    x = torch.tensor(prompts, device=model.lm_head.weight.device)
    for _ in range(max_new_tokens):
        logits, _ = model(x)
        x = torch.cat([x, logits[:, -1, :].argmax(dim=-1, keepdim=True)], dim=1)
    return x.tolist()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", default="gpt2", help="model preset (random weights)")
    parser.add_argument("--batch", type=int, default=4, help="sequences sampled together")
    parser.add_argument("--prompt-len", type=int, default=8, help="prompt tokens per sequence")
    parser.add_argument("--new-tokens", type=int, default=200, help="tokens generated per sequence")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = tg.GPT(tg.preset(args.model, vocab_size=GPT2_VOCAB_SIZE)[0]).to(args.device).eval()
    prompts = torch.randint(0, GPT2_VOCAB_SIZE, (args.batch, args.prompt_len)).tolist()
    timings, outputs = {}, {}
    for name, fn in [("kv_cache", lambda: model.generate(prompts, args.new_tokens, temperature=0)),
                     ("recompute_prefix", lambda: recompute_prefix(model, prompts, args.new_tokens))]:
        t0 = time.perf_counter()
        with torch.no_grad():
            outputs[name] = fn()
        timings[name] = time.perf_counter() - t0
    new_tokens = args.batch * args.new_tokens
    figures = {
        "model": args.model, "batch": args.batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
        "kv_cache_tokens_per_s": round(new_tokens / timings["kv_cache"], 2),
        "recompute_prefix_tokens_per_s": round(new_tokens / timings["recompute_prefix"], 2),
        "speedup": round(timings["recompute_prefix"] / timings["kv_cache"], 2),
        "identical_greedy_tokens": outputs["kv_cache"] == outputs["recompute_prefix"],
    }
    save_result(f"sample_kvcache_{args.device}", args.device, figures)


if __name__ == "__main__":
    main()
