"""Checkpoint files: ckpt_{step:06d}.pt in the run directory, written atomically by rank 0, holding only tensors
and plain data so that torch.load(weights_only=True) reads them, with everything a run needs to resume exactly."""

import fcntl
import os
import pickle
import re

import torch
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_optimizer_state_dict)

FULL_ON_CPU = StateDictOptions(full_state_dict=True, cpu_offload=True)  # FSDP: gather the shards, on the CPU


def checkpoint_paths(out_dir):
    """The checkpoints in out_dir, oldest first."""
    if not os.path.isdir(out_dir):
        return []
    return [os.path.join(out_dir, f) for f in sorted(os.listdir(out_dir)) if re.fullmatch(r"ckpt_\d{6}\.pt", f)]


def newest_checkpoint(out_dir):
    """The newest checkpoint of the run in out_dir, for --resume."""
    paths = checkpoint_paths(out_dir)
    if not paths:
        raise ValueError(f"--resume: no checkpoint (ckpt_*.pt) in {out_dir}; start without --resume")
    return paths[-1]


def newest_in_run(path):
    """A run directory (one without a Hugging Face config.json) -> its newest checkpoint. Anything else is returned
    as it is: a checkpoint file, a Hugging Face directory, or a hub name. A name that looks like a path but does
    not exist (a typo, the README's `log/` before any run) is an error here, not a request to the hub."""
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "config.json")):
        ckpts = checkpoint_paths(path)
        if not ckpts:
            raise ValueError(f"{path} holds neither checkpoints (ckpt_*.pt) nor a Hugging Face config.json")
        return ckpts[-1]
    first = path.replace(os.sep, "/").split("/")[0]
    looks_local = path.endswith(("/", os.sep, ".pt")) or path.startswith((".", "/", "~")) or os.path.isdir(first)
    if not os.path.exists(path) and looks_local:
        raise FileNotFoundError(f"no such run, checkpoint or model directory: {path}")
    return path


def load_checkpoint(path):
    """A checkpoint file as a dict, on the CPU. A file holding anything but tensors and plain data is refused:
    unpickling it could run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # read lazily: large files stay cheap
    except pickle.UnpicklingError as e:
        raise ValueError(f"refusing to load {path}: it holds objects other than tensors and plain data, which "
                         f"could run code when unpickled ({str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"{path} is not a readable checkpoint ({str(e).splitlines()[0]}); delete it, or resume "
                         "from an older one") from None


def model_and_optimizer_state(model, optimizer):
    """Full (unsharded) state dicts of the raw model and its optimizer. Under FSDP every rank must call this:
    the shards are gathered. Tied parameters point at one tensor, so the file stores them once."""
    model_state = get_model_state_dict(model, options=FULL_ON_CPU)
    first_name = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first_name and name in model_state:
            model_state[name] = model_state[first_name[id(p)]]
        first_name.setdefault(id(p), name)
    return model_state, get_optimizer_state_dict(model, optimizer, options=FULL_ON_CPU)


def restore_optimizer(model, optimizer, state):
    """Load a full optimizer state dict into an optimizer over a plain, DDP or FSDP-sharded model."""
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def save_checkpoint(state, out_dir, step, keep):
    """Write state to out_dir/ckpt_{step:06d}.pt through a temporary file (a checkpoint is whole or absent) and
    delete all but the newest `keep`. Returns the path."""
    path = os.path.join(out_dir, f"ckpt_{step:06d}.pt")
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in checkpoint_paths(out_dir)[:-keep]:
        os.remove(old)
    return path


def lock_run_dir(out_dir):
    """One live job per run directory: an exclusive lock on out_dir/.lock, held until this process ends (the
    kernel drops it when the process dies, so a killed job never leaves it behind). Keep the returned file."""
    f = open(os.path.join(out_dir, ".lock"), "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ValueError(f"another job is training in {out_dir} (it holds {out_dir}/.lock); wait for it to end or "
                         "stop it, then --resume, or choose another --out-dir") from None
    return f
