"""Cropping, the crop store (counts, reuse, corrupt images, concurrency), sampling and batch transforms."""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image

from cellexp.data.crops import cell_box, cell_mask, context_cell, cut_cell, square_mask
from cellexp.data.datamodule import _context_margin, load_crop_data
from cellexp.data.livecell import prepare
from cellexp.data.livecell.coco import load_coco
from cellexp.data.livecell.prepare import CropSettings, SplitSource, prepare_crop_store, split_key
from cellexp.data.livecell.release import image_file_name, parse_image_name
from cellexp.data.livecell.sources import find_livecell_cls_sources, find_livecell_sources
from cellexp.data.sampling import BalancedSampler
from cellexp.data.store import SplitStore
from cellexp.data.transforms import BatchTransform, InputConfig
from cellexp.errors import ConfigError, DataError


def _write_dataset(
    root: Path,
    annotations_as_dict: bool = True,
    images_per_split: int = 2,
    shape: str = "square",
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> dict[str, SplitSource]:
    """40x60 images of alternating lines (A172, SKOV3, ...) with two cells each, in LIVECell layout."""
    sources = {}
    ann_id = 1
    for split in splits:
        image_dir = root / ("images/livecell_test_images" if split == "test" else "images/livecell_train_val_images")
        image_dir.mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for image_id in range(1, images_per_split + 1):
            line = ("A172", "SKOV3")[(image_id - 1) % 2]
            name = image_file_name(line, "B2", image_id, {"train": 4, "val": 6, "test": 8}[split], 1)
            pixels = np.full((40, 60), 200, np.uint8)
            Image.fromarray(pixels).save(image_dir / name)
            images.append({"id": image_id, "file_name": name, "width": 60, "height": 40})
            for x0 in (5, 30):
                corners = [x0, 5, x0 + 20, 5, x0 + 20, 25, x0, 25] if shape == "square" else [x0, 5, x0 + 20, 5, x0, 25]
                anns.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": 1,
                        "segmentation": [corners],
                        "area": 400.0 if shape == "square" else 200.0,
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


def test_a_context_crop_keeps_the_surroundings_as_imaged_and_the_cells_own_mask():
    """Grad-CAMO needs something outside the cell to look at: a neighbour, the background."""
    image = (np.arange(60 * 60).reshape(60, 60) % 200 + 20).astype(np.uint8)  # no pixel is 0
    square = [[20.0, 20.0, 40.0, 20.0, 40.0, 40.0, 20.0, 40.0]]  # a 20 x 20 cell at (20, 20)
    box = cell_box([20, 20, 20, 20], 60, 60)
    crop, mask = context_cell(image, cell_mask(square, box), box, size=40, margin=0.5)
    assert crop.shape == mask.shape == (40, 40)
    # the window is 40 px (20 x (1 + 2 x 0.5)) around the cell: rows and columns 10..50, one pixel per pixel
    assert np.array_equal(crop, image[10:50, 10:50])
    expected = np.zeros((40, 40), np.uint8)
    expected[10:30, 10:30] = 1
    assert np.array_equal(mask, expected)
    assert (crop[mask == 0] > 0).all()  # outside the cell is what was imaged, not black
    # at the image's edge the window reaches beyond it: zeros there
    corner = [[0.0, 0.0, 10.0, 0.0, 10.0, 10.0, 0.0, 10.0]]
    box = cell_box([0, 0, 10, 10], 60, 60)
    crop, mask = context_cell(image, cell_mask(corner, box), box, size=30, margin=1.0)
    assert (crop[:10] == 0).all() and (crop[:, :10] == 0).all() and (crop[10:, 10:] > 0).all()
    assert mask[10:20, 10:20].all() and mask.sum() == 100


def test_context_crops_are_their_own_store_and_refused_for_published_crops():
    assert _context_margin(OmegaConf.create({"format": "livecell", "context_margin": 0.5})) == 0.5
    with pytest.raises(ConfigError, match="dataset.context_margin: LIVECell-CLS"):
        _context_margin(OmegaConf.create({"format": "livecell_cls", "context_margin": 0.5}))
    with pytest.raises(ConfigError, match="dataset.context_margin"):
        _context_margin(OmegaConf.create({"format": "livecell", "context_margin": -1}))
    plain, context = CropSettings(crop_size=32), CropSettings(crop_size=32, context_margin=0.5)
    source = _FakeSource()
    assert split_key("train", source, plain) != split_key("train", source, context)


class _FakeSource:
    def identity(self) -> dict:
        return {"files": []}


SPLITS = ("train", "val", "test")


def _same_store(a, b) -> bool:
    return all(
        np.array_equal(a.images(s)[:], b.images(s)[:])
        and np.array_equal(a.masks(s)[:], b.masks(s)[:])
        and np.array_equal(a.labels(s), b.labels(s))
        and a.manifest(s) == b.manifest(s)
        for s in SPLITS
    )


@pytest.mark.parametrize("annotations_as_dict", [True, False], ids=["dict-keyed", "list"])
def test_store_counts_every_cell_and_is_reused(tmp_path, annotations_as_dict):
    sources = _write_dataset(tmp_path / "src", annotations_as_dict=annotations_as_dict)
    store = prepare_crop_store(sources, CropSettings(crop_size=32), tmp_path / "cache")
    assert {split: len(store.labels(split)) for split in SPLITS} == {"train": 4, "val": 4, "test": 4}
    assert store.images("train").shape == (4, 32, 32) and store.masks("train")[:].dtype == np.uint8
    assert store.labels("test").tolist() == [0, 0, 7, 7]  # A172, A172, SKOV3, SKOV3
    assert store.manifest("val")[3]["well"] == "B2" and store.manifest("val")[3]["index"] == "3"
    assert store.summary["splits"]["train"]["per_class"] == {"A172": 2, "SKOV3": 2}
    markers = {split: split_store.path / ".complete" for split, split_store in store.splits.items()}
    stamps = {split: marker.stat().st_mtime_ns for split, marker in markers.items()}
    again = prepare_crop_store(sources, CropSettings(crop_size=32), tmp_path / "cache")
    assert {s: again.splits[s].path for s in SPLITS} == {s: store.splits[s].path for s in SPLITS}
    assert {split: marker.stat().st_mtime_ns for split, marker in markers.items()} == stamps  # no work redone
    other = prepare_crop_store(sources, CropSettings(crop_size=16), tmp_path / "cache")
    assert other.splits["train"].path != store.splits["train"].path


def test_stored_masks_match_polygons_rasterised_over_the_whole_image(tmp_path):
    sources = _write_dataset(tmp_path / "src", shape="triangle")
    store = prepare_crop_store(sources, CropSettings(crop_size=24), tmp_path / "cache")
    coco = load_coco(sources["train"].annotation_file)
    for index, row in enumerate(store.manifest("train")):
        ann = coco.anns[int(row["annotation_id"])]
        x, y, w, h = (int(v) for v in ann["bbox"])
        whole = coco.annToMask(ann)[y : y + h, x : x + w]  # the common way: rasterise over the whole image
        expected = square_mask(whole, 24).astype(bool)
        assert np.array_equal(store.masks("train")[index], expected)
        crop = store.images("train")[index]
        assert (crop[~expected] == 0).all() and (crop[expected] > 0).all()


def test_sharded_array_reads_rows_in_any_order(tmp_path):
    sources = _write_dataset(tmp_path / "src")
    store = prepare_crop_store(sources, CropSettings(crop_size=16, shard_images=1), tmp_path / "cache")
    images = store.images("train")
    assert len(images.sizes) == 2 and len(images) == 4  # two shards of one image each
    whole = images[:]
    assert np.array_equal(images[[3, 0, 2]], whole[[3, 0, 2]]) and np.array_equal(images[-1], whole[3])
    assert np.array_equal(images[1:3], whole[1:3]) and images[[]].shape == (0, 16, 16)
    with pytest.raises(IndexError):
        images[4]


def test_interrupted_preparation_resumes_to_an_identical_store(tmp_path, monkeypatch):
    sources = _write_dataset(tmp_path / "src", images_per_split=4)
    settings = CropSettings(crop_size=16, shard_images=1)
    reference = prepare_crop_store(sources, settings, tmp_path / "fresh", workers=1)
    calls = []
    real = prepare._prepare_shard

    def dies_after_two_shards(job):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(job[1])
        return real(job)

    monkeypatch.setattr(prepare, "_prepare_shard", dies_after_two_shards)
    with pytest.raises(KeyboardInterrupt):
        prepare_crop_store(sources, settings, tmp_path / "cache", workers=1)
    (partial,) = (tmp_path / "cache").glob("train-*.partial")
    assert sorted(p.name for p in partial.glob("shards/stats_*")) == ["stats_00000.json", "stats_00001.json"]
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir() and not p.name.endswith(".partial")]
    calls.clear()
    monkeypatch.setattr(prepare, "_prepare_shard", lambda job: calls.append(job[1]) or real(job))
    resumed = prepare_crop_store(sources, settings, tmp_path / "cache", workers=1)
    assert calls[:2] == [2, 3]  # train continued at its third shard; val and test were done from scratch
    assert _same_store(resumed, reference)


def test_parallel_preparation_gives_the_same_store(tmp_path):
    sources = _write_dataset(tmp_path / "src", images_per_split=4)
    settings = CropSettings(crop_size=16, shard_images=1)
    one = prepare_crop_store(sources, settings, tmp_path / "one", workers=1)
    two = prepare_crop_store(sources, settings, tmp_path / "two", workers=2)
    assert _same_store(one, two)


def test_bad_inputs_are_reported_by_name_and_the_rest_is_prepared(tmp_path):
    sources = _write_dataset(tmp_path / "src", images_per_split=4)
    coco = json.loads(sources["train"].annotation_file.read_text())
    images = coco["images"]
    (sources["train"].image_dir / images[0]["file_name"]).unlink()  # the annotation points at a missing image
    truncated = sources["train"].image_dir / images[1]["file_name"]
    truncated.write_bytes(truncated.read_bytes()[:200])
    unknown = images[2]["file_name"].replace("A172", "HeLa")
    (sources["train"].image_dir / images[2]["file_name"]).rename(sources["train"].image_dir / unknown)
    images[2]["file_name"] = unknown
    cells = list(coco["annotations"].values())
    last = [c for c in cells if c["image_id"] == images[3]["id"]]
    last[0]["segmentation"] = [[]]
    x, y, w, h = last[1]["bbox"]
    last[1]["segmentation"] = [[x, y, x + w, y + h, x + w, y, x, y + h]]  # a figure eight
    sources["train"].annotation_file.write_text(json.dumps(coco))
    sources["val"].annotation_file.write_text('{"images": [')

    with pytest.raises(DataError, match=r"livecell_coco_val\.json is not valid JSON.*other splits are prepared"):
        prepare_crop_store(sources, CropSettings(crop_size=16), tmp_path / "cache")
    (train,) = [SplitStore(p) for p in (tmp_path / "cache").glob("train-*") if p.is_dir()]
    failed = {f["image"]: f["reason"] for f in train.summary["failed_images"]}
    assert set(failed) == {images[0]["file_name"], images[1]["file_name"], unknown}
    assert "No such file" in failed[images[0]["file_name"]] and "HeLa" in failed[unknown]
    assert train.summary["dropped"] == {"empty polygon": 1, "self-intersecting polygon": 1}
    assert sorted(c["annotation_id"] for c in train.summary["invalid_cells"]) == sorted(c["id"] for c in last[:2])
    assert len(train.labels) == 0  # the fourth image had two cells, both rejected
    stamp = (train.path / ".complete").stat().st_mtime_ns

    _write_dataset(tmp_path / "src", images_per_split=4, splits=("val",))  # the user fixes the val file
    store = prepare_crop_store(sources, CropSettings(crop_size=16), tmp_path / "cache")
    assert store.splits["train"].path == train.path and (train.path / ".complete").stat().st_mtime_ns == stamp
    assert len(store.labels("val")) == 8


def test_16bit_and_multichannel_images_are_stored_as_imaged_and_other_kinds_listed(tmp_path):
    sources = _write_dataset(tmp_path / "src", images_per_split=3, splits=("train",))
    names = [entry["file_name"] for entry in json.loads(sources["train"].annotation_file.read_text())["images"]]
    image_dir = sources["train"].image_dir
    for k, name in enumerate(names):
        ramp = np.linspace(100, 4000, 40 * 60).reshape(40, 60).astype(np.uint16)
        pixels = np.stack([ramp, ramp[::-1] + k]) if k < 2 else ramp  # the third: one channel, another kind
        tifffile.imwrite(image_dir / name, pixels)
    store = prepare_crop_store(sources, CropSettings(crop_size=16), tmp_path / "cache")
    crops = store.images("train")[:]
    assert store.kind == "2 channels of uint16" and crops.shape == (4, 2, 16, 16) and crops.dtype == np.uint16
    assert crops.max() > 255 and (crops[:, 0] != crops[:, 1]).any()  # every channel, 16 bits as imaged
    (failed,) = store.splits["train"].summary["failed_images"]
    assert failed["image"] == names[2]
    assert "1 channel of uint16; the split's images have 2 channels of uint16" in failed["reason"]


def _write_cls_dataset(root: Path) -> None:
    """LIVECell-CLS layout: 12x12 pngs whose nonzero pixels are the cell, classes from folders or names."""
    cells = {
        "train": [("A172", "a.png"), ("A172", "b.png"), ("BT-474", "c.png"), ("misc", "SKOV3_17.png")],
        "val": [("SkBr3", "d.png"), ("misc", "HeLa_1.png")],
        "test": [("SH-SY5Y", "e.png")],
    }
    for split, files in cells.items():
        for k, (folder, name) in enumerate(files):
            pixels = np.zeros((12, 12), np.uint8)
            pixels[2 : 6 + k, 3:9] = 100 + k
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / split / folder / name)


def test_published_crop_folders_read_with_classes_from_folders_or_names(tmp_path):
    _write_cls_dataset(tmp_path / "cls")
    store = prepare_crop_store(find_livecell_cls_sources(tmp_path / "cls"), CropSettings(crop_size=12), tmp_path / "c")
    names = store.class_names
    assert [names[i] for i in store.labels("train")] == ["A172", "A172", "BT474", "SKOV3"]
    assert [names[i] for i in store.labels("val")] == ["SkBr3"]
    assert [names[i] for i in store.labels("test")] == ["SHSY5Y"]
    (failed,) = store.summary["failed_images"]
    assert failed["image"] == "misc/HeLa_1.png" and "no cell line" in failed["reason"]
    crops, masks = store.images("train")[:], store.masks("train")[:]
    assert np.array_equal(masks, (crops > 0).astype(np.uint8))  # the mask is the crop's nonzero pixels
    assert masks[0].sum() == 4 * 6 and masks[1].sum() == 5 * 6


def test_cell_lines_can_be_restricted_without_preparing_again(make_cfg):
    cfg = make_cfg(["dataset.cell_lines=[SKOV3,A172]"])
    data = load_crop_data(cfg.dataset, seed=0)
    assert data.class_names == ["SKOV3", "A172"]
    full = load_crop_data(make_cfg().dataset, seed=0)
    assert data.store.splits["train"].path == full.store.splits["train"].path
    stored = full.store.labels("train")
    assert len(data.splits["train"]) == int(((stored == 7) | (stored == 0)).sum())
    assert sorted(set(data.splits["train"].labels.tolist())) == [0, 1]
    assert (stored[data.splits["train"].indices[data.splits["train"].labels == 0]] == 7).all()
    with pytest.raises(ConfigError, match="HeLa"):
        load_crop_data(make_cfg(["dataset.cell_lines=[HeLa]"]).dataset, seed=0)


def _prepare_in_subprocess(args):
    sources, cache = args
    return str(prepare_crop_store(sources, CropSettings(crop_size=32), cache, workers=1).splits["train"].path)


def test_concurrent_preparation_builds_one_store(tmp_path):
    sources = _write_dataset(tmp_path / "src")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        paths = pool.map(_prepare_in_subprocess, [(sources, tmp_path / "cache")] * 2)
    assert paths[0] == paths[1]
    folders = sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock"))
    assert len(folders) == 3 and Path(paths[0]).name in folders  # one folder per split, each built once


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


def test_batch_affine_and_jitter_keep_the_background_black_and_only_act_in_training():
    crops = torch.zeros(16, 1, 32, 32, dtype=torch.uint8)
    crops[:, :, 8:24, 10:22] = 120
    strengths = {"degrees": 20, "scale": (0.8, 1.2), "translate": 0.1, "brightness": 0.3, "contrast": 0.3}
    transform = BatchTransform(image_size=24, augment=True, **strengths)
    torch.manual_seed(0)
    out = transform.train()(crops)
    assert out.shape == (16, 1, 24, 24) and torch.isfinite(out).all()
    black = (0 - transform.mean) / transform.std
    corners = out[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert torch.allclose(corners, torch.full_like(corners, black))  # no cell reaches the corners
    cell_means = [(o[o > black + 1e-4]).mean().item() for o in out]
    assert max(cell_means) - min(cell_means) > 0.1  # brightness differs from crop to crop
    assert torch.equal(transform.eval()(crops), BatchTransform(image_size=24)(crops))


def test_flip_prob_flips_without_turning_and_jitter_prob_spares_a_share_of_the_crops():
    """CLANet's DINO views: vertical and horizontal flips, each with a chance, no turns; jitter half the time."""
    crops = torch.randint(1, 256, (400, 1, 6, 6), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    plain = BatchTransform(image_size=6)(crops)
    torch.manual_seed(0)
    out = BatchTransform(image_size=6, augment=True, flip_prob=0.3).train()(crops)
    orientations = [plain, plain.flip(-2), plain.flip(-1), plain.flip(-2).flip(-1)]
    which = torch.stack([(out == o).flatten(1).all(1) for o in orientations], 1)
    assert which.any(1).all()  # every crop is one of the 4 flips: never transposed
    unflipped = which[:, 0].float().mean().item()
    assert abs(unflipped - 0.7 * 0.7) < 0.08
    assert torch.equal(BatchTransform(image_size=6, augment=True, flip_prob=0.0).train()(crops), plain)
    jitter = BatchTransform(image_size=6, augment=True, flip_prob=0.0, brightness=0.5, contrast=0.5, jitter_prob=0.5)
    torch.manual_seed(1)
    unchanged = (jitter.train()(crops) == plain).flatten(1).all(1).float().mean().item()
    assert abs(unchanged - 0.5) < 0.1
    with pytest.raises(ValueError, match="flip_prob"):
        BatchTransform(image_size=6, augment=True, flip_prob=0.3, degrees=10)


def test_16bit_crops_are_scaled_by_their_recorded_channel_ranges():
    inputs = InputConfig(8, in_chans=2, mean=0.0, std=1.0, channels=2, intensity=((100.0, 1100.0), (0.0, 4000.0)))
    assert InputConfig.from_record(json.loads(json.dumps(asdict(inputs)))) == inputs  # as meta.json records it
    crops = torch.tensor([[100, 600, 1100, 3000], [0, 1000, 2000, 8000]], dtype=torch.uint16).view(1, 2, 2, 2)
    x = inputs.transform()(crops)
    expected = torch.tensor([[0.0, 0.5, 1.0, 1.0], [0.0, 0.25, 0.5, 1.0]]).view(1, 2, 2, 2)
    torch.testing.assert_close(F.interpolate(expected, size=(8, 8), mode="bilinear", antialias=True), x)
    grey = InputConfig(8, mean=0.0, std=1.0).transform()(torch.full((1, 1, 8, 8), 51, dtype=torch.uint8))
    torch.testing.assert_close(grey, torch.full((1, 1, 8, 8), 0.2))  # 8-bit crops: / 255 as before
