"""Tokenization throughput of fineweb.py against the lecture's approach, on the same local corpus in one run.

  lecture            multiprocessing Pool of cpu_count()//2 workers, imap(chunksize=16), one document per task
  lecture_all_cores  the same with cpu_count() workers (is it the worker count, or the method?)
  tiktoken_threads   tiktoken's batch API on cpu_count() threads in one process (the other way to use all cores)
  fineweb_py         this repo: batches of documents to cpu_count() worker processes, ShardWriter

Each job loads the same JSON-lines corpus with `datasets` (converted to Arrow once, before timing) and, but
for tiktoken_threads, writes uint16 shards, so the times compare whole jobs, not just the tokenizer.

    python bench/tokenize_speed.py --mb 50
"""

import argparse
import json
import os
import sys
import tempfile
import time
from multiprocessing import Pool

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import fineweb  # noqa: E402
from gptkit.tokenizer import EOT_TOKEN, gpt2_tokenizer  # noqa: E402
from gptkit.cli import HelpFormatter  # noqa: E402
from common import save_result  # noqa: E402

_enc = None


def lecture_tokenize(doc):
    """The lecture's per-document function, run in a worker process."""
    global _enc
    if _enc is None:
        _enc = gpt2_tokenizer()
    tokens = np.array([EOT_TOKEN] + _enc.encode_ordinary(doc["text"]))
    assert (0 <= tokens).all() and (tokens < 2**16).all()
    return tokens.astype(np.uint16)


def lecture_job(corpus, out_dir, nprocs, shard_size=10**8):
    """The lecture's job: load the dataset, fill a shard buffer from the pool's results, save it when full."""
    from datasets import load_dataset

    ds = load_dataset("json", data_files=corpus, split="train")
    os.makedirs(out_dir, exist_ok=True)
    shard_index, count, total = 0, 0, 0
    buf = np.empty((shard_size,), dtype=np.uint16)
    with Pool(nprocs) as pool:
        for tokens in pool.imap(lecture_tokenize, ds, chunksize=16):
            total += len(tokens)
            while count + len(tokens) >= shard_size:  # documents run across shard boundaries
                take = shard_size - count
                buf[count:] = tokens[:take]
                np.save(os.path.join(out_dir, f"lecture_{shard_index:06d}"), buf)
                shard_index, count, tokens = shard_index + 1, 0, tokens[take:]
            buf[count : count + len(tokens)] = tokens
            count += len(tokens)
    if count:
        np.save(os.path.join(out_dir, f"lecture_{shard_index:06d}"), buf[:count])
    return total


def make_corpus(path, megabytes, text_path):
    """JSON lines of Tiny Shakespeare paragraphs, 3-12 to a document, repeated up to the wanted size."""
    paragraphs = open(text_path).read().split("\n\n")
    size, i = 0, 0
    with open(path, "w") as f:
        while size < megabytes * 1e6:
            n = 3 + i % 10
            doc = "\n\n".join(paragraphs[(i * 7 + k) % len(paragraphs)] for k in range(n))
            line = json.dumps({"text": doc}) + "\n"
            f.write(line)
            size += len(line.encode())
            i += 1
    return i


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--mb", type=float, default=20, help="corpus size in megabytes (at least 20 for the record)")
    parser.add_argument("--text", default=os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"),
                        help="text the corpus is made of")
    args = parser.parse_args()

    from datasets import load_dataset

    cores = os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.jsonl")
        n_docs = make_corpus(corpus, args.mb, args.text)
        os.environ["HF_DATASETS_CACHE"] = os.path.join(tmp, "hf")
        load_dataset("json", data_files=corpus, split="train")  # converted to Arrow once, before timing
        times, tokens = {}, {}
        for name, nprocs in (("lecture", max(1, cores // 2)), ("lecture_all_cores", cores)):
            t0 = time.perf_counter()
            tokens[name] = lecture_job(corpus, os.path.join(tmp, name), nprocs)
            times[name] = time.perf_counter() - t0
        enc = gpt2_tokenizer()
        t0 = time.perf_counter()
        ds = load_dataset("json", data_files=corpus, split="train")
        tokens["tiktoken_threads"] = sum(len(t) + 1 for batch in ds.iter(batch_size=256)
                                         for t in enc.encode_ordinary_batch(batch["text"], num_threads=cores))
        times["tiktoken_threads"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        shards = fineweb.write_shards(fineweb.parse_args(["--dataset", "local", "--input", corpus,
                                                          "--out", os.path.join(tmp, "ours"), "--val-tokens", "1000000",
                                                          "--shard-size", "2000000"]))
        times["fineweb_py"] = time.perf_counter() - t0
        tokens["fineweb_py"] = sum(s["tokens"] for s in shards)
    assert len(set(tokens.values())) == 1, tokens

    total = tokens["lecture"]
    figures = {"corpus_mb": args.mb, "documents": n_docs, "tokens": total, "cores": cores, "results": {}}
    for name, dt in times.items():
        figures["results"][name] = {"seconds": round(dt, 2), "tokens_per_s": round(total / dt),
                                    "tokens_per_s_per_core": round(total / dt / cores)}
    figures["speedup_vs_lecture"] = round(times["lecture"] / times["fineweb_py"], 2)
    save_result("tokenize_speed_cpu", "cpu", figures)


if __name__ == "__main__":
    main()
