"""Cut one cell out of its image: rasterise its polygons inside its own bounding box, and either black out the rest
(LIVECell-CLS's crops) or keep the cell's surroundings as imaged (context crops, for Grad-CAMO)."""

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
    rles = mask_utils.frPyObjects(shifted, y1 - y0, x1 - x0)
    return mask_utils.decode(rles[0] if len(rles) == 1 else mask_utils.merge(rles))


def _fitted(h: int, w: int, size: int) -> tuple[int, int, int, int]:
    """Height, width, top and left of an h x w array scaled (longer side = size) and centred in size x size."""
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    return nh, nw, (size - nh) // 2, (size - nw) // 2


def square_fit(array: np.ndarray, size: int, resample: Image.Resampling) -> np.ndarray:
    """Aspect-preserving resize (longer side = size) then centred zero-padding to size x size."""
    nh, nw, top, left = _fitted(*array.shape, size)
    out = np.zeros((size, size), dtype=array.dtype)
    out[top : top + nh, left : left + nw] = np.asarray(Image.fromarray(array).resize((nw, nh), resample))
    return out


def square_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """square_fit for 0/1 masks, nearest neighbour (pixel centres) in numpy: cheaper than a trip through PIL."""
    h, w = mask.shape
    nh, nw, top, left = _fitted(h, w, size)
    rows = np.minimum(((np.arange(nh) + 0.5) * (h / nh)).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(nw) + 0.5) * (w / nw)).astype(np.intp), w - 1)
    out = np.zeros((size, size), dtype=np.uint8)
    out[top : top + nh, left : left + nw] = mask[rows][:, cols]
    return out


def cut_cell(
    image: np.ndarray, polygons: list[list[float]], bbox: list[float], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One masked, squared crop and its mask (uint8 0/1), both size x size."""
    box = cell_box(bbox, *image.shape)
    return square_cell(Image.fromarray(image), cell_mask(polygons, box), box, size)


def square_cell(
    image: Image.Image, mask: np.ndarray, box: tuple[int, int, int, int], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The box's pixels and the cell's mask in it, squared to size x size, black outside the cell.

    The raw box is resized, then masked (resizing a masked crop would smear black into the cell's
    rim); PIL resizes straight from the box of the whole image, which it holds once for all cells.
    """
    squared_mask = square_mask(mask, size)
    nh, nw, top, left = _fitted(box[3] - box[1], box[2] - box[0], size)
    resized = np.asarray(image.resize((nw, nh), Image.Resampling.BILINEAR, box=box))
    squared = np.zeros((size, size), dtype=resized.dtype)
    squared[top : top + nh, left : left + nw] = resized
    squared *= squared_mask
    return squared, squared_mask


def context_cell(
    image: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int], size: int, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """A square window centred on the cell's box, its side the box's longer side times (1 + 2 margin), with the
    pixels as imaged (neighbours and background included; zero beyond the image's edge), and the cell's own mask
    in it; both resized to size x size. Grad-CAMO needs this: in a black-background crop nothing outside the cell
    could be looked at."""
    x0, y0, x1, y1 = box
    side = max(1, math.ceil(max(x1 - x0, y1 - y0) * (1 + 2 * margin)))
    left, top = (x0 + x1 - side) // 2, (y0 + y1 - side) // 2
    window = np.zeros((side, side), image.dtype)
    height, width = image.shape
    r0, c0, r1, c1 = max(top, 0), max(left, 0), min(top + side, height), min(left + side, width)
    window[r0 - top : r1 - top, c0 - left : c1 - left] = image[r0:r1, c0:c1]
    placed = np.zeros((side, side), np.uint8)
    placed[y0 - top : y1 - top, x0 - left : x1 - left] = mask
    if side == size:
        return window, placed
    crop = np.asarray(Image.fromarray(window).resize((size, size), Image.Resampling.BILINEAR))
    return crop, square_mask(placed, size)


def cut_channels(
    pictures: list[Image.Image],
    pixels: np.ndarray,
    mask: np.ndarray,
    box: tuple[int, int, int, int],
    size: int,
    margin: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One cell of a (C, H, W) image, every channel cut alike: a (C, S, S) crop in the image's dtype and the cell's
    (S, S) mask; on black (`margin` 0, from `pictures`, the channels as PIL images made once per image) or in its
    surroundings. The crop store and task=predict both cut through here."""
    if margin > 0:
        cut = [context_cell(channel, mask, box, size, margin) for channel in pixels]
    else:
        cut = [square_cell(picture, mask, box, size) for picture in pictures]
    return np.stack([crop for crop, _ in cut]), cut[0][1]


# more vertices than any cell outline has: a file that gives more is damaged
MAX_VERTICES = 4096
# coordinates may sit on the image's edge, or a pixel beyond it after rounding
EDGE_SLACK = 1.0


def polygon_problem(polygons: list[list], shape: tuple[int, int]) -> str | None:
    """Why a cell's polygons cannot be rasterised safely, or None: coordinates that are not finite numbers, an
    outline of absurd length, or one reaching outside the image (any of these once made pycocotools allocate
    gigabytes or crash its process)."""
    height, width = shape
    for poly in polygons:
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly):
            return "polygon coordinates that are not numbers"
        xy = np.asarray(poly, dtype=np.float64)
        if not np.isfinite(xy).all():
            return "polygon coordinates that are not finite"
        if len(xy) > 2 * MAX_VERTICES:
            return f"a polygon of {len(xy) // 2} vertices (at most {MAX_VERTICES})"
        x, y = xy[0::2], xy[1::2]
        if (
            x.min() < -EDGE_SLACK
            or y.min() < -EDGE_SLACK
            or x.max() > width + EDGE_SLACK
            or y.max() > height + EDGE_SLACK
        ):
            return f"a polygon reaching outside the {width}x{height} image"
    return None


def outline_problem(polygons: list[list[float]], mask: np.ndarray) -> str | None:
    """Why a cell's outline cannot be trusted, or None: no pixels, or edges that cross (a figure eight, or two
    neighbouring vertices swapped)."""
    if not polygons or not mask.any():
        return "empty polygon"
    if any(_edges_cross(np.asarray(poly, dtype=np.float64).reshape(-1, 2)) for poly in polygons):
        return "self-intersecting polygon"
    return None


def _edges_cross(xy: np.ndarray, chunk: int = 256) -> bool:
    """Whether two non-adjacent edges of the closed polygon `xy` (n, 2) cross properly (touching does not count)."""
    n = len(xy)
    if n < 4:
        return False
    start, end = xy, np.roll(xy, -1, axis=0)
    direction = end - start
    index = np.arange(n)
    for first in range(0, n, chunk):
        rows = slice(first, first + chunk)
        a, d = start[rows, None], direction[rows, None]  # edges i (chunk, 1, 2) against all edges j (1, n, 2)
        side_start = _cross(d, start[None] - a)
        side_end = _cross(d, end[None] - a)
        back_start = _cross(direction[None], a - start[None])
        back_end = _cross(direction[None], a + d - start[None])
        crossing = (side_start * side_end < 0) & (back_start * back_end < 0)
        gap = np.abs(index[rows, None] - index[None])
        crossing &= (gap > 1) & (gap < n - 1)  # edges that share a vertex meet at it
        if crossing.any():
            return True
    return False


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def square_masked_crop(pixels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A published crop whose background was blacked out (LIVECell-CLS): its mask is its nonzero pixels (in any
    channel). (H, W) pixels give an (S, S) crop, (C, H, W) ones a (C, S, S) crop."""
    stack = pixels if pixels.ndim == 3 else pixels[None]
    mask = square_mask((stack > 0).any(axis=0).astype(np.uint8), size)
    crop = np.stack([square_fit(channel, size, Image.Resampling.BILINEAR) for channel in stack]) * mask
    return (crop if pixels.ndim == 3 else crop[0]), mask
