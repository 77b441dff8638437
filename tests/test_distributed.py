"""Two CPU processes under `accelerate launch`: one run folder, one MLflow run, files from rank 0 only."""

from __future__ import annotations

import csv
import subprocess
import sys

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from cellexp.data.synthetic.timelapse import generate_timelapse
from cellexp.engine.checkpoint import MODEL_FILE
from tests.conftest import ROOT, TINY, subprocess_env
from tests.test_mil import MIL_DATA, TINY_MIL
from tests.test_ssl import DINO

pytestmark = pytest.mark.slow

# accelerate's --cpu launcher starts one process without MPI; its torchrun launcher starts several,
# and trainer.cpu=true makes them a gloo CPU group.
LAUNCH = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
]


def _train(command: list[str], overrides: list[str]) -> str:
    """train.py under `command` (python, or accelerate's launcher), which must succeed; its console output."""
    result = subprocess.run(
        [*command, "train.py", *overrides], cwd=ROOT, capture_output=True, text=True, timeout=600, env=subprocess_env()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def test_two_process_run_leaves_one_folder_and_one_mlflow_run(tmp_path, data_dir):
    overrides = [
        *TINY,
        "trainer.max_epochs=1",
        "dataset.limit=256",
        f"paths.root_dir={tmp_path}",
        f"paths.data_dir={data_dir}",
        "logger.experiment_name=two-process",
    ]
    _train(LAUNCH, overrides)
    run_dirs = list((tmp_path / "outputs").iterdir())
    assert len(run_dirs) == 1, run_dirs
    run_dir = run_dirs[0]
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "checkpoints" / "best").is_dir()
    assert sorted(p.name for p in run_dir.glob("*.log")) == ["train.log"]
    log = (run_dir / "train.log").read_text()
    assert log.count("epoch 1/1") == 1  # written by rank 0 alone
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("two-process").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    # every test crop is scored exactly once, although two ranks shared the work
    with open(run_dir / "test" / "predictions.csv") as f:
        indices = [row["index"] for row in csv.DictReader(f)]
    assert len(indices) == len(set(indices)) == runs[0].data.metrics["data/test_crops"] == 256


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path, data_dir):
    """trainer.split_batches=true: the batch is global, so 2 ranks take the steps 1 rank takes.
    A ViT (no batch norm, whose statistics would be per rank) without augmentation (drawn per rank)."""
    overrides = [
        *TINY,
        "backbone=test_vit",
        "head=linear",
        "dataset.augment=false",
        "dataset.limit=256",
        "trainer.split_batches=true",
        "trainer.max_epochs=3",
        "trainer.early_stopping=null",
        "optim.optimizer.lr=3e-3",
        f"paths.root_dir={tmp_path}",
        f"paths.data_dir={data_dir}",
    ]
    commands = {"one": [sys.executable], "two": LAUNCH}
    for name, command in commands.items():
        _train(command, [*overrides, f"logger.experiment_name={name}"])
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    history = {}
    for name in commands:
        (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        history[name] = {
            key: [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
            for key in ("val/loss", "train/loss")
        }
    assert len(history["one"]["val/loss"]) == 3
    assert history["one"]["train/loss"][-1] < history["one"]["train/loss"][0] - 0.01  # it did learn something
    for key in ("val/loss", "train/loss"):
        assert history["two"][key] == pytest.approx(history["one"][key], abs=1e-3)


def test_two_process_ssl_run_pretrains_once_and_saves_one_teacher(tmp_path, data_dir):
    """task=ssl under two ranks: the centre is all-reduced and batch norm synchronised; rank 0 alone writes."""
    overrides = [
        *TINY,
        *DINO,
        "dataset.limit=128",
        f"paths.root_dir={tmp_path}",
        f"paths.data_dir={data_dir}",
        "logger.experiment_name=two-process-ssl",
    ]
    _train(LAUNCH, overrides)
    (run_dir,) = (tmp_path / "outputs").iterdir()
    assert (run_dir / "train.log").read_text().count("epoch 2/2") == 1
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("two-process-ssl").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["head"] == "dino"
    knn = client.get_metric_history(run.info.run_id, "val/knn_accuracy")
    assert sorted(m.step for m in knn) == [0, 1, 2] and all(0 <= m.value <= 1 for m in knn)
    state = load_file(run_dir / "checkpoints" / "best" / MODEL_FILE)
    assert {key.split(".")[0] for key in state} == {"student", "teacher", "center"}
    assert torch.isfinite(state["center"]).all() and state["center"].abs().sum() > 0


def test_two_process_mil_run_reports_a_bad_file_once_and_predicts_each_sequence_once(tmp_path, data_dir):
    """task=mil under two ranks: both read the folder, rank 0 alone warns, logs and writes."""
    root = generate_timelapse(tmp_path / "lines", **MIL_DATA)
    (root / "HeLa" / "batch_1" / "notes.jpg").write_bytes(b"not a frame")
    generated = [o for o in TINY_MIL if not o.startswith("dataset.generate.")]
    overrides = [
        *generated,
        "dataset=timelapse",
        f"dataset.root={root}",
        f"paths.root_dir={tmp_path}",
        f"paths.data_dir={data_dir}",
        "logger.experiment_name=two-process-mil",
    ]
    console = _train(LAUNCH, overrides)
    assert console.count("notes.jpg") == 1, console[-3000:]
    (run_dir,) = (tmp_path / "outputs").iterdir()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("two-process-mil").experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics["data/bad_names"] == 1
    with open(run_dir / "test" / "predictions.csv") as f:
        sequences = [row["sequence"] for row in csv.DictReader(f)]
    assert len(sequences) == len(set(sequences)) == run.data.metrics["data/test_sequences"] == 6 * 3 * 4
