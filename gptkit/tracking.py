"""Run tracking: the figures of log.txt and of the step lines (loss, val loss, HellaSwag, LR, grad norm, tokens/s,
MFU) on a Weights & Biases or TensorBoard dashboard too, from rank 0, with the run's settings as its config."""

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
