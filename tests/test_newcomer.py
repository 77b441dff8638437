"""A newcomer's first hour: a run says where it is recorded and what to do with it next, recent runs are one command
away, a finished run's folder stays small, a bad input leaves no folder behind, and names stay short."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
from mlflow.tracking import MlflowClient

import cellexp
from cellexp.commands import compare, runs
from cellexp.config import release_run_dir
from cellexp.engine.checkpoint import BEST, MODEL_FILE, STATE_FILE, CheckpointManager
from cellexp.tracking import handoff
from cellexp.tracking import identity as run_identity
from cellexp.tracking import session as tracking
from cellexp.tracking.handoff import RunRecord, next_steps
from tests.conftest import ROOT, subprocess_env, tracked_run


def test_a_quick_run_says_where_it_is_and_what_comes_next(make_cfg, caplog, capsys):
    caplog.set_level(logging.INFO)
    cfg = make_cfg(["debug=default", "trainer.max_epochs=1"])  # TINY sets 2; debug=default is one epoch
    cellexp.run(cfg)
    run_id, folder, experiment = tracked_run(cfg).info.run_id, cfg.paths.output_dir, cfg.logger.experiment_name
    start, end = [r.getMessage() for r in caplog.records if r.name == "cellexp.tracking.handoff"]
    for line in (start, end):
        assert run_id in line and folder in line and repr(experiment) in line and cfg.logger.tracking_uri in line
    assert start.startswith("started") and end.startswith("finished") and " MB on disk" in end
    # a store other than the project's: the run is named by its folder, the tools get the store
    python = handoff.python()
    for command in (
        f"{python} train.py task.fit=false ckpt={folder}",
        f"{python} train.py task=xai ckpt={folder}",
        f"{python} -m cellexp.commands.compare {experiment} --tracking-uri {cfg.logger.tracking_uri}",
        f"mlflow ui --backend-store-uri {cfg.logger.tracking_uri}",
    ):
        assert command in end

    checkpoints = Path(folder) / "checkpoints"
    assert not list(checkpoints.rglob(STATE_FILE)), "a finished run keeps no optimizer state"
    (last,) = checkpoints.glob("epoch_*")  # one epoch: the last is the best
    assert (checkpoints / BEST / MODEL_FILE).stat().st_ino == (last / MODEL_FILE).stat().st_ino, "one file, linked"

    client = MlflowClient(tracking_uri=cfg.logger.tracking_uri)
    artifacts = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    uploaded = artifacts / "checkpoints" / BEST / MODEL_FILE
    assert uploaded.stat().st_ino == (checkpoints / BEST / MODEL_FILE).stat().st_ino, "a local store links, not copies"
    tags = client.get_experiment_by_name(experiment).tags
    assert tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"

    capsys.readouterr()
    assert runs.main(["--tracking-uri", cfg.logger.tracking_uri, "--experiment", experiment]) == 0
    table = capsys.readouterr().out
    assert run_id in table and "FINISHED" in table and "val/balanced_accuracy" in table


def test_a_run_in_the_default_store_is_named_by_its_id():
    uri = "sqlite:///somewhere/mlflow.db"
    record = RunRecord("classify", Path("/runs/x"), "abc123", "cellexp", uri, default_uri=uri)
    commands = dict(next_steps(record))
    python = handoff.python()
    assert commands["evaluate"] == f"{python} train.py task.fit=false ckpt=abc123"
    assert commands["explain"] == f"{python} train.py task=xai ckpt=abc123"
    assert commands["compare"] == f"{python} -m cellexp.commands.compare cellexp"
    assert "ui --backend-store-uri sqlite:///somewhere/mlflow.db" in commands["open the UI"]
    untracked = dict(next_steps(RunRecord("classify", Path("/runs/x"))))
    assert untracked == {"evaluate": f"{python} train.py task.fit=false ckpt=/runs/x", "explain": untracked["explain"]}
    grey16 = RunRecord("classify", Path("/runs/x"), overrides=("dataset=synthetic_16bit", "head=mlp"))
    assert dict(next_steps(grey16)) == {  # task=xai explains any crops: 16-bit ones too
        "evaluate": f"{python} train.py task.fit=false ckpt=/runs/x dataset=synthetic_16bit",
        "explain": f"{python} train.py task=xai ckpt=/runs/x dataset=synthetic_16bit",
    }


def test_runs_names_a_missing_store_an_empty_one_and_an_unknown_experiment(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path / 'nothing.db'}"
    assert runs.main(["--tracking-uri", missing]) == 2
    assert f"no tracking store at {tmp_path / 'nothing.db'}" in capsys.readouterr().err
    assert not (tmp_path / "nothing.db").exists(), "listing must not create a store"

    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    MlflowClient(tracking_uri=empty).search_experiments()  # creates the tables, no runs
    assert runs.main(["--tracking-uri", empty]) == 2
    assert "no runs in" in capsys.readouterr().err
    assert runs.main(["--tracking-uri", empty, "--experiment", "nope"]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err


def test_sealing_a_finished_run_drops_the_optimizer_state_and_links_identical_weights(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    weights = {"w": torch.ones(4)}
    manager.save(BEST, weights, None, {"epoch": 1})
    manager.save("epoch_0001", weights, {"loop": {"epoch": 1}}, {"epoch": 1})
    manager.save("epoch_0002", {"w": torch.zeros(4)}, {"loop": {"epoch": 2}}, {"epoch": 2})
    manager.seal()
    assert not list(tmp_path.rglob(STATE_FILE))
    inode = {tag: (tmp_path / tag / MODEL_FILE).stat().st_ino for tag in (BEST, "epoch_0001", "epoch_0002")}
    assert inode[BEST] == inode["epoch_0001"] != inode["epoch_0002"]
    assert manager.resume_point("auto") is None, "a finished run resumes nothing: resume=auto starts fresh"


def test_a_config_error_leaves_no_run_folder(tmp_path):
    folder = tmp_path / "bad"
    command = [sys.executable, "train.py", "trainer.max_epochs=-1", f"hydra.run.dir={folder}", "logger=none"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=subprocess_env())
    assert result.returncode != 0 and "trainer.max_epochs=-1" in result.stderr
    assert not folder.exists()

    kept = tmp_path / "kept"
    (kept / ".hydra").mkdir(parents=True)
    (kept / "mlflow_run_id").write_text("x")
    assert not release_run_dir(kept) and kept.is_dir(), "a folder that holds a result stays"


def test_sweep_names_are_short_and_swept_keys_become_short_params(monkeypatch):
    tags = {
        "sweep.keys": "optim.optimizer.lr,head.dim,head,dataset.generate.seed",
        "override.optim.optimizer.lr": "0.00012345678",
        "override.head.dim": "64",
        "override.head": "mlp",
        "override.dataset.generate.seed": "3",
        "override.debug": "default",
    }
    monkeypatch.setattr(run_identity, "sweep_tags", lambda: tags)
    assert run_identity.default_run_name(None) == "lr=0.000123 dim=64 head=mlp seed=3"
    config_params = {"seed": "0", "optim.optimizer.lr": "0.00012345678", "dataset.generate.seed": "3"}
    # `seed` is the config's own seed; dataset.generate.seed is already a param under its dotted key
    assert run_identity.swept_params(config_params) == {"lr": "0.00012345678", "dim": "64", "head": "mlp"}


def test_compare_shows_no_spread_for_a_configuration_of_one_run_and_short_swept_numbers():
    table = pd.DataFrame(
        {
            "head": ["mlp", "linear"],
            "lr": ["0.00012345678", "0.003"],
            "runs": [2, 1],
            "params": [1e6, 2e6],
            "m mean": [0.5, 0.25],
            "m std": [0.1, 0.0],
        }
    )
    shown = compare.format_table(table, ["m"], ["head", "lr"])
    assert "0.5000 ± 0.1000" in shown and "0.2500 ±" not in shown
    assert "0.000123 " in shown and "0.00012345678" not in shown
