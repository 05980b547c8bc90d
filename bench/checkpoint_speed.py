"""Save and load time of an FSDP run's checkpoint, sharded (torch.distributed.checkpoint: every rank writes its own
shards) against gathered (the full state on rank 0, one file), for one model, optimizer state included.

    torchrun --standalone --nproc_per_node=2 bench/checkpoint_speed.py --model gpt2-medium   # CPU, gloo
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_gpt2 as tg  # noqa: E402
from gptkit import checkpoint, distributed  # noqa: E402
from gptkit.cli import HelpFormatter  # noqa: E402
from common import save_result  # noqa: E402


def timed(fn):
    dist.barrier()
    t0 = time.perf_counter()
    fn()
    dist.barrier()
    return round(time.perf_counter() - t0, 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", default="gpt2-medium", help="model preset")
    parser.add_argument("--dir", help="where to write (default: a temporary folder)")
    args = parser.parse_args()
    device = distributed.setup_distributed("cpu")
    rank, world_size = distributed.rank_and_world_size()
    torch.manual_seed(0)
    model = tg.GPT(tg.preset(args.model)[0])
    distributed.wrap_model(model, True, world_size, device)
    optimizer = model.configure_optimizers(0.1, 1e-4, "cpu")
    idx = torch.randint(0, 50257, (1, 33))
    model(idx[:, :-1], idx[:, 1:])[1].backward()
    optimizer.step()  # AdamW's moments exist: the checkpoint holds what a real one does
    work = [args.dir or (tempfile.mkdtemp() if rank == 0 else None)]
    dist.broadcast_object_list(work)  # one folder for all ranks
    work = work[0]
    meta = {"step": 1}
    os.makedirs(work, exist_ok=True)
    figures = {"model": args.model, "ranks": world_size, "parameters": model.num_params()}

    def save_gathered():
        state = checkpoint.model_and_optimizer_state(model, optimizer)
        if rank == 0:
            checkpoint.write_atomic({"model": state[0], "optimizer": state[1], **meta},
                                    os.path.join(work, "ckpt_000001.pt"))

    def load_gathered():
        state = checkpoint.load_checkpoint(os.path.join(work, "ckpt_000001.pt"), need=("model", "optimizer"))
        checkpoint.restore_optimizer(model, optimizer, state["optimizer"])

    figures["sharded_save_s"] = timed(lambda: checkpoint.save(model, optimizer, meta, work, 2, 10, sharded=True))
    figures["sharded_load_s"] = timed(lambda: checkpoint.load_sharded(model, optimizer, os.path.join(work, "ckpt_000002")))
    figures["gathered_save_s"] = timed(save_gathered)
    figures["gathered_load_s"] = timed(load_gathered)
    if rank == 0:
        sizes = {}
        for name in ("ckpt_000001.pt", "ckpt_000002"):
            path = os.path.join(work, name)
            files = [path] if os.path.isfile(path) else [os.path.join(path, f) for f in os.listdir(path)]
            sizes[name] = round(sum(os.path.getsize(f) for f in files) / 2**30, 2)
        figures["gathered_gib"], figures["sharded_gib"] = sizes["ckpt_000001.pt"], sizes["ckpt_000002"]
        save_result(f"checkpoint_speed_cpu_{args.model}_{world_size}ranks", "cpu", figures)
        if not args.dir:
            shutil.rmtree(work)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
