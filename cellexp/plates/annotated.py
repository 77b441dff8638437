"""A split of an annotated dataset (its crop store) as a plate's cells: the rows of task=predict's per-cell table,
from the store's manifest, so that the training data's profiles line up with a new plate's (task=embed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cellexp.data.dataset import CropDataset
from cellexp.plates.files import name_fields

TRUE_CLASS = "true_class"


def split_rows(dataset: CropDataset, class_names: list[str], plate: str, pattern: str | None) -> list[dict]:
    """One row per crop of `dataset`, in its order: Metadata_* as predict names them (well, site and time read from
    the image's name by `pattern`; the object is the COCO annotation id, or the crop's index where the crops came
    as files; bounding box and area as the annotation gives them; no centroid, which the store does not keep) and
    the cell's true class."""
    manifest = dataset.store.manifest(dataset.split)
    if manifest and "compound" in manifest[0]:
        return plate_rows(dataset, manifest, class_names)
    rows = []
    for index, label in zip(dataset.indices, dataset.labels, strict=True):
        entry = manifest[index]
        fields = name_fields(Path(entry["image_file"]).name, pattern)
        rows.append(
            {
                "Metadata_Plate": plate,
                "Metadata_Image": entry["image_file"],
                **{f"Metadata_{key.capitalize()}": value for key, value in fields.items()},
                "Metadata_ObjectNumber": int(entry["annotation_id"] or index),
                "Metadata_BBox_X": _number(entry["bbox_x"]),
                "Metadata_BBox_Y": _number(entry["bbox_y"]),
                "Metadata_BBox_W": _number(entry["bbox_w"]),
                "Metadata_BBox_H": _number(entry["bbox_h"]),
                "Metadata_Centroid_X": np.nan,
                "Metadata_Centroid_Y": np.nan,
                "Metadata_Area": _number(entry["area"]),
                TRUE_CLASS: class_names[label],
            }
        )
    return rows


def _number(text: str) -> float:
    return float(text) if text not in ("", None) else np.nan


def plate_rows(dataset: CropDataset, manifest: list[dict], class_names: list[str]) -> list[dict]:
    """One row per cell of a Cell Painting plate (3-D crops): where it is (plate, well, site, the field, its label in
    the field's label image, its centroid in voxels), what the well got (compound, dose, pert_type: control or trt,
    as JUMP names it) and its volume in voxels, and the cell's true class."""
    rows = []
    for index, label in zip(dataset.indices, dataset.labels, strict=True):
        entry = manifest[index]
        rows.append(
            {
                "Metadata_Plate": entry["plate"],
                "Metadata_Well": entry["well"],
                "Metadata_Site": int(entry["site"]),
                "Metadata_Image": entry["image_file"],
                "Metadata_ObjectNumber": int(entry["annotation_id"]),
                "Metadata_Compound": entry["compound"],
                "Metadata_Dose": float(entry["dose"]),
                "Metadata_pert_type": "control" if int(entry["control"]) else "trt",
                "Metadata_Centroid_Z": float(entry["centroid_z"]),
                "Metadata_Centroid_Y": float(entry["centroid_y"]),
                "Metadata_Centroid_X": float(entry["centroid_x"]),
                "Metadata_Volume": int(entry["volume"]),
                TRUE_CLASS: class_names[label],
            }
        )
    return rows
