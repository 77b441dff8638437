"""Profile quality as the profiling field measures it: mean average precision of retrieval (Kalinin et al. 2024,
"A versatile information retrieval framework for evaluating profile strength and similarity"), computed by its
authors' `copairs` package, on well-level (median-aggregated) profiles and on single cells.

Two questions, each a copairs `average_precision` + `mean_average_precision` (permutation p-values, BH-corrected):

- replicate retrieval (`map_replicate`): does a treated profile rank its treatment's other replicates above the
  profiles of other treatments and of controls? Controls are candidates but not queries.
- retrieval against controls (`map_vs_control`, "phenotypic activity"): does it rank its replicates above the
  negative controls (the only negatives)? Needs controls.

mAP is the mean over treatments of each treatment's mAP; `frac_retrieved_*` is the share of treatments whose
corrected p-value is below `threshold` (0.05). Single cells: the positives of a cell are cells of the same
treatment in other wells (a well's own cells share its well effects); at most `max_cells` cells, drawn evenly
across wells with a seed, because pairs grow with the square of the cells.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cellexp.errors import DataError
from cellexp.profiles.columns import (
    PLATE,
    ProfileColumns,
    control_mask,
    feature_columns,
    has_treatments,
    treatment_names,
)

log = logging.getLogger(__name__)

TREATMENT, REFERENCE, WELL = "Metadata_treatment", "Metadata_reference_index", "Metadata_well_key"
NULL_SIZE = 10_000
MAX_CELLS = 4_000


def profile_quality(
    table: pd.DataFrame,
    columns: ProfileColumns = PLATE,
    null_size: int = NULL_SIZE,
    threshold: float = 0.05,
    max_cells: int = MAX_CELLS,
    seed: int = 0,
) -> dict[str, float]:
    """`profiles/{map_replicate, map_vs_control, frac_retrieved_replicate, frac_retrieved_vs_control}` on
    well-level profiles and `profiles/cells/...` on single cells (vs_control only where the table has controls)."""
    if not has_treatments(table, columns):
        raise DataError(
            f"profile quality needs treatments replicated across wells: columns {', '.join(columns.treatment)} "
            f"and {', '.join(columns.well)}, at least two treatments, one of them in two wells"
        )
    metrics: dict[str, float] = {}
    cells = _labelled(table, columns)
    levels = {"profiles": well_profiles(cells, columns), "profiles/cells": _sample(cells, columns, max_cells, seed)}
    for prefix, profiles in levels.items():
        diff = [] if prefix == "profiles" else [WELL]  # copairs' diffby: differ in every column named
        found = retrieval_maps(profiles, diff, null_size, threshold, seed)
        metrics.update({f"{prefix}/{key}": value for key, value in found.items()})
    return metrics


def retrieval_maps(
    profiles: pd.DataFrame, pos_diffby: list[str], null_size: int, threshold: float, seed: int
) -> dict[str, float]:
    """mAP and share retrieved, replicate and (where there are controls) against controls, of labelled profiles."""
    meta = profiles[[c for c in profiles.columns if c.startswith("Metadata_")]].reset_index(drop=True)
    x = profiles[feature_columns(profiles)].to_numpy(np.float64)
    out = {}
    questions = {"replicate": ([], [TREATMENT])}
    if (meta[REFERENCE] >= 0).any():
        questions["vs_control"] = ([], [TREATMENT, REFERENCE])
    for name, (neg_sameby, neg_diffby) in questions.items():
        maps = treatment_maps(meta, x, pos_diffby, neg_sameby, neg_diffby, null_size, threshold, seed)
        out[f"map_{name}"] = float(maps["mean_average_precision"].mean()) if len(maps) else float("nan")
        out[f"frac_retrieved_{name}"] = float(maps["below_corrected_p"].mean()) if len(maps) else float("nan")
    return out


def treatment_maps(
    meta: pd.DataFrame,
    x: np.ndarray,
    pos_diffby: list[str],
    neg_sameby: list[str],
    neg_diffby: list[str],
    null_size: int,
    threshold: float,
    seed: int,
) -> pd.DataFrame:
    """copairs' per-treatment table (mean_average_precision, p_value, corrected_p_value, below_corrected_p).

    Queries are the treated profiles: controls carry their own row number as `Metadata_reference_index` (treated
    profiles -1), so no control has a positive, and a negative must differ in it too when it is in `neg_diffby`
    (copairs' own recipe for phenotypic activity)."""
    # imported here: copairs brings duckdb, and every task=classify run imports this module, most to learn that its
    # data have no treatments to score
    from copairs import map as copairs_map

    scores = copairs_map.average_precision(
        meta, x, [TREATMENT, REFERENCE], pos_diffby, neg_sameby, neg_diffby, progress_bar=False
    )
    scores = scores[scores[REFERENCE] < 0]
    if scores["average_precision"].notna().sum() == 0:
        return pd.DataFrame(columns=[TREATMENT, "mean_average_precision", "below_corrected_p"])
    return copairs_map.mean_average_precision(scores, [TREATMENT], null_size, threshold, seed, progress_bar=False)


def well_profiles(cells: pd.DataFrame, columns: ProfileColumns = PLATE) -> pd.DataFrame:
    """One profile per well: the median of its cells' features (pycytominer's default aggregation)."""
    keys = [*columns.well, WELL, TREATMENT]
    wells = cells.groupby(keys, sort=True, dropna=False)[feature_columns(cells)].median().reset_index()
    control = cells.groupby(keys, sort=True, dropna=False)[REFERENCE].max().to_numpy() >= 0
    wells.insert(len(keys), REFERENCE, np.where(control, np.arange(len(wells)), -1))
    return wells


def _labelled(table: pd.DataFrame, columns: ProfileColumns) -> pd.DataFrame:
    """The table with its treatment as one column and the control reference index copairs' recipe wants."""
    control = control_mask(table, columns)
    out = table.reset_index(drop=True).copy()
    out[TREATMENT] = treatment_names(out, columns).to_numpy()
    out[REFERENCE] = np.where(control, np.arange(len(out)), -1)
    out[WELL] = out[list(columns.well)].astype(str).agg("/".join, axis=1)
    return out


def _sample(cells: pd.DataFrame, columns: ProfileColumns, max_cells: int, seed: int) -> pd.DataFrame:
    """At most `max_cells` cells, the same number from every well where they have them (seeded)."""
    if len(cells) <= max_cells:
        return cells
    groups = cells.groupby(list(columns.well), sort=True, dropna=False)
    per_well = max(1, max_cells // groups.ngroups)
    picked = groups.sample(frac=1.0, random_state=seed).groupby(list(columns.well), sort=True).head(per_well)
    log.info("profile quality: %d of %d cells (%d per well) for single-cell mAP", len(picked), len(cells), per_well)
    return picked.sort_index()
