import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # helpers
from helpers import ROOT, SHARED, TINY_SHAKESPEARE  # noqa: E402

sys.path.insert(0, str(ROOT))

# the GPT-2 BPE files live in ../shared so that tiktoken works offline
if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED / "tiktoken_cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken_cache")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
