"""The per-cell table (pycytominer's layout: `Metadata_*` columns, then `Feature_*`) and its aggregates."""

from __future__ import annotations

import numpy as np
import pandas as pd

IMAGE_KEYS = ["Metadata_Plate", "Metadata_Image"]
WELL_KEYS = ["Metadata_Plate", "Metadata_Well"]


def cell_table(rows: list[dict], probabilities: np.ndarray, embeddings: np.ndarray, class_names: list[str]):
    """One row per cell: its metadata, `predicted_class`, `prob_<class>` per class, `Feature_0..` (the embedding)."""
    table = pd.DataFrame(rows)
    if not len(table):
        table = pd.DataFrame(columns=[*IMAGE_KEYS, "Metadata_Well"])
    table["predicted_class"] = [class_names[i] for i in probabilities.argmax(axis=1)] if len(rows) else []
    probs = pd.DataFrame(probabilities.reshape(len(rows), -1), columns=prob_columns(class_names))
    features = pd.DataFrame(
        embeddings.reshape(len(rows), -1), columns=[f"Feature_{i}" for i in range(embeddings.shape[-1])]
    )
    return pd.concat([table, probs, features], axis=1)


def joined(chunks: list[np.ndarray]) -> np.ndarray:
    """Batches of probabilities or embeddings as one (N, K) array; (0, 0) for none."""
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def prob_columns(class_names: list[str]) -> list[str]:
    return [f"prob_{name}" for name in class_names]


def aggregate(table: pd.DataFrame, keys: list[str], class_names: list[str]) -> pd.DataFrame:
    """Per group of `keys`: cells, cells per predicted class (`count_<class>`), mean probabilities
    (`mean_prob_<class>`) and the median profile (`Feature_*`, pycytominer's default operation)."""
    predicted = pd.Categorical(table["predicted_class"], categories=class_names)
    counts = pd.get_dummies(predicted).astype(np.int64).set_axis([f"count_{name}" for name in class_names], axis=1)
    groups = pd.concat([table, counts.set_axis(table.index)], axis=1).groupby(keys, dropna=False, sort=True)
    counts = groups[list(counts.columns)].sum()
    means = groups[prob_columns(class_names)].mean().add_prefix("mean_")
    features = [c for c in table.columns if c.startswith("Feature_")]
    out = pd.concat([groups.size().rename("cells"), counts, means, groups[features].median()], axis=1)
    return out.reset_index()
