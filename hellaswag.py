"""
HellaSwag (Zellers et al. 2019): pick the right ending of a sentence out of four.

A language model takes it as a completion task: render the context followed by each ending, and pick the
ending the model finds least surprising, i.e. with the lowest cross-entropy over the ending's tokens.
  acc       from the summed cross-entropy of the ending
  acc_norm  from the mean cross-entropy per ending token (the lecture's number, fairer to long endings)

    python hellaswag.py -m gpt2                    # OpenAI's GPT-2 124M (via transformers)
    python hellaswag.py -m log/                    # our run directory, checkpoint, or exported HF directory
    python hellaswag.py -m gpt2-xl --device cuda --batch-size 32

Models are scored as transformers GPT-2 models: our checkpoints are converted in memory the way export_hf
converts them. The trainer scores its own model during training, and `python train_gpt2.py --init-from RUN
--eval-only` scores any of ours with the trainer's own code.

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
from contextlib import nullcontext

import torch
import torch.distributed as dist
from filelock import FileLock
from torch.nn import functional as F

from gptkit.cli import HelpFormatter, progress
from gptkit.hardware import autocast_context, autodetect_device
from gptkit.download import download
from gptkit.tokenizer import gpt2_tokenizer

DATA_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data"  # HELLASWAG_URL: a mirror's folder
DEFAULT_CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hellaswag")


def data_url(split):
    """Where a split is downloaded from: the folder HELLASWAG_URL names (a mirror, a cluster's own server), else
    HellaSwag's repository."""
    return os.environ.get("HELLASWAG_URL", DATA_URL).rstrip("/") + f"/hellaswag_{split}.jsonl"


def data_path(split, cache_dir=DEFAULT_CACHE):
    """The jsonl file for a split, downloaded into cache_dir the first time (an existing file is used as is).
    Every rank of a job asks at once: the first to take the lock downloads, the others wait, then read it."""
    path = os.path.join(cache_dir, f"hellaswag_{split}.jsonl")
    if not os.path.exists(path):
        os.makedirs(cache_dir, exist_ok=True)
        with FileLock(path + ".lock"):
            if not os.path.exists(path):  # not fetched by another process while this one waited
                download(data_url(split), path)
    return path


def load_val_examples(cache_dir, block_size):
    """The val examples for the trainer's evaluation of a model of block_size positions, downloaded into cache_dir
    the first time. A problem is one line naming the trainer's flags that fix it."""
    try:
        examples = load_examples(data_path("val", cache_dir))
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"{e} (or point --hellaswag-dir at the folder holding it, or HELLASWAG_URL at a mirror's "
                      "folder); or turn HellaSwag off with --hellaswag-interval 0") from None
    longest = longest_row(examples, gpt2_tokenizer())
    if longest > block_size:
        raise ValueError(f"HellaSwag examples need {longest} positions, more than block_size {block_size}; turn "
                         "HellaSwag off with --hellaswag-interval 0")
    return examples


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
    Returns the four token lists and the context length, where every ending starts."""
    ctx = enc.encode(example["ctx"])
    rows = [ctx + enc.encode(" " + ending) for ending in example["endings"]]
    return rows, len(ctx)


def pack(example, enc):
    """One row for a whole example: the context once, then the four endings one after another. The positions of
    every ending restart where the context ends, and the attention mask (see `attention_mask`) lets an ending see
    only the context and itself, so each ending gets exactly the logits it would get in [context + ending]
    alone, while the context is computed once instead of four times.
    Returns tokens, positions, segments (0 for the context, 1-4 for the endings) and the context length."""
    rows, ctx_len = render(example, enc)
    tokens, positions, segments = rows[0][:ctx_len], list(range(ctx_len)), [0] * ctx_len
    for j, row in enumerate(rows):
        ending = row[ctx_len:]
        tokens += ending
        positions += range(ctx_len, ctx_len + len(ending))
        segments += [j + 1] * len(ending)
    return tokens, positions, segments, ctx_len


PAD_SEGMENT = 5  # padding forms its own segment, so that every query sees at least itself


def attention_mask(segments):
    """(B, L) segment ids -> (B, 1, L, L) bool: a token sees earlier tokens of its own segment and the context."""
    L = segments.size(1)
    same = segments[:, :, None] == segments[:, None, :]
    context = (segments == 0)[:, None, :]
    causal = torch.ones(L, L, dtype=torch.bool, device=segments.device).tril()
    return ((same | context) & causal)[:, None]


def score(logits_fn, examples, enc, batch_size, device, n_batches=None, pad_to=None, show_progress=False):
    """Per-example (4,) summed and mean cross-entropy of every ending, `batch_size` packed examples per forward
    pass. logits_fn(tokens, positions, mask, rows, cols) returns the logits at positions (rows, cols) only: the
    ones that predict an ending token. Examples are sorted by length so that little padding is needed: rows are
    padded to a multiple of 8, or all to pad_to (one shape, so a compiled model compiles once); the last batch
    gets empty rows. n_batches > needed adds all-padding batches, so that every rank makes as many forward
    passes (FSDP needs that). show_progress: a progress bar in a terminal."""
    packed = [pack(ex, enc) for ex in examples]
    order = sorted(range(len(packed)), key=lambda i: -len(packed[i][0]))
    n_batches = n_batches or math.ceil(len(examples) / batch_size)
    sums = torch.zeros(len(examples), 4)
    counts = torch.zeros(len(examples), 4)
    for b in progress(range(n_batches), show_progress, desc="HellaSwag", unit="batch"):
        chunk = order[b * batch_size : (b + 1) * batch_size]
        L = pad_to or math.ceil(max([len(packed[i][0]) for i in chunk] + [1]) / 8) * 8
        tokens = torch.zeros((batch_size, L), dtype=torch.long)
        positions = torch.zeros((batch_size, L), dtype=torch.long)
        segments = torch.full((batch_size, L), PAD_SEGMENT, dtype=torch.long)
        rows, cols, targets, group = [], [], [], []  # for every ending token: where it is predicted, what, which ending
        for r, i in enumerate(chunk):
            toks, pos, seg, ctx_len = packed[i]
            tokens[r, : len(toks)] = torch.tensor(toks)
            positions[r, : len(toks)] = torch.tensor(pos)
            segments[r, : len(toks)] = torch.tensor(seg)
            for k in range(ctx_len, len(toks)):
                first = seg[k - 1] != seg[k]  # an ending's first token is predicted from the context's last
                rows.append(r)
                cols.append(ctx_len - 1 if first else k - 1)
                targets.append(toks[k])
                group.append(4 * i + seg[k] - 1)
        rows, cols = torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)
        with torch.no_grad():
            logits = logits_fn(tokens.to(device), positions.to(device), attention_mask(segments.to(device)),
                               rows.to(device), cols.to(device))
        if not chunk:
            continue  # a padding batch, run only to keep ranks in step
        losses = F.cross_entropy(logits.float(), torch.tensor(targets, device=device), reduction="none").cpu()
        group = torch.tensor(group)
        sums.view(-1).index_add_(0, group, losses)
        counts.view(-1).index_add_(0, group, torch.ones_like(losses))
    return sums, sums / counts


def gpt_logits_fn(model, autocast=None):
    """score()'s view of one of our GPT models: the head runs only where a prediction is needed."""
    def fn(tokens, positions, mask, rows, cols):
        with autocast or nullcontext():
            return model.lm_head(model.hidden_states(tokens, pos=positions, mask=mask)[rows, cols])
    return fn


def hf_logits_fn(model, autocast=None):
    """The same for a transformers GPT-2 (GPT2LMHeadModel), which takes position ids and a 4-D mask too."""
    def fn(tokens, positions, mask, rows, cols):
        with autocast or nullcontext():
            hidden = model.transformer(tokens, position_ids=positions, attention_mask=mask).last_hidden_state
            return model.lm_head(hidden[rows, cols])
    return fn


def longest_row(examples, enc):
    """The most positions any context + ending needs: it must fit in the model's block_size."""
    return max(len(row) for ex in examples for row in render(ex, enc)[0])


def packed_length(examples, enc):
    """The longest packed row (context + four endings), rounded up to a multiple of 64: one shape for all."""
    return math.ceil(max(len(pack(ex, enc)[0]) for ex in examples) / 64) * 64


def evaluate(logits_fn, examples, enc, device, batch_size=16, rank=0, world_size=1, pad_to=None, show_progress=False):
    """acc and acc_norm over the examples. With world_size > 1, rank k scores examples k, k + W, ... and the
    counts are summed across ranks, so every rank returns the totals."""
    mine = examples[rank::world_size]
    n_batches = math.ceil(math.ceil(len(examples) / world_size) / batch_size)  # the same on every rank
    sums, means = score(logits_fn, mine, enc, batch_size, device, n_batches, pad_to, show_progress)
    labels = torch.tensor([ex["label"] for ex in mine], dtype=torch.long)
    counts = torch.tensor([len(mine), (sums.argmin(1) == labels).sum().item(), (means.argmin(1) == labels).sum().item()],
                          dtype=torch.long, device=device)
    if world_size > 1:
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    n, correct, correct_norm = counts.tolist()
    return {"n": n, "correct": correct, "correct_norm": correct_norm, "acc": correct / n, "acc_norm": correct_norm / n}


def load_model_to_score(name):
    """A transformers GPT-2 for a hub name (gpt2, gpt2-xl, ...) or a directory, or one of our checkpoints or run
    directories converted to one (the conversion export_hf writes). A checkpoint of the modern recipe, which has
    no transformers counterpart, comes back as gptkit.modern's model. Returns (model, its logits_fn maker)."""
    from gptkit import checkpoint, modern, rundir
    from gptkit.hf import from_pretrained, to_hf_model

    path = rundir.newest_in_run(name)
    if checkpoint.is_checkpoint(path):
        ckpt = checkpoint.load_checkpoint(path)
        if modern.is_modern(ckpt["config"]):
            model = modern.ModernGPT(modern.ModernConfig(**ckpt["config"]))
            model.load_state_dict(ckpt["model"])
            return model.eval(), gpt_logits_fn
        return to_hf_model(ckpt["model"], ckpt["config"]), hf_logits_fn
    return from_pretrained(path, auto=True).eval(), hf_logits_fn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("-m", "--model", default="gpt2",
                        help="OpenAI model name (gpt2, gpt2-medium, gpt2-large, gpt2-xl), a Hugging Face GPT-2 "
                             "directory, one of our checkpoints or a run directory")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best one available)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                        help="autocast dtype (auto: as the trainer's --dtype, gptkit/hardware.py)")
    parser.add_argument("--split", default="val", choices=["train", "val"], help="which file")
    parser.add_argument("--limit", type=int, help="only the first N examples")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per forward pass (4 rows each)")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE, help="where the jsonl files are kept")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model; every batch is then padded to one shape, so it compiles once")
    args = parser.parse_args(argv)

    device = args.device or autodetect_device()
    try:
        examples = load_examples(data_path(args.split, args.cache_dir), args.limit)
        enc = gpt2_tokenizer()
        model, logits_fn = load_model_to_score(args.model)
        model.to(device)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    if args.compile:  # the transformer body; the head only runs on the gathered positions
        if logits_fn is hf_logits_fn:
            model.transformer = torch.compile(model.transformer)
        else:
            model.hidden_states = torch.compile(model.hidden_states)
    forward = logits_fn(model, autocast_context(device, args.dtype))
    t0 = time.time()
    result = evaluate(forward, examples, enc, device, args.batch_size,
                      pad_to=packed_length(examples, enc) if args.compile else None, show_progress=True)
    dt = time.time() - t0
    print(f"{args.model} on HellaSwag {args.split}: {result['n']} examples | acc {result['acc']:.4f} "
          f"({result['correct']}/{result['n']}) | acc_norm {result['acc_norm']:.4f} ({result['correct_norm']}/"
          f"{result['n']}) | {result['n'] / dt:.1f} examples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
