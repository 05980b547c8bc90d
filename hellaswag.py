"""
HellaSwag (Zellers et al. 2019): pick the right ending of a sentence out of four.

A language model takes it as a completion task: render the context followed by each ending, and pick the
ending the model finds least surprising, i.e. with the lowest cross-entropy over the ending's tokens.
  acc       from the summed cross-entropy of the ending
  acc_norm  from the mean cross-entropy per ending token (the lecture's number, fairer to long endings)

    python hellaswag.py -m gpt2                    # OpenAI's GPT-2 124M (via transformers)
    python hellaswag.py -m log/                    # our run directory, checkpoint, or exported HF directory
    python hellaswag.py -m gpt2-xl --hf --device cuda --batch-size 32

Reference figures on the 10,042 val examples, completion style, as reported for the lecture's script, which
scores the same way (not re-measured here: this project's CI has no internet):
    gpt2 (124M)   acc 0.2859  acc_norm 0.2955
    gpt2-xl       acc 0.3842  acc_norm 0.4893
"""

import argparse
import json
import math
import os
import sys
import time
import urllib.error

import torch
import torch.distributed as dist
from torch.nn import functional as F

DATA_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_{split}.jsonl"
DEFAULT_CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hellaswag")


def data_path(split, cache_dir=DEFAULT_CACHE):
    """The jsonl file for a split, downloaded into cache_dir the first time (an existing file is used as is)."""
    path = os.path.join(cache_dir, f"hellaswag_{split}.jsonl")
    if not os.path.exists(path):
        from fineweb import download

        os.makedirs(cache_dir, exist_ok=True)
        url = DATA_URL.format(split=split)
        try:
            download(url, path)
        except (urllib.error.URLError, OSError) as e:
            raise FileNotFoundError(f"could not download {url} ({e}); offline, put hellaswag_{split}.jsonl in "
                                    f"{cache_dir} (or point --cache-dir at the folder holding it)") from None
    return path


def load_examples(path, limit=None):
    """Parse and check a HellaSwag jsonl file: every line a dict with ctx, 4 non-empty endings and a label 0..3."""
    examples = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{os.path.basename(path)} line {n}"
            try:
                ex = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(ex, dict) or not isinstance(ex.get("ctx"), str):
                raise ValueError(f"{where}: expected an object with a 'ctx' string")
            endings = ex.get("endings")
            if not isinstance(endings, list) or len(endings) != 4 or not all(isinstance(e, str) for e in endings):
                raise ValueError(f"{where}: expected 'endings' to be a list of 4 strings")
            if any(not e.strip() for e in endings):
                raise ValueError(f"{where}: ending {[bool(e.strip()) for e in endings].index(False)} is empty")
            if ex.get("label") not in (0, 1, 2, 3):
                raise ValueError(f"{where}: label {ex.get('label')!r} is outside 0..3")
            examples.append({"ctx": ex["ctx"], "endings": endings, "label": ex["label"]})
            if limit is not None and len(examples) == limit:
                break
    return examples


def render(example, enc):
    """Context tokens + each ending's tokens (encoded with a leading space, as it follows the context).
    Returns four token lists and, for each, the index where its ending starts."""
    ctx = enc.encode(example["ctx"])
    rows = [ctx + enc.encode(" " + ending) for ending in example["endings"]]
    return rows, len(ctx)


def score(logits_fn, examples, enc, batch_size, pad_to, device, n_batches=None):
    """Per-example (4,) summed and mean cross-entropy of every ending, `batch_size` examples (4 rows each) per
    forward pass. Every batch has the shape (4 * batch_size, pad_to), so a compiled model compiles once;
    n_batches > needed runs extra all-padding batches (so that every rank makes the same number of calls)."""
    rendered = [render(ex, enc) for ex in examples]
    n_batches = n_batches or math.ceil(len(examples) / batch_size)
    sums, means = [], []
    for b in range(n_batches):
        chunk = rendered[b * batch_size : (b + 1) * batch_size]
        tokens = torch.zeros((4 * batch_size, pad_to), dtype=torch.long)
        mask = torch.zeros((4 * batch_size, pad_to), dtype=torch.bool)  # True where an ending token is predicted
        for i, (rows, ctx_len) in enumerate(chunk):
            for j, row in enumerate(rows):
                if len(row) > pad_to:
                    raise ValueError(f"an example renders to {len(row)} tokens, more than pad_to={pad_to}")
                tokens[4 * i + j, : len(row)] = torch.tensor(row)
                mask[4 * i + j, ctx_len : len(row)] = True
        tokens, mask = tokens.to(device), mask.to(device)
        with torch.no_grad():
            logits = logits_fn(tokens)
        # position t predicts token t+1: compare logits[:, :-1] with tokens[:, 1:]
        losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")
        losses = losses.view(4 * batch_size, pad_to - 1) * mask[:, 1:]
        row_sum = losses.sum(dim=1)
        row_mean = row_sum / mask[:, 1:].sum(dim=1).clamp(min=1)
        sums.append(row_sum.view(batch_size, 4)[: len(chunk)].cpu())
        means.append(row_mean.view(batch_size, 4)[: len(chunk)].cpu())
    return torch.cat(sums), torch.cat(means)


def padded_length(examples, enc, multiple=32):
    """The longest rendered row, rounded up: one fixed sequence length for the whole evaluation."""
    longest = max(len(row) for ex in examples for row in render(ex, enc)[0])
    return math.ceil(longest / multiple) * multiple


def evaluate(logits_fn, examples, enc, device, batch_size=16, rank=0, world_size=1, pad_to=None):
    """acc and acc_norm over the examples. With world_size > 1, rank k scores examples k, k + W, ... and the
    counts are summed across ranks, so every rank returns the totals. logits_fn: (N, L) ids -> (N, L, V)."""
    pad_to = pad_to or padded_length(examples, enc)
    mine = examples[rank::world_size]
    n_batches = math.ceil(math.ceil(len(examples) / world_size) / batch_size)  # the same on every rank
    sums, means = score(logits_fn, mine, enc, batch_size, pad_to, device, n_batches)
    labels = torch.tensor([ex["label"] for ex in mine], dtype=torch.long)
    counts = torch.tensor([len(mine), (sums.argmin(1) == labels).sum().item(), (means.argmin(1) == labels).sum().item()],
                          dtype=torch.long, device=device)
    if world_size > 1:
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    n, correct, correct_norm = counts.tolist()
    return {"n": n, "correct": correct, "correct_norm": correct_norm, "acc": correct / n, "acc_norm": correct_norm / n}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", default="gpt2",
                        help="OpenAI model name (gpt2, gpt2-medium, gpt2-large, gpt2-xl), a Hugging Face GPT-2 "
                             "directory, one of our checkpoints or a run directory")
    parser.add_argument("--hf", action="store_true",
                        help="score with transformers' own model (AutoModelForCausalLM) instead of ours")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best one available)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                        help="autocast dtype (auto: bfloat16 on cuda, float32 elsewhere)")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"],
                        help="which file (the test split has no labels upstream)")
    parser.add_argument("--limit", type=int, help="only the first N examples")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per forward pass (4 rows each)")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE, help="where the jsonl files are kept")
    args = parser.parse_args(argv)

    import train_gpt2 as tg

    device = args.device or tg.autodetect_device()
    device_type = device.split(":")[0]
    dtype = {"auto": torch.bfloat16 if device_type == "cuda" else torch.float32,
             "bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    try:
        examples = load_examples(data_path(args.split, args.cache_dir), args.limit)
        enc = tg.gpt2_tokenizer()
        if args.hf:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(args.model).to(device).eval()
            forward = lambda idx: model(idx).logits  # noqa: E731
        else:
            model = tg.load_model(args.model).to(device).eval()
            forward = lambda idx: model(idx)[0]  # noqa: E731
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    def logits_fn(idx):
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            return forward(idx)

    t0 = time.time()
    result = evaluate(logits_fn, examples, enc, device, args.batch_size)
    dt = time.time() - t0
    print(f"{args.model} on HellaSwag {args.split}: {result['n']} examples | acc {result['acc']:.4f} "
          f"({result['correct']}/{result['n']}) | acc_norm {result['acc_norm']:.4f} ({result['correct_norm']}/"
          f"{result['n']}) | {result['n'] / dt:.1f} examples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
