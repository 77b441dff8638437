"""Turn a dataset's files into a crop store, once per (source files, settings), in parallel and resumably.

Each split is prepared into its own folder, named by a hash of that split's inputs and the
settings. The work is cut into shards of a few images; worker processes write each finished shard
into the folder's staging sibling (`cellexp.data.build_once`), so a killed preparation continues where it
stopped, and memory holds one shard per worker, whatever the dataset's size. When every shard is there, the
split is finished (manifest, summary, `.complete`) and renamed into place under a file lock: concurrent
ranks or jobs wait for it and reuse it. A split whose files cannot be read at all (malformed json) is
reported by name after the other splits are prepared; they are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cellexp.data.build_once import build_once
from cellexp.data.crops import (
    cell_box,
    cell_mask,
    cut_channels,
    outline_problem,
    polygon_problem,
    square_masked_crop,
)
from cellexp.data.intensity import to_uint8
from cellexp.data.livecell.coco import read_coco
from cellexp.data.livecell.release import CELL_LINES, parse_image_name
from cellexp.data.pixels import READ_ERRORS, describe, pixel_kind, read_pixels
from cellexp.data.shards import file_identity, run_shards
from cellexp.data.store import CropStore, SplitStore, finish_split, shard_done, write_shard
from cellexp.errors import DataError
from cellexp.progress import progress

log = logging.getLogger(__name__)

# 3: crops hold every channel of the images, 16-bit images as they are (2: grey 8-bit crops)
STORE_VERSION = 3
# what an image that reads but cannot be cut raises (a name without a cell line, a damaged picture)
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)


@dataclass(frozen=True)
class CropSettings:
    crop_size: int = 96
    min_area: float = 0.0
    drop_border_cells: bool = False
    # 0: the cell on black (LIVECell-CLS); > 0: a window around it as imaged, margin x its longer side each way
    context_margin: float = 0.0
    # source images per shard: the unit of parallel work, of resuming, and of memory per worker
    shard_images: int = 16


@dataclass(frozen=True)
class SplitSource:
    """LIVECell: a COCO annotation file and the folder its images are in."""

    annotation_file: Path
    image_dir: Path

    def identity(self) -> dict:
        return {"annotations": file_identity(self.annotation_file), "images": str(self.image_dir.resolve())}

    def items(self) -> tuple[list, list[dict]]:
        """One item per image, (file name, path, annotations), and the entries skipped as unusable (named)."""
        coco, skipped = read_coco(self.annotation_file)
        items = [
            (coco.imgs[i]["file_name"], self.image_dir / coco.imgs[i]["file_name"], coco.imgToAnns.get(i, []))
            for i in sorted(coco.imgs)
        ]
        return items, skipped


@dataclass(frozen=True)
class CropFolderSource:
    """LIVECell-CLS: one png per cell under <split>/<cell line>/, background already black."""

    folder: Path

    def identity(self) -> dict:
        digest = hashlib.sha256()
        for path in self._files():
            stat = path.stat()
            digest.update(f"{path.relative_to(self.folder)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        return {"folder": str(self.folder.resolve()), "files": digest.hexdigest()}

    def items(self) -> tuple[list, list[dict]]:
        return [(str(path.relative_to(self.folder)), path, None) for path in self._files()], []

    def _files(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in (".png", ".tif", ".tiff", ".jpg"))


Source = SplitSource | CropFolderSource


def split_key(split: str, source: Source, settings: CropSettings) -> str:
    """Hash of what a split's crops depend on: its files' identity and the settings."""
    payload = {"split": split, "source": source.identity(), "settings": asdict(settings), "version": STORE_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def prepare_crop_store(
    sources: Mapping[str, Source], settings: CropSettings, cache_dir: Path, workers: int | None = None
) -> CropStore:
    """The store for these sources and settings; splits without a finished folder are prepared first."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    splits, unreadable = {}, []
    for split, source in sources.items():
        try:
            splits[split] = prepare_split(split, source, settings, cache_dir, workers)
        except DataError as err:
            log.error("split %s not prepared: %s", split, err)
            unreadable.append(f"{split}: {err}")
    if unreadable:
        kept = f"; the other splits are prepared and kept ({', '.join(splits)})" if splits else ""
        raise DataError("; ".join(unreadable) + kept)
    forms = {name: (store.channels, store.dtype) for name, store in splits.items()}
    if len(set(forms.values())) > 1:
        shown = ", ".join(f"{name} {pixel_kind(*form)}" for name, form in forms.items())
        raise DataError(f"the splits' images differ in channels or bit depth ({shown}): a model takes one kind")
    return CropStore(splits, list(CELL_LINES))


def prepare_split(
    split: str, source: Source, settings: CropSettings, cache_dir: Path, workers: int | None
) -> SplitStore:
    target = cache_dir / f"{split}-{split_key(split, source, settings)}"
    build_once(target, lambda staging: _build_split(split, source, settings, staging, workers), resumable=True)
    return SplitStore(target)


def _build_split(split: str, source: Source, settings: CropSettings, out: Path, workers: int | None) -> None:
    items, orphans = source.items()
    shards = [items[i : i + settings.shard_images] for i in range(0, len(items), settings.shard_images)]
    todo = [shard for shard in range(len(shards)) if not shard_done(out, shard)]
    if len(todo) < len(shards):
        log.info("%s: resuming, %d of %d shards already prepared", split, len(shards) - len(todo), len(shards))
    form = _form(items)
    jobs = [(out, shard, shards[shard], settings, split, form) for shard in todo]
    bar = progress(total=sum(len(shards[s]) for s in todo), desc=f"preparing {split} crops", unit="img")
    crops = 0
    for images, made in run_shards(jobs, workers, _prepare_shard):
        crops += made
        bar.update(images)
        bar.set_postfix(crops=crops)
    bar.close()
    info = {"split": split, "settings": asdict(settings), "invalid_cells": orphans, **form}
    summary = finish_split(out, len(shards), info)
    log.info(
        "%s crops ready: %d crops from %d images, %d images failed, %d cells dropped",
        split,
        summary["crops"],
        len(items),
        len(summary["failed_images"]),
        sum(summary["dropped"].values()),
    )


def _form(items: list) -> dict:
    """The channels and pixel type of the split's first readable image: what its crops are stored as; an image of
    another kind is listed as failed. A split of unreadable images only gets grey 8-bit (it will hold no crops)."""
    for name, path, _ in items:
        try:
            pixels = read_pixels(path)
        except READ_ERRORS:
            continue
        return {"channels": len(pixels), "dtype": str(pixels.dtype), "form_from": name}
    return {"channels": 1, "dtype": "uint8", "form_from": None}


def _read_formed(path: Path, form: dict) -> np.ndarray:
    """The image's (C, H, W) pixels, if they are of the split's kind (a ValueError naming both, if not)."""
    pixels = read_pixels(path)
    if len(pixels) != form["channels"] or str(pixels.dtype) != form["dtype"]:
        expected = pixel_kind(form["channels"], form["dtype"])
        raise ValueError(f"{describe(pixels)}; the split's images have {expected} (as {form['form_from']} has)")
    return pixels


def _prepare_shard(job) -> tuple[int, int]:
    """Cut one shard's images into crops and write the shard; returns (images, crops)."""
    folder, shard, items, settings, split, form = job
    crops, masks, rows = [], [], []
    stats = {"per_class": Counter(), "dropped": Counter(), "failed_images": [], "invalid_cells": []}
    for name, path, image_annotations in items:
        try:
            pixels = _read_formed(path, form)
        except READ_ERRORS as err:
            stats["failed_images"].append({"split": split, "image": name, "reason": str(err) or type(err).__name__})
            continue
        try:
            cells = (
                _livecell_cells(name, pixels, image_annotations, settings, stats)
                if image_annotations is not None
                else _published_crop(name, pixels, settings)
            )
        except IMAGE_ERRORS as err:
            stats["failed_images"].append({"split": split, "image": name, "reason": str(err) or type(err).__name__})
            continue
        for crop, mask, row in cells:
            crops.append(crop)
            masks.append(mask)
            rows.append({"index": len(rows), **row})
            stats["per_class"][row["class_name"]] += 1
    size, channels = settings.crop_size, form["channels"]
    stacked = np.stack(crops) if crops else np.zeros((0, channels, size, size), form["dtype"])
    write_shard(
        folder,
        shard,
        stacked[:, 0] if channels == 1 else stacked,  # grey crops keep the (n, S, S) layout
        np.stack(masks) if masks else np.zeros((0, size, size), np.uint8),
        rows,
        stats,
    )
    return len(items), len(rows)


def _livecell_cells(
    name: str, pixels: np.ndarray, annotations: list[dict], settings: CropSettings, stats: dict
) -> list:
    """The crops of one (C, H, W) image's annotated cells."""
    fields = parse_image_name(name)
    pictures = [Image.fromarray(channel) for channel in pixels]
    shape = pixels.shape[1:]
    cells = []
    for ann in annotations:
        reason = _filter_reason(ann, shape, settings)  # counted, not listed: there may be many
        polygons = [p for p in ann.get("segmentation") or [] if isinstance(p, list) and len(p) >= 6]
        if reason is None:
            # checked before rasterising: one NaN or huge coordinate would make pycocotools allocate gigabytes
            reason = polygon_problem(polygons, shape)
            if reason is None:
                box = cell_box(ann["bbox"], *shape)
                mask = cell_mask(polygons, box) if polygons else np.zeros((1, 1), np.uint8)
                reason = outline_problem(polygons, mask)
            if reason is not None:
                stats["invalid_cells"].append({"image": name, "annotation_id": ann["id"], "reason": reason})
        if reason is not None:
            stats["dropped"][reason] += 1
            continue
        crop, squared = cut_channels(pictures, pixels, mask, box, settings.crop_size, settings.context_margin)
        cells.append((crop, squared, _livecell_row(fields, name, ann)))
    return cells


def _published_crop(name: str, pixels: np.ndarray, settings: CropSettings) -> list:
    line = crop_class(name)
    crop, mask = square_masked_crop(pixels, settings.crop_size)
    area = int((pixels > 0).any(axis=0).sum())
    row = {"label": CELL_LINES.index(line), "class_name": line, "image_file": name, "area": area}
    return [(crop, mask, row)]


def crop_class(relative_path: str) -> str:
    """A published crop's cell line: its folder's name, else its file name's prefix."""
    parts = Path(relative_path).parts
    for candidate in (parts[-2] if len(parts) > 1 else "", Path(parts[-1]).stem.split("_")[0]):
        line = cell_line_named(candidate)
        if line is not None:
            return line
    raise ValueError(
        f"no cell line in {relative_path!r}: neither its folder nor its name starts with one of {CELL_LINES}"
    )


def cell_line_named(text: str) -> str | None:
    """The cell line a folder or a name prefix spells, however written (BT-474, bt474, SH-SY5Y), or None."""
    return _LINE_ALIASES.get(re.sub(r"[^a-z0-9]", "", text.lower()))


_LINE_ALIASES = {line.lower(): line for line in CELL_LINES}


def read_gray(path: Path) -> np.ndarray:
    """8-bit grey (the crop files xai.images names); a 16-bit or float image is brought there by `to_uint8`."""
    with Image.open(path) as img:
        img.load()
        if img.mode.startswith(("I", "F")):
            return to_uint8(np.asarray(img))
        return np.asarray(img.convert("L"))


def _filter_reason(ann: dict, shape: tuple[int, int], settings: CropSettings) -> str | None:
    """Cells the settings leave out (counted, not listed: there may be many)."""
    if isinstance(ann.get("segmentation"), dict):
        return "RLE mask, not a polygon"
    if ann.get("area", 0) < settings.min_area:
        return "below min_area"
    if settings.drop_border_cells:
        x, y, w, h = ann["bbox"]
        if x <= 0 or y <= 0 or x + w >= shape[1] or y + h >= shape[0]:
            return "touches border"
    return None


def _livecell_row(fields: dict, name: str, ann: dict) -> dict:
    x, y, w, h = ann["bbox"]
    return {
        "label": CELL_LINES.index(fields["line"]),
        "class_name": fields["line"],
        "image_file": name,
        "annotation_id": ann["id"],
        "well": fields["well"],
        "elapsed_hours": fields["elapsed_hours"],
        "bbox_x": x,
        "bbox_y": y,
        "bbox_w": w,
        "bbox_h": h,
        "area": ann.get("area", w * h),
    }
