"""How a training run's settings are worked out, in layers, each overriding the one before: the parser's
defaults (GPT-2 124M on 10B FineWeb-Edu tokens), the --quickstart or --finetune recipe, the modern recipe's
switches, with --resume the settings saved in the run's checkpoint, and last the flags typed on the command
line, which always win; once the model is loaded, what follows from it and was left unset."""

from gptkit import checkpoint, modern, rundir
from gptkit.cli import apply_defaults, given_flags

# --quickstart: the tiny preset on Tiny Shakespeare, a couple of minutes on a laptop CPU
QUICKSTART = dict(model="tiny", data_dir="data/tinyshakespeare", out_dir="runs/quickstart", batch_size=8,
                  seq_len=256, total_batch_size=2048, max_steps=100, warmup_steps=10,
                  eval_interval=25, eval_steps=4, hellaswag_interval=0, sample_interval=50, num_samples=2,
                  sample_tokens=48, checkpoint_interval=50, sample_prompt="ROMEO:")
# --finetune: nanoGPT's finetune_shakespeare, the step after pretraining: OpenAI's GPT-2 (or --init-from a
# checkpoint) on a small local corpus, with a small constant LR, frequent val loss, and only the best checkpoint
FINETUNE = dict(init_from="gpt2", data_dir="data/tinyshakespeare", out_dir="runs/finetune", batch_size=4,
                seq_len=512, total_batch_size=8192, max_steps=100, warmup_steps=0, max_lr=3e-5, min_lr=3e-5,
                eval_interval=10, eval_steps=8, hellaswag_interval=0, sample_interval=50, num_samples=2,
                sample_tokens=64, sample_prompt="ROMEO:", save_best=True, keep_checkpoints=1)
# what --resume does not take from the checkpoint's saved settings: they belong to this invocation
NOT_RESUMED = ("resume", "stop_at", "device", "quickstart", "finetune", "eval_only")


def add_arguments(parser):
    """The two recipes' flags: each changes defaults only, so any flag on the command line still wins."""
    parser.add_argument("--quickstart", action="store_true",
                        help="CPU quick start: the tiny preset on Tiny Shakespeare (data/tinyshakespeare, made from "
                             "input.txt when missing) for a few minutes (QUICKSTART in gptkit/settings.py)")
    parser.add_argument("--finetune", action="store_true",
                        help="fine-tune OpenAI's gpt2 (or --init-from a checkpoint) on Tiny Shakespeare (or "
                             "--data-dir): constant LR 3e-5, val loss every 10 steps, only the best checkpoint kept "
                             "(FINETUNE in gptkit/settings.py)")


def resolve(parser, argv=None):
    """The trainer's settings for argv, every layer applied but the last: settings that follow from the model
    (batch size, LR, sequence length) stay unset until it is loaded (fill_model_defaults)."""
    args = parser.parse_args(argv)
    given = given_flags(parser, argv)
    if args.quickstart and args.finetune:
        parser.error("--quickstart and --finetune are two recipes: choose one")
    if args.quickstart or args.finetune:
        apply_defaults(args, QUICKSTART if args.quickstart else FINETUNE, given)
    if args.recipe == "modern":
        apply_defaults(args, modern.RECIPE, given)
    if args.resume and rundir.checkpoint_paths(args.out_dir):  # none: the trainer says so, on every rank at once
        path = rundir.newest_checkpoint(args.out_dir)
        saved = checkpoint.load_meta(path).get("args", {})
        if "model" in given and given["model"] != saved.get("model", args.model):
            raise ValueError(f"{path} is a checkpoint of another model ('{saved['model']}'); drop --model to resume "
                             f"it, or choose another --out-dir for '{given['model']}'")
        apply_defaults(args, {k: v for k, v in saved.items() if hasattr(args, k) and k not in NOT_RESUMED}, given)
    elif "model" in given and args.init_from:
        parser.error("--init-from sets the model; drop --model")
    return args


def fill_model_defaults(args, config, batch_tokens, max_lr):
    """The last layer, once the model is loaded: settings left unset that follow from it. Batch size (tokens) and
    LR from the preset of its shape (batch_tokens, max_lr), the sequence length from its block_size."""
    args.total_batch_size = args.total_batch_size or batch_tokens
    args.max_lr = max_lr if args.max_lr is None else args.max_lr
    args.min_lr = args.max_lr / 10 if args.min_lr is None else args.min_lr
    if args.min_lr > args.max_lr:
        raise ValueError(f"--min-lr {args.min_lr:g} is above --max-lr {args.max_lr:g}: the schedule decays from "
                         "--max-lr down to --min-lr")
    args.seq_len = args.seq_len or config.block_size
    if args.seq_len > config.block_size:
        raise ValueError(f"--seq-len {args.seq_len} is longer than the model's block_size {config.block_size}")
