"""tiktoken's GPT-2 BPE, the tokenizer of every model here, with a one-line error when its files are missing."""

EOT_TOKEN = 50256  # <|endoftext|>: ends GPT-2's vocabulary and starts every document in our shards
GPT2_VOCAB_SIZE = 50257


def gpt2_tokenizer():
    """tiktoken downloads two files on first use; offline, TIKTOKEN_CACHE_DIR points at a folder holding them."""
    import tiktoken

    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # tiktoken raises whatever its HTTP client raises
        raise FileNotFoundError(f"could not load the GPT-2 tokenizer ({type(e).__name__}); offline, set "
                                "TIKTOKEN_CACHE_DIR to a folder holding tiktoken's cached GPT-2 files") from None
