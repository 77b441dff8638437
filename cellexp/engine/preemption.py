"""Turn cluster preemption signals into a request the training loop honours at the next step."""

from __future__ import annotations

import signal
import threading

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint; rerun with trainer.resume=auto."""

    def __init__(self, checkpoint):
        super().__init__(f"preempted: checkpoint saved at {checkpoint}; rerun with trainer.resume=auto to continue")
        self.checkpoint = checkpoint


class PreemptionWatch:
    """While active, SIGTERM/SIGUSR1 set `requested` instead of killing the process."""

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
