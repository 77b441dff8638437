"""The plate's files: tables per cell (parquet), per image and per well (parquet and CSV), and its summary."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cellexp.data.intensity import RULE
from cellexp.plates.plate import PlateResult
from cellexp.plates.profiles import IMAGE_KEYS, WELL_KEYS, aggregate
from cellexp.profiles.anndata_files import write_h5ad

CELLS_FILE = "cells.parquet"
ANNDATA_FILE = "cells.h5ad"


def write_tables(folder: Path, cells: pd.DataFrame, class_names: list[str]) -> dict[str, pd.DataFrame]:
    """cells.parquet and cells.h5ad (AnnData: Feature_* in X, the other columns in obs), images.{parquet,csv},
    wells.{parquet,csv} in `folder`; the tables by name."""
    folder.mkdir(parents=True, exist_ok=True)
    cells.to_parquet(folder / CELLS_FILE, index=False)
    write_h5ad(cells, folder / ANNDATA_FILE)
    tables = {"cells": cells}
    for name, keys in (("images", IMAGE_KEYS), ("wells", WELL_KEYS)):
        table = aggregate(cells, keys, class_names)
        table.to_parquet(folder / f"{name}.parquet", index=False)
        table.to_csv(folder / f"{name}.csv", index=False)
        tables[name] = table
    return tables


def write_summary(folder: Path, result: PlateResult, images: int, cells: int, skipped: list[dict], info: dict) -> Path:
    """summary.json: what was predicted, how fast, by which rules, and every skipped input with its reason."""
    summary = {
        **info,
        "images": images,
        "images_predicted": result.images,
        "cells": cells,
        "cells_dropped": result.dropped,
        "seconds": result.seconds,
        "intensity": RULE,
        "skipped": skipped,
    }
    path = folder / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    return path
