"""Cropping, the crop store (counts, reuse, corrupt images, concurrency), sampling and batch transforms."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cellexp.data.coco import load_coco
from cellexp.data.crops import cut_cell
from cellexp.data.livecell import image_file_name, parse_image_name
from cellexp.data.prepare import CropSettings, SplitSource, prepare_crop_store
from cellexp.data.sampling import BalancedSampler
from cellexp.data.sources import find_livecell_sources
from cellexp.data.transforms import BatchTransform
from cellexp.errors import DataError


def _write_dataset(root: Path, annotations_as_dict: bool = True) -> dict[str, SplitSource]:
    """Three 40x60 images (two lines), two square cells each, in LIVECell layout."""
    sources = {}
    ann_id = 1
    for split, folder in (
        ("train", "images/livecell_train_val_images"),
        ("val", "images/livecell_train_val_images"),
        ("test", "images/livecell_test_images"),
    ):
        image_dir = root / folder
        image_dir.mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for image_id, line in enumerate(("A172", "SKOV3"), start=1):
            name = image_file_name(line, "B2", image_id, {"train": 4, "val": 6, "test": 8}[split], 1)
            pixels = np.full((40, 60), 200, np.uint8)
            Image.fromarray(pixels).save(image_dir / name)
            images.append({"id": image_id, "file_name": name, "width": 60, "height": 40})
            for x0 in (5, 30):
                poly = [x0, 5, x0 + 20, 5, x0 + 20, 25, x0, 25]
                anns.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": 1,
                        "segmentation": [poly],
                        "area": 400.0,
                        "bbox": [x0, 5, 20, 20],
                        "iscrowd": 0,
                    }
                )
                ann_id += 1
        payload = {str(a["id"]): a for a in anns} if annotations_as_dict else anns
        ann_file = root / f"livecell_coco_{split}.json"
        ann_file.write_text(json.dumps({"images": images, "annotations": payload}))
        sources[split] = SplitSource(ann_file, image_dir)
    return sources


def test_livecell_names_parse_into_fields():
    fields = parse_image_name("A172_Phase_C7_1_00d04h00m_2.tif")
    assert fields == {"line": "A172", "well": "C7", "location": 1, "elapsed_hours": 4.0, "tile": 2}
    with pytest.raises(ValueError, match="XYZ_Phase"):
        parse_image_name("XYZ_Phase_C7_1_00d04h00m_2.tif")


def test_coco_annotations_as_dict_or_list_read_the_same(tmp_path):
    as_dict = _write_dataset(tmp_path / "d", annotations_as_dict=True)["train"].annotation_file
    as_list = _write_dataset(tmp_path / "l", annotations_as_dict=False)["train"].annotation_file
    a, b = load_coco(as_dict), load_coco(as_list)
    assert sorted(a.anns) == sorted(b.anns) == [1, 2, 3, 4]
    assert a.imgToAnns[1][0]["bbox"] == [5, 5, 20, 20]


def test_cut_cell_keeps_the_cell_and_blacks_out_the_rest():
    image = np.full((50, 50), 100, np.uint8)
    triangle = [[10.0, 10.0, 40.0, 10.0, 10.0, 40.0]]
    crop, mask = cut_cell(image, triangle, [10, 10, 30, 30], size=64)
    assert crop.shape == mask.shape == (64, 64)
    assert set(np.unique(crop)) <= {0, 100}
    assert (crop[mask == 0] == 0).all() and (crop[mask == 1] == 100).all()
    assert 0.4 < mask.mean() < 0.6  # a right triangle fills half of its box
    assert mask[5, 5] == 1 and mask[58, 58] == 0  # the corner at the origin is inside, the opposite one is not


def test_store_counts_every_cell_and_is_reused(tmp_path):
    sources = _write_dataset(tmp_path / "src")
    store = prepare_crop_store(sources, CropSettings(crop_size=32), tmp_path / "cache")
    assert {split: len(store.labels(split)) for split in ("train", "val", "test")} == {"train": 4, "val": 4, "test": 4}
    assert store.images("train").shape == (4, 32, 32) and store.masks("train").dtype == np.uint8
    assert store.labels("test").tolist() == [0, 0, 7, 7]  # A172, A172, SKOV3, SKOV3
    assert store.manifest("val")[3]["well"] == "B2"
    marker = store.path / ".complete"
    stamp = marker.stat().st_mtime_ns
    again = prepare_crop_store(sources, CropSettings(crop_size=32), tmp_path / "cache")
    assert again.path == store.path and marker.stat().st_mtime_ns == stamp
    other = prepare_crop_store(sources, CropSettings(crop_size=16), tmp_path / "cache")
    assert other.path != store.path


def test_corrupt_image_is_skipped_counted_and_reported(tmp_path):
    sources = _write_dataset(tmp_path / "src")
    broken = sources["train"].image_dir / load_coco(sources["train"].annotation_file).imgs[2]["file_name"]
    broken.write_bytes(b"not a tiff")
    store = prepare_crop_store(sources, CropSettings(crop_size=32), tmp_path / "cache")
    assert len(store.labels("train")) == 2  # the other image's two cells are kept
    failed = store.summary["failed_images"]
    assert [(f["split"], f["image"]) for f in failed] == [("train", broken.name)]


def _prepare_in_subprocess(args):
    sources, cache = args
    return str(prepare_crop_store(sources, CropSettings(crop_size=32), cache).path)


def test_concurrent_preparation_builds_one_store(tmp_path):
    sources = _write_dataset(tmp_path / "src")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        paths = pool.map(_prepare_in_subprocess, [(sources, tmp_path / "cache")] * 2)
    assert paths[0] == paths[1]
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == [Path(paths[0]).name]


def test_missing_annotation_file_is_named(tmp_path):
    (tmp_path / "images" / "livecell_train_val_images").mkdir(parents=True)
    with pytest.raises(DataError, match="livecell_coco_train.json"):
        find_livecell_sources(tmp_path)


def test_balanced_sampler_evens_out_classes_and_replays_by_epoch():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    sampler = BalancedSampler(labels, seed=3)
    first = list(sampler)
    counts = np.bincount(labels[first], minlength=3)
    assert counts.min() > 250  # each class near a third of 1000 draws
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_batch_transform_resizes_normalises_and_augments_only_in_training():
    crops = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16).remainder(256).to(torch.uint8)
    evaluation = BatchTransform(image_size=8).eval()
    out = evaluation(crops)
    assert out.shape == (2, 1, 8, 8)
    assert torch.equal(out, evaluation(crops))
    torch.manual_seed(0)
    training = BatchTransform(image_size=16, augment=True).train()
    augmented = training(crops.repeat(8, 1, 1, 1))
    plain = BatchTransform(image_size=16)(crops.repeat(8, 1, 1, 1))
    assert not torch.equal(augmented, plain)
    # flips and turns move pixels, never change them
    assert torch.equal(augmented.flatten(1).sort().values, plain.flatten(1).sort().values)
