"""fineweb.py shards and the training data loader."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tiktoken
import torch

import train_gpt2 as tg
from gptkit.tokenizer import EOT_TOKEN
from helpers import ROOT, TINY_SHAKESPEARE

enc = tiktoken.get_encoding("gpt2")


def run_fineweb(tmp_path, *args, check=True, **kw):
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf-cache")}
    r = subprocess.run([sys.executable, str(ROOT / "fineweb.py"), *map(str, args)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, **kw)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def read_shards(out):
    names = sorted((f for f in os.listdir(out) if f.endswith(".npy")), key=lambda f: f[-10:])  # by index
    return names, [np.load(out / n) for n in names]


def expected_tokens(docs):
    return [t for d in docs for t in [EOT_TOKEN] + enc.encode_ordinary(d)]


def shakespeare_docs(n):
    """n distinct documents cut from Tiny Shakespeare, some with non-ASCII text."""
    speeches = TINY_SHAKESPEARE.read_text().split("\n\n")
    docs = [speeches[i % len(speeches)] + (" café ☃" if i % 7 == 0 else "") for i in range(n)]
    docs[1] += " a literal <|endoftext|> in the text is text, not a document boundary"
    return docs


def test_local_txt_files_one_document_per_file(tmp_path):
    docs = shakespeare_docs(30)
    paths = []
    for i, d in enumerate(docs):
        paths.append(tmp_path / f"doc{i:02d}.txt")
        paths[-1].write_text(d)
    run_fineweb(tmp_path, "--dataset", "local", "--input", *paths, "--out", tmp_path / "out",
                "--shard-size", 1000, "--val-tokens", 700, "--batch-docs", 4)
    names, shards = read_shards(tmp_path / "out")
    expected = expected_tokens(docs)
    n_train = -(-(len(expected) - 700) // 1000)
    assert names == ["corpus_val_000000.npy"] + [f"corpus_train_{i:06d}.npy" for i in range(1, n_train + 1)]
    assert [len(s) for s in shards[:-1]] == [700] + [1000] * (n_train - 1)
    assert all(s.dtype == np.uint16 for s in shards)
    assert np.concatenate(shards).tolist() == expected
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["tokenizer"] == "gpt2" and manifest["eot"] == 50256
    assert [s["name"] for s in manifest["shards"]] == names
    assert [s["tokens"] for s in manifest["shards"]] == [len(s) for s in shards]


def test_local_jsonl_parquet_and_paragraphs(tmp_path):
    docs = shakespeare_docs(12)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"id": i, "body": d}) + "\n" for i, d in enumerate(docs)))
    run_fineweb(tmp_path, "--dataset", "local", "--input", "a.jsonl", "--text-column", "body", "--out", "j",
                "--val-tokens", 100)
    assert np.concatenate(read_shards(tmp_path / "j")[1]).tolist() == expected_tokens(docs)

    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": docs}), tmp_path / "a.parquet")
    run_fineweb(tmp_path, "--dataset", "local", "--input", "a.parquet", "--out", "p", "--val-tokens", 100)
    assert np.concatenate(read_shards(tmp_path / "p")[1]).tolist() == expected_tokens(docs)

    (tmp_path / "b.txt").write_text("first paragraph\nstill first\n\nsecond one\n\nthird")
    run_fineweb(tmp_path, "--dataset", "local", "--input", "b.txt", "--split-paragraphs", "--out", "t",
                "--val-tokens", 3)
    tokens = np.concatenate(read_shards(tmp_path / "t")[1]).tolist()
    assert tokens.count(EOT_TOKEN) == 3
    assert enc.decode([t for t in tokens if t != EOT_TOKEN]).replace("\n", "") == \
        "first paragraphstill firstsecond onethird"


def test_tiny_shakespeare_val_and_train_shard(tmp_path):
    run_fineweb(tmp_path, "--dataset", "tinyshakespeare", "--input", TINY_SHAKESPEARE, "--out", "ts")
    names, shards = read_shards(tmp_path / "ts")
    assert names == ["tinyshakespeare_val_000000.npy", "tinyshakespeare_train_000001.npy"]
    val, train = shards
    assert len(val) == 1_115_394 // 40
    assert np.concatenate([val, train]).tolist() == expected_tokens([TINY_SHAKESPEARE.read_text()])


def test_killed_run_resumes_to_identical_shards(tmp_path):
    docs = shakespeare_docs(3000)
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    common = ["--dataset", "local", "--input", "c.jsonl", "--shard-size", 3000, "--val-tokens", 2500,
              "--batch-docs", 8, "--workers", 1]
    run_fineweb(tmp_path, *common, "--out", "straight")

    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf-cache")}
    proc = subprocess.Popen([sys.executable, str(ROOT / "fineweb.py"), *map(str, common), "--out", "killed"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "killed"
    deadline = time.time() + 120
    while not (out / "corpus_train_000002.npy").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    names, partial = read_shards(out)  # whatever carries a final name is whole
    straight_names, straight = read_shards(tmp_path / "straight")
    assert 0 < len(names) < len(straight_names)
    for n, s in zip(names, partial):
        assert s.tolist() == straight[straight_names.index(n)].tolist()

    r = run_fineweb(tmp_path, *common, "--out", "killed")
    assert "resuming after" in r.stdout
    for n in straight_names:
        assert (out / n).read_bytes() == (tmp_path / "straight" / n).read_bytes()
    assert read_shards(out)[0] == straight_names
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]

    # a finished job is not redone; other settings in the same directory are refused
    mtime = (out / straight_names[-1]).stat().st_mtime_ns
    assert "already written" in run_fineweb(tmp_path, *common, "--out", "killed").stdout
    assert (out / straight_names[-1]).stat().st_mtime_ns == mtime
    r = run_fineweb(tmp_path, *common, "--out", "killed", "--shard-size", 5000, check=False)
    assert r.returncode != 0 and "shard_size" in r.stderr and "other settings" in r.stderr


SPAWN_SCRIPT = """
import multiprocessing, sys
sys.path.insert(0, {root!r})
import fineweb
if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")  # macOS and Windows: workers import the module afresh
    fineweb.main({args!r})
"""


def test_spawn_start_method_gives_the_same_shards(tmp_path):
    docs = shakespeare_docs(40)
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    args = ["--dataset", "local", "--input", "c.jsonl", "--val-tokens", "500", "--batch-docs", "4", "--workers", "2"]
    (tmp_path / "spawn.py").write_text(SPAWN_SCRIPT.format(root=str(ROOT), args=args + ["--out", "spawned"]))
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf-cache")}
    r = subprocess.run([sys.executable, "spawn.py"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert np.concatenate(read_shards(tmp_path / "spawned")[1]).tolist() == expected_tokens(docs)


def test_fineweb_bad_input(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"content": "x"}\n')
    (tmp_path / "broken.jsonl").write_text('{"text": "x"}\n{"text": \n')
    (tmp_path / "latin1.txt").write_bytes("Ensuite, il a dit: très bien".encode("latin-1"))
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "empty.txt").touch()
    (tmp_path / "short.txt").write_text("To be")
    (tmp_path / "folder").mkdir()
    cases = [
        (["nope.txt"], "input file not found: nope.txt"),
        (["a.jsonl"], "a.jsonl has no 'text' column (columns: content); name the text column with --text-column"),
        (["broken.jsonl"], "error: could not read broken.jsonl as jsonl: "),
        (["latin1.txt"], "error: latin1.txt is not UTF-8 text (byte 0xe8 at 21); convert it first, e.g. iconv"),
        (["binary.txt"], "error: binary.txt holds NUL bytes (the first at byte 0): a binary file, not text"),
        (["empty.txt"], "the corpus is empty: empty.txt holds no text to tokenize"),
        (["short.txt", "--val-tokens", 100], "error: the corpus has 3 tokens, too few for a val shard of --val-tokens "
                                             "100 and a train shard after it"),
        (["folder"], "--input folder is a folder; pass the files in it, e.g. --input folder/*.txt"),
    ]
    for args, message in cases:
        r = run_fineweb(tmp_path, "--dataset", "local", "--out", "out", "--input", *args, check=False)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert message in r.stderr.strip().splitlines()[-1], (args, r.stderr)
        assert not list((tmp_path / "out").glob("*_train_*.npy"))


# -----------------------------------------------------------------------------
# the loader


def write_shards(d, sizes, prefix="edufineweb"):
    """Shards whose token values are all distinct, so that every token tells where it came from."""
    d.mkdir(exist_ok=True)
    start = 0
    for i, n in enumerate(sizes):
        split = "val" if i == 0 else "train"
        np.save(d / f"{prefix}_{split}_{i:06d}.npy", np.arange(start, start + n, dtype=np.uint16))
        start += n
    return d


def epoch_inputs(loader, n_batches):
    return [loader.next_batch()[0] for _ in range(n_batches)]


@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_are_disjoint_and_cover_the_data(tmp_path, shuffle):
    B, T, W = 2, 8, 2
    sizes = [50, 1000, 777, 1200]  # shard 0 is val; uneven sizes leave tails
    d = write_shards(tmp_path / "d", sizes)
    rounds = [(n - 1) // (B * T * W) for n in sizes[1:]]
    per_epoch = sum(rounds)
    seen = []
    for rank in range(W):
        loader = tg.DataLoaderLite(B, T, rank, W, "train", d, shuffle=shuffle, seed=7)
        xs = epoch_inputs(loader, per_epoch)
        seen.append(torch.cat([x.flatten() for x in xs]).tolist())
        assert loader.epoch == 1 and loader.shard == 0 and loader.round == 0
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0])) == len(seen[0])
    starts = np.cumsum([0] + sizes)[1:-1]
    covered = {int(s) + i for s, r in zip(starts, rounds) for i in range(r * B * T * W)}
    assert set(seen[0]) | set(seen[1]) == covered
    if not shuffle:  # the lecture's order: shard by shard, front to back
        assert seen[0][: B * T] == list(range(starts[0], starts[0] + B * T))


def test_targets_are_next_tokens_and_uint16_is_read_as_unsigned(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    tokens = np.array([50256, 40000, 65535, 1, 2, 3, 4, 5, 6], dtype=np.uint16)
    np.save(d / "x_val_000000.npy", tokens)
    x, y = tg.DataLoaderLite(2, 4, 0, 1, "val", d).next_batch()
    assert x.dtype == torch.long
    assert x.tolist() == [[50256, 40000, 65535, 1], [2, 3, 4, 5]]
    assert y.tolist() == [[40000, 65535, 1, 2], [3, 4, 5, 6]]


def test_shuffle_is_reproducible_from_the_seed(tmp_path):
    d = write_shards(tmp_path / "d", [50, 400, 400, 400])
    def order(seed, n=144):
        loader = tg.DataLoaderLite(2, 8, 0, 1, "train", d, shuffle=True, seed=seed)
        return [x[0, 0].item() for x in epoch_inputs(loader, n)]
    assert order(1) == order(1)
    assert order(1) != order(2)
    first, second = order(1)[:72], order(1)[72:]  # 3 shards x 24 chunks per epoch
    assert sorted(first) == sorted(second) and first != second  # each epoch is permuted anew


@pytest.mark.parametrize("shuffle", [False, True])
def test_resume_yields_the_same_next_batches(tmp_path, shuffle):
    d = write_shards(tmp_path / "d", [50, 300, 500])
    for k in [0, 5, 9, 23]:  # inside a shard, at a shard boundary, past an epoch
        a = tg.DataLoaderLite(2, 8, 1, 2, "train", d, shuffle=shuffle)
        epoch_inputs(a, k)
        state = a.state_dict()
        b = tg.DataLoaderLite(2, 8, 1, 2, "train", d, shuffle=shuffle)
        b.load_state_dict(state)
        for _ in range(12):
            xa, ya = a.next_batch()
            xb, yb = b.next_batch()
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    if shuffle:
        with pytest.raises(ValueError, match="saved with B=2, world_size=2, this run has B=4, world_size=1.*same -B, -T and number of ranks"):
            tg.DataLoaderLite(4, 8, 0, 1, "train", d, shuffle=True).load_state_dict(state)
    with pytest.raises(ValueError, match=f"saved with shuffle={shuffle}, this run has shuffle={not shuffle}; resume with the same settings"):
        tg.DataLoaderLite(2, 8, 1, 2, "train", d, shuffle=not shuffle).load_state_dict(state)


def test_resume_on_other_ranks_and_batch_shapes_continues_at_the_same_token(tmp_path):
    d = write_shards(tmp_path / "d", [50, 300, 500])  # train shard 1 holds tokens 50..349, shard 2 350..849
    for k in [0, 4, 8, 9, 20]:  # rounds of 32 tokens: inside shard 1, its last round, shard 2, the next epoch
        ranks = [tg.DataLoaderLite(2, 8, r, 2, "train", d) for r in range(2)]
        for loader in ranks:
            epoch_inputs(loader, k)
        state = ranks[0].state_dict()
        next_round = torch.cat([loader.next_batch()[0].flatten() for loader in ranks])  # what the 2 ranks read next
        # one rank, 4 x 4 (rounds of 16 divide 32): exactly the same tokens, in the same order
        one = tg.DataLoaderLite(4, 4, 0, 1, "train", d)
        one.load_state_dict(state)
        assert torch.equal(torch.cat([one.next_batch()[0].flatten() for _ in range(2)]), next_round)
        # rounds of 24 or 40 tokens: from the first whole round at or after that token (nothing read twice), or
        # from the next shard when this one has no whole round left
        for B, T in [(3, 8), (5, 8)]:
            other = tg.DataLoaderLite(B, T, 0, 1, "train", d)
            other.load_state_dict(state)
            assert other.next_batch()[0][0, 0].item() == first_token_after(next_round[0].item(), B * T)


def first_token_after(token, round_tokens):
    """In the shards above: the first token of the first whole round that starts at or after token."""
    start, size, next_start = (50, 300, 350) if token < 350 else (350, 500, 50)
    r = -(-(token - start) // round_tokens)
    return start + r * round_tokens if r < (size - 1) // round_tokens else next_start


def test_lecture_shards_and_fineweb_shards_load(tmp_path):
    run_fineweb(tmp_path, "--dataset", "tinyshakespeare", "--input", TINY_SHAKESPEARE, "--out", "ts")
    loader = tg.DataLoaderLite(4, 64, 0, 1, "val", tmp_path / "ts", vocab_size=tg.PADDED_VOCAB_SIZE)
    x, _ = loader.next_batch()
    assert x[0, 0].item() == EOT_TOKEN
    assert enc.decode(x[0, 1:].tolist()).startswith("First Citizen:")


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no train shards .* fineweb.py"):
        tg.DataLoaderLite(2, 8, 0, 1, "train", tmp_path)
    d = write_shards(tmp_path / "short", [50, 16])
    with pytest.raises(ValueError, match="fewer than one batch .* lower B or T"):
        tg.DataLoaderLite(2, 8, 0, 1, "train", d)
    d = tmp_path / "trunc"
    write_shards(d, [50, 100])
    raw = (d / "edufineweb_train_000001.npy").read_bytes()
    (d / "edufineweb_train_000001.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="empty or truncated"):
        tg.DataLoaderLite(2, 8, 0, 1, "train", d)
    (d / "edufineweb_train_000001.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="empty or truncated"):
        tg.DataLoaderLite(2, 8, 0, 1, "train", d)
    np.save(d / "edufineweb_train_000001.npy", np.arange(100, dtype=np.int32))
    with pytest.raises(ValueError, match="holds int32 .* expected a 1-D uint16"):
        tg.DataLoaderLite(2, 8, 0, 1, "train", d)
    d = write_shards(tmp_path / "big", [50, 100])
    with pytest.raises(ValueError, match="token id 66, outside the model.s vocabulary of 60"):
        tg.DataLoaderLite(2, 8, 0, 1, "train", d, vocab_size=60).next_batch()
