"""Token shard files, the contract between fineweb.py (writes them) and the trainer's DataLoader (reads them):
uint16 .npy arrays named {prefix}_{split}_{index:06d}.npy, index 0 the val shard. No torch here."""

import os
import re

import numpy as np

MAKE_SHARDS_HINT = ("make them with `python fineweb.py` (FineWeb-Edu) or `python fineweb.py --dataset tinyshakespeare` "
                    "and pass that directory with --data-dir")


def shard_name(prefix, index):
    """Shard 0 holds the val tokens, the others the train tokens."""
    return f"{prefix}_{'val' if index == 0 else 'train'}_{index:06d}.npy"


def find_shards(data_dir, split):
    """The shard files of split ("train" or "val") in data_dir, in index order."""
    pattern = re.compile(rf"^.+_{split}_(\d{{6}})\.npy$")
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data directory {data_dir} does not exist; {MAKE_SHARDS_HINT}")
    shards = sorted((f for f in os.listdir(data_dir) if pattern.match(f)), key=lambda f: pattern.match(f).group(1))
    if not shards:
        raise FileNotFoundError(f"no {split} shards (*_{split}_NNNNNN.npy) in {data_dir}; {MAKE_SHARDS_HINT}")
    return [os.path.join(data_dir, f) for f in shards]


def open_shard(path):
    """Memory-map a uint16 token shard: pages are read from disk only when a batch touches them."""
    try:
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"shard {path} is empty or truncated ({e}); delete it and re-run fineweb.py") from None
    if tokens.dtype != np.uint16 or tokens.ndim != 1:
        raise ValueError(f"shard {path} holds {tokens.dtype} with shape {tokens.shape}; expected a 1-D uint16 "
                         "array of token ids (re-make it with fineweb.py)")
    return tokens


def corpus_prefix(data_dir):
    """The prefix of the shards in data_dir ("edufineweb" for FineWeb-Edu, the lecture's too): which corpus it is."""
    return os.path.basename(find_shards(data_dir, "val")[0]).rsplit("_val_", 1)[0]
