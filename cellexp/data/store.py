"""The crop store: per split, fixed-size uint8 crops and masks in .npy files plus a manifest.

Layout of a store folder:
    <split>_images.npy   (N, S, S) uint8, background black
    <split>_masks.npy    (N, S, S) uint8 0/1, the cell's own mask
    <split>_labels.npy   (N,) int64
    <split>_manifest.csv one row per crop: where it came from
    summary.json         counts per split and class, dropped cells and failed images
    .complete            written last: a store without it is unfinished
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from cellexp.errors import DataError

COMPLETE_MARKER = ".complete"
MANIFEST_FIELDS = (
    "index",
    "label",
    "class_name",
    "image_file",
    "annotation_id",
    "well",
    "elapsed_hours",
    "bbox_x",
    "bbox_y",
    "bbox_w",
    "bbox_h",
    "area",
)


@dataclass(frozen=True)
class CropStore:
    """Read access to a finished store; arrays are memory-mapped, so opening is O(1)."""

    path: Path

    def __post_init__(self):
        if not (self.path / COMPLETE_MARKER).exists():
            raise DataError(f"crop store {self.path} is incomplete (no {COMPLETE_MARKER}); delete it to rebuild")

    @cached_property
    def summary(self) -> dict:
        return json.loads((self.path / "summary.json").read_text())

    @property
    def class_names(self) -> list[str]:
        return self.summary["class_names"]

    def images(self, split: str) -> np.ndarray:
        return np.load(self.path / f"{split}_images.npy", mmap_mode="r")

    def masks(self, split: str) -> np.ndarray:
        return np.load(self.path / f"{split}_masks.npy", mmap_mode="r")

    def labels(self, split: str) -> np.ndarray:
        return np.load(self.path / f"{split}_labels.npy")

    def manifest(self, split: str) -> list[dict]:
        with open(self.path / f"{split}_manifest.csv", newline="") as f:
            return list(csv.DictReader(f))


def write_split(folder: Path, split: str, images: np.ndarray, masks: np.ndarray, rows: list[dict]) -> None:
    np.save(folder / f"{split}_images.npy", images)
    np.save(folder / f"{split}_masks.npy", masks)
    np.save(folder / f"{split}_labels.npy", np.array([r["label"] for r in rows], dtype=np.int64))
    with open(folder / f"{split}_manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
