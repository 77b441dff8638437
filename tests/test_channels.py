"""The channel-by-channel Pearson correlation over cell pixels (the Grad-CAMO paper's Cell Painting observation)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from cellexp.data.channels import channel_correlation
from cellexp.reports.data import write_channel_correlation


def test_correlation_reads_only_cell_pixels_and_matches_numpy():
    rng = np.random.default_rng(0)
    base = rng.random((4, 6, 6))
    images = np.stack([base, 2 * base + 1, -base, rng.random((4, 6, 6))], axis=1)  # (N, C, S, S)
    masks = np.zeros((4, 6, 6), np.uint8)
    masks[:, 1:5, 1:5] = 1
    images[:, 1, 0, 0] = 1e6  # outside every cell: ignored
    r = channel_correlation(images, masks)
    np.testing.assert_allclose(r[0, 1], 1.0, atol=1e-12)
    np.testing.assert_allclose(r[0, 2], -1.0, atol=1e-12)
    inside = masks.astype(bool)
    expected = np.corrcoef(images[:, 0][inside], images[:, 3][inside])[0, 1]
    np.testing.assert_allclose(r[0, 3], expected)
    np.testing.assert_allclose(np.diag(r), 1.0)


def test_3d_crops_and_a_constant_channel():
    images = np.ones((2, 2, 3, 4, 4), np.uint16)  # (N, C, D, S, S), channel 1 constant
    images[:, 0] = np.arange(2 * 3 * 16).reshape(2, 3, 4, 4)
    r = channel_correlation(images, np.ones((2, 3, 4, 4), bool))
    assert r[0, 0] == pytest.approx(1.0) and np.isnan(r[0, 1]) and np.isnan(r[1, 1])


def test_table_and_heatmap(tmp_path):
    matrix = np.array([[1.0, 0.8], [0.8, 1.0]])
    table, figure = write_channel_correlation(matrix, tmp_path)
    rows = list(csv.reader(open(table)))
    assert rows == [["channel", "channel_0", "channel_1"], ["channel_0", "1.000000", "0.800000"],
                    ["channel_1", "0.800000", "1.000000"]]  # fmt: skip
    assert figure.stat().st_size > 0
