"""Patches of brightfield frames where the cells are, and the patch store that keeps them for every later run.

Selection (CLANet's recipe, on whole arrays): a foreground mask from an Otsu threshold of the
illumination-flattened image fused with Canny edges, closed, holes filled, specks removed; candidate
centres at each component's centre of mass and on a half-patch grid over the mask; each candidate
window ranked by confluency (its mask fraction, from a summed-area table), near-duplicates (overlap
above `max_overlap`) dropped greedily, the top k kept. The mask is found on a `downsample`-times
smaller image, which changes little at cell scale and makes large frames fast. `method: published` runs
CLANet's published code instead, step for step (`cellexp.data.timelapse.clanet_selection`), and stores the patches
of its preprocessed frame.

The store reuses the crop store's shards (`cellexp.data.store`): patches as (n, S, S) uint8, each
patch's slice of the foreground mask as its mask, one manifest row per patch (the frame's path,
its well, its elapsed hours, the window). It is keyed by a hash of the frames and the settings,
built in a temporary folder and renamed into place under a lock.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage
from skimage.feature import canny
from skimage.filters import threshold_otsu
from skimage.transform import downscale_local_mean

from cellexp.data.build_once import build_once
from cellexp.data.store import SplitStore, finish_split, shard_done, write_shard
from cellexp.data.timelapse.clanet_selection import ChosenPatches, published_frame, published_mask, published_windows
from cellexp.data.timelapse.folders import Frame
from cellexp.errors import ConfigError, DataError
from cellexp.progress import progress

METHODS = ("ours", "published")


@dataclass(frozen=True)
class PatchSettings:
    size: int = 112
    top_k: int = 16
    max_overlap: float = 0.5
    min_confluency: float = 0.05
    # grey levels between Otsu's two classes of |image - local mean| below which a frame has no foreground
    min_contrast: float = 8.0
    downsample: int = 2
    canny_sigma: float = 2.0
    min_object_px: int = 16
    shard_images: int = 64
    # "ours" (above) or "published" (CLANet's code: size, top_k and the two below; the others are ours only)
    method: str = "ours"
    # published only: rows cut off each frame's bottom before the mask (CLANet: 150); corners stay full-frame
    crop_bottom: int = 0
    # published only: the largest 8-connected labels kept, the background's included (CLANet: 40)
    components: int = 40

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"dataset.patches.method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.method == "ours" and self.crop_bottom:
            raise ConfigError("dataset.patches.crop_bottom is for method=published only; ours uses the whole frame")
        if self.crop_bottom < 0:
            raise ConfigError(f"dataset.patches.crop_bottom must be 0 or more, not {self.crop_bottom}")
        if self.components < 2:
            raise ConfigError(
                f"dataset.patches.components counts the background too: at least 2, not {self.components}"
            )


def foreground_mask(image: np.ndarray, settings: PatchSettings) -> np.ndarray:
    """Boolean foreground at 1/`downsample` scale: Otsu of |image - local mean| fused with Canny edges."""
    f = max(1, settings.downsample)
    x = image.astype(np.float32)
    if f > 1:
        x = downscale_local_mean(x[: x.shape[0] // f * f, : x.shape[1] // f * f], (f, f))
    flat = np.abs(x - ndimage.uniform_filter(x, size=max(3, settings.size // f)))
    flat = ndimage.uniform_filter(flat, size=3)
    if float(flat.max() - flat.min()) < 1e-6:
        return np.zeros(x.shape, bool)
    mask = flat > threshold_otsu(flat)
    if not mask.any() or flat[mask].mean() - flat[~mask].mean() < settings.min_contrast:
        return np.zeros(x.shape, bool)  # nothing stands out from the noise: no foreground
    # the strongest edges only (quantiles, so the same on any contrast): cell outlines, not noise
    mask |= canny(
        x, sigma=max(1.0, settings.canny_sigma / f), low_threshold=0.85, high_threshold=0.95, use_quantiles=True
    )
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3), bool), iterations=1)
    mask |= _small(ndimage.binary_fill_holes(mask) & ~mask, (settings.size // f) ** 2 // 4)  # cell interiors only
    return mask & ~_small(mask, max(1, settings.min_object_px // (f * f)))


def _small(mask: np.ndarray, area: int) -> np.ndarray:
    """The components of mask smaller than area px."""
    labels, count = ndimage.label(mask)
    if not count:
        return np.zeros_like(mask)
    sizes = np.bincount(labels.ravel())
    small = sizes < area
    small[0] = False
    return small[labels]


def select_patches(image: np.ndarray, settings: PatchSettings) -> ChosenPatches:
    """Up to top_k patch windows of `settings.size` px, most confluent first, by `settings.method`."""
    return _select(image, settings, pixels=False)[1]


def _select(image: np.ndarray, settings: PatchSettings, pixels: bool = True) -> tuple[np.ndarray, ChosenPatches]:
    """The uint8 frame the patches are cut from (with `pixels`), and the windows. The published code cut its
    patches from the preprocessed frame (944x1280 ones resized) as uint8, `(x * 255).astype(uint8)`: truncated,
    as here."""
    if settings.method == "ours":
        return image, _select_ours(image, settings)
    if settings.method == "published":
        frame = published_frame(image)
        mask = published_mask(frame, settings.crop_bottom)
        chosen = published_windows(frame, mask, settings.size, settings.components, settings.top_k)
        return ((frame * 255).astype(np.uint8) if pixels else frame), chosen
    raise ConfigError(f"dataset.patches.method must be one of {', '.join(METHODS)}, not {settings.method!r}")


def _select_ours(image: np.ndarray, settings: PatchSettings) -> ChosenPatches:
    """Up to top_k patch windows of `settings.size` px, most confluent first, none overlapping another by much."""
    f = max(1, settings.downsample)
    small = foreground_mask(image, settings)
    height, width = image.shape
    side = settings.size // f
    if small.shape[0] < side or small.shape[1] < side:
        raise DataError(f"image {width}x{height} is smaller than a {settings.size}-px patch")
    labels, count = ndimage.label(small)
    centres = [np.zeros((0, 2))]
    if count:
        centres.append(np.asarray(ndimage.center_of_mass(small, labels, np.arange(1, count + 1))))
    step = max(1, side // 2)
    gy, gx = np.mgrid[side // 2 : small.shape[0] : step, side // 2 : small.shape[1] : step]
    grid = np.stack([gy.ravel(), gx.ravel()], axis=1)
    centres.append(grid[small[grid[:, 0], grid[:, 1]]])
    centres = np.concatenate(centres)
    limit = np.array([small.shape[0] - side, small.shape[1] - side])
    corners = np.clip(np.round(centres - side / 2).astype(np.int64), 0, limit)
    corners = np.unique(corners, axis=0)
    table = np.pad(small.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    y, x = corners[:, 0], corners[:, 1]
    conf = (table[y + side, x + side] - table[y, x + side] - table[y + side, x] + table[y, x]) / (side * side)
    order = np.argsort(-conf, kind="stable")
    corners, conf = corners[order], conf[order]
    chosen = conf >= settings.min_confluency
    corners, conf = corners[chosen], conf[chosen]
    kept = _non_overlapping(corners, side, settings.max_overlap, settings.top_k)
    mask = np.zeros((height, width), bool)
    up = np.repeat(np.repeat(small, f, axis=0), f, axis=1)
    mask[: up.shape[0], : up.shape[1]] = up
    full = np.minimum(corners[kept] * f, [height - settings.size, width - settings.size])
    return ChosenPatches(full, conf[kept], mask)


def _non_overlapping(corners: np.ndarray, side: int, max_overlap: float, top_k: int) -> np.ndarray:
    """Greedy suppression in rank order: a window whose intersection-over-union with a kept one exceeds max_overlap
    is dropped. The pairwise overlaps are one array operation; the loop only walks the ranking."""
    if not len(corners):
        return np.zeros(0, np.int64)
    d = np.clip(side - np.abs(corners[:, None, :] - corners[None, :, :]), 0, None)
    inter = d[..., 0] * d[..., 1]
    iou = inter / (2 * side * side - inter)
    suppressed = np.zeros(len(corners), bool)
    kept = []
    for i in range(len(corners)):
        if suppressed[i]:
            continue
        kept.append(i)
        if len(kept) == top_k:
            break
        suppressed |= iou[i] > max_overlap
    return np.asarray(kept, np.int64)


def read_frame(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("L"))


def store_key(root: Path, frames: list[Frame], settings: PatchSettings) -> str:
    """A hash of the frames (paths, sizes, times of change) and the settings: the store's folder name."""
    digest = hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode())
    for frame in frames:
        stat = (Path(root) / frame.path).stat()
        digest.update(f"{frame.path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def prepare_patch_store(root: Path, frames: list[Frame], settings: PatchSettings, cache_dir: Path) -> SplitStore:
    """The patch store of these frames, built once (resuming from finished shards); frames that fail (unreadable,
    no foreground) are in its summary."""
    target = Path(cache_dir) / store_key(root, frames, settings)
    return SplitStore(build_once(target, lambda staging: _build(Path(root), frames, settings, staging), resumable=True))


def _build(root: Path, frames: list[Frame], settings: PatchSettings, out: Path) -> None:
    shards = [frames[i : i + settings.shard_images] for i in range(0, len(frames), settings.shard_images)]
    lines = sorted({f.line for f in frames})
    with progress(total=len(frames), desc="patch selection", unit="image") as bar:
        for number, chunk in enumerate(shards):
            if not shard_done(out, number):
                _build_shard(root, chunk, settings, out, number, lines)
            bar.update(len(chunk))
    summary = {"settings": {**asdict(settings), "crop_size": settings.size}, "class_names": lines}
    finish_split(out, len(shards), summary)


def _build_shard(root: Path, frames: list[Frame], settings: PatchSettings, folder: Path, number: int, lines) -> None:
    patches, masks, rows = [], [], []
    stats = {"per_class": {}, "dropped": {}, "failed_images": [], "invalid_cells": []}
    s = settings.size
    for frame in frames:
        try:
            image, chosen = _select(read_frame(root / frame.path), settings)
        except (OSError, UnidentifiedImageError, DataError) as err:
            stats["failed_images"].append({"image": frame.path, "reason": str(err)})
            continue
        if not len(chosen.corners):
            stats["failed_images"].append({"image": frame.path, "reason": "no foreground"})
            continue
        for rank, ((y, x), conf) in enumerate(zip(chosen.corners, chosen.confluency, strict=True)):
            patches.append(image[y : y + s, x : x + s])
            masks.append(chosen.mask[y : y + s, x : x + s])
            rows.append(
                {
                    "index": len(rows),
                    "label": lines.index(frame.line),
                    "class_name": frame.line,
                    "image_file": frame.path,
                    "annotation_id": rank,
                    "well": frame.well,
                    "elapsed_hours": frame.hours,
                    "bbox_x": int(x),
                    "bbox_y": int(y),
                    "bbox_w": s,
                    "bbox_h": s,
                    "area": round(float(conf), 4),
                }
            )
            stats["per_class"][frame.line] = stats["per_class"].get(frame.line, 0) + 1
    empty = np.zeros((0, s, s), np.uint8)
    write_shard(
        folder,
        number,
        np.stack(patches).astype(np.uint8) if patches else empty,
        np.stack(masks).astype(np.uint8) if masks else empty,
        rows,
        stats,
    )
