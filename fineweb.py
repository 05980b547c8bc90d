"""
Text -> GPT-2 token shards for train_gpt2.py.

    python fineweb.py                                  # FineWeb-Edu sample-10BT -> edu_fineweb10B/ (~10B tokens)
    python fineweb.py --dataset tinyshakespeare        # input.txt (shipped) -> data/tinyshakespeare/
    python fineweb.py --dataset local --input a.txt b.jsonl c.parquet --out data/mine

Every document is tokenized as [<|endoftext|>] + gpt2(text), in --workers processes, and the documents are
laid end to end into shards of --shard-size tokens (uint16 .npy files): {prefix}_val_000000.npy holds the
first --val-tokens tokens, {prefix}_train_000001.npy, ... the rest. A document runs across a shard boundary
when it has to.
manifest.json beside the shards records where they came from and how far the job got, so a re-run skips
the shards already written and continues from the next document. A shard is written under a temporary
name and renamed only when complete, so an interrupted job never leaves a partial shard behind.
"""

import argparse
import codecs
import json
import os
import sys
from collections import deque

import numpy as np
from filelock import FileLock, Timeout

from gptkit.cli import HelpFormatter, progress
from gptkit.download import download
from gptkit.shards import shard_name
from gptkit.signals import worker_pool
from gptkit.tokenizer import gpt2_tokenizer

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
HUB_DATASETS = {"fineweb-edu": "HuggingFaceFW/fineweb-edu", "fineweb": "HuggingFaceFW/fineweb"}


# -----------------------------------------------------------------------------
# where the documents come from


def tiny_shakespeare():
    """input.txt in this folder, else the copy shipped beside this script, else downloaded to ./input.txt."""
    for path in ("input.txt", os.path.join(os.path.dirname(os.path.abspath(__file__)), "input.txt")):
        if os.path.exists(path):
            return path
    download(TINY_SHAKESPEARE_URL, "input.txt")
    return "input.txt"


def load_documents(args):
    """A `datasets` dataset with one document per row in column args.text_column."""
    from datasets import load_dataset

    if args.dataset in HUB_DATASETS:
        return load_dataset(HUB_DATASETS[args.dataset], name=args.remote_name, split="train",
                            streaming=args.streaming)
    ext = {os.path.splitext(p)[1] for p in args.input}
    if len(ext) != 1 or not ext <= {".txt", ".jsonl", ".json", ".parquet"}:
        raise SystemExit(f"error: --input files must all be .txt, all .jsonl or all .parquet, got {sorted(ext)}")
    ext = ext.pop()
    if ext == ".txt":
        for path in args.input:
            check_text(path)
        # one document per file, or one per blank-line separated paragraph
        sample_by = "paragraph" if args.split_paragraphs else "document"
        return load_dataset("text", data_files=args.input, sample_by=sample_by, keep_linebreaks=True, split="train")
    try:
        ds = load_dataset("parquet" if ext == ".parquet" else "json", data_files=args.input, split="train")
    except Exception as e:  # datasets wraps the reader's error (bad JSON, not parquet) in its own
        cause = e.__cause__ or e
        raise SystemExit(f"error: could not read {', '.join(args.input)} as {ext[1:]}: {type(cause).__name__}: "
                         f"{str(cause).splitlines()[0] if str(cause) else ''}") from None
    if args.text_column not in ds.column_names:
        raise SystemExit(f"error: {args.input[0]} has no '{args.text_column}' column (columns: "
                         f"{', '.join(ds.column_names)}); name the text column with --text-column")
    return ds


def check_text(path, chunk=1 << 24):
    """A .txt corpus must be UTF-8 text: say which file is not, and where, before any tokenizing."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # of block in the file
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if b"\0" in block:
                raise SystemExit(f"error: {path} holds NUL bytes (the first at byte {offset + block.index(0):,}): a "
                                 "binary file, not text; drop it from --input")
            carried = len(decoder.getstate()[0])  # the start of a character cut by the previous block
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                raise SystemExit(f"error: {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at "
                                 f"{offset - carried + e.start:,}); convert it first, e.g. iconv -f latin1 -t utf-8 "
                                 f"{path}") from None
            if not block:
                return
            offset += len(block)


def source_description(args):
    """What makes these shards what they are: a re-run must match it to continue the job."""
    if args.dataset in HUB_DATASETS:
        source = {"dataset": HUB_DATASETS[args.dataset], "name": args.remote_name}
    else:
        source = {"files": [os.path.abspath(p) for p in args.input], "sizes": [os.path.getsize(p) for p in args.input],
                  "split_paragraphs": args.split_paragraphs, "text_column": args.text_column}
    return {"source": source, "tokenizer": "gpt2", "dtype": "uint16", "prefix": args.prefix,
            "shard_size": args.shard_size, "val_tokens": args.val_tokens}


# -----------------------------------------------------------------------------
# writing shards


def save_atomic(path, write):
    """Write a file through a temporary name in the same directory, then rename it into place."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ShardWriter:
    """Lays token arrays end to end into shards and keeps manifest.json up to date.

    The manifest lists each finished shard with the position just past its last token, as
    (document index, token offset into that document), which is exactly where a re-run resumes."""

    def __init__(self, out_dir, settings):
        self.out_dir = out_dir
        self.settings = settings
        self.manifest_path = os.path.join(out_dir, "manifest.json")
        self.shards = []
        if os.path.exists(self.manifest_path):
            with open(self.manifest_path) as f:
                manifest = json.load(f)
            old = {k: manifest.get(k) for k in settings}
            if old != settings:
                changed = [k for k in settings if old[k] != settings[k]]
                raise SystemExit(f"error: {out_dir} holds shards made with other settings ({', '.join(changed)} "
                                 f"differ); use another --out or delete {out_dir}")
            # keep the shards that are still there, in order; anything after a missing one is redone
            for shard in manifest["shards"]:
                if not os.path.exists(os.path.join(out_dir, shard["name"])):
                    break
                self.shards.append(shard)
            self.complete = manifest["complete"] and len(self.shards) == len(manifest["shards"])
        else:
            os.makedirs(out_dir, exist_ok=True)
            if any(f.endswith(".npy") for f in os.listdir(out_dir)):
                raise SystemExit(f"error: {out_dir} already holds .npy files that this tool did not write "
                                 "(no manifest.json); use another --out")
            self.complete = False
        self.resume_doc, self.resume_offset = self.shards[-1]["end"] if self.shards else (0, 0)
        self.buf = np.empty(self.capacity(), dtype=np.uint16)
        self.fill = 0

    def capacity(self):
        return self.settings["val_tokens"] if len(self.shards) == 0 else self.settings["shard_size"]

    def add(self, tokens, doc_starts, first_doc):
        """tokens: one batch of documents laid end to end (uint16); doc_starts: where each document begins
        in it (the first may begin before the batch, when resuming mid-document); first_doc: its index."""
        pos = 0
        while pos < len(tokens):
            take = min(len(self.buf) - self.fill, len(tokens) - pos)
            self.buf[self.fill : self.fill + take] = tokens[pos : pos + take]
            self.fill += take
            pos += take
            if self.fill == len(self.buf):
                d = int(np.searchsorted(doc_starts, pos, side="right")) - 1  # the document holding position pos
                self.write_shard(end=(first_doc + d, pos - int(doc_starts[d])))

    def finish(self, n_docs):
        if self.fill > 0:
            self.write_shard(end=(n_docs, 0))
        self.complete = True
        self.write_manifest()

    def write_shard(self, end):
        index = len(self.shards)
        name = shard_name(self.settings["prefix"], index)
        tokens = self.buf[: self.fill]
        save_atomic(os.path.join(self.out_dir, name), lambda f: np.save(f, tokens))
        self.shards.append({"name": name, "tokens": int(self.fill), "end": list(end)})
        self.write_manifest()
        self.buf = np.empty(self.capacity(), dtype=np.uint16)
        self.fill = 0

    def write_manifest(self):
        manifest = {**self.settings, "complete": self.complete, "shards": self.shards}
        save_atomic(self.manifest_path, lambda f: f.write(json.dumps(manifest, indent=1).encode()))


# Tokenizing runs in worker processes, each encoding a batch of documents in a plain loop. On our 2-core test
# machine that made 4.3M tokens/s, against 3.3M for tiktoken's batch API on two threads and 2.3M for the
# lecture's pool (bench/results/tokenize_speed_cpu.json).
_encoder = None


def _start_worker():
    global _encoder
    _encoder = gpt2_tokenizer()


def tokenize_documents(texts):
    """In a worker: [<|endoftext|>] + tokens of every text, laid end to end as one uint16 array (a single
    buffer is cheap to send back), and the length of each document in it."""
    docs = [_encoder.encode_ordinary(text) for text in texts]  # a plain loop: no thread pool to feed
    lengths = np.array([len(d) + 1 for d in docs], dtype=np.int64)
    flat = np.empty(int(lengths.sum()), dtype=np.uint16)
    start = 0
    for doc in docs:
        flat[start] = _encoder.eot_token
        flat[start + 1 : start + 1 + len(doc)] = doc
        start += len(doc) + 1
    return flat, lengths


def lock_out_dir(out):
    """One fineweb.py job per output folder: a second one (two quick starts at once, or every rank of a torchrun
    job) waits here until the first is done, then finds the shards written. The lock goes when the process ends,
    however it ends. Returns the held lock, for a with statement."""
    os.makedirs(out, exist_ok=True)
    lock = FileLock(os.path.join(out, ".fineweb.lock"))  # flock on POSIX, msvcrt on Windows
    try:
        return lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting for the other job writing shards into {out} ...", flush=True)
        return lock.acquire()


def write_shards(args):
    enc = gpt2_tokenizer()  # in this process first: a missing tokenizer gets a clear error
    assert enc.n_vocab <= 2**16, "token ids must fit in uint16"
    with lock_out_dir(args.out):
        return write_shards_locked(args, enc)


def write_shards_locked(args, enc):
    writer = ShardWriter(args.out, {**source_description(args), "eot": enc.eot_token})
    if writer.complete:
        print(f"{args.out}: all {len(writer.shards)} shards are already written")
        return writer.shards
    ds = load_documents(args)
    if writer.resume_doc:
        print(f"resuming after {len(writer.shards)} shards, at document {writer.resume_doc}")
        ds = ds.skip(writer.resume_doc)
    doc, skip = writer.resume_doc, writer.resume_offset
    bar = progress(unit="tok", unit_scale=True, desc=f"tokenizing into {args.out}",
               initial=sum(s["tokens"] for s in writer.shards))

    def consume(result):
        nonlocal doc, skip
        tokens, lengths = result.get()
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) - skip
        writer.add(tokens[skip:], starts, doc)  # skip: the part of the first document already in a shard
        doc += len(lengths)
        bar.update(len(tokens) - skip)
        skip = 0

    with worker_pool(args.workers, _start_worker) as pool:  # on an error, the workers are terminated
        pending = deque()  # batches in flight, in document order; bounded, so streaming stays streaming
        for batch in ds.iter(batch_size=args.batch_docs):
            pending.append(pool.apply_async(tokenize_documents, (batch[args.text_column],)))
            if len(pending) >= 2 * args.workers:
                consume(pending.popleft())
        while pending:
            consume(pending.popleft())
        pool.close()  # the workers finish and exit on their own: no signal needed
        pool.join()
    bar.close()
    if not writer.shards or (len(writer.shards) == 1 and writer.fill == 0):
        total = sum(s["tokens"] for s in writer.shards) + writer.fill
        raise SystemExit(f"error: the corpus has {total:,} tokens, too few for a val shard of --val-tokens "
                         f"{args.val_tokens:,} and a train shard after it; give more text or a smaller --val-tokens")
    writer.finish(doc)
    print(f"wrote {len(writer.shards)} shards, {sum(s['tokens'] for s in writer.shards):,} tokens, to {args.out}")
    return writer.shards


def tinyshakespeare_shards(out):
    """The quick start's data step: Tiny Shakespeare shards in out, written, finished where a job stopped, or used
    as they are when complete (also in a repo moved since), unless out holds a corpus of another kind (shards of
    your own for --finetune). Two quick starts at once are safe: the second waits for the first (lock_out_dir),
    then finds the shards complete."""
    manifest = os.path.join(out, "manifest.json")
    if os.path.isfile(manifest):
        with open(manifest) as f:
            made = json.load(f)
        if made.get("prefix") != "tinyshakespeare":
            return
        if made.get("complete") and all(os.path.isfile(os.path.join(out, s["name"])) for s in made["shards"]):
            return
    elif os.path.isdir(out) and any(f.endswith(".npy") for f in os.listdir(out)):
        return  # shards made by another tool
    main(["--dataset", "tinyshakespeare", "--out", out])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--dataset", default="fineweb-edu", choices=["fineweb-edu", "fineweb", "tinyshakespeare", "local"],
                        help="where the text comes from: a FineWeb sample on the Hugging Face Hub, Tiny Shakespeare, "
                             "or local files given with --input")
    parser.add_argument("--remote-name", default="sample-10BT",
                        help="FineWeb(-Edu) subset: sample-10BT, sample-100BT, sample-350BT, ...")
    parser.add_argument("--streaming", action="store_true",
                        help="stream the FineWeb subset instead of downloading it to disk first")
    parser.add_argument("--input", nargs="+", metavar="PATH",
                        help="local .txt, .jsonl or .parquet files (for --dataset local); for tinyshakespeare, "
                             "a copy of input.txt to use instead of downloading it")
    parser.add_argument("--text-column", default="text", help="column holding the text in .jsonl/.parquet files")
    parser.add_argument("--split-paragraphs", action="store_true",
                        help=".txt files: one document per blank-line separated paragraph instead of per file")
    parser.add_argument("--out", help="output directory (default: edu_fineweb10B/ for FineWeb-Edu sample-10BT, "
                                      "data/<dataset>/ otherwise)")
    parser.add_argument("--prefix", help="shard file prefix (default: edufineweb, fineweb, tinyshakespeare or corpus)")
    parser.add_argument("--shard-size", type=int, default=10**8, help="tokens per shard")
    parser.add_argument("--val-tokens", type=int,
                        help="tokens in the val shard, shard 0 (default: --shard-size for FineWeb; about 10%% of the "
                             "text for local files and Tiny Shakespeare, estimated at 4 bytes per token)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="tokenizer processes")
    parser.add_argument("--batch-docs", type=int, default=256, help="documents sent to a worker at a time")
    args = parser.parse_args(argv)

    if args.dataset == "tinyshakespeare" and not args.input:
        args.input = [tiny_shakespeare()]
    if args.dataset in ("tinyshakespeare", "local"):
        if not args.input:
            parser.error("--dataset local needs --input files")
        for path in args.input:
            if os.path.isdir(path):
                parser.error(f"--input {path} is a folder; pass the files in it, e.g. --input {path}/*.txt")
            if not os.path.isfile(path):
                parser.error(f"input file not found: {path}")
        if all(os.path.getsize(p) == 0 for p in args.input):
            parser.error(f"the corpus is empty: {', '.join(args.input)} "
                         f"{'holds' if len(args.input) == 1 else 'hold'} no text to tokenize")
    elif args.input:
        parser.error(f"--input is for --dataset local or tinyshakespeare, not {args.dataset}")
    if args.out is None:
        if args.dataset in HUB_DATASETS:
            size = args.remote_name.removeprefix("sample-").removesuffix("T")
            args.out = {"fineweb-edu": "edu_fineweb", "fineweb": "fineweb"}[args.dataset] + size
        else:
            args.out = os.path.join("data", args.dataset)
    if args.prefix is None:
        args.prefix = {"fineweb-edu": "edufineweb", "local": "corpus"}.get(args.dataset, args.dataset)
    if args.val_tokens is None:
        if args.dataset in HUB_DATASETS:
            args.val_tokens = args.shard_size
        else:
            args.val_tokens = max(1, sum(os.path.getsize(p) for p in args.input) // 40)
    if args.shard_size < 1 or args.val_tokens < 1 or args.workers < 1 or args.batch_docs < 1:
        parser.error("--shard-size, --val-tokens, --workers and --batch-docs must be positive")
    return args


def main(argv=None):
    try:
        write_shards(parse_args(argv))
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    sys.exit(main())
