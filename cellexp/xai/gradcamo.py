"""Grad-CAMO (Gopalakrishnan et al., CVPRW 2024): the share of a cell's non-negative map mass inside its own mask.

    gradcamo = sum(relu(map) * mask) / sum(relu(map)),   mask resized (nearest) to the map's size

It is 1 when the model looks only at the cell and 0 when it looks only outside. In 3-D (the paper's z-stacks)
the sums run over voxels and the mask is the cell's 3-D mask. A map with no
positive mass (e.g. a Grad-CAM whose weighted activations are all negative) says nothing about where
the model looks: its score is NaN, left out of every summary and counted as `zero_maps`.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def resize_masks(masks: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Masks (N, h, w) or (N, d, h, w) -> 0/1 uint8 (N, *size), nearest neighbour at pixel (voxel) centres, so that
    they stay binary."""
    masks = (np.asarray(masks) > 0).view(np.uint8)
    shape = masks.shape[1:]
    if shape == tuple(size):
        return masks
    for axis, (n, m) in enumerate(zip(shape, size, strict=True), start=1):
        if n != m:
            masks = np.take(masks, np.minimum(((np.arange(m) + 0.5) * (n / m)).astype(np.intp), n - 1), axis=axis)
    return masks


def gradcamo(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per cell, float64 Grad-CAMO in [0, 1] of maps (N, H, W) or, in 3-D, (N, D, H, W) against the cells' masks
    of the same dimensions; NaN where a map has no positive mass.

    Sums in float64 without a masked copy of the maps (einsum against the 0/1 mask): memory-bound, so
    this is what keeps a whole batch as fast per cell as one cell that fits in cache.
    """
    positive = np.maximum(np.asarray(maps), 0)
    n = len(positive)
    total = positive.reshape(n, -1).sum(axis=1, dtype=np.float64)
    masks = resize_masks(masks, positive.shape[1:]).reshape(n, -1)
    inside = np.einsum("nv,nv->n", positive.reshape(n, -1), masks, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def summarize(scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Mean, median and share above `threshold` over the finite scores (NaN if none); how many were left out."""
    finite = scores[np.isfinite(scores)]
    some = len(finite) > 0
    return {
        "gradcamo_mean": float(finite.mean()) if some else float("nan"),
        "gradcamo_median": float(np.median(finite)) if some else float("nan"),
        f"gradcamo_frac_above_{threshold:g}": float((finite > threshold).mean()) if some else float("nan"),
        "zero_maps": float(len(scores) - len(finite)),
    }


def per_class(scores: np.ndarray, labels: np.ndarray, class_names: list[str], threshold: float) -> list[dict]:
    """One row per class present among `labels` (-1, unknown, is its own row): n and the summary."""
    names = {i: name for i, name in enumerate(class_names)} | {-1: "unknown"}
    return [
        {"class": names[c], "cells": int((labels == c).sum()), **summarize(scores[labels == c], threshold)}
        for c in sorted(set(labels.tolist()))
    ]


@dataclass
class Scored:
    """Grad-CAMO of every cell, and the few maps kept for figures."""

    scores: np.ndarray  # (N,) float64, NaN for empty maps
    maps: dict[int, np.ndarray]  # cell -> (H, W) or (D, H, W) map: the cells asked for, and the lowest finite scores
    seconds: float  # making the maps and scoring them


def score_batches(
    batches: Iterable[np.ndarray],
    masks: Callable[[slice], np.ndarray],
    count: int,
    keep: Collection[int] = (),
    lowest: int = 0,
    save: Path | None = None,
) -> Scored:
    """Score maps as they arrive (batches of (B, H, W), cells in order; `masks(slice)` gives theirs).

    Only the maps of the cells in `keep` and of the `lowest` finite scores among the others are held,
    so that a whole split streams through in bounded memory; `save` writes every map to a float16 .npy.
    """
    started = time.perf_counter()
    scores = np.full(count, np.nan)
    kept: dict[int, np.ndarray] = {}
    worst: list[tuple[float, int]] = []  # max-heap by negated score: the `lowest` finite scores seen
    saved = None
    first = 0
    for maps in batches:
        rows = slice(first, first + len(maps))
        scores[rows] = gradcamo(maps, masks(rows))
        if save is not None:
            if saved is None:
                saved = np.lib.format.open_memmap(save, mode="w+", dtype=np.float16, shape=(count, *maps.shape[1:]))
            saved[rows] = maps
        for i, cam in enumerate(maps, start=first):
            if i in keep:
                kept[i] = cam
            elif lowest and np.isfinite(scores[i]):
                heapq.heappush(worst, (-scores[i], i))
                kept[i] = cam
                if len(worst) > lowest:
                    del kept[heapq.heappop(worst)[1]]
        first = rows.stop
    if saved is not None:
        saved.flush()
    return Scored(scores, kept, time.perf_counter() - started)
