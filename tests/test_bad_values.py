"""Every bad value is refused in one line naming its key, before a run folder, an MLflow run or any data exists."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest

import cellexp
from cellexp.errors import CellexpError
from tests.conftest import ROOT, _test_name, subprocess_env

# (overrides, what the one line must say: the key and value)
BAD_VALUES = {
    # found short by issue 38
    "seed too large": (["seed=99999999999"], "seed=99999999999: input should be less than or equal to 4294967295"),
    "crop size 0": (["dataset.crop_size=0"], "dataset.crop_size=0: input should be greater than or equal to 1"),
    "crop size negative": (["dataset.crop_size=-8"], "dataset.crop_size=-8: input should be greater than or equal"),
    "shard images 0": (["dataset.shard_images=0"], "dataset.shard_images=0: input should be greater than or equal"),
    "degrees a word": (["dataset.augmentation.degrees=abc"], "dataset.augmentation.degrees='abc': input should be"),
    "workers negative": (["dataset.prepare_workers=-1"], "dataset.prepare_workers=-1: input should be greater"),
    "metrics interval 0": (["logger.system_metrics_interval_s=0"], "logger.system_metrics_interval_s=0: input should"),
    "head width": (["head=elegans", "head.dim=3"], "head.dim=3: must be a positive multiple of head.num_heads=4"),
    "unknown cell line": (["dataset.cell_lines=[FOO]"], "dataset.cell_lines=['FOO']: unknown ['FOO']; choose from"),
    "generated image too small": (["dataset.generate.height=5"], "dataset.generate.height=5: input should be greater"),
    "resume from nothing": (["trainer.resume=/nonexistent/ckpt"], "trainer.resume=/nonexistent/ckpt: no such"),
    "learning rate inf": (["optim.optimizer.lr=inf"], "optim.optimizer.lr=inf: input should be a finite number"),
    "metric never logged": (["task.optimized_metric=val/nope"], "task.optimized_metric='val/nope' is not logged"),
    # one per kind of field
    "integer": (["trainer.max_epochs=abc"], "trainer.max_epochs='abc': input should be a valid integer"),
    "boolean": (["trainer.cpu=maybe"], "trainer.cpu='maybe': input should be a valid boolean"),
    "choice": (["trainer.precision=fp8"], "trainer.precision='fp8': input should be 'no', 'fp16' or 'bf16'"),
    "positive float": (["dataset.normalize.std=0"], "dataset.normalize.std=0: input should be greater than 0"),
    "fraction": (["dataset.augmentation.translate=2"], "dataset.augmentation.translate=2: input should be less"),
    "pair": (
        ["dataset.augmentation.scale=[0.9]"],
        "dataset.augmentation.scale=[0.9]: list should have at least 2 items",
    ),
    "mapping": (["dataset.generate.images_per_line={train:-1}"], "dataset.generate.images_per_line.train=-1"),
    "integer choice": (
        ["dataset.generate.channels=9"],
        "dataset.generate.channels=9: input should be 1, 2, 3, 4, 5, 6, 7 or 8",
    ),
    "direction": (["task.direction=up"], "task.direction='up': input should be 'maximize' or 'minimize'"),
    "nested section": (["trainer.early_stopping.patience=0"], "trainer.early_stopping.patience=0: input should be"),
    "repeated cell line": (["dataset.cell_lines=[BV2,BV2]"], "dataset.cell_lines=['BV2', 'BV2']: repeats ['BV2']"),
}


def _mlflow_runs(cfg) -> int:
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    experiment = mlflow.get_experiment_by_name(_test_name())
    return 0 if experiment is None else len(mlflow.search_runs([experiment.experiment_id]))


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_value_is_named_in_one_line_before_anything_is_created(make_cfg, tmp_path, case):
    overrides, message = BAD_VALUES[case]
    data = tmp_path / "fresh_data"
    cfg = make_cfg([f"paths.data_dir={data}", *overrides], run_name="run")
    with pytest.raises(CellexpError) as err:
        cellexp.run(cfg)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "run").exists() and not data.exists()
    assert _mlflow_runs(cfg) == 0


def test_a_checkpoint_of_random_bytes_is_named_before_anything_is_created(make_cfg, tmp_path):
    best = tmp_path / "foreign" / "checkpoints" / "best"
    best.mkdir(parents=True)
    (best / "model.safetensors").write_bytes(os.urandom(256))
    (tmp_path / "foreign" / "config.yaml").write_text("task: {name: classify}\n")
    data = tmp_path / "fresh_data"
    cfg = make_cfg([f"paths.data_dir={data}", "task.fit=false", f"ckpt={tmp_path / 'foreign'}"], run_name="run")
    with pytest.raises(CellexpError, match=r"^ckpt: .*model.safetensors is not a readable safetensors file") as err:
        cellexp.run(cfg)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists() and not data.exists() and _mlflow_runs(cfg) == 0


@pytest.mark.slow
@pytest.mark.parametrize("case", ["seed too large", "head width", "resume from nothing", "metric never logged"])
def test_train_py_refuses_a_bad_value_in_one_line_and_leaves_no_run_folder(tmp_path, case):
    overrides, message = BAD_VALUES[case]
    args = [sys.executable, "train.py", f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args += [f"logger.tracking_uri={uri}", "trainer.cpu=true", *overrides]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, env=subprocess_env())
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()
    mlflow.set_tracking_uri(uri)
    assert mlflow.search_runs(search_all_experiments=True).empty
