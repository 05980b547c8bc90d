"""SIGTERM / SIGINT (preemption, a SLURM time limit, Ctrl-C) as a request to stop after the current step."""

import signal


class StopRequest:
    """A context manager: inside it, the first SIGTERM or SIGINT sets `requested` (the loop checkpoints and exits
    after the step it is in) and says so at once; a second one aborts without a checkpoint. The handlers that were
    there before are put back on exit, so train() can be called from a notebook."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, announce=print):
        self.announce = announce
        self.requested = False
        self.previous = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} again: aborted without a checkpoint")
        self.requested = True
        self.announce(f"{signal.Signals(signum).name}: stopping after this step with a checkpoint; "
                      "Ctrl-C again to abort without one")
