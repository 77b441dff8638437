"""Cluster preemption signals (SIGTERM, SIGUSR1): never a silent exit, never a lost result.

For the whole run (`stop_on_signals`), a signal raises `Preempted` wherever the run is (preparing data, testing,
writing reports), so that the MLflow run is closed KILLED and what is finished stays on disk. While training
(`PreemptionWatch`), the signal only sets a flag that the loop honours at the next step, after saving a checkpoint.
SIGUSR2 is submitit's: once the run has stopped, the handler that was there before (submitit's, in a SLURM job)
gets the signal too, and requeues the job, which resumes the same run.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
_received: list[int] = []  # the signals that stopped the current run, for the handlers that were there before


class Preempted(Exception):
    """The run stopped on a signal; rerun with trainer.resume=auto to continue."""

    def __init__(self, checkpoint=None, signal_name: str = "a preemption signal"):
        if checkpoint is not None:
            message = f"preempted: checkpoint saved at {checkpoint}; rerun with trainer.resume=auto to continue"
        else:
            message = f"stopped by {signal_name}: finished work is kept; rerun with trainer.resume=auto to continue"
        super().__init__(message)
        self.checkpoint = checkpoint


def _raise_preempted(signum, frame):
    _received.append(signum)
    raise Preempted(signal_name=signal.Signals(signum).name)


@contextmanager
def stop_on_signals():
    """Inside the block, a preemption signal raises `Preempted` (main thread only; elsewhere a no-op). Leaving the
    block on the exception it raised, the handlers from before it that are Python functions (a launcher's) get the
    signal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {sig: signal.signal(sig, _raise_preempted) for sig in PREEMPTION_SIGNALS}
    try:
        yield
    except BaseException:  # Preempted, or what it became on its way out (e.g. raised while resolving the config)
        _restore(previous)
        for signum in dict.fromkeys(_received):
            if callable(previous[signum]):
                previous[signum](signum, None)  # submitit: checkpoint the job, requeue it and exit
        raise
    finally:
        _restore(previous)


def _restore(handlers: dict) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


class PreemptionWatch:
    """While active, SIGTERM/SIGUSR1 set `requested` instead of raising, so training stops at a step boundary."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame):
        _received.append(signum)
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in PREEMPTION_SIGNALS}
        return self

    def __exit__(self, *exc):
        _restore(self._previous)
        return False
