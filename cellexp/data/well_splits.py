"""Splits disjoint by well (`dataset.split_by=well`): every well in exactly one of train, val and test, stratified by
treatment (a plate) or cell line (LIVECell's images, whose wells are in their names).

Cells of one well share its plating, its staining and its place on the plate; a model tested on other cells of
wells it was trained on is tested on what it memorised of those wells (the paper trains and tests on disjoint
wells). The assignment depends only on the wells, their treatments and `dataset.split_seed`, never on the run's
seed, so that every run on a plate is tested on the same wells (the generator's confound uses it too).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

import numpy as np

from cellexp.errors import ConfigError

SPLITS = ("train", "val", "test")


def well_splits(
    strata: Mapping[tuple[str, str], str], seed: int, fractions: Mapping[str, float]
) -> dict[tuple[str, str], str]:
    """(plate, well) -> split, from each well's stratum (its treatment). Within a stratum of n wells, val and test
    get their share of n rounded, at least one each when n >= 3 (n = 2: one train, one test; n = 1: train)."""
    shares = _shares(fractions)
    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[tuple[str, str]]] = {}
    for key in sorted(strata):
        by_stratum.setdefault(strata[key], []).append(key)
    assigned = {}
    for stratum in sorted(by_stratum):
        wells = [by_stratum[stratum][i] for i in rng.permutation(len(by_stratum[stratum]))]
        n = len(wells)
        n_test = 0 if n < 2 else max(1, round(n * shares["test"]))
        n_val = 0 if n < 3 else max(1, round(n * shares["val"]))
        n_val = min(n_val, n - n_test - 1)
        for i, well in enumerate(wells):
            assigned[well] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return assigned


def _shares(fractions: Mapping[str, float]) -> dict[str, float]:
    if set(fractions) != set(SPLITS) or any(not isinstance(v, (int, float)) or v < 0 for v in fractions.values()):
        raise ConfigError(f"dataset.split_fractions={dict(fractions)}: give train, val and test, each a share >= 0")
    total = sum(fractions.values())
    if total <= 0:
        raise ConfigError(f"dataset.split_fractions={dict(fractions)}: the shares add up to 0")
    return {split: value / total for split, value in fractions.items()}


def split_by_well(
    manifest: list[dict],
    well_of: Callable[[dict], tuple[str, str]],
    stratum_of: Callable[[dict], str],
    seed: int,
    fractions: Mapping[str, float],
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The rows of each split (indices into `manifest`) and the split table: a row per well with its stratum, split
    and cells. `well_of` gives a crop's (plate, well), `stratum_of` what the split is stratified by."""
    wells = [well_of(row) for row in manifest]
    first = {}
    for row, well in zip(manifest, wells, strict=True):
        first.setdefault(well, row)
    assigned = well_splits({well: stratum_of(row) for well, row in first.items()}, seed, fractions)
    of_crop = np.asarray([assigned[well] for well in wells])
    rows = {split: np.flatnonzero(of_crop == split) for split in SPLITS}
    cells = Counter(wells)
    table = [
        {
            "plate": well[0],
            "well": well[1],
            "stratum": stratum_of(first[well]),
            "split": assigned[well],
            "cells": cells[well],
        }
        for well in sorted(assigned)
    ]
    return rows, table
