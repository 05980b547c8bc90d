"""HellaSwag scoring speed: hellaswag.py's batched scorer against the lecture's loop (one example, 4 rows,
per forward pass), same random gpt2 (124M) weights, same examples; the predictions must be identical.

The examples are HellaSwag-shaped (a context and four endings, lengths like the real val set's) and cut
from Tiny Shakespeare, so that the benchmark runs offline; pass --data for the real hellaswag_val.jsonl.

    python bench/hellaswag_speed.py --examples 200
    python bench/hellaswag_speed.py --examples 512 --device cuda --compile   # also: compiled vs not
"""

import argparse
import os
import random
import sys
import time

import torch
from torch.nn import functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import hellaswag  # noqa: E402
import train_gpt2 as tg  # noqa: E402
from gptkit.hardware import autocast_context  # noqa: E402
from gptkit.tokenizer import GPT2_VOCAB_SIZE, gpt2_tokenizer  # noqa: E402
from gptkit.cli import HelpFormatter  # noqa: E402
from common import save_result  # noqa: E402


def synthetic_examples(n, text_path, seed=0):
    """Contexts of 1-4 lines and endings of one line: roughly the val set's 40-token contexts and 20-token endings."""
    lines = [line.strip() for line in open(text_path) if len(line.strip()) > 20]
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        i = rng.randrange(len(lines) - 4)
        ctx = " ".join(lines[i : i + rng.randint(1, 4)])
        examples.append({"ctx": ctx, "endings": [rng.choice(lines) for _ in range(4)], "label": rng.randrange(4)})
    return examples


def lecture_loop(model, examples, enc, device):
    """One example per forward: its 4 rows padded to the longest of them; predictions by mean ending loss."""
    preds = []
    for ex in examples:
        ctx = enc.encode(ex["ctx"])
        rows = [ctx + enc.encode(" " + e) for e in ex["endings"]]
        L = max(len(r) for r in rows)
        tokens = torch.zeros((4, L), dtype=torch.long)
        mask = torch.zeros((4, L))
        for j, r in enumerate(rows):
            tokens[j, : len(r)] = torch.tensor(r)
            mask[j, len(ctx) : len(r)] = 1
        tokens, mask = tokens.to(device), mask.to(device)
        with torch.no_grad():
            logits, _ = model(tokens)
        losses = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none").view(4, -1)
        mean = (losses * mask[:, 1:]).sum(1) / mask[:, 1:].sum(1)
        preds.append(mean.argmin().item())
    return preds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", default="gpt2", help="model preset (random weights)")
    parser.add_argument("--examples", type=int, default=200, help="examples scored")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per forward pass (batched scorer)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                        help="autocast dtype, as the trainer's --dtype (gptkit/hardware.py)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the batched scorer with the model compiled (the compiling pass untimed)")
    parser.add_argument("--data", help="a HellaSwag jsonl file (default: synthetic examples from Tiny Shakespeare)")
    parser.add_argument("--text", default=os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"),
                        help="text to cut synthetic examples from")
    args = parser.parse_args()

    enc = gpt2_tokenizer()
    if args.data:
        examples = hellaswag.load_examples(args.data, args.examples)
    else:
        examples = synthetic_examples(args.examples, args.text)
    torch.set_float32_matmul_precision("high")
    torch.manual_seed(0)
    model = tg.GPT(tg.preset(args.model, vocab_size=GPT2_VOCAB_SIZE)[0]).to(args.device).eval()
    autocast = autocast_context(args.device, args.dtype)

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()  # both loops end by copying their results to the host, which waits for the device
        return out, time.perf_counter() - t0

    def batched(subset, pad_to=None):
        return hellaswag.score(hellaswag.gpt_logits_fn(model, autocast), subset, enc, args.batch_size,
                               args.device, pad_to=pad_to)[1].argmin(1).tolist()

    def lecture():
        with autocast:
            return lecture_loop(model, examples, enc, args.device)

    batched(examples[:8])  # warm-up: the first calls on a device pay for its start
    batched_preds, batched_s = timed(lambda: batched(examples))
    lecture_preds, lecture_s = timed(lecture)
    figures = {
        "model": args.model, "examples": len(examples), "batch_size": args.batch_size, "dtype": args.dtype,
        "data": args.data or "synthetic (Tiny Shakespeare)",
        "batched_examples_per_s": round(len(examples) / batched_s, 2),
        "lecture_examples_per_s": round(len(examples) / lecture_s, 2),
        "speedup": round(lecture_s / batched_s, 2),
        "identical_predictions": batched_preds == lecture_preds,
    }
    if args.compile:  # the body compiled, every batch padded to one shape: a first pass compiles, a second is timed
        model.hidden_states = torch.compile(model.hidden_states)
        pad_to = hellaswag.packed_length(examples, enc)
        _, compile_s = timed(lambda: batched(examples, pad_to))
        compiled_preds, compiled_s = timed(lambda: batched(examples, pad_to))
        figures.update({"compiled_examples_per_s": round(len(examples) / compiled_s, 2),
                        "compiled_first_pass_s": round(compile_s, 1),
                        "compiled_identical_predictions": compiled_preds == batched_preds})
    save_result(f"hellaswag_speed_{args.device.split(':')[0]}", args.device, figures)


if __name__ == "__main__":
    main()
