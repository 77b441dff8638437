"""Single-cell 3-D crops: a (C, depth, S, S) window centred on each cell's centroid, neighbours and background kept
as imaged (the paper's crops; Grad-CAMO needs the surroundings), zero beyond the stack's ends and edges, with the
cell's own (depth, S, S) mask beside it."""

from __future__ import annotations

from collections import Counter

import numpy as np
from scipy import ndimage


def cell_crops(
    pixels: np.ndarray, labels: np.ndarray, size: int, depth: int, min_volume: int
) -> tuple[list[tuple[np.ndarray, np.ndarray, dict]], Counter]:
    """Each cell of the (Z, Y, X) label image as (crop, mask, {cell, centroid_z/y/x, volume}), in label order, and
    the cells dropped, counted by reason."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    dropped: Counter = Counter()
    if not len(ids):
        return [], dropped
    volumes = ndimage.sum_labels(np.ones_like(labels, np.int64), labels, ids)
    centroids = ndimage.center_of_mass(np.ones_like(labels, np.float32), labels, ids)
    cells = []
    for cell, volume, centroid in zip(ids, volumes, centroids, strict=True):
        if volume < min_volume:
            dropped["below min_volume"] += 1
            continue
        origin = [int(round(c)) - n // 2 for c, n in zip(centroid, (depth, size, size), strict=True)]
        crop = window(pixels, origin, (depth, size, size))
        mask = (window(labels[None], origin, (depth, size, size))[0] == cell).astype(np.uint8)
        info = {"cell": int(cell), "volume": int(volume)}
        info.update({f"centroid_{axis}": round(float(c), 2) for axis, c in zip("zyx", centroid, strict=True)})
        cells.append((crop, mask, info))
    return cells, dropped


def window(stack: np.ndarray, origin: list[int], shape: tuple[int, int, int]) -> np.ndarray:
    """stack[:, z0:z0+d, y0:y0+s, x0:x0+s] of a (C, Z, Y, X) stack, zero where the window leaves it."""
    out = np.zeros((len(stack), *shape), stack.dtype)
    source, target = [], []
    for start, length, limit in zip(origin, shape, stack.shape[1:], strict=True):
        low, high = max(start, 0), min(start + length, limit)
        source.append(slice(low, max(high, low)))
        target.append(slice(low - start, low - start + max(high - low, 0)))
    out[(slice(None), *target)] = stack[(slice(None), *source)]
    return out
