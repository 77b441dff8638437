"""Cluster preemption signals (SIGTERM, SIGUSR1): never a silent exit, never a lost result.

For the whole run (`stop_on_signals`), a signal (Ctrl-C's SIGINT too) raises `Preempted` wherever the run is
(preparing data, testing, writing reports), so that the MLflow run is closed KILLED and what is finished stays on
disk. While training (`PreemptionWatch`), SIGTERM, SIGUSR1 and SIGUSR2 only set a flag that the loop honours at the
next step, after saving a checkpoint. While the record of a stopping run is being closed (`shielded`), further
signals are noted and ignored, so that a second Ctrl-C never breaks off the closing; elsewhere a second signal
raises `Preempted` again, with the same one line. A forked worker (a DataLoader's) that gets the signal exits
quietly, as on Ctrl-C. SIGUSR2 is submitit's: once the run has stopped, the handler that was there before
(submitit's, in a SLURM job) gets the signal too, and requeues the job, which resumes the same run.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager

log = logging.getLogger(__name__)

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
STOP_SIGNALS = (*PREEMPTION_SIGNALS, signal.SIGINT)
# the process that opened the current `stop_on_signals` block, how many `shielded` and `signals_held` blocks are
# open, and the signal held back by the latter
_state = {"pid": None, "shielded": 0, "held": 0, "pending": None}
_received: list[int] = []  # the signals that stopped the current run, for the handlers that were there before


class Preempted(BaseException):
    """The run stopped on a signal; rerun with trainer.resume=auto to continue. A BaseException, as
    KeyboardInterrupt is: a library's `except Exception` (a parser, a store's retry) never swallows the stop."""

    def __init__(self, checkpoint=None, signal_name: str = "a preemption signal"):
        if checkpoint is not None:
            message = f"preempted: checkpoint saved at {checkpoint}; rerun with trainer.resume=auto to continue"
        else:
            message = f"stopped by {signal_name}: finished work is kept; rerun with trainer.resume=auto to continue"
        super().__init__(message)
        self.checkpoint, self.signal_name = checkpoint, signal_name


def _raise_preempted(signum, frame):
    name = signal.Signals(signum).name
    if os.getpid() != _state["pid"]:
        raise KeyboardInterrupt  # a forked worker: it exits quietly, the run's own process stops the run
    _received.append(signum)
    if _state["held"]:
        _state["pending"] = _state["pending"] or name
        return
    if _state["shielded"]:
        log.warning("%s received while the run's record is being closed: it is already stopping", name)
        return
    raise Preempted(signal_name=name)


@contextmanager
def stop_on_signals():
    """Inside the block, a stop signal raises `Preempted` once (main thread only; elsewhere a no-op). Leaving the
    block on the exception it raised, the handlers from before it that are Python functions (a launcher's) get the
    signal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["pid"] = os.getpid()
    _received.clear()
    previous = {sig: signal.signal(sig, _raise_preempted) for sig in STOP_SIGNALS}
    try:
        yield
    except BaseException:  # Preempted, or what it became on its way out (e.g. raised while resolving the config)
        _restore(previous)
        for signum in dict.fromkeys(_received):
            if signum in PREEMPTION_SIGNALS and callable(previous[signum]):  # Ctrl-C's ends here, as one line
                previous[signum](signum, None)  # submitit: checkpoint the job, requeue it and exit
        raise
    finally:
        _restore(previous)


def _restore(handlers: dict) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


@contextmanager
def shielded():
    """Inside the block (closing a stopping run's record), stop signals are logged and ignored."""
    _state["shielded"] += 1
    try:
        yield
    finally:
        _state["shielded"] -= 1


@contextmanager
def signals_held():
    """Inside the block (opening a run's record), a stop signal is held back and raised as `Preempted` when the
    block ends, so that it never falls between a record being opened and the code that closes it."""
    _state["held"] += 1
    try:
        yield
    finally:
        _state["held"] -= 1
    pending, _state["pending"] = _state["pending"], None
    if pending and not _state["held"]:
        raise Preempted(signal_name=pending)


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
