"""The tuning and tracking stack: Optuna pruning through the sweeper, trials in parallel, optuna-dashboard beside the
sweeper, and MLflow runs that MLflow's own tools can reuse (a pyfunc model, system metrics, the dataset, git)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import mlflow
import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

import cellexp
from cellexp.data.datamodule import open_crop_store
from cellexp.data.dataset import CropDataset
from cellexp.reports.data import split_digest
from cellexp.tracking.handoff import weight_copies
from tests.conftest import ROOT, compose_cfg, tracked_run
from tests.test_sweeps import sweep, sweep_runs

pytestmark = pytest.mark.slow

# Six trials of two kinds, the kind drawn by the seeded sampler: a learning rate that trains, and one (1e-9) that
# cannot lower the objective, the training loss, at all: the bad trials are bad by construction, whatever the data.
# The median pruner prunes from epoch 2 on, once 2 trials have completed.
PRUNED_SWEEP = [
    "hparams_search=optuna",
    "hydra.sweeper.n_trials=6",
    "hydra.sweeper.n_jobs=1",
    "hydra.sweeper.custom_search_space=null",
    "hydra.sweeper.params={optim.optimizer.lr:'choice(1e-2,1e-9)',trainer.batch_size:'32',"
    "optim.optimizer.weight_decay:'0.05'}",
    "task.optimized_metric=train/loss",
    "task.direction=minimize",
    "trainer.max_epochs=3",
    "tuning.pruners.median.n_startup_trials=2",
    "tuning.pruners.median.n_warmup_steps=2",
]


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('tracking') / 'mlflow.db'}"


def test_a_pruned_trial_is_pruned_in_optuna_and_tagged_in_mlflow(tmp_path, data_dir, tracking):
    result = sweep(tmp_path, data_dir, tracking, "pruning", *PRUNED_SWEEP)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="pruning", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = {t.number: t.state for t in study.trials}
    pruned = [t for t in study.trials if t.state is optuna.trial.TrialState.PRUNED]
    assert len(study.trials) == 6 and pruned, states
    assert set(states.values()) == {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    # only the learning rate that cannot learn is pruned, after epoch 2 of 3 (the pruner's warm-up)
    assert {t.params["optim.optimizer.lr"] for t in pruned} == {1e-9}
    assert all(max(t.intermediate_values) == 2 for t in pruned)

    _, children = sweep_runs(tracking, "pruning")
    by_trial = {int(c.data.params["tuning.trial"]): c for c in children}
    assert sorted(by_trial) == list(range(6))
    for number, run in by_trial.items():
        is_pruned = states[number] is optuna.trial.TrialState.PRUNED
        assert run.info.status == "FINISHED"
        assert (run.data.tags.get("optuna.trial.state") == "PRUNED") == is_pruned
        assert "test/accuracy" not in run.data.metrics if is_pruned else "test/accuracy" in run.data.metrics

    (sweep_dir,) = (tmp_path / "multirun").iterdir()
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert results.pruned_trials == len(pruned) and results.trials == 6 and results.pruning_saved_s > 0
    assert f"Pruned {len(pruned)} of 6 trials" in result.stdout + result.stderr


def test_two_workers_record_every_trial_once_in_optuna_and_mlflow(tmp_path, data_dir, tracking):
    # three trials on two workers: two at once, then one that a worker asks for after its first trial
    overrides = ["hparams_search=optuna", "hydra/launcher=local", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2"]
    result = sweep(tmp_path, data_dir, tracking, "parallel", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="parallel", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert sorted(t.number for t in study.trials) == [0, 1, 2]
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.COMPLETE}
    # two ran at once: the second trial started before the first had ended
    first, second = sorted(study.trials, key=lambda t: t.datetime_start)[:2]
    assert second.datetime_start < first.datetime_complete

    _, children = sweep_runs(tracking, "parallel")
    assert sorted(int(c.data.params["tuning.trial"]) for c in children) == [0, 1, 2]
    assert {c.info.status for c in children} == {"FINISHED"}
    values = {t.number: t.value for t in study.trials}
    for child in children:  # each trial's value is its own run's
        history = MlflowClient().get_metric_history(child.info.run_id, "val/balanced_accuracy")
        assert max(h.value for h in history) == pytest.approx(values[int(child.data.params["tuning.trial"])])


def test_optuna_dashboard_installs_beside_the_sweeper_and_reads_its_study(tmp_path):
    """The dev extra installs optuna-dashboard into the environment that the sweep tests run in: pip finds every
    requirement met, and the dashboard's app lists a study in the sweeper's kind of storage."""
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout[-2000:]
    import optuna_dashboard

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="seen", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    app = optuna_dashboard.wsgi(storage)
    environ = {"PATH_INFO": "/api/studies"}
    setup_testing_defaults(environ)
    captured = {}
    body = app(environ, lambda status, headers, exc_info=None: captured.update(status=status, error=exc_info))
    assert captured["status"].startswith("200"), (captured, environ["wsgi.errors"].getvalue()[-2000:])
    studies = json.loads(b"".join(body))["study_summaries"]
    assert [s["study_name"] for s in studies] == ["seen"]
    assert version("optuna").startswith("5.") and version("hydra-optuna-sweeper").startswith("1.4")


@pytest.fixture(scope="module")
def classified(tmp_path_factory, data_dir):
    """One tracked task=classify run, sampling system metrics every second, in its own store (an earlier test's
    mlflow.set_tracking_uri leaves MLFLOW_TRACKING_URI set, which would win over the config's)."""
    root = tmp_path_factory.mktemp("classified")
    logger = [
        f"++logger.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        f"++logger.artifact_location=file://{root / 'mlartifacts'}",
        "++logger.experiment_name=reusable",
        "logger.system_metrics_interval_s=1",
    ]
    cfg = compose_cfg([*logger, "trainer.max_epochs=2"], root / "run", data_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        cellexp.run(cfg)
    return cfg


def test_the_logged_mlflow_model_predicts_what_the_run_predicted(classified):
    run = tracked_run(classified)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    with open(f"{classified.paths.output_dir}/test/predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    store = open_crop_store(classified.dataset)
    crops = store.images("test")[np.array([int(r["index"]) for r in rows])]
    predicted = model.predict(crops)
    assert len(predicted) == len(rows)
    assert list(predicted["predicted"]) == [r["predicted"] for r in rows]
    probabilities = [c for c in rows[0] if c.startswith("p_")]
    expected = np.array([[float(r[c]) for c in probabilities] for r in rows])
    np.testing.assert_allclose(predicted[probabilities].to_numpy(), expected, atol=1e-5)
    # the model folder holds weights, code and config: nothing to unpickle
    local = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model")
    files = [p.name for p in Path(local).rglob("*") if p.is_file()]
    assert "model.safetensors" in files and not [name for name in files if name.endswith((".pkl", ".pt"))]
    signature = model.metadata.get_input_schema().inputs[0]
    assert signature.type == crops.dtype and signature.shape == (-1, *crops.shape[1:])
    # one copy of the weights: the model's, the uploaded checkpoint's and the run folder's are one file
    artifacts = Path(classified.logger.artifact_location.removeprefix("file://"))
    assert weight_copies(Path(classified.paths.output_dir), artifacts) == []
    (weights,) = (artifacts / "models").rglob("model.safetensors")
    best = Path(classified.paths.output_dir) / "checkpoints" / "best" / "model.safetensors"
    assert weights.stat().st_ino == best.stat().st_ino


def test_the_run_has_system_metrics_its_dataset_and_its_git_state(classified):
    run, store = tracked_run(classified), open_crop_store(classified.dataset)
    assert any(key.startswith("system/cpu_utilization") for key in run.data.metrics), sorted(run.data.metrics)
    assert "system/system_memory_usage_megabytes" in run.data.metrics
    inputs = {
        tags["mlflow.data.context"]: (i.dataset, tags)
        for i in run.inputs.dataset_inputs
        for tags in [{t.key: t.value for t in i.tags}]
    }
    assert sorted(inputs) == ["test", "train", "val"]
    for split, (dataset, tags) in inputs.items():
        assert dataset.name == "synthetic" and int(tags["crops"]) == run.data.metrics[f"data/{split}_crops"]
        crops = CropDataset(store, split, classified.dataset.limit, classified.seed)
        assert dataset.digest == split_digest(store, crops)
    tags = run.data.tags
    assert tags["git_dirty"] in ("true", "false") and len(tags["mlflow.source.git.commit"]) == 40
    assert (
        tags["mlflow.source.git.commit"]
        == subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    )
