"""Which columns of a per-cell table (pycytominer's layout: `Metadata_*`, then `Feature_*`) say what.

Defaults are the names of the Cell Painting plate's metadata table (cellexp.data.cellpainting.metadata's COLUMNS
and CONTROL, which a test keeps these in step with: importing that module pulls in the OME-Zarr reader, seconds)
and of task=predict/embed's tables; a negative control is a row whose `Metadata_pert_type` is "control" (JUMP's
words), or whose control column is a boolean True.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cellexp.errors import DataError

FEATURE_PREFIX = "Feature_"


@dataclass(frozen=True)
class ProfileColumns:
    treatment: tuple[str, ...] = ("Metadata_Compound", "Metadata_Dose")
    well: tuple[str, ...] = ("Metadata_Plate", "Metadata_Well")
    control: str = "Metadata_pert_type"
    control_value: str = "control"


PLATE = ProfileColumns()  # the plate metadata table's names


def feature_columns(table: pd.DataFrame) -> list[str]:
    features = [c for c in table.columns if str(c).startswith(FEATURE_PREFIX)]
    if not features:
        have = ", ".join(map(str, table.columns))
        raise DataError(f"the profile table has no {FEATURE_PREFIX}* columns (it has {have})")
    return features


def features(table: pd.DataFrame) -> np.ndarray:
    return table[feature_columns(table)].to_numpy(np.float64)


def has_controls(table: pd.DataFrame, columns: ProfileColumns = PLATE) -> bool:
    return columns.control in table.columns and bool(control_mask(table, columns).any())


def control_mask(table: pd.DataFrame, columns: ProfileColumns = PLATE) -> np.ndarray:
    """True for the negative-control rows (all False where the table has no control column)."""
    if columns.control not in table.columns:
        return np.zeros(len(table), bool)
    flag = table[columns.control]
    if pd.api.types.is_bool_dtype(flag):
        return flag.to_numpy(bool)
    return (flag.astype(str) == columns.control_value).to_numpy(bool)


def has_treatments(table: pd.DataFrame, columns: ProfileColumns = PLATE) -> bool:
    """Whether the table says which treatment each cell got (at least two, each in at least two wells)."""
    if not all(c in table.columns for c in (*columns.treatment, *columns.well)):
        return False
    wells = table.drop_duplicates([*columns.well])
    replicated = wells.groupby(list(columns.treatment), dropna=False).size()
    return len(replicated) >= 2 and bool((replicated >= 2).any())


def treatment_names(table: pd.DataFrame, columns: ProfileColumns = PLATE) -> pd.Series:
    """One string per row naming its treatment ('cmpd_A@10'); controls by their compound alone."""
    parts = table[list(columns.treatment)].astype(str)
    names = parts.iloc[:, 0].copy()
    for column in parts.columns[1:]:
        names = names + "@" + parts[column]
    return names.where(~control_mask(table, columns), parts.iloc[:, 0])
