"""Progress of long work: a bar on a terminal; in a log (a SLURM .out, CI), a plain line now and then; and the
one line an epoch ends with.

tqdm's bars redraw themselves with carriage returns, which a log file keeps as thousands of partial lines.
Off a terminal, `progress` writes one line FIRST_LINE_S seconds into a long loop and then one per LOG_EVERY_S,
each with the count, the rate and, when the total is known, the time left; the code around it logs its own
summary (an epoch's line, a split's "crops ready"). A loop shorter than FIRST_LINE_S says nothing.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator

from tqdm.auto import tqdm

log = logging.getLogger("cellexp.progress")

FIRST_LINE_S = 10.0
LOG_EVERY_S = 30.0


def on_terminal() -> bool:
    return sys.stderr.isatty()


class _LogLines:
    """tqdm's interface (iterate, update, set_postfix, close), writing a log line at most every LOG_EVERY_S."""

    def __init__(self, iterable, total: int | None, desc: str, unit: str, initial: int = 0, quiet: bool = False):
        self.iterable, self.desc, self.unit, self.quiet = iterable, desc, unit, quiet
        self.total = total if total is not None else _length(iterable)
        self.n, self.initial, self.postfix = initial, initial, ""
        self.started = time.monotonic()
        self.next_line = self.started + FIRST_LINE_S

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.quiet and now >= self.next_line:
            self.next_line = now + LOG_EVERY_S
            log.info("%s: %s%s", self.desc, self.state(now), self.postfix)

    def state(self, now: float) -> str:
        """`12/80 batch, 0.31 batch/s (3.2 s/batch), 3m39s left`: the rate since the start, the time left at it."""
        rate = (self.n - self.initial) / max(now - self.started, 1e-9)
        text = f"{self.n}{f'/{self.total}' if self.total else ''} {self.unit}, {rate:.3g} {self.unit}/s"
        if 0 < rate < 1:
            text += f" ({1 / rate:.3g} s/{self.unit})"
        if self.total and rate > 0:
            text += f", {_duration((self.total - self.n) / rate)} left"
        return text

    def set_postfix(self, **values) -> None:
        self.postfix = "  " + "  ".join(f"{k} {v}" for k, v in values.items())

    def close(self) -> None: ...


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _length(iterable) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None


def progress(
    iterable: Iterable | None = None,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    leave: bool = False,
    enabled: bool = True,
):
    """A tqdm bar on a terminal, else occasional log lines; `enabled=False` (other ranks) shows nothing."""
    if enabled and on_terminal():
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave)
    return _LogLines(iterable, total, desc, unit, initial, quiet=not enabled)


def summary_line(metrics: dict, selected: str) -> str:
    keys = ["train/loss", "val/loss", "val/accuracy", "val/balanced_accuracy", selected, "train/lr"]
    keys += ["train/camo_loss", "val/gradcamo_mean", "val/gradcamo_frac_above_0.5"]
    keys += [key for key in metrics if key.endswith("_per_s")]
    shown = dict.fromkeys(k for k in keys if k in metrics)
    return "  ".join(f"{k} {_fmt(metrics[k])}" for k in shown)


def _fmt(value: float) -> str:
    if math.isfinite(value) and (abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3)):
        return f"{value:.2e}"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.0f}"
