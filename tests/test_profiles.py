"""Profiles: sphering on controls (DeepProfiler's formula), retrieval mAP through copairs, AnnData files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cellexp.errors import DataError
from cellexp.profiles.anndata_files import write_h5ad
from cellexp.profiles.columns import ProfileColumns, treatment_names
from cellexp.profiles.quality import profile_quality, well_profiles
from cellexp.profiles.sphering import ALL, CONTROLS, TRAINING, fit_sphering, sphere_table

FEATURES = 8


def plate(seed: int = 0, shift: float = 3.0, wells: int = 4, cells: int = 15) -> pd.DataFrame:
    """Controls (DMSO) and three compounds, `wells` wells each; a compound moves its cells' mean by `shift`."""
    rng = np.random.default_rng(seed)
    compounds = ["DMSO", "cmpd_A", "cmpd_B", "cmpd_C"]
    means = rng.normal(size=(len(compounds), FEATURES)) * shift
    means[0] = 0
    rows, x = [], []
    for t, compound in enumerate(compounds):
        for w in range(wells):
            for _ in range(cells):
                rows.append({
                    "Metadata_Plate": "P1", "Metadata_Well": f"{'ABCD'[t]}{w + 1:02d}", "Metadata_Compound": compound,
                    "Metadata_Dose": 0.0 if t == 0 else 10.0, "Metadata_pert_type": "control" if t == 0 else "trt",
                })  # fmt: skip
                x.append(means[t] + rng.normal(size=FEATURES) * np.linspace(0.5, 4, FEATURES))
    features = pd.DataFrame(np.asarray(x), columns=[f"Feature_{i}" for i in range(FEATURES)])
    return pd.concat([pd.DataFrame(rows), features], axis=1)


def controls_of(table: pd.DataFrame) -> np.ndarray:
    return table.loc[table["Metadata_pert_type"] == "control", [f"Feature_{i}" for i in range(FEATURES)]].to_numpy()


def test_sphered_controls_have_identity_covariance():
    table = plate()
    sphered, sphering = sphere_table(table, regularization=1e-9)
    assert sphering.reference == CONTROLS and sphering.cells == 60
    controls = controls_of(sphered)
    np.testing.assert_allclose(controls.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(np.cov(controls.T, bias=True), np.eye(FEATURES), atol=1e-3)


def test_regularization_shrinks_each_direction_as_deepprofiler_does():
    """W = V diag(1/sqrt(s + lambda)) V^T: the sphered controls' covariance has eigenvalues s / (s + lambda)."""
    x = controls_of(plate())
    s = np.linalg.eigvalsh(np.cov(x.T, bias=True))
    sphering = fit_sphering(x, regularization=2.0)
    got = np.linalg.eigvalsh(np.cov(sphering.apply(x).T, bias=True))
    np.testing.assert_allclose(np.sort(got), np.sort(s / (s + 2.0)), rtol=1e-4)
    np.testing.assert_allclose(sphering.matrix, sphering.matrix.T)  # ZCA: symmetric, the axes kept


def test_fit_on_controls_differs_from_fit_on_all_cells_when_treatments_shift_the_mean():
    table = plate(shift=3.0)
    on_controls, _ = sphere_table(table, regularization=1e-6)
    on_all = fit_sphering(table.filter(like="Feature_").to_numpy(), 1e-6, ALL).apply(table.filter(like="Feature_"))
    treated = (table["Metadata_pert_type"] != "control").to_numpy()
    # On controls the treated cells stay far from the origin (their shift, in control units); on all cells the
    # treatments' spread is whitened away with the rest, and the treated cells come close to the origin.
    far_controls = np.linalg.norm(on_controls.filter(like="Feature_").to_numpy()[treated].mean(axis=0))
    far_all = np.linalg.norm(on_all[treated].mean(axis=0))
    assert far_controls > 3 * far_all
    assert np.abs(on_controls.filter(like="Feature_").to_numpy() - on_all).max() > 1.0


def test_without_controls_the_training_split_is_the_reference():
    table = plate().drop(columns="Metadata_pert_type")
    training = np.arange(len(table)) % 2 == 0
    _, sphering = sphere_table(table, training=training)
    assert sphering.reference == TRAINING and sphering.cells == training.sum()
    assert sphering.params()["sphering.reference"] == TRAINING
    _, everything = sphere_table(table)
    assert everything.reference == ALL and everything.cells == len(table)


def test_treatment_names_keep_dose_but_not_for_controls():
    names = treatment_names(plate().iloc[[0, 100]], ProfileColumns())
    assert names.tolist() == ["DMSO", "cmpd_A@10.0"]


def test_well_profiles_are_medians_per_well():
    table = plate()
    from cellexp.profiles.quality import _labelled

    wells = well_profiles(_labelled(table, ProfileColumns()))
    assert len(wells) == 16
    first = table[table["Metadata_Well"] == "A01"]["Feature_3"].median()
    assert wells.loc[wells["Metadata_Well"] == "A01", "Feature_3"].item() == pytest.approx(first)
    assert (wells["Metadata_reference_index"] >= 0).sum() == 4  # the control wells


def test_map_of_profiles_carrying_the_treatment_beats_shuffled_profiles():
    table = plate(shift=4.0)
    real = profile_quality(table, null_size=2000, seed=0)
    shuffled = table.copy()
    features = [c for c in table.columns if c.startswith("Feature_")]
    shuffled[features] = table[features].to_numpy()[np.random.default_rng(1).permutation(len(table))]
    null = profile_quality(shuffled, null_size=2000, seed=0)
    assert set(real) == {
        f"{level}/{name}_{question}"
        for level in ("profiles", "profiles/cells")
        for name in ("map", "frac_retrieved")
        for question in ("replicate", "vs_control")
    }
    for key in ("profiles/map_replicate", "profiles/map_vs_control"):
        assert real[key] > null[key] + 0.3
    for key in ("profiles/cells/map_replicate", "profiles/cells/map_vs_control"):
        assert real[key] > null[key] + 0.2
    # copairs' permutation p-values: every treatment retrieved when the profiles carry it, fewer when shuffled
    assert real["profiles/cells/frac_retrieved_vs_control"] == 1.0
    assert null["profiles/cells/frac_retrieved_vs_control"] < 1.0


def test_sphering_on_controls_raises_single_cell_map():
    """Noise dimensions of large variance drown the treatments in cosine similarity until sphering evens them."""
    table = plate(shift=2.0)
    raw = profile_quality(table, null_size=500)
    sphered = profile_quality(sphere_table(table)[0], null_size=500)
    assert sphered["profiles/cells/map_replicate"] > raw["profiles/cells/map_replicate"] + 0.2


def test_single_cells_are_capped_per_well():
    table = plate(cells=15)
    capped = profile_quality(table, null_size=500, max_cells=32)  # 2 cells of each of 16 wells
    assert 0 <= capped["profiles/cells/map_replicate"] <= 1


def test_no_controls_gives_replicate_map_only():
    table = plate().drop(columns="Metadata_pert_type")
    found = profile_quality(table, null_size=500)
    assert "profiles/map_replicate" in found and "profiles/map_vs_control" not in found


def test_a_table_without_treatments_is_refused_by_name():
    table = plate().drop(columns="Metadata_Compound")
    with pytest.raises(DataError, match="Metadata_Compound"):
        profile_quality(table)


def test_h5ad_has_features_in_x_and_metadata_in_obs(tmp_path):
    import anndata

    table = plate().iloc[:5].copy()
    table["Metadata_Site"] = [None, "1", "2", None, "3"]
    path = write_h5ad(table, tmp_path / "cells.h5ad")
    read = anndata.read_h5ad(path)
    np.testing.assert_allclose(read.X, table.filter(like="Feature_").to_numpy(np.float32))
    assert list(read.var_names) == [f"Feature_{i}" for i in range(FEATURES)]
    assert read.obs["Metadata_Compound"].tolist() == ["DMSO"] * 5
    assert read.obs["Metadata_Site"].tolist() == ["", "1", "2", "", "3"]


def test_default_columns_are_the_plate_metadata_names():
    from cellexp.data.cellpainting.metadata import COLUMNS, CONTROL

    columns = ProfileColumns()
    assert columns.treatment == (COLUMNS["compound"], COLUMNS["dose"])
    assert columns.well == (COLUMNS["plate"], COLUMNS["well"])
    assert (columns.control, columns.control_value) == (COLUMNS["pert_type"], CONTROL)
