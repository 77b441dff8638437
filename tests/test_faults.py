"""Faults that must never lose a finished result, block a resume, run code or end without a message naming the cause:
runs started together, kills during a checkpoint write, NaN in validation, foreign configs, hostile files and
annotations, preemption signals in every phase."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file

import cellexp
from cellexp import config
from cellexp.data import shards
from cellexp.data.crops import outline_problem, polygon_problem
from cellexp.data.livecell import prepare
from cellexp.data.livecell.coco import read_coco
from cellexp.data.synthetic.livecell import generate_synthetic_livecell
from cellexp.engine import checkpoint as ckpt
from cellexp.engine.checkpoint import CheckpointManager
from cellexp.engine.classification import ClassifierTrainer
from cellexp.engine.preemption import Preempted
from cellexp.errors import CheckpointError, ConfigError, DataError, NonFiniteLossError
from tests.conftest import ROOT, TINY, subprocess_env, tracked_run

SHORT = ["trainer.max_epochs=3", "dataset.limit=192", "trainer.early_stopping=null"]  # 6 steps per epoch
_reference: dict = {}


def reference_run(make_cfg) -> dict:
    """The uninterrupted SHORT run's test metrics and train/loss history, computed once for the module."""
    if not _reference:
        cfg = make_cfg(SHORT, run_name="reference")
        cellexp.run(cfg)
        run = tracked_run(cfg)
        _reference["test"] = {k: v for k, v in run.data.metrics.items() if k.startswith("test/")}
        history = MlflowClient().get_metric_history(run.info.run_id, "train/loss")
        _reference["train/loss"] = [m.value for m in history]
    return _reference


# ------------------------------------------------------------------------------------------------ run folders


def test_a_run_folder_is_reserved_so_runs_started_in_one_second_never_share_it(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "_STARTED", 1_800_000_000.0)
    folders = []
    for _ in range(3):  # three processes starting in the same second: each reserves its own folder
        monkeypatch.setattr(config, "_RESERVED", {})
        folders.append(config.run_dir(str(tmp_path)))
    assert len(set(folders)) == 3 and all(Path(f).is_dir() for f in folders)
    assert config.run_dir(str(tmp_path)) == folders[-1]  # asked again in one process: the same folder


@pytest.mark.slow
def test_two_runs_launched_at_once_get_two_folders_their_own_metrics_and_one_sqlite_store(tmp_path, data_dir):
    store = tmp_path / "mlflow.db"  # new: both processes create its tables at once
    common = [
        *TINY,
        "head=linear",
        "trainer.max_epochs=1",
        "dataset.limit=64",
        f"paths.root_dir={tmp_path}",
        f"paths.data_dir={data_dir}",
        f"logger.tracking_uri=sqlite:///{store}",
        "logger.experiment_name=together",
    ]
    runs = [
        subprocess.Popen(
            [sys.executable, "train.py", *common, f"seed={seed}"],
            cwd=ROOT,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for seed in (1, 2)
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    folders = sorted((tmp_path / "outputs").iterdir())
    assert len(folders) == 2
    client = MlflowClient(f"sqlite:///{store}")
    recorded = client.search_runs([client.get_experiment_by_name("together").experiment_id])
    assert len(recorded) == 2
    by_id = {run.info.run_id: run for run in recorded}
    for folder in folders:
        run = by_id[(folder / "mlflow_run_id").read_text().strip()]
        assert run.data.tags["run_dir"] == str(folder)
        assert run.data.params["seed"] == str(yaml.safe_load((folder / "config.yaml").read_text())["seed"])
        assert "test/balanced_accuracy" in run.data.metrics


# --------------------------------------------------------------------------------------- torn checkpoint writes


class Killed(Exception):
    """Stands in for a kill -9 at one moment of a checkpoint write."""


def _weights() -> dict:
    return {"w": torch.arange(6.0)}


def _state(epoch: int) -> dict:
    return {"loop": {"epoch": epoch}, "optimizer": {}, "scheduler": {}, "torch_rng": torch.get_rng_state()}


def _save(manager: CheckpointManager, epoch: int):
    return manager.save(f"epoch_{epoch:04d}", _weights(), _state(epoch), {"epoch": epoch, "step_in_epoch": 0})


def _kill_at(monkeypatch, target: str):
    def die(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(target, die)


# where a kill lands -> (the checkpoint resume=auto takes, what is left after the next save)
STAGES = {
    "before the training state": ("cellexp.engine.checkpoint.save_file", "epoch_0002", ["epoch_0002", "epoch_0004"]),
    "after the state, before meta": ("torch.save", "epoch_0002", ["epoch_0002", "epoch_0004"]),
    "after meta, during the rename": (
        "cellexp.engine.checkpoint.os.replace",
        "epoch_0002",
        ["epoch_0002", "epoch_0004"],
    ),
    "during pruning": ("cellexp.engine.checkpoint.shutil.rmtree", "epoch_0003", ["epoch_0003", "epoch_0004"]),
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_checkpoint_write_killed_at_any_stage_leaves_resume_auto_working(tmp_path, monkeypatch, stage):
    target, newest, left = STAGES[stage]
    manager = CheckpointManager(tmp_path, keep_last=2)
    for epoch in (1, 2):
        _save(manager, epoch)
    with monkeypatch.context() as patched:
        _kill_at(patched, target)
        with pytest.raises(Killed):
            _save(manager, 3)
    resumed = CheckpointManager(tmp_path, keep_last=2).resume_point("auto")
    assert resumed.name == newest
    assert ckpt.load_training_state(resumed)["loop"]["epoch"] == int(newest[-4:])
    assert _save(manager, 4).name == "epoch_0004"  # the next save cleans up what the kill left, and prunes
    assert sorted(p.name for p in tmp_path.iterdir()) == left


def test_a_half_deleted_checkpoint_is_skipped(tmp_path):
    manager = CheckpointManager(tmp_path)
    _save(manager, 1)
    _save(manager, 2)
    (tmp_path / "epoch_0002" / ckpt.META_FILE).write_text("{not json")
    assert manager.latest().name == "epoch_0001"


def test_a_damaged_or_hostile_checkpoint_is_named_and_never_unpickled(tmp_path):
    folder = tmp_path / "epoch_0001"
    folder.mkdir()
    (folder / ckpt.MODEL_FILE).write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError, match="is not a readable safetensors file"):
        ckpt.load_model_state(folder)

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran",))

    torch.save({"loop": Payload()}, folder / ckpt.STATE_FILE)
    with pytest.raises(CheckpointError, match="it is not loaded") as err:
        ckpt.load_training_state(folder)
    assert "weights_only=False" not in str(err.value) and not (tmp_path / "ran").exists()


# ------------------------------------------------------------------------------------------- NaN in validation


@pytest.mark.slow
def test_nan_in_validation_stops_the_run_and_keeps_the_last_finite_checkpoint(make_cfg, monkeypatch, tmp_path):
    evaluate = ClassifierTrainer.evaluate

    def nan_from_epoch_2(self, dl):
        metrics = evaluate(self, dl)
        return {**metrics, "loss": float("nan")} if self.state.epoch >= 1 else metrics

    monkeypatch.setattr(ClassifierTrainer, "evaluate", nan_from_epoch_2)
    cfg = make_cfg(SHORT, run_name="nan_val")
    with pytest.raises(NonFiniteLossError, match=r"val/loss became nan at epoch 2") as err:
        cellexp.run(cfg)
    checkpoints = tmp_path / "nan_val" / "checkpoints"
    assert str(checkpoints / "epoch_0001") in str(err.value)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best", "epoch_0001"]
    run = tracked_run(cfg)
    assert run.info.status == "FAILED" and "val/loss" in run.data.metrics  # the NaN is logged, not dropped


@pytest.mark.slow
def test_test_metrics_are_never_computed_from_nan_outputs(make_cfg, tmp_path):
    trained = make_cfg(["trainer.max_epochs=1", "dataset.limit=64", "logger=none"], run_name="trained")
    cellexp.run(trained)
    best = tmp_path / "trained" / "checkpoints" / "best" / ckpt.MODEL_FILE
    weights = ckpt.load_model_state(best.parent)
    save_file({k: v * float("nan") if k.startswith("head.") else v for k, v in weights.items()}, best)
    with pytest.raises(NonFiniteLossError, match="test outputs are not finite"):
        cellexp.run(make_cfg(["task.fit=false", f"ckpt={tmp_path / 'trained'}", "logger=none"], run_name="eval"))


# ----------------------------------------------------------------------------------------------- foreign configs


def test_a_checkpoint_whose_config_names_a_foreign_target_is_refused_before_anything_is_built(make_cfg, tmp_path):
    folder = tmp_path / "foreign" / "checkpoints" / "best"
    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(1)}, folder / ckpt.MODEL_FILE)
    marker = tmp_path / "payload_ran"
    config_text = (
        "task:\n  name: classify\n"
        f"backbone:\n  _target_: pathlib.Path.touch\n  self: {marker}\n"
        "head:\n  _target_: cellexp.models.heads.LinearHead\n"
    )
    (tmp_path / "foreign" / "config.yaml").write_text(config_text)
    with pytest.raises(CheckpointError, match="names _target_ 'pathlib.Path.touch' at backbone"):
        cellexp.run(make_cfg(["task.fit=false", f"ckpt={tmp_path / 'foreign'}", "logger=none"]))
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=abc", "trainer.max_epochs='abc': input should be a valid integer"),
        ("trainer.batch_size=-4", "trainer.batch_size=-4: input should be greater than or equal to 1"),
        ("trainer.batch_size=0", "trainer.batch_size=0: input should be greater than or equal to 1"),
        ("trainer.precision=fp8", "trainer.precision='fp8': input should be 'no', 'fp16' or 'bf16'"),
        ("optim.optimizer.lr=-1", "optim.optimizer.lr=-1: input should be greater than or equal to 0"),
        ("trainer.early_stopping.patience=0", "trainer.early_stopping.patience=0"),
    ],
)
def test_a_bad_value_stops_at_once_with_one_line_naming_it(make_cfg, tmp_path, override, message):
    cfg = make_cfg([override, f"paths.cache_dir={tmp_path / 'cache'}", "logger=none"])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        cellexp.run(cfg)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache").exists()  # nothing was prepared


def _coco(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("data", "message"),
    [(5, "holds int '5', not a COCO object"), ({"images": None, "annotations": []}, "'images' is NoneType")],
)
def test_an_annotation_file_that_is_not_coco_is_named(tmp_path, data, message):
    with pytest.raises(DataError, match=message):
        read_coco(_coco(tmp_path / "bad.json", data))


def test_bad_annotation_entries_are_named_and_skipped(tmp_path):
    images = [{"id": 1, "file_name": "a.tif"}, {"id": 2}, {"file_name": "c.tif"}]
    good = {"id": 10, "image_id": 1, "bbox": [1, 1, 4, 4], "segmentation": [[1, 1, 5, 1, 5, 5]]}
    annotations = [good, {"id": 11, "image_id": 1}, {"id": 12, "image_id": 7, "bbox": [0, 0, 1, 1]}, 3]
    coco, skipped = read_coco(_coco(tmp_path / "x.json", {"images": images, "annotations": annotations}))
    assert list(coco.imgs) == [1] and list(coco.anns) == [10]
    reasons = [entry["reason"] for entry in skipped]
    assert reasons == [
        "image entry skipped: no 'file_name'",
        "image entry skipped: no integer 'id'",
        "bbox None is not four finite numbers",
        "image_id 7 names no image of the file",
        "not an object (int)",
    ]
    assert [entry.get("annotation_id") for entry in skipped[2:]] == ["annotation 11", "annotation 12", "annotations[3]"]


@pytest.mark.parametrize(
    ("polygon", "reason"),
    [
        ([1, 1, float("nan"), 2, 3, 3], "polygon coordinates that are not finite"),
        ([1, 1, 1e12, 2, 3, 3], "a polygon reaching outside the 64x48 image"),
        ([1, 1, -30, 2, 3, 3], "a polygon reaching outside the 64x48 image"),
        ([1, 1, "2", 2, 3, 3], "polygon coordinates that are not numbers"),
        ([1.0, 1.0] * 5000, "a polygon of 5000 vertices (at most 4096)"),
    ],
)
def test_polygons_that_cannot_be_rasterised_safely_are_named(polygon, reason):
    assert polygon_problem([polygon], (48, 64)) == reason


def test_a_small_crossing_of_two_swapped_neighbouring_vertices_is_caught():
    angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    ring = np.stack([20 + 10 * np.cos(angles), 20 + 10 * np.sin(angles)], axis=1)
    mask = np.ones((4, 4), np.uint8)
    assert outline_problem([ring.ravel().tolist()], mask) is None
    ring[[7, 8]] = ring[[8, 7]]
    assert outline_problem([ring.ravel().tolist()], mask) == "self-intersecting polygon"


def test_a_polygon_with_a_nan_is_skipped_by_name_and_the_rest_prepared(tmp_path):
    root = generate_synthetic_livecell(tmp_path / "src", images_per_line={"train": 1, "val": 1, "test": 1})
    annotations = root / "annotations" / "LIVECell" / "livecell_coco_train.json"
    coco = json.loads(annotations.read_text())
    first = next(iter(coco["annotations"].values()))
    first["segmentation"][0][2] = float("nan")
    annotations.write_text(json.dumps(coco))  # json writes the NaN as NaN, which json reads back
    from cellexp.data.livecell.sources import find_livecell_sources

    store = prepare.prepare_crop_store(
        find_livecell_sources(root), prepare.CropSettings(crop_size=16), tmp_path / "cache", workers=1
    )
    invalid = store.splits["train"].summary["invalid_cells"]
    assert [(c["annotation_id"], c["reason"]) for c in invalid] == [
        (first["id"], "polygon coordinates that are not finite")
    ]
    others = [c for c in invalid if c["annotation_id"] != first["id"]]
    assert not others and len(store.labels("train")) == len(coco["annotations"]) - 1


@pytest.mark.slow
def test_a_worker_that_dies_is_an_error_naming_its_shard(tmp_path):
    jobs = [(tmp_path, shard, [(f"image_{shard}.tif", None, [])], None, "train") for shard in range(3)]
    with pytest.raises(DataError, match=r"a preparation worker died .* shard 1 \(image_1.tif"):
        list(shards.run_shards(jobs, workers=2, work=_die_on_shard_1))


def _die_on_shard_1(job):
    if job[1] == 1:
        os._exit(1)
    return 1, 0


# ------------------------------------------------------------------------------------- signals in every phase


def _signal_when(monkeypatch, owner, name: str, when=lambda *a, **k: True):
    original = getattr(owner, name)

    def then_signal(*args, **kwargs):
        if when(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, then_signal)


PHASES = {
    "preparation": lambda mp: _signal_when(mp, prepare, "_prepare_shard"),
    "the last validation": lambda mp: _signal_when(
        mp, ClassifierTrainer, "evaluate", when=lambda self, dl: self.state.epoch == 2
    ),
    "the test": lambda mp: _signal_when(mp, cellexp.tasks.classify, "write_confusion_matrix"),
}


@pytest.mark.slow
@pytest.mark.parametrize("phase", list(PHASES))
def test_sigterm_in_any_phase_leaves_the_run_killed_and_resumable(make_cfg, monkeypatch, tmp_path, phase):
    import cellexp.tasks.classify  # noqa: F401

    expected = reference_run(make_cfg)["test"]
    fresh = [f"paths.cache_dir={tmp_path / 'cache'}", "dataset.prepare_workers=1"]  # prepared here, in-process
    overrides = [*SHORT, *fresh] if phase == "preparation" else SHORT
    with monkeypatch.context() as patched:
        PHASES[phase](patched)
        with pytest.raises(Preempted):
            cellexp.run(make_cfg(overrides, run_name="stopped"))
    stopped = tracked_run(make_cfg(overrides, run_name="stopped"))
    assert stopped.info.status == "KILLED" and "error" in stopped.data.tags
    resumed = make_cfg([*overrides, "trainer.resume=auto"], run_name="stopped")
    cellexp.run(resumed)
    run = tracked_run(resumed)
    assert run.info.run_id == stopped.info.run_id and run.info.status == "FINISHED"
    assert "error" not in run.data.tags  # the stop it recovered from is no longer its state
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("test/")} == expected


@pytest.mark.slow
def test_a_resumed_epoch_logs_the_loss_over_all_its_batches(make_cfg, monkeypatch):
    expected = reference_run(make_cfg)["train/loss"]
    with monkeypatch.context() as patched:
        _signal_when(patched, ClassifierTrainer, "train_step", when=lambda self, batch: self.state.global_step == 8)
        with pytest.raises(Preempted):
            cellexp.run(make_cfg(SHORT, run_name="resumed_loss"))
    resumed = make_cfg([*SHORT, "trainer.resume=auto"], run_name="resumed_loss")
    cellexp.run(resumed)
    history = [m.value for m in MlflowClient().get_metric_history(tracked_run(resumed).info.run_id, "train/loss")]
    assert history == pytest.approx(expected, rel=1e-6)


def test_a_killed_generation_leaves_nothing_behind_and_the_next_one_completes(tmp_path, monkeypatch):
    from cellexp.data.synthetic import livecell as synthetic

    write = synthetic._write_dataset

    def dies_half_way(out, settings):
        (out / "images").mkdir(parents=True, exist_ok=True)
        (out / "images" / "half.tif").write_bytes(b"x")
        raise Killed

    monkeypatch.setattr(synthetic, "_write_dataset", dies_half_way)
    with pytest.raises(Killed):
        generate_synthetic_livecell(tmp_path / "seed0", images_per_line={"train": 1})
    monkeypatch.setattr(synthetic, "_write_dataset", write)
    root = generate_synthetic_livecell(tmp_path / "seed0", images_per_line={"train": 1})
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["seed0"]
    assert not (root / "images" / "half.tif").exists()
