"""The built-in segmenter: label-free cells (phase contrast, brightfield, the synthetic data) found offline.

Such cells differ from the background by texture and by their dark bodies and bright halos more than by
brightness, so the foreground is where the image departs from its smooth background, by Otsu's threshold on that
departure; holes are filled, specks opened away, and touching cells split by a watershed on the distance to
the background, one seed per local maximum at least `min_distance` apart. Objects below `min_area` px are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import disk, h_maxima
from skimage.segmentation import watershed

from cellexp.plates.outlines import Outline, from_labels


@dataclass(frozen=True)
class SegmenterSettings:
    # px: blur against camera noise, and the scale of the background (larger than any cell)
    smoothing: float = 1.0
    background: float = 20.0
    # px: how much deeper than the waist between them two cells' centres must lie to be split
    seed_depth: float = 3.0
    min_area: int = 30
    # the threshold as a share of Otsu's: below 1 keeps more of dim cells' rims
    threshold_scale: float = 1.0


def segment(image: np.ndarray, settings: SegmenterSettings = SegmenterSettings()) -> np.ndarray:
    """A label image (int32, 0 = background) of the cells in a 2-D image of any dtype."""
    pixels = image.astype(np.float32)
    smooth = ndimage.gaussian_filter(pixels, settings.smoothing)
    departure = np.abs(smooth - ndimage.gaussian_filter(pixels, settings.background))
    departure = ndimage.gaussian_filter(departure, settings.smoothing)
    if departure.max() <= departure.min():
        return np.zeros(image.shape, np.int32)
    foreground = departure > threshold_otsu(departure) * settings.threshold_scale
    foreground = ndimage.binary_fill_holes(ndimage.binary_opening(foreground, disk(1)))
    distance = ndimage.gaussian_filter(ndimage.distance_transform_edt(foreground), 1.0)
    # a seed per plateau of the distance that stands `seed_depth` px above its surroundings (h-maxima): a waist
    # between two touching cells splits them, the bumps along one long cell do not
    seeds, _ = ndimage.label(h_maxima(distance, settings.seed_depth) & foreground)
    labels = watershed(-distance, seeds, mask=foreground)
    sizes = np.bincount(labels.ravel())
    labels[sizes[labels] < settings.min_area] = 0
    return _renumbered(labels)


def _renumbered(labels: np.ndarray) -> np.ndarray:
    """Labels 1..n in order of first appearance, with no gaps."""
    values, inverse = np.unique(labels, return_inverse=True)
    if values[0] != 0:
        return (inverse + 1).reshape(labels.shape).astype(np.int32)
    return inverse.reshape(labels.shape).astype(np.int32)


class Segmenter:
    """The built-in segmenter as a source of outlines, like a folder of label images."""

    empty = "the segmenter found none"

    def __init__(self, settings: SegmenterSettings):
        self.settings = settings

    def outlines(self, image: Path, pixels: np.ndarray) -> list[Outline]:
        return from_labels(segment(pixels, self.settings))
