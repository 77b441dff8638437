"""The texture side of CLANet's published window de-duplication (`cell_cluster_selection.py`): each window's
histogram of local binary patterns and the similarity of two overlapping windows, with skimage's and the published
float operations, as whole-array code."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

TEXTURE_BINS = 10
LBP_POINTS = 8
LBP_RADIUS = 1.0


def texture_histograms(image: np.ndarray, corners: np.ndarray, size: int, chunk: int = 64) -> np.ndarray:
    """Each window's 10-bin histogram over (0, 255) of the frame's LBP codes (P=8, R=1, 'default'), divided by
    the window's pixel count: np.histogram's bins (left-closed, the last one closed) looked up per code, counted
    once per distinct window, a chunk of windows at a time."""
    edges = np.linspace(0.0, 255.0, TEXTURE_BINS + 1)
    bin_of = np.clip(np.searchsorted(edges, np.arange(256), side="right") - 1, 0, TEXTURE_BINS - 1)
    bins = bin_of.astype(np.uint8)[lbp_codes(image)]
    unique, inverse = np.unique(corners, axis=0, return_inverse=True)
    views = sliding_window_view(bins, (size, size))
    counts = np.empty((len(unique), TEXTURE_BINS), np.int64)
    for start in range(0, len(unique), chunk):
        part = unique[start : start + chunk]
        windows = views[part[:, 0], part[:, 1]].reshape(len(part), -1)
        offsets = np.arange(len(part), dtype=np.intp)[:, None] * TEXTURE_BINS
        counted = np.bincount((windows + offsets).ravel(), minlength=len(part) * TEXTURE_BINS)
        counts[start : start + len(part)] = counted.reshape(len(part), TEXTURE_BINS)
    return (counts / (size * size))[inverse.ravel()]


def lbp_codes(image: np.ndarray, block: int = 64) -> np.ndarray:
    """skimage's local_binary_pattern(image, 8, 1.0, 'default') as uint8 codes, with the same float operations.

    skimage interpolates each neighbour bilinearly at the position it rounds to 5 decimals (0 outside the image):
    first along the columns, `(1 - dc) * left + dc * right` on the two rows, then `(1 - dr) * top + dr * bottom`,
    the weights from each row's and column's own float position. The four diagonal neighbours share two column
    interpolations (at +-0.70711), so those are computed once per row; blocks of rows keep it in cache."""
    image = np.ascontiguousarray(image, np.float64)
    height, width = image.shape
    padded = np.zeros((height + 2, width + 2))
    padded[1:-1, 1:-1] = image
    angles = 2 * np.pi * np.arange(LBP_POINTS, dtype=np.float64) / LBP_POINTS
    offsets = np.stack([np.round(-LBP_RADIUS * np.sin(angles), 5), np.round(LBP_RADIUS * np.cos(angles), 5)], axis=1)
    rows = np.arange(height, dtype=np.float64)
    cols = np.arange(width, dtype=np.float64)
    plan = []  # per neighbour: padded row and column of its top-left sample, interpolated or not, the weights
    for off_r, off_c in offsets:
        r, c = rows + off_r, cols + off_c
        r0, c0 = np.floor(r), np.floor(c)
        inter = bool(np.any(r != r0) or np.any(c != c0))
        plan.append((int(r0[0]) + 1, int(c0[0]) + 1, inter, float(off_c), (r - r0)[:, None], c - c0))
    codes = np.empty(image.shape, np.uint8)
    for start in range(0, height, block):
        stop = min(start + block, height)
        n = stop - start
        centre = image[start:stop]
        code = np.zeros(centre.shape, np.uint8)
        across = {}  # column interpolations of padded rows start .. stop + 1 (row i: padded row start + i)
        for bit, (top, left, inter, off_c, wr, wc) in enumerate(plan):
            if inter:
                if off_c not in across:
                    lo = padded[start : stop + 2, left : left + width]
                    hi = padded[start : stop + 2, left + 1 : left + 1 + width]
                    across[off_c] = (1 - wc) * lo + wc * hi
                line, w = across[off_c], wr[start:stop]
                value = (1 - w) * line[top : top + n] + w * line[top + 1 : top + 1 + n]
            else:
                value = padded[start + top : stop + top, left : left + width]
            code |= (value >= centre).view(np.uint8) << bit  # value - centre >= 0, the same for finite floats
        codes[start:stop] = code
    return codes


def similarity(texture_a: np.ndarray, texture_b: np.ndarray, dy: np.ndarray, dx: np.ndarray, size: int) -> np.ndarray:
    """The published similarity of overlapping window pairs, in its float order: colour intersection + texture
    intersection (summed bin by bin, as Python's sum does) + IoU. The colour histogram is 25 bins over (0, 255) of
    a frame in [0, 1], so every pixel is in bin 0 and the colour term is the constant 1."""
    smaller = np.minimum(texture_a, texture_b)
    texture = smaller[:, 0].copy()
    for b in range(1, smaller.shape[1]):
        texture += smaller[:, b]
    inter = (size - dx) * (size - dy)
    return (1.0 + texture) + inter / (2 * size * size - inter)
