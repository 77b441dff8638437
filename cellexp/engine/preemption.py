"""Cluster preemption signals (SIGTERM, SIGUSR1): never a silent exit, never a lost result.

For the whole run (`stop_on_signals`), a signal raises `Preempted` wherever the run is (preparing data, testing,
writing reports), so that the MLflow run is closed KILLED and what is finished stays on disk. While training
(`PreemptionWatch`), the signal only sets a flag that the loop honours at the next step, after saving a checkpoint.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


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
    raise Preempted(signal_name=signal.Signals(signum).name)


@contextmanager
def stop_on_signals():
    """Inside the block, a preemption signal raises `Preempted` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_preempted) for sig in PREEMPTION_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class PreemptionWatch:
    """While active, SIGTERM/SIGUSR1 set `requested` instead of raising, so training stops at a step boundary."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame):
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in PREEMPTION_SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
