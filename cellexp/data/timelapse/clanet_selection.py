"""CLANet's published preprocessing, foreground mask and patch selection (GitHub LeiTong02/CLANet,
`generate_binary_masks.py` and `cell_cluster_selection.py`), as whole-array code.

The published selection walks every pixel in Python (about 1.25M iterations a frame); here the same steps are
label images, bounding boxes, summed-area tables and pairwise arrays, and give the same windows and confluencies
(tests/test_clanet_selection.py checks this against a literal per-pixel reference). The behaviour, constants and
orderings are the published ones; where a detail is ours, the docstring says so.

Frames: the full frame is kept, and the bottom `crop_bottom` rows (published: 150, the instrument's overlay strip)
are cut only for the mask and the selection, so window corners are valid in the uncropped frame as published.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.exposure import rescale_intensity
from skimage.feature import canny
from skimage.filters import threshold_otsu
from skimage.transform import resize
from skimage.util import img_as_float64

from cellexp.data.timelapse.clanet_texture import similarity, texture_histograms
from cellexp.errors import DataError

# frames of this size were upsampled to the common size before anything else
SMALL_FRAME = (944, 1280)
FRAME = (1040, 1408)
CROP_BOTTOM = 150

EIGHT = np.ones((3, 3), bool)
# binary_fill_holes with structure ones((6, 6)) reaches a background pixel q from any reached pixel (or the
# outside) at q + s, s in [-2, 3] x [-2, 3]: the even-sized structure is off-centre, so walls are jumped
# asymmetrically
_FILL_LOW, _FILL_HIGH = -2, 3
_FILL_SHIFTS = [
    (dy, dx)
    for dy in range(_FILL_LOW, _FILL_HIGH + 1)
    for dx in range(_FILL_LOW, _FILL_HIGH + 1)
    if max(abs(dy), abs(dx)) > 1  # 8-neighbours share an 8-connected label already
]
MASK_PASSES = 10
MASK_TOLERANCE = 1e-4
MIN_HOLE_PX = 64
MIN_OBJECT_PX = 100


@dataclass(frozen=True)
class ChosenPatches:
    """Top-left corners (k, 2) as (y, x), their confluency (k,), and the full-size foreground mask. Both selections
    return it; cellexp.data.timelapse.patches takes it from here, so that neither module imports the other."""

    corners: np.ndarray
    confluency: np.ndarray
    mask: np.ndarray


def published_frame(image: np.ndarray) -> np.ndarray:
    """A grey frame as float64 in [0, 1], a 944x1280 frame resized to 1040x1408; the full, uncropped frame.

    The published code read RGB JPEGs with `imread(as_gray=True)`, i.e. float grey through rgb2gray; we read grey,
    and a uint8 frame is scaled by 1/255 (img_as_float). The resize is skimage's `resize(order=1,
    anti_aliasing=True)`, as published (an upsampling, so the anti-aliasing sigma is 0); other sizes pass
    through unchanged."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise DataError(f"a grey frame is 2-D, not of shape {image.shape}")
    frame = img_as_float64(image)
    if frame.shape == SMALL_FRAME:
        frame = resize(frame, FRAME, order=1, anti_aliasing=True)
    return frame


def published_mask(frame: np.ndarray, crop_bottom: int = CROP_BOTTOM) -> np.ndarray:
    """The foreground of `frame[:-crop_bottom]` as generate_binary_masks.py finds it; bool, the cropped shape.

    Contrast stretch to the 0.2 / 99.8 percentiles, Otsu (inverted when it disagrees with the Canny edges on at
    least half the pixels: cells darker than the background), skimage Canny with its defaults, each closed with
    a 3x3 cross (border cleared), holes filled with the published ones((6, 6)) structure, then up to 10 passes
    that close and fill again until under 1e-4 of the pixels change, then holes under 64 px filled and objects
    under 100 px dropped (4-connected; strictly fewer, as skimage 0.19.3, the published pin, counted: 0.26's
    remove_small_holes / remove_small_objects defaults also drop those of exactly 64 / 100 px, so these two steps
    are ours). Canny and Otsu are the installed skimage's (0.19.3's Canny interpolated its non-maximum
    suppression in numpy, later ones in Cython; edge pixels may differ). One deliberate difference: the
    published mask was saved as a lossy JPEG and re-thresholded at > 128 before the selection; we keep the bool
    mask."""
    image = _cropped(frame, crop_bottom)
    low, high = np.percentile(image, (0.2, 99.8))
    stretched = rescale_intensity(image, in_range=(low, high))
    otsu = stretched > threshold_otsu(stretched)
    edges = canny(stretched)
    if np.count_nonzero(edges != otsu) / otsu.size >= 0.5:
        otsu = ~otsu  # the published polarity rule, for cells darker than the background
    fixed = _close(otsu) | _close(edges)
    mask = _fill_holes(fixed)
    for _ in range(MASK_PASSES):
        grown = fixed | _close(mask)
        if not (grown & ~mask).any():
            # the passes' inputs only grow, so this one lies between the last and its fill: its fill is the last
            # mask again (fill is monotone and idempotent), the published pass would change nothing and stop
            break
        new = _fill_holes(grown)
        changed = np.count_nonzero(new != mask) / mask.size
        mask = new
        if changed < MASK_TOLERANCE:
            break
    mask = ~_drop_small(~mask, MIN_HOLE_PX)  # remove_small_holes(64)
    return _drop_small(mask, MIN_OBJECT_PX)  # remove_small_objects(100)


def published_windows(
    frame: np.ndarray, mask: np.ndarray, size: int = 112, components: int = 40, keep: int = 20
) -> ChosenPatches:
    """The windows cell_cluster_selection.py picks: up to `keep` size x size windows, most confluent first.

    `frame` is the full float frame of `published_frame`, `mask` the foreground of its top mask.shape[0] rows
    (`published_mask`). Regions are the `components` largest 8-connected labels counted with the background
    label 0 (so normally components - 1 foreground components), in raster order of first appearance, then the
    tiles of every component whose half-open box holds more than 2 * size^2 foreground pixels. Each becomes a
    window at the centre of mass of the foreground in its inclusive box (tiles, and boxes of exactly size x size
    in the published max - min sense, stay where they are), clamped into the cropped frame. Overlapping windows
    are compared by colour + texture histogram intersection + IoU; the pairs at or above this frame's mean have
    their lower-confluency window dropped, in pair order. Ties at the `components` cut keep the later component
    in raster order (a stable sort, reversed as published; the published quicksort left them unspecified)."""
    mask = np.asarray(mask, bool)
    frame = np.asarray(frame)
    height, width = mask.shape
    if frame.ndim != 2 or frame.shape[1] != width or frame.shape[0] < height:
        raise DataError(f"a mask of shape {mask.shape} does not fit the top of a frame of shape {frame.shape}")
    if height < size or width < size:
        raise DataError(f"a frame of {width}x{height} (cropped) is smaller than a {size}-px patch")
    image = frame[:height]
    if image.size and (float(image.min()) < 0 or float(image.max()) > 1):
        raise DataError("the published selection takes a float frame in [0, 1] (published_frame)")
    full = np.zeros(frame.shape, bool)
    full[:height] = mask
    empty = ChosenPatches(np.zeros((0, 2), np.int64), np.zeros(0), full)
    boxes = _component_boxes(mask, components)
    if not len(boxes):
        return empty
    area = np.int64(size) * size
    table = _table(mask)
    corners = np.concatenate([_component_corners(boxes, table, size), _tiles(boxes, table, size)])
    corners = np.minimum(corners, [height - size, width - size])  # into the cropped frame, as published
    y, x = corners[:, 0], corners[:, 1]
    confluency = _box_sum(table, y, x, y + size, x + size) / area
    texture = texture_histograms(image, corners, size)
    first, second = _overlapping_pairs(y, x, size)
    dy, dx = np.abs(y[first] - y[second]), np.abs(x[first] - x[second])
    dropped = np.zeros(len(corners), bool)
    if len(first):
        similar = similarity(texture[first], texture[second], dy, dx, size)
        close = similar >= similar.mean()
        for i, j in zip(first[close].tolist(), second[close].tolist(), strict=True):
            if dropped[i] or dropped[j]:
                continue
            dropped[j if confluency[i] >= confluency[j] else i] = True
    left = np.flatnonzero(~dropped)
    # the published ranking: a stable ascending sort, reversed, so equal confluencies come latest region first
    order = left[np.argsort(confluency[left], kind="stable")[::-1][:keep]]
    return ChosenPatches(corners[order].astype(np.int64), confluency[order], full)


def _cropped(frame: np.ndarray, crop_bottom: int) -> np.ndarray:
    frame = np.asarray(frame, np.float64)
    if frame.ndim != 2:
        raise DataError(f"a grey frame is 2-D, not of shape {frame.shape}")
    if not 0 <= crop_bottom < frame.shape[0]:
        raise DataError(f"cannot cut {crop_bottom} rows off a frame of {frame.shape[0]} rows")
    return frame[: frame.shape[0] - crop_bottom]


def _close(mask: np.ndarray) -> np.ndarray:
    """scipy's binary_dilation then binary_erosion with their default 3x3 cross and border 0, on slices: the
    erosion clears the 1-px frame of the image, as published."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    shrunk = grown.copy()
    shrunk[1:] &= grown[:-1]
    shrunk[:-1] &= grown[1:]
    shrunk[:, 1:] &= grown[:, :-1]
    shrunk[:, :-1] &= grown[:, 1:]
    shrunk[[0, -1]] = False
    shrunk[:, [0, -1]] = False
    return shrunk


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """`binary_fill_holes(mask, structure=np.ones((6, 6)))`, on background components instead of a propagation.

    An 8-connected background component is reached as a whole (the structure holds every 8-neighbour both ways),
    so reachability from the outside is decided per component: those within the structure's reach of the border
    are reached, and a reached component reaches another that lies at one of the structure's shifts. Only the
    pixels of components not reached from the border are looked at. Faster than scipy's propagation, which also
    corrupts memory on images narrower than the structure."""
    background = ~mask
    labels, count = ndimage.label(background, structure=EIGHT)
    if not count:
        return mask.copy()
    height, width = mask.shape
    reached = np.zeros(count + 1, bool)
    near, far = -_FILL_LOW, _FILL_HIGH  # the border rows and columns the outside reaches
    for band in (labels[:near], labels[height - far :], labels[:, :near], labels[:, width - far :]):
        reached[band.ravel()] = True
    reached[0] = False
    flat = labels.ravel()
    # the pixels of components not reached from the border (so the structure's reach inside the image) next to
    # the foreground: a shift from any pixel to another component crosses the foreground, and the last pixel of
    # its own component on the straight 8-path there is next to it, with a shift inside the structure too
    inside = np.flatnonzero((background & _touching(mask)).ravel() & ~reached[flat])
    if len(inside):
        own = flat[inside]
        sources, targets = [], []
        for dy, dx in _FILL_SHIFTS:
            other = flat[inside + (dy * width + dx)]
            link = (other != own) & (other != 0)
            sources.append(other[link])
            targets.append(own[link])
        source, target = np.concatenate(sources), np.concatenate(targets)
        while True:
            new = reached[source] & ~reached[target]
            if not new.any():
                break
            reached[target[new]] = True
    return ~reached[labels]


def _touching(mask: np.ndarray) -> np.ndarray:
    """The mask grown by its 8-neighbours (a 3x3 dilation, on slices)."""
    rows = mask.copy()
    rows[:, 1:] |= mask[:, :-1]
    rows[:, :-1] |= mask[:, 1:]
    out = rows.copy()
    out[1:] |= rows[:-1]
    out[:-1] |= rows[1:]
    return out


def _drop_small(mask: np.ndarray, area: int) -> np.ndarray:
    """mask without its 4-connected components of fewer than `area` px (skimage's remove_small_objects, strict)."""
    labels, count = ndimage.label(mask)
    if not count:
        return mask
    small = np.bincount(labels.ravel()) < area
    small[0] = False
    return mask & ~small[labels]


def _component_boxes(mask: np.ndarray, components: int) -> np.ndarray:
    """Inclusive boxes (n, 4) as (min_y, min_x, max_y, max_x) of the kept components, in raster order of first
    appearance (the published dict order, and skimage's numbering); those numbers decide ties at the cut."""
    labels, count = ndimage.label(mask, structure=EIGHT)
    if not count:
        return np.zeros((0, 4), np.int64)
    slices = ndimage.find_objects(labels)
    min_y = np.array([s[0].start for s in slices], np.int64)
    max_y = np.array([s[0].stop - 1 for s in slices], np.int64)
    min_x = np.array([s[1].start for s in slices], np.int64)
    max_x = np.array([s[1].stop - 1 for s in slices], np.int64)
    # each component's first pixel: the first of its label in its box's top row (the rows laid end to end; a
    # component is at least as wide as its box, so this is at most the frame's pixel count)
    width = max_x - min_x + 1
    owner = np.repeat(np.arange(count), width)
    at = np.arange(width.sum()) - np.repeat(np.cumsum(width) - width, width) + min_x[owner]
    hits = np.flatnonzero(labels[min_y[owner], at] == owner + 1)
    first_x = at[hits[np.unique(owner[hits], return_index=True)[1]]]
    raster = np.lexsort((first_x, min_y))  # scipy's labels in raster order of their first pixel
    pixels = np.bincount(labels.ravel(), minlength=count + 1)
    ranked = np.concatenate([[pixels[0]], pixels[1:][raster]])  # index = the raster-order label, 0 = background
    top = np.argsort(ranked, kind="stable")[::-1][:components]
    chosen = raster[np.sort(top[top > 0]) - 1]
    return np.stack([min_y[chosen], min_x[chosen], max_y[chosen], max_x[chosen]], axis=1)


def _table(mask: np.ndarray) -> np.ndarray:
    """The summed-area table of the mask, padded with a leading zero row and column."""
    height, width = mask.shape
    table = np.zeros((height + 1, width + 1), np.int32 if mask.size < 2**31 else np.int64)
    np.cumsum(mask, axis=1, dtype=table.dtype, out=table[1:, 1:])
    np.cumsum(table[1:, 1:], axis=0, out=table[1:, 1:])
    return table


def _box_sum(table: np.ndarray, y0, x0, y1, x1) -> np.ndarray:
    """Sums over the half-open boxes [y0, y1) x [x0, x1) of a padded summed-area table."""
    return table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]


def _component_corners(boxes: np.ndarray, table: np.ndarray, size: int) -> np.ndarray:
    """Each component's window (published region_correction): at the centre of mass of all foreground in its
    inclusive box minus size / 2, truncated by int(), moved inside the frame by the caller; a box whose
    max - min is size on both axes is kept at its top-left corner. The centre of mass comes from the box's row and
    column counts (differences of the table), summed as integers, so exactly as scipy's float sums of integers."""
    min_y, min_x, max_y, max_x = boxes.T
    n = _box_sum(table, min_y, min_x, max_y + 1, max_x + 1).astype(np.float64)
    centre = []
    for lo, hi, across_lo, across_hi, axis in ((min_y, max_y, min_x, max_x, 0), (min_x, max_x, min_y, max_y, 1)):
        length = hi - lo + 1
        owner = np.repeat(np.arange(len(boxes)), length)
        at = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length) + lo[owner]
        a, b = across_lo[owner], across_hi[owner] + 1
        if axis == 0:  # the count of each row of the box
            line = _box_sum(table, at, a, at + 1, b)
        else:  # of each column
            line = _box_sum(table, a, at, b, at + 1)
        centre.append(np.bincount(owner, weights=line.astype(np.int64) * at, minlength=len(boxes)) / n)
    corners = np.stack([np.trunc(c - size / 2) for c in centre], axis=1).astype(np.int64)
    corners = np.maximum(corners, 0)
    exact = (max_y - min_y == size) & (max_x - min_x == size)
    corners[exact] = boxes[exact][:, :2]
    return corners


def _tiles(boxes: np.ndarray, table: np.ndarray, size: int) -> np.ndarray:
    """The tiles of the large components, in the published order: component, then tile row, then tile column, on a
    size stride from the box's corner, ceil((max - min) / size) per axis (moved inside the frame by the caller)."""
    min_y, min_x, max_y, max_x = boxes.T
    large = _box_sum(table, min_y, min_x, max_y, max_x) > 2 * size * size  # the half-open box, as published
    h, w = max_y[large] - min_y[large], max_x[large] - min_x[large]
    rows, cols = -(-h // size), -(-w // size)
    per = rows * cols
    owner = np.repeat(np.arange(len(per)), per)
    index = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
    y = min_y[large][owner] + size * (index // cols[owner])
    x = min_x[large][owner] + size * (index % cols[owner])
    return np.stack([y, x], axis=1).astype(np.int64)


def _overlapping_pairs(y: np.ndarray, x: np.ndarray, size: int, block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (i, j), i < j, of overlapping windows, in the published order (i, then j). For equal squares the
    published corner-in-box tests are exactly |dy| < size and |dx| < size. In blocks of i, so that a frame with
    thousands of tiles does not need all n^2 pairs at once."""
    firsts, seconds = [], []
    index = np.arange(len(y))
    for start in range(0, len(y), block):
        rows = index[start : start + block, None]
        near = (np.abs(y[rows] - y) < size) & (np.abs(x[rows] - x) < size) & (index > rows)
        i, j = np.nonzero(near)  # row-major: the published order within the block
        firsts.append(i + start)
        seconds.append(j)
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)
