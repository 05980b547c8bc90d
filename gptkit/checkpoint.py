"""Checkpoints, with everything a run needs to resume exactly, in one of two forms in the run directory:

    ckpt_{step:06d}.pt   one file written by rank 0 (single process, DDP): the full state, gathered
    ckpt_{step:06d}/     FSDP: a torch.distributed.checkpoint (DCP) folder, every rank writing its own shards in
                         parallel, no rank ever holding the full state; meta.pt beside the shards holds the rest

Both are written under a temporary name (.tmp) and renamed when complete, hold only tensors and plain data
(torch.load(weights_only=True) reads them), and load_checkpoint reads either as one dict. A save that fails (a
full disk) removes its .tmp and says so in one line; a job taking over the run directory removes the .tmp that a
killed one left, and refuses to start when the disk has no room for one more checkpoint.

    python -m gptkit.checkpoint runs/big/ckpt_005000 ckpt_005000.pt   # a sharded checkpoint -> one file
"""

import os
import pickle
import tempfile

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, get_state_dict,
                                                     set_optimizer_state_dict, set_state_dict)

from gptkit import rundir
from gptkit.cli import convert_command, non_negative_int, positive_int

FULL_ON_CPU = StateDictOptions(full_state_dict=True, cpu_offload=True)  # FSDP: gather the shards, on the CPU
# what every reader of a checkpoint needs (sample.py, hellaswag.py, export, --init-from), and what --resume needs
# besides the weights (in a sharded checkpoint's meta.pt: the weights and optimizer state are in the shards)
MODEL_KEYS = ("config", "model")
META_KEYS = ("config", "step", "args", "train_loader", "rng")
RESUME_KEYS = MODEL_KEYS + META_KEYS + ("optimizer",)  # a one-file checkpoint, for --resume
# the trainer's advice when a save fails
RESUME_ADVICE = "the checkpoints before it are intact: free space (or choose another --out-dir), then --resume"


def load_meta(path):
    """A checkpoint's settings and bookkeeping (config, step, args, loader position, ...), cheaply: without the
    shards of a sharded checkpoint (a one-file checkpoint is memory-mapped, so its tensors are not read)."""
    return load_checkpoint(os.path.join(path, "meta.pt") if os.path.isdir(path) else path, need=META_KEYS)


def load_checkpoint(path, need=MODEL_KEYS):
    """Either form of checkpoint as one dict, on the CPU, a sharded one gathered into memory; it must hold the keys
    in need. A file holding anything but tensors and plain data is refused: unpickling it could run code."""
    if os.path.isdir(path):
        with tempfile.TemporaryDirectory() as tmp:
            dcp_to_torch_save(path, os.path.join(tmp, "full.pt"))
            ckpt = {**load_checkpoint(os.path.join(path, "meta.pt"), need=()),
                    **load_checkpoint(os.path.join(tmp, "full.pt"), need=())}
        return require(ckpt, need, path)
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is empty (0 bytes), not a checkpoint; delete it, or resume from an older one")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # read lazily: large files stay cheap
    except pickle.UnpicklingError as e:
        raise ValueError(f"refusing to load {path}: it holds objects other than tensors and plain data, which "
                         f"could run code when unpickled ({str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"{path} is not a readable checkpoint ({str(e).splitlines()[0]}); delete it, or resume "
                         "from an older one") from None
    return require(ckpt, need, path)


def require(ckpt, keys, path):
    """ckpt, if it is a dict holding every one of keys; otherwise a one-line error naming the file and what lacks."""
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint (a dict of model, optimizer, "
                         "config, ...)")
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not a complete checkpoint: it has no {', '.join(repr(k) for k in missing)} "
                         f"(it holds {', '.join(map(repr, ckpt)) or 'nothing'}); resume from an older one")
    return ckpt


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


def save(model, optimizer, meta, out_dir, step, keep, sharded=False):
    """The trainer's checkpoint of model, optimizer and meta (step, settings, data position, ...). Sharded (FSDP):
    every rank writes its own shards, and every rank must call. Otherwise rank 0 gathers the full state and writes
    one file; the other ranks (DDP: they hold the same state) write nothing. Returns the path (None off rank 0)."""
    if sharded:
        return _save_sharded(model, optimizer, meta, out_dir, step, keep)
    if dist.is_initialized() and dist.get_rank() != 0:
        return None
    model_state, optimizer_state = model_and_optimizer_state(model, optimizer)
    return _save_one_file({"model": model_state, "optimizer": optimizer_state, **meta}, out_dir, step, keep)


def _save_one_file(state, out_dir, step, keep):
    """Write state to out_dir/ckpt_{step:06d}.pt (whole or not at all) and delete all but the newest `keep`.
    Returns the path."""
    path = os.path.join(out_dir, f"ckpt_{step:06d}.pt")
    write_atomic(state, path, RESUME_ADVICE)
    rundir.prune(out_dir, keep)
    return path


def write_atomic(state, path, advice="free space, then run it again"):
    """torch.save through path.tmp, flushed to disk, then renamed to path. Through a Python file, so that a full
    disk is an OSError (ENOSPC) and not a C++ stream error; on any failure the .tmp is removed and SaveError says
    what happened, and advice, in one line."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch's zip writer turns the OSError into a RuntimeError as it closes
        rundir.remove(tmp)
        cause = e
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__context__
        if cause is None:
            raise  # not the disk: a real error, with its traceback
        raise rundir.SaveError(failure_line(path, cause.strerror, advice)) from None


def failure_line(path, reason, advice):
    """The one line for a checkpoint that could not be written: which file, why, which disk, how much is free."""
    folder = os.path.dirname(os.path.abspath(path))
    return (f"could not write checkpoint {path}: {reason} ({rundir.disk_space(folder)}); nothing was left "
            f"half-written, and {advice}")


def _save_sharded(model, optimizer, meta, out_dir, step, keep):
    """FSDP: every rank writes its shards of the model and optimizer into out_dir/ckpt_{step:06d}/ with DCP;
    rank 0 adds meta.pt and renames the finished folder into place, so an interrupted save is never resumed
    from. Every rank must call this. Returns the path."""
    path = os.path.join(out_dir, f"ckpt_{step:06d}")
    tmp = path + ".tmp"
    model_state, optimizer_state = get_state_dict(model, optimizer)  # this rank's shards, no gathering
    try:
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp)  # every rank fails alike
        if dist.get_rank() == 0:
            write_atomic(meta, os.path.join(tmp, "meta.pt"), RESUME_ADVICE)
    except (CheckpointException, OSError) as e:
        if dist.get_rank() == 0:
            rundir.remove(tmp)
        reason = e.strerror if isinstance(e, OSError) else str(e).splitlines()[0]
        raise rundir.SaveError(failure_line(path, reason, RESUME_ADVICE)) from None
    if dist.get_rank() == 0:
        rundir.remove(path)
        os.replace(tmp, path)
        rundir.prune(out_dir, keep)
    dist.barrier()
    return path


def load_sharded(model, optimizer, path):
    """Load a sharded checkpoint into a model and optimizer (FSDP, DDP or one process): each rank reads the pieces
    it needs, so a checkpoint saved on N ranks resumes on any other number."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def is_checkpoint(path):
    """One of our checkpoints, either form (a folder without meta.pt is something else: a run or a HF model)."""
    return os.path.isfile(path) or os.path.isfile(os.path.join(path, "meta.pt"))


def restore(path, ckpt, model, optimizer, train_loader, scaler=None):
    """--resume: the weights of a sharded checkpoint (a one-file checkpoint's came with the model), and unless
    evaluating only (train_loader None) the optimizer state, the data position, the RNG and float16's loss scale,
    so that the run goes on exactly as if it had not stopped."""
    if os.path.isdir(path):
        load_sharded(model, optimizer, path)  # weights and optimizer, resharded onto these ranks
    elif train_loader is not None:
        restore_optimizer(model, optimizer, ckpt["optimizer"])
    if train_loader is not None:
        train_loader.load_state_dict(ckpt["train_loader"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if scaler is not None and ckpt.get("scaler"):  # float16 (an unused scaler's state is empty)
            scaler.load_state_dict(ckpt["scaler"])


def add_arguments(parser):
    """The trainer's flags for its run directory: checkpoints, resuming, splitting a run into jobs."""
    g = parser.add_argument_group("run directory, checkpoints and resuming")
    g.add_argument("--out-dir", "--log-dir", default="log", help="run directory: log.txt and ckpt_*.pt")
    g.add_argument("--checkpoint-interval", type=non_negative_int, default=5000,
                   help="steps between checkpoints (one is always written at the end and on SIGTERM/SIGINT)")
    g.add_argument("--keep-checkpoints", type=positive_int, default=3, help="keep only the newest K checkpoints")
    g.add_argument("--save-best", action="store_true",
                   help="write a checkpoint whenever the val loss improves, and no other (fine-tuning)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out-dir from its newest checkpoint, with its settings; flags given "
                        "here change them (--max-steps to train longer, -B, intervals, ...), except --model")
    g.add_argument("--stop-at", type=positive_int,
                   help="end this invocation after this step with a checkpoint (the LR schedule still runs to "
                        "--max-steps); split a run into jobs and continue with --resume")


def to_one_file(source, target):
    """A sharded checkpoint (or the newest checkpoint of a run directory) -> one ckpt_*.pt file."""
    state = load_checkpoint(rundir.newest_in_run(source), need=MODEL_KEYS + META_KEYS)
    write_atomic(state, target)
    return f"wrote {target} (step {state['step']})"


def main(argv=None):
    return convert_command(__doc__, "a sharded checkpoint folder ckpt_NNNNNN/, or a run directory",
                           "the ckpt_NNNNNN.pt file to write", to_one_file, argv)


if __name__ == "__main__":
    raise SystemExit(main())
