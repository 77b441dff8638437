"""Interrupted runs, resumed, end exactly where an uninterrupted run ends; NaN stops with a usable checkpoint."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from mlflow.tracking import MlflowClient

import cellexp
from cellexp.engine.checkpoint import load_training_state
from cellexp.engine.classification import ClassifierTrainer
from cellexp.engine.preemption import Preempted
from cellexp.errors import NonFiniteLossError
from cellexp.models.classifier import CellClassifier
from tests.conftest import crash_after_saving, tracked_run

pytestmark = pytest.mark.slow

SHORT = ["trainer.max_epochs=3", "dataset.limit=192", "trainer.early_stopping=null"]  # 6 steps per epoch
_reference: dict = {}


def _test_metrics(cfg) -> dict:
    return {k: v for k, v in tracked_run(cfg).data.metrics.items() if k.startswith("test/")}


def reference_metrics(make_cfg) -> dict:
    """Test metrics of the uninterrupted run, computed once for the module."""
    if not _reference:
        cfg = make_cfg(SHORT, run_name="reference")
        cellexp.run(cfg)
        _reference.update(_test_metrics(cfg))
    return _reference


def test_crashed_run_resumes_from_last_epoch_to_the_same_result(make_cfg, monkeypatch):
    expected = reference_metrics(make_cfg)
    with crash_after_saving(monkeypatch, "epoch_0002"):
        cellexp.run(make_cfg(SHORT, run_name="crashed"))
    cfg = make_cfg([*SHORT, "trainer.resume=auto"], run_name="crashed")
    cellexp.run(cfg)
    assert _test_metrics(cfg) == expected


def test_sigterm_saves_mid_epoch_and_resume_auto_finishes_identically(make_cfg, monkeypatch):
    expected = reference_metrics(make_cfg)
    step = ClassifierTrainer.train_step

    def step_then_signal(self, *args):
        loss = step(self, *args)
        if self.state.global_step == 8:  # epoch 2, third batch
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(ClassifierTrainer, "train_step", step_then_signal)
    cfg = make_cfg(SHORT, run_name="preempted")
    with pytest.raises(Preempted) as stopped:
        cellexp.run(cfg)
    assert stopped.value.checkpoint.name == "epoch_0001_step_000003"
    assert load_training_state(stopped.value.checkpoint)["loop"]["global_step"] == 9
    killed = tracked_run(cfg)
    assert killed.info.status == "KILLED"

    monkeypatch.setattr(ClassifierTrainer, "train_step", step)
    cfg = make_cfg([*SHORT, "trainer.resume=auto"], run_name="preempted")
    cellexp.run(cfg)
    assert MlflowClient().get_run(killed.info.run_id).info.status == "FINISHED"  # the same MLflow run, continued
    assert _test_metrics(cfg) == expected


def test_nan_loss_stops_and_names_the_step_keeping_the_last_good_checkpoint(make_cfg, monkeypatch, tmp_path):
    calls = {"n": 0}

    class NaNOnSeventhCall(torch.nn.CrossEntropyLoss):
        def forward(self, logits, target):
            calls["n"] += 1
            loss = super().forward(logits, target)
            return loss * float("nan") if calls["n"] == 9 else loss

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", NaNOnSeventhCall)
    with pytest.raises(NonFiniteLossError, match=r"at epoch 2, step 3 \(global step 9\)") as err:
        cellexp.run(make_cfg(SHORT, run_name="nan"))
    checkpoints = tmp_path / "nan" / "checkpoints"
    assert str(checkpoints / "epoch_0001") in str(err.value)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best", "epoch_0001"]


def test_bf16_runs_on_cpu(make_cfg, monkeypatch):
    dtypes = []
    forward = CellClassifier.forward

    def recording_forward(self, x):
        logits = forward(self, x)
        dtypes.append(logits.dtype)
        return logits

    monkeypatch.setattr(CellClassifier, "forward", recording_forward)
    objective = cellexp.run(make_cfg(["trainer.precision=bf16", "trainer.max_epochs=1", "dataset.limit=128"]))
    assert 0.0 <= objective <= 1.0
    assert dtypes and set(dtypes) == {torch.bfloat16}
