"""Shared fixtures: configs composed like train.py does, written under pytest's tmp_path."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import cellexp  # noqa: F401  (registers resolvers)
from cellexp.tracking.session import RUN_ID_FILE

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # a worker per core (pytest -n): one thread each, for its own torch and the train.py it starts, so that the
    # workers do not fight over the cores
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# A tiny but learnable setup: test models, small crops, a small synthetic dataset.
TINY_MODEL = [
    "backbone=test_resnet",
    "dataset.crop_size=48",
    "dataset.image_size=32",
    "trainer.batch_size=32",
    "trainer.max_epochs=2",
    "trainer.cpu=true",
]
TINY = [*TINY_MODEL, "dataset.generate.images_per_line={train:3,val:1,test:1}"]


# The modules that take longest, longest first (worker seconds in the whole suite, 2 workers on 2 cores, 2026-12-07:
# 148, 146, 108, 102, 91, 79, 66, 59, 54, 53, 50, 43, 40): the workers (pytest -n, --no-loadscope-reorder) are handed
# modules in collection order, so one of these collected last would run alone at the end while the other waits.
LONG_POLES = (
    "test_follow_ups.py",
    "test_sweeps.py",
    "test_classify.py",
    "test_distributed.py",
    "test_tuning.py",
    "test_mil.py",
    "test_ssl.py",
    "test_xai.py",
    "test_interrupts.py",
    "test_docs.py",
    "test_faults.py",
    "test_imports.py",
    "test_xai_channels.py",
)


def pytest_collection_modifyitems(items) -> None:
    """The long modules first, in LONG_POLES' order; the others after them as collected (a stable sort)."""
    items.sort(key=lambda item: LONG_POLES.index(item.path.name) if item.path.name in LONG_POLES else len(LONG_POLES))


def _test_name() -> str:
    """An MLflow experiment per test, so that tests can count their own runs."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "test").split(" ")[0].rsplit("::", 1)[-1]
    return re.sub(r"[^\w-]", "_", current)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One data folder for the session, so the synthetic dataset and crop store are built once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def compose_cfg(overrides: list[str], run_dir: Path, data_dir: Path, tiny: bool = True) -> DictConfig:
    """conf/ composed as train.py composes it, run folder `run_dir`; Hydra's settings go to HydraConfig only."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose(
            "config",
            overrides=[f"paths.data_dir={data_dir}", *(TINY if tiny else []), *overrides],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a real run: the task sees Hydra's settings through HydraConfig only
    return cfg


@pytest.fixture
def make_cfg(tmp_path, data_dir, mlflow_uri, monkeypatch):
    """Compose conf/ with overrides; the run folder is tmp_path/<run_name>, MLflow a session sqlite store, without
    system metrics (an override given turns them back on)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def make(overrides: list[str] = (), run_name: str = "run", tiny: bool = True) -> DictConfig:
        logger = [
            f"++logger.tracking_uri={mlflow_uri}",
            f"++logger.artifact_location=file://{tmp_path / 'mlartifacts'}",
            f"++logger.experiment_name={_test_name()}",
            # no system-metrics sampler thread in the test process (test_tuning's `classified` run checks them)
            "++logger.system_metrics=false",
        ]
        return compose_cfg([*logger, *overrides], tmp_path / run_name, data_dir, tiny)

    yield make
    GlobalHydra.instance().clear()


def tracked_run(cfg: DictConfig, run_dir: Path | str | None = None):
    """The MLflow run that the run folder (default: cfg's) recorded, read from cfg's tracking store."""
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    run_id = (Path(run_dir or cfg.paths.output_dir) / RUN_ID_FILE).read_text().strip()
    return mlflow.get_run(run_id)


def subprocess_env() -> dict[str, str]:
    """The environment for train.py in a subprocess, without the MLflow store or sweep that earlier
    tests left in os.environ (MLflow exports MLFLOW_TRACKING_URI when a URI is set)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CELLEXP_"))}


class Crash(Exception):
    """Stands in for a killed process."""


@contextmanager
def crash_after_saving(monkeypatch, tag: str):
    """Inside the block, the run dies (Crash) right after checkpoint `tag` is written, as a killed job would."""
    from cellexp.engine.checkpoint import CheckpointManager

    save = CheckpointManager.save

    def save_then_crash(self, saved_tag, *args, **kwargs):
        path = save(self, saved_tag, *args, **kwargs)
        if saved_tag == tag:
            raise Crash
        return path

    monkeypatch.setattr(CheckpointManager, "save", save_then_crash)
    with pytest.raises(Crash):
        yield
    monkeypatch.setattr(CheckpointManager, "save", save)
