"""SIGTERM / SIGINT (preemption, a SLURM time limit, Ctrl-C) as a request to stop after the current step, and
worker processes that leave those signals to their parent."""

import signal
from multiprocessing import Pool


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


def worker_pool(processes, initializer):
    """A multiprocessing Pool whose workers do not inherit this process's handlers: a worker ends at the pool's
    SIGTERM (which Pool.terminate sends) and ignores Ctrl-C, which is the parent's to act on. Under the trainer's
    StopRequest an inherited handler would instead print "stopping after this step" in the worker and keep it
    alive, and the pool's shutdown would wait for it for ever. Where threads can block signals (POSIX), they stay
    blocked from before the fork until the worker has put the defaults back, so none can arrive in between;
    elsewhere (Windows) workers start as fresh processes and set the defaults first thing."""
    if not hasattr(signal, "pthread_sigmask"):
        return Pool(processes, initializer=_start_worker, initargs=(initializer,))
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, StopRequest.SIGNALS)
    try:
        # the pool's own threads start here too, and keep the blocked mask: workers it forks later start blocked
        return Pool(processes, initializer=_start_worker, initargs=(initializer,))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a signal that came meanwhile is handled now


def _start_worker(initializer):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, StopRequest.SIGNALS)
    initializer()
