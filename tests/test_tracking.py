"""MLflow wiring: which store wins, how the config becomes params, and what a corrupt image leaves behind."""

from __future__ import annotations

import os

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

import cellexp
from cellexp.tracking.session import configure_mlflow, flatten_params, retrying, tracking_uri
from tests.conftest import TINY_MODEL
from tests.test_data import _write_dataset


def test_environment_tracking_uri_wins_over_the_config(monkeypatch):
    logger = OmegaConf.create({"tracking_uri": "sqlite:////from/config.db"})
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(logger) == "sqlite:////from/config.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(logger) == "http://127.0.0.1:5000"


def test_configured_store_keeps_artifacts_where_the_config_says(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = OmegaConf.create(
        {
            "tracking_uri": f"sqlite:///{tmp_path / 'a.db'}",
            "experiment_name": "e",
            "artifact_location": f"file://{tmp_path / 'artifacts'}",
        }
    )
    experiment_id = configure_mlflow(first)
    assert mlflow.get_experiment(experiment_id).artifact_location == f"file://{tmp_path / 'artifacts'}"
    assert "MLFLOW_TRACKING_URI" not in os.environ  # a later run with another store is not overridden
    second = OmegaConf.create({**first, "tracking_uri": f"sqlite:///{tmp_path / 'b.db'}"})
    configure_mlflow(second)
    assert mlflow.get_tracking_uri() == second.tracking_uri


def _failing(first_errors: list[Exception]):
    """A call that raises `first_errors` one per call, then returns "done"; and the list its calls are counted in."""
    calls = []

    def call():
        calls.append(1)
        if len(calls) <= len(first_errors):
            raise first_errors[len(calls) - 1]
        return "done"

    return call, calls


def test_a_call_that_lost_a_race_to_insert_the_same_row_is_made_again_and_others_are_not(monkeypatch):
    from mlflow.exceptions import RestException

    monkeypatch.setattr("cellexp.tracking.session.time.sleep", lambda seconds: None)
    # the server's answer when two trials log one dataset at the same instant (seen in CI against PostgreSQL)
    race = RestException(
        {
            "error_code": "BAD_REQUEST",
            "message": '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"',
        }
    )
    log_input, calls = _failing([race])
    assert retrying(log_input) == "done" and len(calls) == 2
    refused = RestException(
        {"error_code": "INVALID_PARAMETER_VALUE", "message": "Changing param values is not allowed"}
    )
    log_param, calls = _failing([refused, refused])
    with pytest.raises(RestException, match="Changing param values"):
        retrying(log_param)
    assert len(calls) == 1
    # an experiment that another process created first is taken for good: read back at once, not retried for seconds
    taken = RestException(
        {
            "error_code": "RESOURCE_ALREADY_EXISTS",
            "message": "Experiment 'x' already exists. (psycopg.errors.UniqueViolation) duplicate key value violates "
            'unique constraint "experiments_name_key"',
        }
    )
    create_experiment, calls = _failing([taken, taken])
    with pytest.raises(RestException, match="already exists"):
        retrying(create_experiment)
    assert len(calls) == 1


def test_config_flattens_to_dotted_params_within_mlflow_limits():
    params = flatten_params({"optim": {"lr": 0.001, "betas": [0.9, 0.99]}, "ckpt": None, "note": "x" * 7000, "e": {}})
    assert params["optim.lr"] == "0.001" and params["optim.betas"] == "[0.9, 0.99]"
    assert params["ckpt"] == "None" and params["e"] == "{}"
    assert len(params["note"]) == 6000


@pytest.mark.slow
def test_corrupt_image_is_skipped_and_reported_in_mlflow(make_cfg, tmp_path, caplog):
    root = tmp_path / "LIVECell"
    sources = _write_dataset(root)
    broken = next(sources["train"].image_dir.glob("SKOV3*04h*.tif"))
    broken.write_bytes(b"\x00corrupt")
    overrides = [*TINY_MODEL, "dataset=livecell", f"dataset.root={root}", "trainer.max_epochs=1"]
    cfg = make_cfg(overrides, tiny=False)
    cellexp.run(cfg)
    assert f"image skipped during preparation: {broken.name}" in caplog.text
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    client = MlflowClient()
    run = client.search_runs([client.get_experiment_by_name(cfg.logger.experiment_name).experiment_id])[0]
    assert run.data.metrics["data/images_failed"] == 1
    assert run.data.metrics["data/train_crops"] == 2  # the other train image's two cells
    assert [a.path for a in client.list_artifacts(run.info.run_id, "data")] == ["data/summary.json", "data/summary.png"]
