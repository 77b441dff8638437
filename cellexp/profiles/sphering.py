"""Sphering: a regularised ZCA whitening fit on negative-control cells only, applied to every cell.

DeepProfiler's WhiteningNormalizer (cytomining/DeepProfiler, and the Grad-CAMO paper after it) computes, from the
controls' profiles X (n, d):

    mu = mean(X);  C = (X - mu)^T (X - mu) / n;  C = V diag(s) V^T
    W = V diag(1 / sqrt(s + lambda)) V^T;        sphered(x) = (x - mu) W

lambda (`regularization`, added to every eigenvalue; DeepProfiler's default 1e-2) keeps the controls' near-null
directions from being blown up. Fitting on controls removes what the controls vary in (plate, well, imaging
nuisance) and keeps what treatments add: fit on all cells, the treatments' own signal would be whitened away too.
Data without controls falls back to the training split's cells (or, where no split is given, all cells); the
`reference` the fit used is recorded, so a run's params name it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cellexp.errors import DataError
from cellexp.profiles.columns import PLATE, ProfileColumns, control_mask, feature_columns, has_controls

REGULARIZATION = 1e-2
CONTROLS, TRAINING, ALL = "negative controls", "training split (no controls)", "all cells (no controls, no split)"


@dataclass(frozen=True)
class Sphering:
    mean: np.ndarray  # (d,)
    matrix: np.ndarray  # (d, d), symmetric
    regularization: float
    reference: str  # which cells it was fit on: CONTROLS, TRAINING or ALL
    cells: int  # how many

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) @ self.matrix).astype(np.float32)

    def params(self) -> dict[str, str | float | int]:
        return {"sphering.reference": self.reference, "sphering.regularization": self.regularization,
                "sphering.cells": self.cells}  # fmt: skip


def fit_sphering(reference: np.ndarray, regularization: float = REGULARIZATION, what: str = CONTROLS) -> Sphering:
    """The whitening of `reference` (n, d) profiles, as DeepProfiler fits it."""
    x = np.asarray(reference, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise DataError(f"sphering needs at least 2 reference profiles ({what}); got {len(x)}")
    if regularization < 0:
        raise DataError(f"sphering regularization={regularization} must be non-negative")
    mean = x.mean(axis=0)
    centred = x - mean
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(x))
    scale = 1.0 / np.sqrt(np.clip(eigenvalues, 0, None) + regularization)
    if not np.isfinite(scale).all():
        raise DataError(f"sphering: the {what}' covariance is singular; give a positive regularization")
    return Sphering(mean, (eigenvectors * scale) @ eigenvectors.T, float(regularization), what, len(x))


def sphere_table(
    table: pd.DataFrame,
    regularization: float = REGULARIZATION,
    columns: ProfileColumns = PLATE,
    training: np.ndarray | None = None,
) -> tuple[pd.DataFrame, Sphering]:
    """A copy of `table` with its Feature_* columns sphered on its control rows; without controls, on the rows
    `training` marks (the training split), else on all rows."""
    names = feature_columns(table)
    x = table[names].to_numpy(np.float64)
    if has_controls(table, columns):
        rows, what = control_mask(table, columns), CONTROLS
    elif training is not None:
        rows, what = np.asarray(training, bool), TRAINING
    else:
        rows, what = np.ones(len(table), bool), ALL
    sphering = fit_sphering(x[rows], regularization, what)
    out = table.copy()
    out[names] = sphering.apply(x)
    return out, sphering
