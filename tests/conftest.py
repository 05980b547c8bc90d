import os
import sys

import pytest

# Under pytest-xdist (the README's `-n auto`), one torch thread in each worker and in every process it starts: the
# workers share the cores instead of fighting over them (an OpenMP thread spins while it waits for its partner).
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # read when torch is first imported, below

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # helpers
from helpers import ROOT, SHARED, TINY_SHAKESPEARE  # noqa: E402

sys.path.insert(0, str(ROOT))

# the GPT-2 BPE files live in ../shared so that tiktoken works offline
if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED / "tiktoken_cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken_cache")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_xdist_auto_num_workers(config):
    """What `-n auto` means here: one worker more than the cores, since a worker spends part of its time waiting
    for a process it started (Python and torch starting, torchrun's rendezvous, a signal's delivery)."""
    return (os.cpu_count() or 1) + 1


def pytest_configure(config):
    """Stop at once, in one line, when what every test needs is missing."""
    from gptkit.tokenizer import gpt2_tokenizer

    try:
        gpt2_tokenizer()
    except FileNotFoundError as e:
        pytest.exit(f"{e} (without it the tests use {SHARED / 'tiktoken_cache'} if it exists; SHARED_DIR names "
                    "another folder holding tiktoken_cache/)", returncode=4)


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """Tiny Shakespeare as fineweb.py shards it: a val shard and a train shard."""
    import fineweb

    out = tmp_path_factory.mktemp("data") / "ts"
    fineweb.main(["--dataset", "tinyshakespeare", "--input", str(TINY_SHAKESPEARE), "--out", str(out)])
    return str(out)
