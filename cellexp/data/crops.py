"""Cut one cell out of its image: rasterise its polygons inside its own bounding box, black out the rest."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def cell_box(bbox: list[float], height: int, width: int) -> tuple[int, int, int, int]:
    """Integer (x0, y0, x1, y1) covering a COCO [x, y, w, h] box, clipped to the image."""
    x, y, w, h = bbox
    x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
    x1, y1 = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def cell_mask(polygons: list[list[float]], box: tuple[int, int, int, int]) -> np.ndarray:
    """Rasterise polygons in the box's frame only: cost scales with the cell, not the image."""
    x0, y0, x1, y1 = box
    shifted = []
    for poly in polygons:
        coords = np.asarray(poly, dtype=np.float64).reshape(-1, 2) - (x0, y0)
        shifted.append(coords.ravel().tolist())
    rle = mask_utils.merge(mask_utils.frPyObjects(shifted, y1 - y0, x1 - x0))
    return mask_utils.decode(rle)


def square_fit(array: np.ndarray, size: int, resample: Image.Resampling) -> np.ndarray:
    """Aspect-preserving resize (longer side = size) then centred zero-padding to size x size."""
    h, w = array.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(array).resize((nw, nh), resample))
    out = np.zeros((size, size), dtype=array.dtype)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


def cut_cell(
    image: np.ndarray, polygons: list[list[float]], bbox: list[float], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One masked, squared crop and its mask (uint8 0/1), both size x size."""
    box = cell_box(bbox, *image.shape)
    mask = cell_mask(polygons, box)
    x0, y0, x1, y1 = box
    squared_mask = square_fit(mask * 255, size, Image.Resampling.NEAREST) > 127
    # Resize the raw box, then mask: resizing a masked crop would smear black into the cell's rim.
    squared = square_fit(image[y0:y1, x0:x1], size, Image.Resampling.BILINEAR) * squared_mask
    return squared.astype(np.uint8), squared_mask.astype(np.uint8)
