"""What a run records in its directory, from rank 0: log.txt (one line per event, read by plot.py and the
notebook), run.json (what plot.py needs before any checkpoint exists), and with --wandb / --tensorboard the same
figures and those of the step lines (LR, grad norm, tokens/s, MFU) on a dashboard, the run's settings as its config."""

import json
import os


def missing(package, flag):
    return ValueError(f"{flag} needs the {package} package: pip install {package} (or: pip install -e '.[track]')")


class Tracker:
    """--wandb PROJECT and/or --tensorboard. A resumed run continues the same wandb run (its id is kept in
    run_info) and the same TensorBoard step axis (events after the resumed step are dropped)."""

    def __init__(self, out_dir, settings, start_step, wandb_project=None, tensorboard=False, wandb_id=None):
        self.wandb_run = self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise missing("tensorboard", "--tensorboard") from None
            self.writer = SummaryWriter(os.path.join(out_dir, "tensorboard"), purge_step=start_step or None)
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise missing("wandb", "--wandb") from None
            self.wandb_run = wandb.init(project=wandb_project, dir=out_dir, config=settings, id=wandb_id,
                                        resume="allow", name=os.path.basename(os.path.abspath(out_dir)))
            # the trainer's step as the x axis: after a resume, steps logged before the crash are simply redrawn
            self.wandb_run.define_metric("*", step_metric="trainer/step")

    @property
    def wandb_id(self):
        return self.wandb_run.id if self.wandb_run is not None else None

    def log(self, step, figures):
        """figures: {"train/loss": 3.1, "train/lr": 6e-4, ...} at this step."""
        if self.writer is not None:
            for name, value in figures.items():
                self.writer.add_scalar(name, value, step)
            self.writer.flush()
        if self.wandb_run is not None:
            self.wandb_run.log({**figures, "trainer/step": step})

    def close(self):
        if self.writer is not None:
            self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def check_installed(wandb_project, tensorboard):
    """Fail in one line, before anything starts, when a tracking flag's package is missing."""
    for wanted, package, flag in ((tensorboard, "tensorboard", "--tensorboard"), (wandb_project, "wandb", "--wandb")):
        if wanted:
            try:
                __import__(package)
            except ImportError:
                raise missing(package, flag) from None


class RunRecords:
    """Rank 0's records of a run: log.txt is appended to (a resumed run keeps its history; the later line of a
    repeated step wins), run.json is written anew with info (corpus, model size) and the settings."""

    NAMES = {"train": "train/loss", "val": "val/loss", "hella": "hellaswag/acc_norm"}  # on the dashboards

    def __init__(self, out_dir, settings, start_step, info):
        info_path = os.path.join(out_dir, "run.json")
        previous = {}
        if settings["resume"] and os.path.isfile(info_path):
            with open(info_path) as f:
                previous = json.load(f)
        self.log_file = open(os.path.join(out_dir, "log.txt"), "a")
        self.tracker = None
        if settings["wandb"] or settings["tensorboard"]:
            self.tracker = Tracker(out_dir, settings, start_step, settings["wandb"], settings["tensorboard"],
                                   previous.get("wandb_id"))
        wandb_id = self.tracker.wandb_id if self.tracker else previous.get("wandb_id")
        with open(info_path, "w") as f:
            json.dump({**info, "wandb_id": wandb_id, "args": settings}, f, indent=1)

    def record(self, step, kind, value, **more):
        """`{step} {train|val|hella} {value}` in log.txt; value and the step's other figures (more) on a dashboard."""
        self.log_file.write(f"{step} {kind} {value:.{6 if kind == 'train' else 4}f}\n")
        self.log_file.flush()
        if self.tracker is not None:
            self.tracker.log(step, {self.NAMES[kind]: value, **{f"train/{k}": v for k, v in more.items()}})

    def close(self):
        self.log_file.close()
        if self.tracker is not None:
            self.tracker.close()


def add_arguments(parser):
    """The trainer's flags for dashboards."""
    g = parser.add_argument_group("tracking (optional packages: pip install -e '.[track]')")
    g.add_argument("--wandb", metavar="PROJECT", help="log to this Weights & Biases project (WANDB_MODE=offline works)")
    g.add_argument("--tensorboard", action="store_true", help="write TensorBoard event files to OUT_DIR/tensorboard")
