"""3-D Cell Painting plates: the generated plate, 3-D segmentation and crops, the crop store from every layout, bad
fields, the metadata table, splits by well, 3-D backbones and transforms (fast); a trained 3-D run, its split
table and its profiles (slow)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from hydra.core.global_hydra import GlobalHydra

import cellexp
from cellexp.data.cellpainting.fields import find_fields, read_field, write_field
from cellexp.data.cellpainting.metadata import class_names, read_metadata, treatment_of
from cellexp.data.cellpainting.prepare import StackSettings, prepare_plate_store
from cellexp.data.cellpainting.segment import Segmentation, classical_labels
from cellexp.data.cellpainting.synthetic import TREATMENTS, generate_cellpainting_plate
from cellexp.data.datamodule import load_crop_data
from cellexp.data.transforms import InputConfig
from cellexp.data.well_splits import well_splits
from cellexp.errors import ConfigError, DataError
from cellexp.models.backbones3d import SamePad, efficientnet3d, resnet3d
from cellexp.tracking.loading import check_backbone
from tests.conftest import compose_cfg, tracked_run

SMALL = {"wells_per_treatment": 3, "sites": 1, "cells_per_field": 5, "size": 56, "planes": 12}
SETTINGS = StackSettings(crop_size=24, depth=8, min_volume=50)
PLATE_3D = [
    "dataset=cellpainting3d",
    "backbone=test_efficientnet3d",
    "head=linear",
    *[f"dataset.generate.{key}={value}" for key, value in SMALL.items()],
    "dataset.crop_size=24",
    "dataset.image_size=24",
    "dataset.depth=8",
    "trainer.cpu=true",
]
TRAIN_3D = [*PLATE_3D, "trainer.batch_size=16", "trainer.max_epochs=2"]


@pytest.fixture(scope="module")
def small_plate(tmp_path_factory) -> Path:
    return generate_cellpainting_plate(tmp_path_factory.mktemp("cellpainting") / "plate", **SMALL)


def _store(root: Path, layout: str, cache: Path, table: Path, segmentation: Segmentation | None = None):
    fields = find_fields(root, layout)
    treatments = read_metadata(table)
    wells = {(f.plate, f.well): treatment_of(treatments, f.plate, f.well, table) for f in fields}
    how = segmentation or Segmentation()
    return prepare_plate_store(fields, wells, table, class_names(wells, "compound"), SETTINGS, how, cache, 1)


def test_the_generated_plate_has_its_wells_fields_and_voxel_size(small_plate):
    treatments = read_metadata(small_plate / "metadata.csv")
    assert len(treatments) == len(TREATMENTS) * SMALL["wells_per_treatment"]
    assert sum(t.control for t in treatments.values()) == SMALL["wells_per_treatment"]
    fields = find_fields(small_plate / "images", "ome-tiff")
    assert len(fields) == len(treatments) * SMALL["sites"]
    read = read_field(fields[0], channels=5)
    assert read.pixels.shape == (5, SMALL["planes"], SMALL["size"], SMALL["size"]) and read.pixels.dtype == np.uint16
    assert read.voxel_size == pytest.approx((1.0, 0.4, 0.4))  # anisotropic: the z step is 2.5 pixels
    labels = tifffile.imread(small_plate / "labels" / f"{fields[0].name}.tif")
    assert labels.shape == read.pixels.shape[1:] and labels.max() == SMALL["cells_per_field"]
    assert class_names(treatments, "compound") == ["DMSO", "cmpd_A", "cmpd_B", "cmpd_C"]
    assert class_names(treatments, "compound_dose")[:3] == ["DMSO", "cmpd_A@1", "cmpd_A@10"]


def test_a_plate_generated_with_other_settings_is_not_reused(small_plate):
    with pytest.raises(ConfigError, match=r"generated plate in .* other settings \(sites 1 there, 2 asked\)"):
        generate_cellpainting_plate(small_plate, **{**SMALL, "sites": 2})


def test_the_classical_segmenter_finds_the_true_cells(small_plate):
    """At least 90% of the true cells of 6 fields are matched by one segmented cell at IoU > 0.5."""
    matched = total = 0
    for field in find_fields(small_plate / "images", "ome-tiff")[:6]:
        read = read_field(field)
        truth = tifffile.imread(small_plate / "labels" / f"{field.name}.tif")
        found = classical_labels(read.pixels, read.voxel_size, Segmentation())
        for cell in range(1, truth.max() + 1):
            inside = found[truth == cell]
            best = np.bincount(inside[inside > 0]).argmax() if (inside > 0).any() else 0
            union = ((truth == cell) | (found == best)).sum() if best else 1
            matched += best > 0 and ((truth == cell) & (found == best)).sum() / union > 0.5
            total += 1
    assert total == 6 * SMALL["cells_per_field"] and matched >= 0.9 * total


@pytest.mark.slow
def test_every_layout_gives_a_byte_identical_crop_store(small_plate, tmp_path):
    table = small_plate / "metadata.csv"
    for layout in ("ome-zarr", "planes"):
        for field in find_fields(small_plate / "images", "ome-tiff"):
            read = read_field(field)
            write_field(tmp_path / layout, layout, (field.plate, field.well, field.site), read.pixels, read.voxel_size)
    reference = _store(small_plate / "images", "ome-tiff", tmp_path / "cache", table)
    assert reference.summary["crops"] >= 0.9 * len(TREATMENTS) * SMALL["wells_per_treatment"] * SMALL["cells_per_field"]
    for layout in ("ome-zarr", "planes"):
        store = _store(tmp_path / layout, layout, tmp_path / "cache", table)
        assert store.path != reference.path  # other files, another store: the same bytes in it
        for name in ("manifest.csv", "labels.npy", "shards/images_00000.npy", "shards/masks_00000.npy"):
            assert (store.path / name).read_bytes() == (reference.path / name).read_bytes(), (layout, name)


def test_bad_fields_are_named_skipped_and_counted(small_plate, tmp_path):
    root = tmp_path / "images"
    shutil.copytree(small_plate / "images", root)
    fields = find_fields(root, "ome-tiff")
    with open(fields[0].path, "r+b") as f:
        f.truncate(fields[0].path.stat().st_size // 2)
    four = read_field(fields[1]).pixels[:4]
    write_field(root, "ome-tiff", (fields[1].plate, fields[1].well, fields[1].site), four, (1.0, 0.4, 0.4))
    store = _store(root, "ome-tiff", tmp_path / "cache", small_plate / "metadata.csv")
    failed = {entry["image"]: entry["reason"] for entry in store.summary["failed_images"]}
    assert set(failed) == {fields[0].name, fields[1].name}
    assert "4 channels" in failed[fields[1].name] and fields[1].path.name in failed[fields[1].name]
    assert {row["image_file"] for row in store.manifest()} == {f.name for f in fields[2:]}


def test_a_well_missing_from_the_metadata_is_named_before_any_work(small_plate, tmp_path):
    table = pd.read_csv(small_plate / "metadata.csv")
    dropped = table.Metadata_Well.iloc[0]
    table.iloc[1:].to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(DataError, match=rf"well {dropped} of plate P1 .* metadata table {tmp_path}/metadata.csv"):
        _store(small_plate / "images", "ome-tiff", tmp_path / "cache", tmp_path / "metadata.csv")
    assert not (tmp_path / "cache").exists()


def test_cellpose_without_its_weights_names_the_file(small_plate, tmp_path, monkeypatch):
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path / "models"))
    with pytest.raises(DataError, match=rf"cellpose weights not found: {tmp_path}/models/cpsam\. .*cellpose_model="):
        _store(
            small_plate / "images",
            "ome-tiff",
            tmp_path / "cache",
            small_plate / "metadata.csv",
            Segmentation("cellpose"),
        )


def test_well_splits_are_disjoint_stratified_and_seeded():
    strata = {("P1", f"A{i:02d}"): f"t{i % 3}" for i in range(1, 25)}
    fractions = {"train": 0.5, "val": 0.25, "test": 0.25}
    assigned = well_splits(strata, seed=0, fractions=fractions)
    assert set(assigned) == set(strata)
    for stratum in ("t0", "t1", "t2"):
        splits = [assigned[w] for w, s in strata.items() if s == stratum]
        assert sorted(splits) == ["test"] * 2 + ["train"] * 4 + ["val"] * 2
    assert well_splits(strata, seed=0, fractions=fractions) == assigned != well_splits(strata, 1, fractions)


@pytest.mark.slow
def test_2d_datasets_split_by_well_put_each_well_in_one_split(tmp_path):
    data_dir = tmp_path / "data"  # its own: more images than the session's data
    cfg = compose_cfg(["dataset.split_by=well", "dataset.generate.images_per_line={train:4,val:1,test:1}"],
                      tmp_path / "run", data_dir)  # fmt: skip
    data = load_crop_data(cfg.dataset, seed=0)
    manifest = data.store.manifest("pooled")
    seen: dict[tuple[str, str], str] = {}
    for split, dataset in data.splits.items():
        assert len(dataset)
        for i in dataset.indices:
            assert seen.setdefault((manifest[i]["class_name"], manifest[i]["well"]), split) == split
    assert len(seen) == len(data.split_table) and sum(len(d) for d in data.splits.values()) == len(manifest)
    with pytest.raises(ConfigError, match="dataset.split_by=plate: choose source or well"):
        load_crop_data(compose_cfg(["dataset.split_by=plate"], tmp_path / "run", data_dir).dataset, seed=0)
    GlobalHydra.instance().clear()


def test_a_2d_backbone_on_3d_crops_is_refused_before_any_data(tmp_path):
    cfg = compose_cfg(["dataset=cellpainting3d", "backbone=test_resnet"], tmp_path / "run", tmp_path / "data", False)
    with pytest.raises(ConfigError, match="2-D network and dataset=cellpainting3d has 3-D crops"):
        check_backbone(cfg)
    cfg = compose_cfg(["backbone=test_efficientnet3d"], tmp_path / "run", tmp_path / "data", False)
    with pytest.raises(ConfigError, match="3-D network and dataset=synthetic has 2-D crops"):
        check_backbone(cfg)
    assert not (tmp_path / "data").exists()
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("build", [lambda: efficientnet3d("test", 5, 24), lambda: resnet3d("resnet10", 5, 24)])
def test_3d_backbones_pool_to_one_vector_per_cell(build):
    backbone = build()
    out = backbone(torch.randn(3, 5, 8, 24, 24))
    assert out.shape == (3, backbone.num_features) and backbone.family == "cnn3d"


def test_same_padding_is_worked_out_for_each_input_size():
    """As TensorFlow's "same": a stride-2 3x3x3 convolution gives ceil(n / 2) along every axis, odd sizes included
    (MONAI's padding, fixed for a 224 cube, sent a 12-plane crop to zero planes: efficientnet3d_b0 failed)."""
    conv = torch.nn.Conv3d(1, 1, 3, stride=2)
    pad = SamePad(conv)
    for shape in [(12, 32, 32), (3, 5, 7), (1, 2, 9)]:
        out = conv(pad(torch.zeros(1, 1, *shape)))
        assert tuple(out.shape[2:]) == tuple(-(-n // 2) for n in shape)
    assert efficientnet3d("efficientnet-b0", 5, 32)(torch.randn(2, 5, 12, 32, 32)).shape == (2, 1280)


def test_the_3d_transform_scales_each_channel_and_never_flips_z():
    inputs = InputConfig(image_size=16, in_chans=2, channels=2, intensity=((100, 200), (0, 1000)), depth=6)
    crops = torch.zeros(4, 2, 6, 16, 16, dtype=torch.int32)
    crops[:, 0, 0] = 200  # the top plane of channel 0 at its range's top
    crops[:, 1, :, 4:12, 4:12] = 500
    plain = inputs.transform()(crops)
    assert plain.shape == (4, 2, 6, 16, 16)
    np.testing.assert_allclose(plain[:, 0, 0].numpy(), (1 - 0.5) / 0.25)
    np.testing.assert_allclose(plain[:, 1, 1, 8, 8].numpy(), (0.5 - 0.5) / 0.25)
    torch.manual_seed(0)
    augmented = inputs.transform(augment=True, degrees=0)(crops.float())
    top = augmented[:, 0].mean(dim=(2, 3))
    assert (top[:, 0] > top[:, 1:].max(dim=1).values).all()  # the bright plane stays on top
    with pytest.raises(ValueError, match=r"takes \(B, C, D, S, S\) crops"):
        inputs.transform()(crops[:, :, 0])


# ------------------------------------------------------------------------------------------------ trained (slow)


@pytest.fixture(scope="module")
def trained_3d(tmp_path_factory, data_dir, mlflow_uri) -> dict:
    """A 3-D run on a small generated plate: its config and folder."""
    folder = tmp_path_factory.mktemp("trained3d") / "run"
    logger = [
        f"++logger.tracking_uri={mlflow_uri}",
        f"++logger.artifact_location=file://{folder.parent / 'mlartifacts'}",
        "++logger.experiment_name=cellpainting3d",
    ]
    cfg = compose_cfg([*TRAIN_3D, *logger], folder, data_dir, tiny=False)
    with pytest.MonkeyPatch.context() as patch:  # an earlier test's exported store must not take the run
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        cellexp.run(cfg)
    GlobalHydra.instance().clear()
    return {"cfg": cfg, "folder": folder}


@pytest.mark.slow
def test_a_3d_run_logs_a_split_table_with_each_well_in_one_split(trained_3d):
    run = tracked_run(trained_3d["cfg"], trained_3d["folder"])
    assert run.info.status == "FINISHED"
    with open(trained_3d["folder"] / "data" / "splits.csv", newline="") as f:
        wells = list(csv.DictReader(f))
    assert len(wells) == len({(w["plate"], w["well"]) for w in wells}) == len(TREATMENTS) * 3
    assert {w["split"] for w in wells} == {"train", "val", "test"}
    for stratum in {w["stratum"] for w in wells}:  # a treatment: compound@dose
        assert sorted(w["split"] for w in wells if w["stratum"] == stratum) == ["test", "train", "val"]
    logged = Path(run.info.artifact_uri.removeprefix("file://")) / "data" / "splits.csv"
    assert logged.read_text() == (trained_3d["folder"] / "data" / "splits.csv").read_text()
    test_cells = sum(int(w["cells"]) for w in wells if w["split"] == "test")
    assert run.data.metrics["data/test_crops"] == test_cells


@pytest.mark.slow
def test_embed_on_a_3d_run_writes_one_profile_per_test_cell(trained_3d, tmp_path, data_dir):
    cfg = compose_cfg(
        [
            *PLATE_3D,
            "task=embed",
            f"ckpt={trained_3d['folder']}",
            "task.split=test",
            "logger=none",
            "task.layer=_blocks.1",
        ],
        tmp_path / "embed",
        data_dir,
        tiny=False,
    )
    cellexp.run(cfg)
    cells = pd.read_parquet(tmp_path / "embed" / "embed" / "cells.parquet")
    with open(trained_3d["folder"] / "data" / "splits.csv", newline="") as f:
        test_cells = sum(int(w["cells"]) for w in csv.DictReader(f) if w["split"] == "test")
    assert len(cells) == test_cells
    metadata = ["Plate", "Well", "Site", "Image", "ObjectNumber", "Compound", "Dose", "pert_type"]
    metadata += ["Centroid_Z", "Centroid_Y", "Centroid_X", "Volume"]
    assert [c for c in cells.columns if c.startswith("Metadata_")] == [f"Metadata_{m}" for m in metadata]
    assert set(cells.Metadata_pert_type) == {"control", "trt"}
    assert (cells.Metadata_pert_type == "control").eq(cells.Metadata_Compound == "DMSO").all()
    assert len([c for c in cells.columns if c.startswith("Feature_")]) == 8  # _blocks.1: 24 channels at width 1/4
    GlobalHydra.instance().clear()


@pytest.mark.slow
def test_predict_on_a_3d_run_points_to_embed(trained_3d, tmp_path, data_dir):
    cfg = compose_cfg(
        ["task=predict", f"ckpt={trained_3d['folder']}", f"task.images={tmp_path}", "logger=none", "trainer.cpu=true"],
        tmp_path / "predict",
        data_dir,
        tiny=False,
    )
    with pytest.raises(ConfigError, match="takes 3-D crops; task=predict reads 2-D images: .* task=embed"):
        cellexp.run(cfg)
    GlobalHydra.instance().clear()


@pytest.mark.slow
def test_the_mlflow_model_of_a_3d_run_predicts_what_the_run_predicted(trained_3d):
    import mlflow

    run = tracked_run(trained_3d["cfg"], trained_3d["folder"])
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    with open(trained_3d["folder"] / "test" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    data = load_crop_data(trained_3d["cfg"].dataset, seed=0)
    crops = data.store.images("cells")[np.array([int(r["index"]) for r in rows])]
    assert crops.shape[1:] == (5, 8, 24, 24) and crops.dtype == np.uint16
    predicted = model.predict(crops)
    assert list(predicted["predicted"]) == [r["predicted"] for r in rows]
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, 5, 8, 24, 24)
