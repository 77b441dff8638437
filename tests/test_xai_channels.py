"""task=xai and task=ssl on every kind of crop the models take: 2-channel 16-bit, 5-channel 2-D, 3-D z-stacks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

import cellexp
from cellexp.errors import ConfigError
from tests.conftest import compose_cfg

pytestmark = pytest.mark.slow

SMALL = ["dataset.generate.images_per_line={train:2,val:1,test:1}", "dataset.generate.height=256",
         "dataset.generate.width=320", "dataset.crop_size=48", "dataset.image_size=32"]  # fmt: skip
DATA = {
    "16bit_2ch": ["dataset=synthetic_16bit", *SMALL],
    "8bit_5ch": ["dataset=synthetic", "dataset.generate.channels=5", "dataset.in_chans=5", *SMALL],
    "3d": ["dataset=cellpainting3d"],
}
BACKBONE = {"16bit_2ch": "test_resnet", "8bit_5ch": "test_resnet", "3d": "test_efficientnet3d"}
DINO = ["task=ssl", "head.out_dim=512", "head.hidden_dim=64", "head.bottleneck_dim=32", "task.crops.local_count=2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """This module's own data: its generated datasets' settings differ from other modules' (a folder is never
    reused for other settings)."""
    return tmp_path_factory.mktemp("xai_channels_data")


def _run(overrides: list[str], folder: Path, data_dir: Path) -> float:
    try:
        return cellexp.run(compose_cfg(["logger=none", "trainer.cpu=true", *overrides], folder, data_dir, tiny=False))
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir) -> dict[str, Path]:
    """A classifier trained for one epoch on each kind of crop: its run folder."""
    root = tmp_path_factory.mktemp("xai_channels")
    for kind, data in DATA.items():
        overrides = [*data, f"backbone={BACKBONE[kind]}", "head=linear", "trainer.max_epochs=1"]
        if kind == "3d":  # two epochs, and the UMAP over them
            overrides += ["trainer.max_epochs=2", "task.umap_over_training=true"]
        _run(overrides, root / kind, data_dir)
    return {kind: root / kind for kind in DATA}


def test_a_plate_run_scores_its_profiles_and_multichannel_runs_their_channel_correlation(trained):
    quality = json.loads((trained["3d"] / "profiles" / "quality.json").read_text())
    assert quality["sphering.reference"] == "negative controls" and quality["splits"] == ["val", "test"]
    for key in ("map_replicate", "map_vs_control", "cells/map_replicate", "cells/frac_retrieved_vs_control"):
        assert 0 <= quality[f"profiles/{key}"] <= 1
    assert not (trained["8bit_5ch"] / "profiles").exists()  # no treatments: nothing to score
    for kind, channels in (("16bit_2ch", 2), ("8bit_5ch", 5), ("3d", 5)):
        with open(trained[kind] / "data" / "channel_correlation.csv", newline="") as f:
            rows = list(csv.reader(f))[1:]
        matrix = np.array([[float(v) for v in row[1:]] for row in rows])
        assert matrix.shape == (channels, channels) and np.allclose(np.diag(matrix), 1)
        assert np.allclose(matrix, matrix.T) and (trained[kind] / "data" / "channel_correlation.png").is_file()


def test_the_umap_over_training_is_a_gif_of_one_frame_per_epoch(trained):
    with Image.open(trained["3d"] / "umap_over_training.gif") as gif:
        assert gif.n_frames == 2
    assert not (trained["8bit_5ch"] / "umap_over_training.gif").exists()  # off by default


def _scores(folder: Path, method: str) -> np.ndarray:
    with open(folder / "xai" / method / "gradcamo.csv", newline="") as f:
        return np.array([float(row["gradcamo"]) for row in csv.DictReader(f)])


@pytest.mark.parametrize("kind", ["16bit_2ch", "8bit_5ch"])
def test_xai_explains_multichannel_and_16bit_crops_with_composite_and_channel_figures(trained, data_dir, kind):
    folder = trained[kind].parent / f"xai_{kind}"
    overrides = ["task=xai", f"ckpt={trained[kind]}", *DATA[kind], f"backbone={BACKBONE[kind]}"]
    _run([*overrides, "xai.methods=[gradcam,lime]", "xai.lime.num_samples=20", "xai.num_cells=8"], folder, data_dir)
    for method in ("gradcam", "lime"):
        scores = _scores(folder, method)
        assert len(scores) == 8 and np.nanmin(scores) >= 0 and np.nanmax(scores) <= 1
        for figure in ("grid.png", "channels.png", "gradcamo_hist.png"):
            assert (folder / "xai" / method / figure).stat().st_size > 0
    assert (folder / "xai" / "umap" / "embedding.png").is_file()


def test_xai_explains_3d_crops_with_projections_per_cell_and_refuses_2d_only_methods(trained, data_dir):
    folder = trained["3d"].parent / "xai_3d"
    overrides = ["task=xai", f"ckpt={trained['3d']}", *DATA["3d"], f"backbone={BACKBONE['3d']}", "xai.num_cells=8"]
    _run([*overrides, "xai.sphere=true"], folder, data_dir)
    scores = _scores(folder, "gradcam")
    assert len(scores) == 8 and np.nanmin(scores) >= 0 and np.nanmax(scores) <= 1
    drawn = sorted(p.name for p in (folder / "xai" / "gradcam" / "cells").iterdir())
    assert drawn and all(name.endswith(".png") for name in drawn)
    assert {"embedding_by_well.png", "embedding_by_plate.png"} <= {p.name for p in (folder / "xai" / "umap").iterdir()}
    for method in ("scorecam", "lime", "rollout"):
        with pytest.raises(ConfigError, match=rf"xai.methods={method} cannot explain the 3-D model .*use gradcam, "):
            _run([*overrides, f"xai.methods=[{method}]"], folder.parent / f"refused_{method}", data_dir)


@pytest.mark.parametrize("kind", ["16bit_2ch", "8bit_5ch"])
def test_ssl_pretrains_on_multichannel_and_16bit_crops(tmp_path, data_dir, kind):
    overrides = [*DINO, *DATA[kind], f"backbone={BACKBONE[kind]}", "dataset.limit=64", "trainer.max_epochs=1"]
    best = _run([*overrides, "trainer.batch_size=32"], tmp_path / "ssl", data_dir)
    assert 0 <= best <= 1 and (tmp_path / "ssl" / "checkpoints" / "best").is_dir()


def test_ssl_pretrains_on_3d_crops_with_3d_views_and_probes_treatments(tmp_path, data_dir):
    overrides = [*DINO, *DATA["3d"], "backbone=test_efficientnet3d", "trainer.max_epochs=1", "trainer.batch_size=16"]
    best = _run([*overrides, "task.augment.per_channel=true", "task.augment.flip_z=true"], tmp_path / "ssl", data_dir)
    meta = json.loads((tmp_path / "ssl" / "checkpoints" / "best" / "meta.json").read_text())
    assert 0 <= best <= 1 and meta["input"]["depth"] == 12  # the kNN probe's accuracy, on the plate's treatments:
    assert meta["classes"][0] == "DMSO" and all(name.startswith("cmpd_") for name in meta["classes"][1:])
    with pytest.raises(ConfigError, match=r"task.augment.flip_z=true flips 3-D views; dataset=synthetic has 2-D"):
        _run([*DINO, *DATA["8bit_5ch"], "task.augment.flip_z=true"], tmp_path / "flat", data_dir)
