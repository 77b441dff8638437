"""Time-lapse data as published CLANet reads it: sequence keys, name layouts, validation carved per batch, the
published split files, the published TSS sampler, and frames with few patches."""

from __future__ import annotations

import csv
import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

import cellexp
from cellexp.data.synthetic.timelapse import generate_timelapse
from cellexp.data.timelapse.bags import Bag, bag_splits, load_bags
from cellexp.data.timelapse.folders import (
    DEFAULT_NAME_PATTERN,
    WELL_THIRD_PATTERN,
    build_splits,
    group_sequences,
    name_patterns,
    parse_name,
    scan,
    unread_batches,
)
from cellexp.data.timelapse.split_files import file_splits, read_split_file
from cellexp.engine.checkpoint import MODEL_FILE
from cellexp.errors import ConfigError, DataError
from cellexp.mil import tss
from cellexp.mil.embeddings import patch_standardization
from cellexp.mil.training import TSSSampler, TSSSamples
from cellexp.models.mil import GatedAttentionMIL
from tests.conftest import tracked_run

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"height": 96, "width": 128, "cells": 18, "scale": 1.5, "timepoints": 4, "wells": 3}
SMALL_PATCHES = {"size": 32, "top_k": 6, "downsample": 1, "min_object_px": 8, "shard_images": 50}


def _frames(names: list[str]):
    return [parse_name(name) for name in names]


def _sequences(lines=("A", "B"), batches=(1, 2, 3), wells=("D1", "D11"), times=(0, 4, 8)):
    names = [
        f"{line}/batch_{b}/VID17{b}_{w}_1_{t // 24:02d}d{t % 24:02d}h00m.jpg"
        for line in lines
        for b in batches
        for w in wells
        for t in times
    ]
    return group_sequences(_frames(names))[0]


# 1. sequences are keyed by every field that separates them


def test_two_experiments_or_flasks_with_one_well_in_a_batch_are_separate_sequences():
    names = [
        f"A172/batch_1/VID{exp}_D1_{flask}_00d{t:02d}h00m.jpg"
        for exp, flask in [("1709", "1"), ("1710", "1"), ("1709", "2")]
        for t in (0, 4, 8)
    ]
    sequences, _ = group_sequences(_frames(names))
    assert [s.key for s in sequences] == [
        "A172/batch_1/VID1709_D1_1",
        "A172/batch_1/VID1709_D1_2",
        "A172/batch_1/VID1710_D1_1",
    ]
    for s in sequences:  # no duplicate timepoints
        assert s.hours.tolist() == [0.0, 4.0, 8.0]
        assert len({(f.experiment, f.flask) for f in s.frames}) == 1


def test_a_wells_sequences_stay_on_one_side_of_a_split():
    names = [
        f"L{line}/batch_{b}/VID17{b}{exp}_{w}_1_00d0{t}h00m.jpg"
        for line in range(2)
        for b in (1, 2)
        for w in ("D1", "D11", "B1", "B11")
        for exp in (0, 1)
        for t in range(3)
    ]
    sequences, _ = group_sequences(_frames(names))
    assert len(sequences) == 2 * 2 * 4 * 2
    for seed in range(5):
        splits = build_splits(sequences, "batch_stratified", seed, val_fraction=0.5)
        side = {}
        for name, members in splits.items():
            for s in members:
                assert side.setdefault((s.line, s.batch, s.well), name) == name


# 2. file-name layouts: dataset.name_patterns


def test_the_alternate_layout_is_read_when_its_pattern_is_given():
    name = "HS-5/batch_2/VID1802_1_83015_01d02h30m.jpg"
    with pytest.raises(DataError, match="dataset.name_patterns"):
        parse_name(name)
    frame = parse_name(name, name_patterns([DEFAULT_NAME_PATTERN, WELL_THIRD_PATTERN]))
    assert (frame.experiment, frame.well, frame.flask, frame.hours) == ("1802", "83015", "1", 26.5)
    standard = parse_name(
        "HS-5/batch_1/VID1801_B1_1_00d00h00m.jpg", name_patterns([DEFAULT_NAME_PATTERN, WELL_THIRD_PATTERN])
    )
    assert (standard.well, standard.flask) == ("B1", "1")  # the default comes first


def _touch(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_a_batch_in_another_layout_is_named_as_skipped_unless_its_pattern_is_given(tmp_path):
    names = [f"HS-5/batch_1/VID1801_B1_1_00d{t:02d}h00m.jpg" for t in (0, 4, 8)]
    names += [f"HS-5/batch_2/VID1802_1_83015_00d{t:02d}h00m.jpg" for t in (0, 4, 8)]
    _touch(tmp_path, names)
    frames, failed = scan(tmp_path)
    assert {f.batch for f in frames} == {"1"} and len(failed) == 3
    assert unread_batches(frames, failed) == [
        {
            "batch": "HS-5/batch_2",
            "reason": "none of its 3 images has a name that dataset.name_patterns reads; skipped",
        }
    ]
    frames, failed = scan(tmp_path, [DEFAULT_NAME_PATTERN, WELL_THIRD_PATTERN])
    assert not failed and not unread_batches(frames, failed)
    keys = [s.key for s in group_sequences(frames)[0]]
    assert keys == ["HS-5/batch_1/VID1801_B1_1", "HS-5/batch_2/VID1802_83015_1"]


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        (["VID(?P<exp>"], r"dataset.name_patterns\[0\]=.*not a regular expression"),
        (
            [DEFAULT_NAME_PATTERN, r"VID(?P<exp>\d+)_(?P<well>\w+)"],
            r"dataset.name_patterns\[1\]=.*lacks .*flask, d, h, m",
        ),
        ([], r"dataset.name_patterns must be a non-empty list"),
        (DEFAULT_NAME_PATTERN, r"dataset.name_patterns must be a non-empty list"),
        ([3], r"dataset.name_patterns\[0\]=3: not a string"),
    ],
)
def test_bad_name_patterns_are_refused_by_name(patterns, message):
    with pytest.raises(ConfigError, match=message):
        name_patterns(patterns)


def test_the_shipped_config_holds_the_default_pattern():
    dataset = OmegaConf.load(ROOT / "conf" / "dataset" / "timelapse.yaml")
    assert list(dataset.name_patterns) == [DEFAULT_NAME_PATTERN]
    assert WELL_THIRD_PATTERN in (ROOT / "conf" / "dataset" / "timelapse.yaml").read_text()


# 3. validation is carved within each batch


@pytest.mark.parametrize("seed", range(5))
def test_validation_is_carved_within_each_batch(seed):
    wells = ("B1", "B11", "C1", "C11", "D1", "D11", "E1", "E11")
    splits = build_splits(_sequences(batches=(1, 2, 3, 4), wells=wells), "batch_stratified", seed, val_fraction=0.5)
    for line in ("A", "B"):
        for b in ("1", "2", "3", "4"):
            count = {name: sum(s.line == line and s.batch == b for s in seqs) for name, seqs in splits.items()}
            assert count == {"train": 1, "val": 1, "test": 6}, (line, b, count)
    assert splits.unsplit == []


def test_batches_that_cannot_be_split_train_and_are_named(caplog):
    sequences = _sequences(batches=(1, 2, 3), wells=("D1", "D11", "B1")) + _sequences(batches=(4,), wells=("C1",))
    with caplog.at_level(logging.WARNING, logger="cellexp.data.timelapse.folders"):
        splits = build_splits(sequences, "batch_stratified", 0, val_fraction=0.2)
    train = {(s.line, s.batch) for s in splits["train"]}
    assert ("A", "4") in train and not any(s.batch == "4" for s in splits["test"])  # a single well trains
    assert {(s.line, s.batch) for s in splits["test"]} == {(ln, b) for ln in "AB" for b in "123"}
    assert len(train) == 8 and not splits["val"]  # every batch keeps its one training well
    named = {u["batch"]: u["reason"] for u in splits.unsplit}
    assert named["A/batch_4"] == "one well: training only, none tests; one training well: none for validation"
    assert named["A/batch_1"] == "one training well: none for validation"  # 3 wells: 2 test, 1 trains
    assert "A/batch_4" in caplog.text


def _bags(sequences) -> list[Bag]:
    return [Bag(s, s.hours, [np.arange(i, i + 1) for i in range(len(s.frames))]) for s in sequences]


def test_no_validation_well_at_all_stops_the_run_by_name():
    dataset = OmegaConf.create(
        {"split_scheme": "batch_stratified", "split_seed": 0, "val_fraction": 0.2, "split_file": None}
    )
    with pytest.raises(DataError, match=r"dataset.val_fraction=0.2 found no validation wells: .*A/batch_1"):
        bag_splits(dataset, _bags(_sequences(wells=("D1", "D11"))))


# 4. the published split files


def _split_config(tmp_path: Path, split_file: Path, scheme: str, classes=("A", "B"), **extra):
    return OmegaConf.create(
        {
            "split_file": str(split_file),
            "split_classes": list(classes) if not isinstance(classes, str) else classes,
            "split_scheme": scheme,
            "split_seed": 0,
            "val_fraction": 0.5,
            **extra,
        }
    )


def test_a_batch_separated_file_trains_the_batch_it_names(tmp_path):
    (tmp_path / "classes.txt").write_text("B\nA\n")
    (tmp_path / "random1.txt").write_text("3\n2\n\n")
    dataset = _split_config(
        tmp_path, tmp_path / "random1.txt", "batch_separated", classes=str(tmp_path / "classes.txt")
    )
    sequences = _sequences()
    splits = bag_splits(dataset, _bags(sequences))
    batches = {name: {(b.sequence.line, b.sequence.batch) for b in bags} for name, bags in splits.items()}
    assert batches["train"] == batches["val"] == {("B", "3"), ("A", "2")}  # line k = class k of the class list
    assert batches["test"] == {("A", "1"), ("A", "3"), ("B", "1"), ("B", "2")}
    assert sum(map(len, splits.values())) == len(sequences)


@pytest.mark.parametrize(
    ("text", "classes", "message"),
    [
        (
            "4\n1\n",
            ("A", "B"),
            r"random1.txt: batch 4 for A \(line 1 of dataset.split_classes\), which has batches 1, 2, 3",
        ),
        ("1\n1\n", ("A",), r"lines \['B'\] of the data are not in dataset.split_classes"),
        ("1\n", ("A", "B"), r"1 batch indices for the 2 lines of dataset.split_classes"),
        ("1\nx\n", ("A", "B"), r"line 2 \(B\): 'x' is not a 1-based batch index"),
    ],
)
def test_a_bad_batch_separated_file_is_named(tmp_path, text, classes, message):
    (tmp_path / "random1.txt").write_text(text)
    dataset = _split_config(tmp_path, tmp_path / "random1.txt", "batch_separated", classes=classes)
    with pytest.raises(DataError, match=message):
        file_splits(_sequences(), read_split_file(dataset), 0, 0.5)


def _write_wells(path: Path, rows: dict[int, list]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", *(f"batch_{j}" for j in range(1, 8))])
        for index, cells in rows.items():
            writer.writerow([index, *(str(c) if c is not None else "" for c in cells), *[""] * (7 - len(cells))])


WELLS = ("D1", "D11", "B1", "B11", "C1", "C11")


def test_a_batch_stratified_file_matches_wells_exactly(tmp_path, caplog):
    _write_wells(tmp_path / "random1.csv", {0: [["D1", "B1"]] * 3, 1: [["D1", "C1"], [], ["D1", "C1"]], 2: [["X"]]})
    _write_wells(tmp_path / "random1_test.csv", {0: [["D11", "B11"]] * 3, 1: [["D11", "C11"], ["D1"], []], 2: [[]]})
    dataset = _split_config(tmp_path, tmp_path / "random1.csv", "batch_stratified")
    with caplog.at_level(logging.WARNING):
        splits = file_splits(_sequences(wells=WELLS), read_split_file(dataset), 0, 0.5)
    wells = {name: {(s.line, s.batch, s.well) for s in seqs} for name, seqs in splits.items()}
    trained = {("A", b, w) for b in "123" for w in ("D1", "B1")} | {("B", b, w) for b in "13" for w in ("D1", "C1")}
    tested = {("A", b, w) for b in "123" for w in ("D11", "B11")} | {
        ("B", "1", "D11"),
        ("B", "1", "C11"),
        ("B", "2", "D1"),
    }
    assert wells["train"] | wells["val"] == trained  # D1 takes neither D11 nor every VID1... frame
    assert wells["test"] == tested
    for line, b, _ in wells["val"]:  # val: one of each batch's two training wells, never test
        assert sum((ln, bt) == (line, b) for ln, bt, _ in wells["train"]) == 1
    assert len(wells["val"]) == 5
    assert "rows [2] are ignored" in caplog.text and "left out" in caplog.text


def test_the_jth_non_empty_cell_is_batch_j(tmp_path):
    with open(tmp_path / "random2.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [["", "batch_1", "batch_2", "batch_3"], [0, "", "['D1', 'B1']", ""], [1, "['D1', 'B1']"]]
        )
    with open(tmp_path / "random2_test.csv", "w", newline="") as f:
        csv.writer(f).writerows([["", "batch_1", "batch_2", "batch_3"], [0, "", "['D11']", ""], [1, "['D11']"]])
    split = read_split_file(_split_config(tmp_path, tmp_path / "random2.csv", "batch_stratified"))
    assert split.wells["train"] == {("A", "1"): ("D1", "B1"), ("B", "1"): ("D1", "B1")}


@pytest.mark.parametrize(
    ("cell", "extra", "message", "error"),
    [
        ("__import__('os').system('true')", {}, r"row 2, batch_1: .* is not a list of well names", DataError),
        ("['D1', 3]", {}, r"row 2, batch_1: .* is not a list of well names", DataError),
        ("['D1']", {"split_classes": None}, r"dataset.split_file needs dataset.split_classes", ConfigError),
        (
            "['D1']",
            {"split_scheme": "batch_separated"},
            r"is a batch_stratified split; set dataset.split_scheme=",
            ConfigError,
        ),
    ],
)
def test_a_bad_batch_stratified_setting_is_named(tmp_path, cell, extra, message, error):
    _write_wells(tmp_path / "random1.csv", {0: [cell], 1: [["D1"]]})
    _write_wells(tmp_path / "random1_test.csv", {0: [["D11"]], 1: [["D11"]]})
    dataset = _split_config(tmp_path, tmp_path / "random1.csv", "batch_stratified")
    dataset.merge_with(extra)
    with pytest.raises(error, match=message):
        read_split_file(dataset)


def test_a_stratified_file_needs_its_test_file_and_disjoint_sides(tmp_path):
    _write_wells(tmp_path / "random1.csv", {0: [["D1", "B1"]], 1: [["D1", "B1"]]})
    dataset = _split_config(tmp_path, tmp_path / "random1.csv", "batch_stratified")
    with pytest.raises(DataError, match=r"its test wells, random1_test.csv, are not beside it"):
        read_split_file(dataset)
    _write_wells(tmp_path / "random1_test.csv", {0: [["B1"]], 1: [["D11"]]})
    with pytest.raises(DataError, match=r"A/batch_1 lists wells \['B1'\] on both sides"):
        file_splits(_sequences(), read_split_file(dataset), 0, 0.5)
    with pytest.raises(ConfigError, match="dataset.split_classes applies with dataset.split_file only"):
        read_split_file(OmegaConf.create({"split_file": None, "split_classes": ["A"]}))


# 5. TSS as published

PUBLISHED_P_AT_4 = [0.081, 0.130, 0.173, 0.190, 0.173, 0.130, 0.081, 0.041]


def test_window_lengths_follow_the_published_distribution():
    np.testing.assert_allclose(tss.window_probabilities(4.0), PUBLISHED_P_AT_4, atol=6e-4)
    rng = np.random.default_rng(0)
    draws = np.asarray([tss.draw_window_length(4.0, rng) for _ in range(40000)])
    frequencies = np.bincount(draws, minlength=9)[1:] / len(draws)
    np.testing.assert_allclose(frequencies, PUBLISHED_P_AT_4, atol=0.008)
    # through the sampler: every 4 h, E = 4, so t <= 4 (P = 0.574) gives the whole sequence
    hours, whole = np.arange(0, 49, 4.0), 0
    for seed in range(3000):
        indices, weight = tss.published_sample(hours, np.random.default_rng(seed))
        whole += len(indices) == len(hours) and weight == 1.0
    assert whole / 3000 == pytest.approx(sum(PUBLISHED_P_AT_4[:4]), abs=0.03)


def test_short_windows_give_the_whole_sequence_at_weight_one():
    hours = np.arange(0, 97, 8.0)  # E = 8: every t in 1..8 is <= round(E)
    for seed in range(50):
        indices, weight = tss.published_sample(hours, np.random.default_rng(seed))
        assert indices.tolist() == list(range(len(hours))) and weight == 1


def test_windows_of_the_worked_example():
    hours = np.arange(0, 49, 4)
    as_hours = {t: [hours[w].tolist() for w in tss.published_windows(hours, t)] for t in (5, 8)}
    assert as_hours[5] == [[0, 4], [8], [12], [16, 20], [24, 28], [32], [36], [40, 44], [48]]
    assert as_hours[8] == [[0, 4, 8], [12, 16, 20], [24, 28, 32], [36, 40, 44], [48]]


def test_weights_of_the_worked_example_and_their_range():
    assert tss.published_weight(13, np.array([0, 4, 12, 16, 24, 28, 36, 40, 48]), 4, 6) == pytest.approx(
        0.692, abs=5e-4
    )
    assert tss.published_weight(13, np.array([8]), 4, 6) == pytest.approx(1 / 13)  # m = 1: sparsity 0, not 0/0
    rng = np.random.default_rng(1)
    for _ in range(300):
        hours = np.sort(rng.choice(np.arange(0, 200.0, 0.5), size=rng.integers(2, 40), replace=False))
        indices, weight = tss.published_sample(hours, rng)
        assert 0 < weight <= 2 and len(indices) >= 1
        assert np.all(np.diff(indices) > 0) and 0 <= indices.min() and indices.max() < len(hours)


def test_published_times_are_whole_hours_rounded_up():
    hours = [parse_name(f"A/batch_1/VID1_D1_1_{stamp}.jpg").hours for stamp in ("01d02h30m", "00d04h00m", "00d04h01m")]
    assert tss.integer_hours(np.asarray(hours)).tolist() == [27, 4, 5]


def test_the_published_sampler_draws_only_from_its_generator():
    features = torch.arange(40, dtype=torch.float32).reshape(20, 2)
    sequences = _sequences(lines=("A",), batches=(1,), wells=("D1", "D11"), times=range(0, 40, 4))
    bags = [Bag(s, s.hours, [np.asarray([i + 10 * n]) for i in range(10)]) for n, s in enumerate(sequences)]
    labels = {s.key: 0 for s in sequences}
    cfg = OmegaConf.create({"method": "published", "window": [2.0, 4.0], "keep": 0.5, "samples_per_sequence": 4})
    dataset = TSSSamples(bags, features, labels, tss.make_sampler(cfg))

    def epoch(n):
        sampler = TSSSampler(len(bags), 4, seed=3)
        sampler.set_epoch(n)
        return [(x.tolist(), w) for x, _, w in (dataset[item] for item in sampler)]

    assert epoch(1) == epoch(1) and epoch(1) != epoch(2)
    assert all(0 < w <= 2 for _, w in epoch(1))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"method": "clanet"}, r"task.tss.method='clanet'; choose one of ours, published"),
        (
            {"method": "published", "window": [1.0, 3.0]},
            r"task.tss.window=\[1.0, 3.0\] applies to task.tss.method=ours",
        ),
        ({"method": "published", "keep": 0.3}, r"task.tss.keep=0.3 applies to task.tss.method=ours"),
    ],
)
def test_tss_settings_are_checked_by_name(settings, message):
    cfg = OmegaConf.create({"method": "ours", "window": [2.0, 4.0], "keep": 0.5, **settings})
    with pytest.raises(ConfigError, match=message):
        tss.make_sampler(cfg)


def test_the_shipped_tss_config_is_ours_with_the_defaults_published_accepts():
    shipped = OmegaConf.load(ROOT / "conf" / "task" / "mil.yaml").task.tss
    assert shipped.method == "ours"
    assert tss.make_sampler(OmegaConf.merge(shipped, {"method": "published"})) is tss.published_sample


# 6. frames with few patches


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    return generate_timelapse(tmp_path_factory.mktemp("timelapse") / "tl", **SMALL)


def _dataset(root: Path, cache: Path, **overrides):
    dataset = OmegaConf.load(ROOT / "conf" / "dataset" / "timelapse.yaml")
    dataset.merge_with({"root": str(root), "cache_dir": str(cache), "split_seed": 0, "patches": SMALL_PATCHES})
    dataset.merge_with(overrides)
    return dataset


def test_frames_with_few_patches_are_left_out_and_bags_take_the_top_patches(small_root, tmp_path):
    cache, more = tmp_path / "patches", {"patches": {"top_k": 12}}
    store, _, problems = load_bags(_dataset(small_root, cache, **more), small_root)
    assert problems["frames_with_few_patches"] == [] and problems["unread_batches"] == []
    manifest = store.manifest()
    count = Counter(row["image_file"] for row in manifest)
    few = sorted(path for path, n in count.items() if n < 10)
    assert 0 < len(few) < len(count)
    published = {"bags": {"min_patches": 10, "patches_per_frame": 10}, "min_frames": 1}  # CLANet's MIL
    _, bags, problems = load_bags(_dataset(small_root, cache, **more, **published), small_root)
    assert sorted(p["image"] for p in problems["frames_with_few_patches"]) == few
    assert all(p["reason"].endswith("patches, fewer than 10") for p in problems["frames_with_few_patches"])
    for bag in bags:
        for rows in bag.frames:  # the ten most confluent, in rank order
            assert [int(manifest[r]["annotation_id"]) for r in rows] == list(range(10))
            assert manifest[rows[0]]["image_file"] not in few
    assert sum(len(b.frames) for b in bags) == len(count) - len(few)


@pytest.mark.parametrize(
    ("bags", "message"),
    [
        ({"min_patches": 0}, r"dataset.bags.min_patches must be a whole number of at least 1, got 0"),
        ({"patches_per_frame": 0}, r"dataset.bags.patches_per_frame must be null .* got 0"),
        ({"min_patches": 7}, r"dataset.bags.min_patches=7 is more than dataset.patches.top_k=6"),
        ({"top": 3}, r"dataset.bags.top is not a setting"),
    ],
)
def test_bad_bag_settings_are_refused_by_name(small_root, tmp_path, bags, message):
    with pytest.raises(ConfigError, match=message):
        load_bags(_dataset(small_root, tmp_path / "patches", bags=bags), small_root)


def test_load_bags_names_a_batch_it_cannot_read(small_root, tmp_path):
    root = tmp_path / "tl"
    for line in ("A549", "HeLa"):
        shutil.copytree(small_root / line, root / line)
    third = {"D1": "83015", "D11": "83016", "B1": "83017"}
    for path in sorted((root / "A549" / "batch_2").iterdir()):  # VID<exp>_<well>_<flask>_<time>: the well third
        exp, well, flask, stamp = path.stem.split("_")
        path.rename(path.with_name(f"{exp}_{flask}_{third[well]}_{stamp}{path.suffix}"))
    _, bags, problems = load_bags(_dataset(root, tmp_path / "patches"), root)
    assert [p["batch"] for p in problems["unread_batches"]] == ["A549/batch_2"]
    assert not any(b.sequence.key.startswith("A549/batch_2/") for b in bags)
    patterns = [DEFAULT_NAME_PATTERN, WELL_THIRD_PATTERN]
    _, bags, problems = load_bags(_dataset(root, tmp_path / "patches", name_patterns=patterns), root)
    assert not problems["unread_batches"] and not problems["bad_names"]
    assert {b.sequence.well for b in bags if b.sequence.key.startswith("A549/batch_2/")} == set(third.values())


# the task with the published sampler and bag settings


@pytest.mark.slow
def test_a_mil_run_trains_with_the_published_sampler(make_cfg, data_dir):
    from tests.test_mil import TINY_MIL

    published = ["task.tss.method=published", "dataset.bags.min_patches=2", "dataset.bags.patches_per_frame=4"]
    cfg = make_cfg([*TINY_MIL, f"dataset.root={data_dir / 'timelapse'}", "task.baseline=false", *published], tiny=False)
    assert 0 <= cellexp.run(cfg) <= 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task.tss.method=clanet", r"task.tss.method='clanet'; choose one of ours, published"),
        ("task.tss.keep=0.3", r"task.tss.keep=0.3 applies to task.tss.method=ours only"),
    ],
)
def test_tss_settings_stop_the_run_by_name(make_cfg, data_dir, override, message):
    from tests.test_mil import TINY_MIL

    overrides = [*TINY_MIL, f"dataset.root={data_dir / 'timelapse'}", "logger=none", "task.tss.method=published"]
    with pytest.raises(ConfigError, match=message):
        cellexp.run(make_cfg([*overrides, override], tiny=False))


# the published preset, end to end on small generated frames


@pytest.mark.slow
def test_the_clanet_published_preset_trains_the_published_aggregator(make_cfg, data_dir):
    # frames of the shipped size (704x445): the published selection needs 10 windows of 112 px in a frame
    generate = {"lines": 3, "batches": 3, "wells": 3, "timepoints": 3}
    overrides = [
        "experiment=clanet_published",
        "backbone=test_vit",
        "trainer.cpu=true",
        "trainer.max_epochs=2",
        "task.baseline=false",
        f"dataset.root={data_dir / 'timelapse_published'}",
        *(f"dataset.generate.{k}={v}" for k, v in generate.items()),
    ]
    cfg = make_cfg(overrides, tiny=False)
    assert cfg.dataset.patches.method == "published" and cfg.task.tss.method == "published"
    best_val_loss = cellexp.run(cfg)  # the preset selects on the lowest validation loss
    assert 0 < best_val_loss < 10
    run_dir = Path(cfg.paths.output_dir)
    weights = load_file(run_dir / "checkpoints" / "best" / MODEL_FILE)
    # the CLS tokens of test_vit's last 4 blocks (4 x 64), no bag LayerNorm, no instance standardisation
    assert weights["classifier.weight"].shape == (3, 4 * 64)
    assert not any(name.startswith("norm.") for name in weights)
    assert torch.equal(weights["feature_mean"], torch.zeros(256))
    assert torch.equal(weights["feature_std"], torch.ones(256))
    run = tracked_run(cfg)
    assert run.data.params["optim.optimizer._target_"] == "torch.optim.SGD"
    assert float(run.data.params["optim.optimizer.lr"]) == 5e-4


def test_patches_are_standardised_for_random_backbones_only_unless_told(caplog):
    assert patch_standardization("auto", trained=False) is True
    assert patch_standardization("auto", trained=True) is False
    assert patch_standardization(False, trained=False) is False
    with caplog.at_level(logging.WARNING):
        assert patch_standardization(True, trained=True) is True
    assert "trained on unstandardised patches" in caplog.text
    with pytest.raises(ConfigError, match=r"task.embedding.standardize must be auto, true or false, got 'yes'"):
        patch_standardization("yes", trained=False)


def test_the_published_aggregator_is_gated_attention_on_raw_instances():
    torch.manual_seed(0)
    instances = torch.randn(40, 16) * 5 + 3
    published = GatedAttentionMIL(16, 4, attention_dim=8, bag_norm=False, standardize=False)
    published.fit_standardization(instances)
    assert torch.equal(published.feature_mean, torch.zeros(16)) and torch.equal(published.feature_std, torch.ones(16))
    bags = instances.view(4, 10, 16)
    logits, attention = published(bags)
    # by hand: models/MIL_aggregator.py's GatedAttention, A = softmax(w(tanh(V h) * sigmoid(U h))), M = A h
    scores = published.score(torch.tanh(published.value(bags)) * torch.sigmoid(published.gate(bags))).squeeze(-1)
    expected = published.classifier(torch.einsum("bn,bnd->bd", scores.softmax(1), bags))
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(attention, scores.softmax(1))
    ours = GatedAttentionMIL(16, 4, attention_dim=8)
    ours.fit_standardization(instances)
    torch.testing.assert_close(ours.feature_mean, instances.mean(0))
