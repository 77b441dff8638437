"""Turn a LIVECell-format dataset into a crop store, once per (source files, settings).

The store folder is named by a hash of both, built in a temporary folder and renamed into
place, under a file lock: concurrent ranks or jobs asking for it wait and reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image
from tqdm.auto import tqdm

from cellexp.data.coco import load_coco
from cellexp.data.crops import cut_cell
from cellexp.data.livecell import CELL_LINES, parse_image_name
from cellexp.data.store import COMPLETE_MARKER, CropStore, write_split

log = logging.getLogger(__name__)

STORE_VERSION = 1


@dataclass(frozen=True)
class CropSettings:
    crop_size: int = 96
    min_area: float = 0.0
    drop_border_cells: bool = False


@dataclass(frozen=True)
class SplitSource:
    annotation_file: Path
    image_dir: Path


def store_key(sources: dict[str, SplitSource], settings: CropSettings) -> str:
    """Hash of what the store depends on: the annotation files' identity, image folders and settings."""
    identity = {
        split: {"annotations": _file_identity(src.annotation_file), "images": str(src.image_dir.resolve())}
        for split, src in sorted(sources.items())
    }
    payload = json.dumps({"sources": identity, "settings": asdict(settings), "version": STORE_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _file_identity(path: Path) -> list:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def prepare_crop_store(sources: dict[str, SplitSource], settings: CropSettings, cache_dir: Path) -> CropStore:
    """Return the store for these sources and settings, building it first if no finished one exists."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / store_key(sources, settings)
    with FileLock(str(target) + ".lock"):
        if not (target / COMPLETE_MARKER).exists():
            _build(sources, settings, target)
    return CropStore(target)


def _build(sources: dict[str, SplitSource], settings: CropSettings, target: Path) -> None:
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    summary = {"class_names": list(CELL_LINES), "settings": asdict(settings), "splits": {}, "failed_images": []}
    for split, source in sources.items():
        summary["splits"][split] = _build_split(split, source, settings, tmp, summary["failed_images"])
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
    (tmp / COMPLETE_MARKER).touch()
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    log.info("crop store ready: %s (%s)", target, _describe(summary))


def _build_split(split: str, source: SplitSource, settings: CropSettings, folder: Path, failed: list) -> dict:
    coco = load_coco(source.annotation_file)
    images, masks, rows = [], [], []
    dropped: Counter = Counter()
    for image_id in tqdm(sorted(coco.imgs), desc=f"preparing {split} crops", unit="img", leave=False):
        info = coco.imgs[image_id]
        name = info["file_name"]
        try:
            fields = parse_image_name(name)
            pixels = _read_gray(source.image_dir / name)
        except (OSError, ValueError) as err:
            failed.append({"split": split, "image": name, "reason": str(err)})
            log.warning("skipped image %s: %s", name, err)
            continue
        for ann in coco.imgToAnns.get(image_id, []):
            reason = _drop_reason(ann, pixels.shape, settings)
            if reason:
                dropped[reason] += 1
                continue
            crop, mask = cut_cell(pixels, ann["segmentation"], ann["bbox"], settings.crop_size)
            images.append(crop)
            masks.append(mask)
            rows.append(_manifest_row(len(rows), fields, name, ann))
    size = settings.crop_size
    write_split(
        folder,
        split,
        np.stack(images) if images else np.zeros((0, size, size), np.uint8),
        np.stack(masks) if masks else np.zeros((0, size, size), np.uint8),
        rows,
    )
    return {"crops": len(rows), "per_class": dict(Counter(r["class_name"] for r in rows)), "dropped": dict(dropped)}


def _read_gray(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        img.load()
        return np.asarray(img.convert("L"))


def _drop_reason(ann: dict, shape: tuple[int, int], settings: CropSettings) -> str | None:
    if not ann.get("segmentation") or isinstance(ann["segmentation"], dict):
        return "no polygon"
    if ann.get("area", 0) < settings.min_area:
        return "below min_area"
    if settings.drop_border_cells:
        x, y, w, h = ann["bbox"]
        if x <= 0 or y <= 0 or x + w >= shape[1] or y + h >= shape[0]:
            return "touches border"
    return None


def _manifest_row(index: int, fields: dict, name: str, ann: dict) -> dict:
    x, y, w, h = ann["bbox"]
    return {
        "index": index,
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


def _describe(summary: dict) -> str:
    crops = ", ".join(f"{split} {info['crops']}" for split, info in summary["splits"].items())
    return f"crops: {crops}; failed images: {len(summary['failed_images'])}"
