"""Cluster preemption signals (SIGTERM, SIGUSR1): never a silent exit, never a lost result.

For the whole run (`stop_on_signals`), a signal (Ctrl-C's SIGINT too) raises `Preempted` wherever the run is
(preparing data, testing, writing reports), so that the MLflow run is closed KILLED and what is finished stays on
disk. While training (`PreemptionWatch`), SIGTERM and SIGUSR1 only set a flag that the loop honours at the next step,
after saving a checkpoint. Once a stop is under way, further signals are noted and ignored, so that a second Ctrl-C
never breaks off the closing of the record; the run ends with the first signal's one line. A forked worker (a
DataLoader's) that gets the signal exits quietly, as on Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager

log = logging.getLogger(__name__)

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
STOP_SIGNALS = (*PREEMPTION_SIGNALS, signal.SIGINT)
# the signals received inside the current `stop_on_signals` block, and the process that opened it
_received: list[str] = []
_owner = {"pid": None}


class Preempted(Exception):
    """The run stopped on a signal; rerun with trainer.resume=auto to continue."""

    def __init__(self, checkpoint=None, signal_name: str = "a preemption signal"):
        if checkpoint is not None:
            message = f"preempted: checkpoint saved at {checkpoint}; rerun with trainer.resume=auto to continue"
        else:
            message = f"stopped by {signal_name}: finished work is kept; rerun with trainer.resume=auto to continue"
        super().__init__(message)
        self.checkpoint, self.signal_name = checkpoint, signal_name


def _raise_preempted(signum, frame):
    name = signal.Signals(signum).name
    if os.getpid() != _owner["pid"]:
        raise KeyboardInterrupt  # a forked worker: it exits quietly, the run's own process stops the run
    _received.append(name)
    if len(_received) == 1:
        raise Preempted(signal_name=name)
    log.warning("%s received again: the run is already stopping", name)


@contextmanager
def stop_on_signals():
    """Inside the block, a stop signal raises `Preempted` once (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    _owner["pid"] = os.getpid()
    previous = {sig: signal.signal(sig, _raise_preempted) for sig in STOP_SIGNALS}
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
        _received.append(signal.Signals(signum).name)  # a later signal, after training, is then ignored

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in PREEMPTION_SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
