"""A per-cell profile table as AnnData (`.h5ad`), the file scanpy-style analysis reads: the Feature_* columns in X
(float32, cells x features), every other column (the Metadata_* ones first) in obs, one row per cell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cellexp.profiles.columns import feature_columns


def to_anndata(table: pd.DataFrame):
    import anndata  # h5py and friends: paid for only when a file is written

    names = feature_columns(table)
    obs = table.drop(columns=names).reset_index(drop=True)
    for column in obs.columns:
        if obs[column].dtype == object:  # None beside strings: h5ad stores a column of one type
            obs[column] = obs[column].map(lambda v: "" if v is None or v is np.nan else str(v))
    obs.index = obs.index.astype(str)
    var = pd.DataFrame(index=pd.Index(names, dtype=str))
    return anndata.AnnData(X=table[names].to_numpy(np.float32), obs=obs, var=var)


def write_h5ad(table: pd.DataFrame, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_anndata(table).write_h5ad(path)
    return path
