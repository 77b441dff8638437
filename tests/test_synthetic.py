"""The synthetic LIVECell generator writes the release's exact layout, deterministically, once."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellexp.data.livecell.release import (
    ANNOTATION_DIR,
    CELL_LINES,
    SPLITS,
    TEST_IMAGE_DIR,
    TRAIN_VAL_IMAGE_DIR,
    annotation_file_name,
    image_dir_for_split,
    parse_image_name,
)
from cellexp.data.synthetic import livecell as synthetic
from cellexp.data.synthetic.livecell import COMPLETE_MARKER, generate_synthetic_livecell
from cellexp.errors import ConfigError, DataError

SMALL = {"train": 1, "val": 1, "test": 1}
HEIGHT, WIDTH = 200, 272


def _generate(root: Path, seed: int = 0, **kwargs) -> Path:
    settings = {"images_per_line": SMALL, "height": HEIGHT, "width": WIDTH} | kwargs
    return generate_synthetic_livecell(root, seed=seed, **settings)


def _load(root: Path, split: str) -> dict:
    return json.loads((root / ANNOTATION_DIR / annotation_file_name(split)).read_text())


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("synthetic") / "livecell")


def test_layout_matches_the_release(dataset):
    assert (dataset / COMPLETE_MARKER).is_file()
    for split in SPLITS:
        assert (dataset / ANNOTATION_DIR / annotation_file_name(split)).is_file()
    train_val = sorted(p.name for p in (dataset / TRAIN_VAL_IMAGE_DIR).iterdir())
    test = sorted(p.name for p in (dataset / TEST_IMAGE_DIR).iterdir())
    assert len(train_val) == 2 * len(CELL_LINES) and len(test) == len(CELL_LINES)
    assert all(name.endswith(".tif") for name in train_val + test)
    assert not set(train_val) & set(test)
    assert not list(dataset.parent.glob(".livecell.tmp-*")), "the staging folder must not be left behind"


def test_every_split_has_one_image_per_line_with_a_parsable_name(dataset):
    for split in SPLITS:
        coco = _load(dataset, split)
        lines = [parse_image_name(im["file_name"])["line"] for im in coco["images"]]
        assert sorted(lines) == sorted(CELL_LINES)
        for im in coco["images"]:
            path = dataset / image_dir_for_split(split) / im["file_name"]
            assert path.is_file()
            assert (im["width"], im["height"]) == (WIDTH, HEIGHT)


def test_images_are_8bit_grayscale_phase_contrast_like(dataset):
    for path in (dataset / TEST_IMAGE_DIR).iterdir():
        with Image.open(path) as image:
            assert image.format == "TIFF" and image.mode == "L" and image.size == (WIDTH, HEIGHT)
            pixels = np.asarray(image)
        assert 90 < np.median(pixels) < 150  # mid-gray background
        assert pixels.std() > 3  # not a flat field


def test_json_has_coco_keys_and_annotations_keyed_by_string_id(dataset):
    for split in SPLITS:
        coco = _load(dataset, split)
        assert {"images", "annotations", "categories", "info", "licenses"} <= set(coco)
        assert coco["categories"] == [{"id": 1, "name": "cell"}]
        assert isinstance(coco["annotations"], dict) and coco["annotations"]
        for key, ann in coco["annotations"].items():
            assert key == str(ann["id"])
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            assert set(ann) >= {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"}


def test_annotation_ids_are_unique_across_splits(dataset):
    ids = [ann["id"] for split in SPLITS for ann in _load(dataset, split)["annotations"].values()]
    assert len(ids) == len(set(ids))


def test_every_image_has_cells(dataset):
    for split in SPLITS:
        coco = _load(dataset, split)
        counts = {im["id"]: 0 for im in coco["images"]}
        for ann in coco["annotations"].values():
            counts[ann["image_id"]] += 1
        assert all(n > 0 for n in counts.values()), counts


def test_polygons_are_valid_and_their_boxes_and_areas_are_exact(dataset):
    for split in SPLITS:
        for ann in _load(dataset, split)["annotations"].values():
            (flat,) = ann["segmentation"]
            poly = np.asarray(flat, dtype=float).reshape(-1, 2)
            assert len(poly) >= 8
            assert poly[:, 0].min() >= 0 and poly[:, 0].max() <= WIDTH - 1
            assert poly[:, 1].min() >= 0 and poly[:, 1].max() <= HEIGHT - 1
            x, y, w, h = ann["bbox"]
            assert np.all(poly[:, 0] >= x - 1e-6) and np.all(poly[:, 0] <= x + w + 1e-6)
            assert np.all(poly[:, 1] >= y - 1e-6) and np.all(poly[:, 1] <= y + h + 1e-6)
            assert poly[:, 0].max() == pytest.approx(x + w, abs=0.011)  # tight, not merely containing
            assert poly[:, 1].max() == pytest.approx(y + h, abs=0.011)
            px, py = poly[:, 0], poly[:, 1]
            shoelace = 0.5 * abs(np.dot(px, np.roll(py, -1)) - np.dot(py, np.roll(px, -1)))
            assert ann["area"] == pytest.approx(shoelace, abs=0.01)
            assert ann["area"] >= 30


def test_pycocotools_loads_it_once_annotations_are_a_list(dataset, tmp_path):
    from pycocotools.coco import COCO

    coco = _load(dataset, "val")
    coco["annotations"] = list(coco["annotations"].values())  # the conversion readers must do
    path = tmp_path / "val_list.json"
    path.write_text(json.dumps(coco))
    api = COCO(str(path))
    for image_id in api.getImgIds():
        ann_ids = api.getAnnIds(imgIds=[image_id])
        assert ann_ids
        mask = api.annToMask(api.loadAnns(ann_ids[:1])[0])
        assert mask.shape == (HEIGHT, WIDTH) and mask.sum() > 0


def test_masks_cover_cells_that_differ_from_the_background(dataset):
    """The pixels under the polygons are the painted cells, not an unrelated patch of background."""
    coco = _load(dataset, "test")
    for image in coco["images"]:
        _assert_cells_stand_out(dataset, coco, image)


def _assert_cells_stand_out(dataset: Path, coco: dict, image: dict) -> None:
    from pycocotools import mask as mask_utils

    with Image.open(dataset / TEST_IMAGE_DIR / image["file_name"]) as im:
        pixels = np.asarray(im, dtype=float)
    union = np.zeros(pixels.shape, dtype=bool)
    for ann in coco["annotations"].values():
        if ann["image_id"] == image["id"]:
            rle = mask_utils.frPyObjects(ann["segmentation"], HEIGHT, WIDTH)
            union |= mask_utils.decode(mask_utils.merge(rle)).astype(bool)
    assert union.any() and (~union).any()
    background = np.median(pixels[~union])
    assert np.abs(pixels[union] - background).mean() > 1.5 * np.abs(pixels[~union] - background).mean()


def test_same_seed_same_bytes_other_seed_other_bytes(dataset, tmp_path):
    again = _all_files(_generate(tmp_path / "again", seed=0))
    assert again == _all_files(dataset)
    other = _all_files(_generate(tmp_path / "other", seed=1))
    assert other.keys() != again.keys() or any(other[k] != again[k] for k in other)
    first_test_image = sorted((tmp_path / "other" / TEST_IMAGE_DIR).iterdir())[0].read_bytes()
    assert first_test_image != sorted((dataset / TEST_IMAGE_DIR).iterdir())[0].read_bytes()


def test_an_image_does_not_depend_on_how_many_others_are_made(tmp_path):
    one = _generate(tmp_path / "one", images_per_line={"train": 1})
    two = _generate(tmp_path / "two", images_per_line={"train": 2, "test": 1})
    first = _all_files(one / TRAIN_VAL_IMAGE_DIR)
    assert len(first) == len(CELL_LINES)
    both = _all_files(two / TRAIN_VAL_IMAGE_DIR)
    assert all(both.get(name) == data for name, data in first.items())


def test_second_call_does_no_work(dataset, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in dataset.rglob("*")}

    def fail(*args, **kwargs):
        raise AssertionError("a completed dataset must not be generated again")

    monkeypatch.setattr(synthetic, "_write_dataset", fail)
    assert _generate(dataset) == dataset
    assert {p: p.stat().st_mtime_ns for p in dataset.rglob("*")} == before


def test_concurrent_callers_generate_once(tmp_path, monkeypatch):
    calls = []
    real = synthetic._write_dataset

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_write_dataset", counting)
    root = tmp_path / "shared"
    results, errors = [], []

    def call():
        try:
            results.append(_generate(root, images_per_line={"test": 1}))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [root, root]
    assert len(calls) == 1
    assert (root / COMPLETE_MARKER).is_file()


def test_density_scales_the_number_of_cells(tmp_path):
    def count(root: Path) -> int:
        return len(_load(root, "test")["annotations"])

    sparse = count(_generate(tmp_path / "sparse", images_per_line={"test": 1}, density=0.4))
    dense = count(_generate(tmp_path / "dense", images_per_line={"test": 1}, density=1.0))
    assert sparse < 0.7 * dense


def test_an_empty_target_folder_is_used_but_a_foreign_one_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (_generate(empty, images_per_line={"test": 1}) / COMPLETE_MARKER).is_file()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="refusing"):
        _generate(foreign, images_per_line={"test": 1})
    assert (foreign / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "kwargs", [{"images_per_line": {"training": 1}}, {"density": 0.0}, {"height": 8}, {"seed": -1}]
)
def test_bad_settings_fail_before_any_work(tmp_path, kwargs):
    with pytest.raises(ValueError):
        _generate(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()


def test_a_folder_generated_with_other_settings_is_refused_not_reused(tmp_path):
    root = _generate(tmp_path / "data", images_per_line={"test": 1})
    assert _generate(root, images_per_line={"test": 1}) == root  # the same settings: reused
    with pytest.raises(ConfigError, match=r"other settings \(density 1.0 there, 0.5 asked\).*dataset.root=") as error:
        _generate(root, images_per_line={"test": 1}, density=0.5)
    assert str(root) in str(error.value)


def test_the_multichannel_16bit_variant_keeps_the_phase_channel(dataset, tmp_path):
    variant = _generate(tmp_path / "variant", images_per_line={"test": 1}, channels=2, bit_depth=16)
    names = sorted(p.name for p in (variant / TEST_IMAGE_DIR).iterdir())
    assert names == sorted(p.name for p in (dataset / TEST_IMAGE_DIR).iterdir())
    for name in names:
        pixels = tifffile.imread(variant / TEST_IMAGE_DIR / name)
        assert pixels.shape == (2, HEIGHT, WIDTH) and pixels.dtype == np.uint16
        phase = np.asarray(Image.open(dataset / TEST_IMAGE_DIR / name)).astype(np.uint16)
        np.testing.assert_array_equal(pixels[0], phase * 16 + 100)  # a 12-bit camera's range
        assert pixels[1].max() > 2000 and np.median(pixels[1]) < 600  # bright stained cells on a dark background
    with pytest.raises(ConfigError, match="was generated with other settings.*channels"):
        _generate(tmp_path / "variant", images_per_line={"test": 1}, channels=3, bit_depth=16)
