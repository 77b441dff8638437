"""How alike a dataset's channels are: the channel-by-channel Pearson correlation over the pixels (voxels) inside
cells, on a seeded sample of the training split. The Grad-CAMO paper's observation (on RxRx1) that Cell Painting
channels are highly correlated is what this measures for any multi-channel data: highly correlated channels carry
less independent information than their count suggests."""

from __future__ import annotations

import numpy as np

from cellexp.data.dataset import CropDataset
from cellexp.data.store import channel_batch

SAMPLE = 1024  # cells


def channel_correlation(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(C, C) Pearson correlation of crops (N, C, *spatial) over the pixels where masks (N, *spatial) are set; NaN for
    a channel that is constant there."""
    images = np.asarray(images)
    inside = np.asarray(masks).astype(bool)
    pixels = np.moveaxis(images, 1, -1)[inside].astype(np.float64)  # (pixels, C)
    if len(pixels) < 2:
        return np.full((images.shape[1],) * 2, np.nan)
    centred = pixels - pixels.mean(axis=0)
    scale = np.sqrt((centred**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (centred.T @ centred) / np.outer(scale, scale)


def split_correlation(dataset: CropDataset, seed: int, sample: int = SAMPLE) -> np.ndarray:
    """channel_correlation of at most `sample` cells of `dataset`, drawn with `seed`."""
    picked = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:sample])
    rows = dataset.indices[picked]
    images = channel_batch(dataset.store.images(dataset.split)[rows])
    return channel_correlation(images, dataset.store.masks(dataset.split)[rows])
