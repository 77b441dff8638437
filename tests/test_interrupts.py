"""Interrupts at awkward moments: a second Ctrl-C while the run is stopping, and a kill right after the MLflow run
is created (before its params are logged). The first ends in one line with a closed record; after the second,
`trainer.resume=auto` completes the record to what an uninterrupted run has."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from cellexp.engine.preemption import Preempted
from tests.conftest import ROOT, subprocess_env, tracked_run

pytestmark = pytest.mark.slow

SHORT = ["trainer.max_epochs=2", "dataset.limit=96", "trainer.early_stopping=null"]


def test_a_second_ctrl_c_while_stopping_ends_with_the_first_ones_line_and_a_closed_record(make_cfg, monkeypatch):
    import cellexp.tasks.classify

    def interrupt(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)

    close = cellexp.tracking.session._close_run

    def interrupted_close(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while the record is being closed
        return close(*args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(cellexp.tasks.classify, "write_confusion_matrix", interrupt)  # in the test phase
        patched.setattr(cellexp.tracking.session, "_close_run", interrupted_close)
        with pytest.raises(Preempted) as stopped:
            cellexp.run(make_cfg(SHORT, run_name="ctrl_c"))
    assert str(stopped.value) == (
        "stopped by SIGINT: finished work is kept; rerun with trainer.resume=auto to continue"
    )
    assert tracked_run(make_cfg(SHORT, run_name="ctrl_c")).info.status == "KILLED"
    resumed = make_cfg([*SHORT, "trainer.resume=auto"], run_name="ctrl_c")
    cellexp.run(resumed)
    assert tracked_run(resumed).info.status == "FINISHED"


KILL_AFTER_RUN_CREATED = """
import os, runpy, signal, sys
import cellexp.tracking.session
cellexp.tracking.session._log_run_description = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def _train_settings(tmp_path: Path, folder: str, *overrides: str) -> list[str]:
    return [
        f"hydra.run.dir={tmp_path / folder}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"logger.artifact_location=file://{tmp_path / 'mlartifacts'}",
        "logger.system_metrics=false",
        "backbone=test_resnet",
        "dataset.crop_size=48",
        "dataset.image_size=32",
        "dataset.generate.images_per_line={train:3,val:1,test:1}",
        "trainer.batch_size=32",
        "trainer.cpu=true",
        *SHORT,
        *overrides,
    ]


def _train(tmp_path: Path, folder: str, *overrides: str, driver: str | None = None) -> subprocess.CompletedProcess:
    settings = _train_settings(tmp_path, folder, *overrides)
    command = [sys.executable, "-c", driver, *settings] if driver else [sys.executable, "train.py", *settings]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=subprocess_env())


def _record(tmp_path: Path, folder: str) -> dict:
    run_id = (tmp_path / folder / "mlflow_run_id").read_text().strip()
    run = MlflowClient().get_run(run_id)
    own = {"paths.output_dir", "trainer.resume"}  # the folder's name, and how this attempt was started
    return {
        "status": run.info.status,
        "params": {k: v for k, v in run.data.params.items() if k not in own},
        "param keys": set(run.data.params),
        "tags": {key for key in run.data.tags if not key.startswith("mlflow.")},  # their values name the folder
        "artifacts": sorted(item.path for item in MlflowClient().list_artifacts(run_id)),
        "metrics": {k: v for k, v in run.data.metrics.items() if k.startswith(("test/", "val/"))},
    }


def test_a_run_killed_before_its_params_were_logged_is_completed_by_its_resume(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    uninterrupted = _train(tmp_path, "whole")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]

    killed = _train(tmp_path, "killed", driver=KILL_AFTER_RUN_CREATED)
    assert killed.returncode == -signal.SIGKILL
    first = MlflowClient().get_run((tmp_path / "killed" / "mlflow_run_id").read_text().strip())
    assert first.data.params == {} and "run_dir" not in first.data.tags  # as the issue found it

    resumed = _train(tmp_path, "killed", "trainer.resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _record(tmp_path, "killed") == _record(tmp_path, "whole")
    assert MlflowClient().get_run(first.info.run_id).data.tags["run_dir"] == str(tmp_path / "killed")


def test_two_ctrl_c_on_train_py_end_in_one_line_and_a_killed_record(tmp_path):
    settings = _train_settings(tmp_path, "ctrl_c")
    process = subprocess.Popen(
        [sys.executable, "train.py", *settings],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=subprocess_env(),
    )
    lines = []
    for line in process.stdout:  # wait until the run is under way, its MLflow run open
        lines.append(line)
        if "started run" in line:
            break
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    lines += process.stdout.readlines()
    process.wait(timeout=300)
    stderr = "".join(lines)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-2000:]
    assert stderr.count("stopped by SIGINT: finished work is kept; rerun with trainer.resume=auto") == 1
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = (tmp_path / "ctrl_c" / "mlflow_run_id").read_text().strip()
    assert MlflowClient().get_run(run_id).info.status == "KILLED"
