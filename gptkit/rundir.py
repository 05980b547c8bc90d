"""The run directory: which checkpoints it holds and the newest of them, pruning the old ones, one live job at a
time (a lock), and room on its disk. The checkpoint files themselves, their contents and how they are written and
read, are gptkit/checkpoint.py's."""

import os
import re
import shutil

from filelock import FileLock, Timeout


class SaveError(OSError):
    """A checkpoint could not be written (a full disk, a file size limit, no permission): one line for the user."""


def checkpoint_paths(out_dir):
    """The finished checkpoints in out_dir, files and sharded folders alike, oldest first."""
    if not os.path.isdir(out_dir):
        return []
    found = [f for f in os.listdir(out_dir) if re.fullmatch(r"ckpt_\d{6}(\.pt)?", f)]
    return [os.path.join(out_dir, f) for f in sorted(found, key=lambda f: f[5:11])]


def newest_checkpoint(out_dir):
    """The newest checkpoint of the run in out_dir, for --resume."""
    paths = checkpoint_paths(out_dir)
    if not paths:
        raise ValueError(f"--resume: no checkpoint (ckpt_*.pt) in {out_dir}; start without --resume")
    return paths[-1]


def newest_in_run(path):
    """A run directory (one without a Hugging Face config.json or meta.pt) -> its newest checkpoint. Anything else
    is returned
    as it is: a checkpoint, a Hugging Face directory, or a hub name. A name that looks like a path but does
    not exist (a typo, the README's `log/` before any run) is an error here, not a request to the hub."""
    if os.path.isdir(path) and not any(os.path.exists(os.path.join(path, f)) for f in ("config.json", "meta.pt")):
        ckpts = checkpoint_paths(path)
        if not ckpts:
            raise ValueError(f"{path} holds neither checkpoints (ckpt_*.pt) nor a Hugging Face config.json")
        return ckpts[-1]
    first = path.replace(os.sep, "/").split("/")[0]
    looks_local = path.endswith(("/", os.sep, ".pt")) or path.startswith((".", "/", "~")) or os.path.isdir(first)
    if not os.path.exists(path) and looks_local:
        raise FileNotFoundError(f"no such run, checkpoint or model directory: {path}")
    return path


def prune(out_dir, keep):
    """Delete all but the newest `keep` checkpoints."""
    for old in checkpoint_paths(out_dir)[:-keep]:
        remove(old)


def claim_run_dir(out_dir, checkpoint_bytes):
    """One live job per run directory: an exclusive lock on out_dir/.lock, held until this process ends (the
    kernel drops it when the process dies, so a killed job never leaves it behind). Keep the returned lock.
    With the lock held no other job is writing here, so the .tmp of a save that was killed is removed; and a disk
    without room for one more checkpoint (checkpoint_bytes) is said now, not after the steps before the save."""
    lock = FileLock(os.path.join(out_dir, ".lock"))  # flock on POSIX, msvcrt on Windows
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ValueError(f"another job is training in {out_dir} (it holds {out_dir}/.lock); wait for it to end or "
                         "stop it, then --resume, or choose another --out-dir") from None
    for name in os.listdir(out_dir):
        if re.fullmatch(r"ckpt_\d{6}(\.pt)?\.tmp", name):
            remove(os.path.join(out_dir, name))
    if shutil.disk_usage(out_dir).free < checkpoint_bytes:
        lock.release()
        raise SaveError(f"no room for a checkpoint in {out_dir}: one needs about {checkpoint_bytes / 1e6:,.1f} MB "
                        f"and {disk_space(out_dir)}; free space or choose another --out-dir")
    return lock


def disk_space(folder):
    """Which disk holds folder, and its free space, in words."""
    mount = os.path.abspath(folder)
    while not os.path.ismount(mount):
        mount = os.path.dirname(mount)
    return f"the disk mounted at {mount} has {shutil.disk_usage(folder).free / 1e6:,.1f} MB free"


def remove(path):
    """Delete a file or folder if it is there."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
