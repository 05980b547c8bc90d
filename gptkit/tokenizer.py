"""tiktoken's GPT-2 BPE, the tokenizer of every model here, with a one-line error when its files are missing."""

import hashlib
import os
import tempfile

from filelock import FileLock

EOT_TOKEN = 50256  # <|endoftext|>: ends GPT-2's vocabulary and starts every document in our shards
GPT2_VOCAB_SIZE = 50257
# OpenAI's two GPT-2 BPE files, as tiktoken fetches and caches them; Hugging Face calls them vocab.json and merges.txt
BPE_FILES = {
    "vocab.json": ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
                   "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    "merges.txt": ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
                   "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
}


def gpt2_tokenizer():
    """tiktoken downloads two files on first use; offline, TIKTOKEN_CACHE_DIR points at a folder holding them.
    The first use on a machine (every rank of a torchrun job at once) downloads them once: one process takes the
    lock, the others wait for it and then read its files."""
    import tiktoken

    try:
        if _bpe_files_cached():
            return tiktoken.get_encoding("gpt2")
        with FileLock(os.path.join(tempfile.gettempdir(), "gpt2_tokenizer.lock")):
            return tiktoken.get_encoding("gpt2")
    except Exception as e:  # tiktoken raises whatever its HTTP client raises
        raise FileNotFoundError(f"could not load the GPT-2 tokenizer ({type(e).__name__}); offline, set "
                                "TIKTOKEN_CACHE_DIR to a folder holding tiktoken's cached GPT-2 files") from None


def _bpe_files_cached():
    """Whether tiktoken's cache already holds both GPT-2 files (its rule: the file name is the URL's SHA-1)."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR",
                               os.path.join(tempfile.gettempdir(), "data-gym-cache")))
    return all(os.path.isfile(os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest()))
               for url, _ in BPE_FILES.values())


def write_bpe_files(out_dir):
    """vocab.json and merges.txt for a Hugging Face GPT-2 tokenizer, from tiktoken's cache (offline with
    TIKTOKEN_CACHE_DIR), byte for byte the files OpenAI published."""
    from tiktoken.load import read_file_cached

    gpt2_tokenizer()  # a missing cache gets its clear error here
    for name, (url, sha256) in BPE_FILES.items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(read_file_cached(url, sha256))
