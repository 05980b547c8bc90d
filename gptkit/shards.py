"""Token shard files, the contract between fineweb.py (writes them) and the trainer's DataLoaderLite (reads them):
uint16 .npy arrays named {prefix}_{split}_{index:06d}.npy, index 0 the val shard; and ShardCursor, the DataLoaderLite's
reading position. No torch here."""

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


class ShardCursor:
    """Which chunk of B*T tokens of which shard one rank reads next: DataLoaderLite's bookkeeping beyond the lecture.

    Chunks are dealt out in rounds: in round r, rank k reads chunk r*world_size + k, so ranks never overlap and
    together cover the shard (all but a tail shorter than one round). One pass over all shards is an epoch. With
    shuffle, the shard order and the chunk order are permuted every epoch by a generator seeded with (seed, epoch),
    the same on every rank. Without it, shard after shard, front to back."""

    def __init__(self, paths, B, T, rank=0, world_size=1, shuffle=False, seed=0):
        self.paths, self.B, self.T, self.rank, self.world_size = paths, B, T, rank, world_size
        self.shuffle, self.seed = shuffle, seed
        self.rounds = []  # full rounds of chunks in each shard
        for path in paths:
            n = len(open_shard(path))
            rounds = (n - 1) // (B * T * world_size)
            if rounds == 0:
                raise ValueError(f"shard {path} has {n:,} tokens, fewer than one batch on every rank needs "
                                 f"(B*T*world_size + 1 = {B * T * world_size + 1:,}); lower B or T")
            self.rounds.append(rounds)
        self.reset()

    def reset(self):
        self.epoch, self.shard, self.round = 0, 0, 0
        self._plan_epoch()
        self._open_current_shard()

    def state_dict(self):
        """Where the next chunk comes from: enough to continue a run exactly."""
        return {"epoch": self.epoch, "shard": self.shard, "round": self.round,
                "B": self.B, "T": self.T, "world_size": self.world_size, "shuffle": self.shuffle, "seed": self.seed}

    def load_state_dict(self, state):
        """Continue where state left off. Without shuffle, B, T and the number of ranks may differ from the run
        that saved it (a job resumed on fewer GPUs): the position is kept in tokens, rounded up to a whole
        round of this run, so that no token is read twice and fewer than B*T*world_size are skipped."""
        saved = {key: state.get(key, getattr(self, key)) for key in ("B", "T", "world_size", "shuffle", "seed")}
        mine = {key: getattr(self, key) for key in saved}
        fixed = saved.keys() if self.shuffle else ("shuffle", "seed")  # a shuffled order permutes chunks of one shape
        differ = [key for key in fixed if saved[key] != mine[key]]
        if differ:
            was, now = (", ".join(f"{k}={d[k]}" for k in differ) for d in (saved, mine))
            raise ValueError(f"data loader state was saved with {was}, this run has {now}; resume with the same "
                             "settings (a --shuffle run also needs the same -B, -T and number of ranks)")
        saved_round_tokens = saved["B"] * saved["T"] * saved["world_size"]
        round_tokens = self.B * self.T * self.world_size
        self.epoch, self.shard = state["epoch"], state["shard"]
        self.round = -(-state["round"] * saved_round_tokens // round_tokens)  # ceil: the first round not yet read
        self._plan_epoch()
        if self.round >= self.rounds[self.shard_order[self.shard]]:
            self._next_shard()  # the rest of this shard is shorter than one of our rounds
        else:
            self._open_current_shard()

    def next_chunk(self):
        """(shard path, its tokens memory-mapped, the index of the chunk to read), then move on."""
        i = int(self.shard_order[self.shard])
        path, tokens = self.paths[i], self.tokens
        chunk = int(self.chunk_order[self.round * self.world_size + self.rank])
        self.round += 1
        if self.round == self.rounds[i]:
            self._next_shard()
        return path, tokens, chunk

    def _plan_epoch(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.shard_order = rng.permutation(len(self.paths)) if self.shuffle else np.arange(len(self.paths))

    def _open_current_shard(self):
        i = int(self.shard_order[self.shard])
        self.tokens = open_shard(self.paths[i])
        n_chunks = self.rounds[i] * self.world_size
        rng = np.random.default_rng([self.seed, self.epoch, i])
        self.chunk_order = rng.permutation(n_chunks) if self.shuffle else np.arange(n_chunks)

    def _next_shard(self):
        self.round, self.shard = 0, self.shard + 1
        if self.shard == len(self.paths):  # the end of an epoch
            self.epoch, self.shard = self.epoch + 1, 0
            self._plan_epoch()
        self._open_current_shard()
