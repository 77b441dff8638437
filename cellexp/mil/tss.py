"""Time-series Segment Sampling (TSS): one training view of a sequence, as frame indices in time order and the
weight of its loss. `task.tss.method` chooses the sampler:

- ours (`segment_sample`): windows of `task.tss.window` mean sampling intervals, frames kept with probability
  `task.tss.keep`, weight = the share of frames kept.
- published (`published_sample`): CLANet's `Cell_Sampling_new.py` sampler. A window length t in {1..8} h, drawn
  with P(t) proportional to a normal pdf at E (the sequence's mean gap in h, clipped to [1, 8]) with the
  population std of 1..8; t <= round(E) gives the whole sequence at weight 1, else windows on the hour axis, a
  uniform number of frames from each, and weight coverage + sparsity in (0, 2].

Differences from the published code, on purpose:
- Times are the published integer hours, 24*DD + HH + ceil(MM/60), derived here from our float hours (rounded to
  whole minutes first, then rounded up to the hour); the windows and weights use them.
- The published code draws one t per sequence per epoch (and forces t = E in the first epochs when E is a whole
  number); our loader draws `task.tss.samples_per_sequence` samples of each sequence per epoch, each with its own
  draw of t from the same distribution.
- A sample of one frame (m = 1) has no gaps, and the published sparsity is 0/0 (NaN, a poisoned step); here its
  sparsity is 0, so its weight is its coverage, 1/n.
- A one-frame sequence (the published data has none: it needs 3) is sampled whole at weight 1.

Both draw only from the numpy Generator they are given, so a sample is fixed by its seed (see `TSSSampler`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np

from cellexp.errors import ConfigError

METHODS = ("ours", "published")
# task.tss.window and task.tss.keep apply to method=ours only; with method=published they must keep these values
OURS_DEFAULTS = {"window": [2.0, 4.0], "keep": 0.5}
WINDOW_LENGTHS = np.arange(1, 9)
WINDOW_SCALE = float(np.std(WINDOW_LENGTHS))  # sqrt(5.25)

Sample = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, float]]


def segment_sample(
    hours: np.ndarray, rng: np.random.Generator, window: tuple[float, float] = (2.0, 4.0), keep: float = 0.5
) -> tuple[np.ndarray, float]:
    """Our TSS: one training view of a sequence, as frame indices in time order and a weight.

    The sequence's time is cut into windows of t hours, t drawn as `window` times the mean sampling interval
    (with a random phase); each frame of a window is kept with probability `keep`, and every window keeps at
    least one. The weight is the share of the sequence's frames kept, in (0, 1]: a sparse view counts less.
    """
    n = len(hours)
    if n == 1:
        return np.zeros(1, np.int64), 1.0
    interval = max(float(np.mean(np.diff(hours))), 1e-6)
    width = interval * rng.uniform(*window)
    segment = np.floor((hours - hours[0] + rng.uniform(0, width)) / width).astype(np.int64)
    kept = rng.random(n) < keep
    # one forced frame per window, drawn uniformly among the window's frames
    order = np.lexsort((rng.random(n), segment))
    first = np.concatenate([[True], segment[order[1:]] != segment[order[:-1]]])
    kept[order[first]] = True
    indices = np.flatnonzero(kept)
    return indices, len(indices) / n


def integer_hours(hours: np.ndarray) -> np.ndarray:
    """The published times, 24*DD + HH + ceil(MM/60): our hours to whole minutes, then up to the whole hour."""
    minutes = np.rint(np.asarray(hours, np.float64) * 60).astype(np.int64)
    return -(-minutes // 60)


def expected_gap(times: np.ndarray) -> float:
    """E: the mean gap between consecutive (integer-hour) times, clipped to [1, 8]."""
    gap = (times[-1] - times[0]) / (len(times) - 1)
    return float(np.clip(gap, WINDOW_LENGTHS[0], WINDOW_LENGTHS[-1]))


def window_probabilities(expected: float) -> np.ndarray:
    """P(t) for t = 1..8: a normal pdf at t (mean `expected`, scale sqrt(5.25)), normalised over the 8 values."""
    density = np.exp(-0.5 * ((WINDOW_LENGTHS - expected) / WINDOW_SCALE) ** 2)
    return density / density.sum()


def draw_window_length(expected: float, rng: np.random.Generator) -> int:
    """t in 1..8 with probability `window_probabilities(expected)`."""
    return int(rng.choice(WINDOW_LENGTHS, p=window_probabilities(expected)))


def published_windows(times: np.ndarray, t: int) -> list[np.ndarray]:
    """The published windows of frame indices for length t, on the absolute hour axis from 0: a frame past the
    current bound opens a window (the bound then steps by t until it reaches the frame); a frame exactly on the
    bound closes its window, and the next bound is that next frame's time + t. Frame 0 always opens the first."""
    bounds, bound = [0], t
    for k in range(1, len(times)):
        tk = int(times[k])
        if tk > bound:
            bounds.append(k)
            while bound < tk:
                bound += t
        elif tk == bound:
            bounds.append(k + 1)
            if k + 1 < len(times):
                bound = int(times[k + 1]) + t
    if bounds[-1] < len(times):
        bounds.append(len(times))
    return [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def published_weight(n: int, sampled_times: np.ndarray, rounded_e: int, t: int) -> float:
    """coverage m/n + sparsity clip(sum over gaps g <= t of (g/round(E) - 1) / ((t/round(E) - 1)(m - 1)), 0, 1),
    for t > round(E); in (0, 2]. m = 1 has no gaps: sparsity 0 (the published code divides 0 by 0)."""
    m = len(sampled_times)
    coverage = m / n
    if m == 1:
        return coverage
    gaps = np.diff(np.asarray(sampled_times, np.float64))
    total = float(np.sum(np.where(gaps <= t, gaps / rounded_e - 1, 0.0)))
    sparsity = total / ((t / rounded_e - 1) * (m - 1))
    return coverage + float(np.clip(sparsity, 0.0, 1.0))


def published_sample(hours: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """CLANet's published TSS (see the module docstring): frame indices in time order and the sample's weight."""
    times = integer_hours(hours)
    n = len(times)
    if n == 1:
        return np.zeros(1, np.int64), 1.0
    expected = expected_gap(times)
    t = draw_window_length(expected, rng)
    rounded = round(expected)  # Python's round, half to even, as published
    if t <= rounded:
        return np.arange(n), 1.0
    windows = published_windows(times, t)
    indices = np.zeros(0, np.int64)
    while not len(indices):  # every window may come out empty: draw again
        picked = []
        for window in windows:
            k = rng.integers(1, len(window) + 1) if len(window) > 1 else rng.integers(0, 2)
            picked.append(np.sort(rng.choice(window, size=k, replace=False)))
        indices = np.concatenate(picked).astype(np.int64)
    return indices, published_weight(n, times[indices], rounded, t)


def check_tss(tss) -> str:
    """task.tss.method, checked: an unknown method, or ours-only settings changed with method=published, stop the
    run by name."""
    method = tss.get("method", "ours")
    if method not in METHODS:
        raise ConfigError(f"task.tss.method={method!r}; choose one of {', '.join(METHODS)}")
    if method == "published":
        for key, default in OURS_DEFAULTS.items():
            value = tss.get(key, default)
            if not _same(value, default):
                raise ConfigError(
                    f"task.tss.{key}={_shown(value)} applies to task.tss.method=ours only: the published sampler "
                    f"draws its own windows and frames; leave it at {default}"
                )
    return method


def make_sampler(tss) -> Sample:
    """The sampler `task.tss` chooses, as a function of (hours, rng)."""
    if check_tss(tss) == "published":
        return published_sample
    return partial(segment_sample, window=tuple(tss.window), keep=float(tss.keep))


def _same(value, default) -> bool:
    try:
        if isinstance(default, list):
            return [float(v) for v in value] == default
        return math.isclose(float(value), default)
    except (TypeError, ValueError):
        return False


def _shown(value):
    return list(value) if not isinstance(value, str | int | float) else value
