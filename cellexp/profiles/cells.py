"""A split's cells as a profile table: Metadata_* read from the crop store's manifest (for a plate: plate, well,
site, compound, dose and whether the well is a negative control), Feature_* the embeddings given. What task=classify
and task=ssl score at their end and task=xai spheres on; task=embed builds its own, richer table
(cellexp.plates.annotated), whose metadata columns carry the same names."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cellexp.data.dataset import CropDataset
from cellexp.profiles.columns import FEATURE_PREFIX, PLATE, ProfileColumns

# manifest field -> column (ProfileColumns' defaults)
PLATE_FIELDS = {"plate": "Metadata_Plate", "well": "Metadata_Well", "site": "Metadata_Site",
                "compound": "Metadata_Compound", "dose": "Metadata_Dose"}  # fmt: skip


def cell_metadata(dataset: CropDataset, columns: ProfileColumns = PLATE) -> pd.DataFrame:
    """One row per cell of `dataset`, in its order; empty of plate columns where the store has no plate fields."""
    manifest = dataset.store.manifest(dataset.split)
    entries = [manifest[i] for i in dataset.indices]
    table = pd.DataFrame({"Metadata_Image": [e.get("image_file", "") for e in entries]})
    if entries and all(field in entries[0] for field in (*PLATE_FIELDS, "control")):
        for field, column in PLATE_FIELDS.items():
            table[column] = [e[field] for e in entries]
        table["Metadata_Dose"] = table["Metadata_Dose"].astype(float)
        control = np.array([int(e["control"] or 0) for e in entries], bool)
        table[columns.control] = np.where(control, columns.control_value, "trt")
    return table


def profile_table(metadata: pd.DataFrame, embeddings: np.ndarray) -> pd.DataFrame:
    """Cells' metadata (cell_metadata's rows) beside their embeddings (N, D) as Feature_0.. columns."""
    features = pd.DataFrame(
        np.asarray(embeddings, np.float32), columns=[f"{FEATURE_PREFIX}{i}" for i in range(embeddings.shape[1])]
    )
    return pd.concat([metadata.reset_index(drop=True), features], axis=1)
