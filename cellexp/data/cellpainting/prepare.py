"""A plate's fields into one crop store of single-cell 3-D crops, once per (files, metadata, settings).

Every cell of every field goes into one store split, `cells`, whose manifest carries each cell's plate, well, site,
treatment and centroid; splits by well are drawn from it at load time (`splits.py`). Fields are cut in shards of
a few fields by worker processes, resumably and atomically, as the 2-D crop store is (`data.prepare`). A field that
cannot be read (truncated, a missing plane, another channel count) or segmented is named in the summary and
skipped; a well with fields and no row in the metadata table stops the preparation before any work, naming both.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cellexp.data.build_once import build_once
from cellexp.data.cellpainting.crops import cell_crops
from cellexp.data.cellpainting.fields import FIELD_ERRORS, FieldRef, read_field
from cellexp.data.cellpainting.metadata import Treatment
from cellexp.data.cellpainting.segment import Segmentation, require_cellpose_weights, segment
from cellexp.data.intensity import STORED_TYPES
from cellexp.data.shards import file_identity, run_shards
from cellexp.data.store import SplitStore, finish_split, shard_done, write_shard
from cellexp.progress import progress

log = logging.getLogger(__name__)

STORE_VERSION = 1
SPLIT = "cells"
MANIFEST_FIELDS = (
    "index",
    "label",
    "class_name",
    "image_file",
    "annotation_id",
    "plate",
    "well",
    "site",
    "compound",
    "dose",
    "control",
    "centroid_z",
    "centroid_y",
    "centroid_x",
    "volume",
)


@dataclass(frozen=True)
class StackSettings:
    crop_size: int = 32
    depth: int = 12  # planes around the centroid
    channels: int = 5
    min_volume: int = 100  # voxels
    label: str = "compound"
    # the voxel size (z, y, x) in micrometres of files that do not record theirs
    voxel_size: tuple[float, float, float] = (1.0, 0.4, 0.4)
    fields_per_shard: int = 8


def prepare_plate_store(
    fields: list[FieldRef],
    wells: dict[tuple[str, str], Treatment],
    table: Path,
    class_names: list[str],
    settings: StackSettings,
    segmentation: Segmentation,
    cache_dir: Path,
    workers: int | None = None,
) -> SplitStore:
    """The store of the fields' cells; `wells` gives each field's well its treatment (read from `table`)."""
    if segmentation.method == "cellpose":
        require_cellpose_weights(segmentation.cellpose_model)  # before any work, not once per field
    key = _key(fields, table, settings, segmentation, class_names)
    target = Path(cache_dir) / f"{SPLIT}-{key}"
    build_once(
        target, lambda out: _build(fields, wells, class_names, settings, segmentation, out, workers), resumable=True
    )
    return SplitStore(target)


def _key(fields, table: Path, settings, segmentation, class_names) -> str:
    digest = hashlib.sha256()
    for field in fields:
        digest.update(f"{field.name}|{field.layout}|{_files_identity(field)}\n".encode())
    payload = {
        "fields": digest.hexdigest(),
        "table": file_identity(table),
        "settings": asdict(settings),
        "segmentation": asdict(segmentation),
        "labels": _labels_identity(segmentation, fields),
        "classes": class_names,
        "version": STORE_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _files_identity(field: FieldRef) -> str:
    """What a field's pixels depend on: its file, or every file of its image group (ome-zarr) or of the folder its
    planes are in (planes: any change there rebuilds, which is safe)."""
    folder = field.path.parent if field.layout == "planes" else field.path
    if folder.is_file():
        return str(file_identity(folder))
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}:{file_identity(path)[1:]}\n".encode())
    return digest.hexdigest()


def _labels_identity(segmentation: Segmentation, fields: list[FieldRef]) -> str | None:
    if segmentation.method != "labels":
        return None
    digest = hashlib.sha256()
    for field in fields:
        path = Path(segmentation.labels) / f"{field.name}.tif"
        digest.update(str(file_identity(path) if path.is_file() else path).encode())
    return digest.hexdigest()


def _build(fields, wells, class_names, settings, segmentation, out: Path, workers) -> None:
    items = [(field.name, field) for field in fields]
    step = settings.fields_per_shard
    shards = [items[i : i + step] for i in range(0, len(items), step)]
    todo = [s for s in range(len(shards)) if not shard_done(out, s)]
    jobs = [(out, s, shards[s], wells, class_names, settings, segmentation) for s in todo]
    bar = progress(total=sum(len(shards[s]) for s in todo), desc="preparing 3-D cell crops", unit="field")
    cells = 0
    for done, made in run_shards(jobs, workers, work=_prepare_shard):
        cells += made
        bar.update(done)
        bar.set_postfix(cells=cells)
    bar.close()
    info = {"split": SPLIT, "settings": asdict(settings), "channels": settings.channels, "dtype": "uint16"}
    summary = finish_split(out, len(shards), {**info, "invalid_cells": []}, MANIFEST_FIELDS)
    log.info(
        "3-D cell crops ready: %d cells from %d fields, %d fields failed, %d cells dropped",
        summary["crops"],
        len(items),
        len(summary["failed_images"]),
        sum(summary["dropped"].values()),
    )


def _prepare_shard(job) -> tuple[int, int]:
    """Read, segment and crop one shard's fields, and write the shard; returns (fields, cells)."""
    folder, shard, items, wells, class_names, settings, segmentation = job
    crops, masks, rows = [], [], []
    stats = {"per_class": Counter(), "dropped": Counter(), "failed_images": [], "invalid_cells": []}
    for name, field in items:
        try:
            read = read_field(field, channels=settings.channels)
            pixels = _stored(read.pixels, field)
            voxel = read.voxel_size or tuple(settings.voxel_size)
            labels = segment(field, pixels, voxel, segmentation)
        except FIELD_ERRORS as err:
            stats["failed_images"].append({"split": SPLIT, "image": name, "reason": str(err) or type(err).__name__})
            continue
        treatment = wells[(field.plate, field.well)]
        class_name = treatment.label(settings.label)
        cells, dropped = cell_crops(pixels, labels, settings.crop_size, settings.depth, settings.min_volume)
        stats["dropped"].update(dropped)
        for crop, mask, info in cells:
            crops.append(crop)
            masks.append(mask)
            rows.append(_row(len(rows), name, field, treatment, class_names.index(class_name), class_name, info))
            stats["per_class"][class_name] += 1
    shape = (settings.channels, settings.depth, settings.crop_size, settings.crop_size)
    write_shard(
        folder,
        shard,
        np.stack(crops) if crops else np.zeros((0, *shape), np.uint16),
        np.stack(masks) if masks else np.zeros((0, *shape[1:]), np.uint8),
        rows,
        stats,
        MANIFEST_FIELDS,
    )
    return len(items), len(rows)


def _stored(pixels: np.ndarray, field: FieldRef) -> np.ndarray:
    """16-bit (or 8-bit, widened) pixels as the store keeps them; other types are refused by name."""
    if pixels.dtype not in STORED_TYPES:
        raise ValueError(f"{field.path}: pixels of {pixels.dtype}; 3-D Cell Painting fields are 8- or 16-bit")
    return pixels.astype(np.uint16, copy=False)


def _row(index, name, field, treatment, label, class_name, info) -> dict:
    return {
        "index": index,
        "label": label,
        "class_name": class_name,
        "image_file": name,
        "annotation_id": info["cell"],
        "plate": field.plate,
        "well": field.well,
        "site": field.site,
        "compound": treatment.compound,
        "dose": treatment.dose,
        "control": int(treatment.control),
        "centroid_z": info["centroid_z"],
        "centroid_y": info["centroid_y"],
        "centroid_x": info["centroid_x"],
        "volume": info["volume"],
    }
