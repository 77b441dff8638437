"""MLflow for every run: where the store is, which run to write to, and what goes into it.

The tracking URI comes from MLFLOW_TRACKING_URI when set (MLflow's convention), else from
`cfg.logger.tracking_uri` (a sqlite file in the project root by default). Only the main
process talks to MLflow; other ranks get a tracker that does nothing.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cellexp.engine.preemption import Preempted
from cellexp.sweep import PARENT_RUN_ENV, SWEEP_KEYS_ENV

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"
MAX_PARAM_LENGTH = 6000
GROUPS = ("dataset", "backbone", "head", "task")
# Tasks that train a head of their own, not the `head` group's: their `head` tag and run name show it instead.
OWN_HEADS = {"ssl": "dino", "mil": "gated_attention"}


class NullTracker:
    """Stands in when logging is off or on non-main ranks."""

    run_id: str | None = None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...


class MlflowTracker(NullTracker):
    def __init__(self, run_id: str):
        import mlflow

        self._mlflow, self.run_id = mlflow, run_id

    def log_metrics(self, metrics, step=None):
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        self._mlflow.log_metrics(finite, step=step)

    def log_artifact(self, path, artifact_path=None):
        self._mlflow.log_artifact(str(path), artifact_path)

    def log_artifacts(self, folder, artifact_path=None):
        self._mlflow.log_artifacts(str(folder), artifact_path)

    def set_tags(self, tags):
        self._mlflow.set_tags(dict(tags))


def tracking_uri(logger_cfg: DictConfig) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or logger_cfg.tracking_uri


def configure_mlflow(logger_cfg: DictConfig) -> str:
    """Point MLflow at the store and experiment; return the experiment id."""
    import mlflow

    from_environment = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri(logger_cfg))
    # MLflow exports the URI to the environment; undo that so that the next run's config still counts.
    if from_environment is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    experiment = mlflow.get_experiment_by_name(logger_cfg.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    # A store named in the config keeps artifacts beside it; a server from the environment decides itself.
    location = None if from_environment else logger_cfg.artifact_location
    return mlflow.create_experiment(logger_cfg.experiment_name, artifact_location=location)


@contextmanager
def start_tracking(cfg: DictConfig, run_dir: Path, enabled: bool) -> Iterator[NullTracker]:
    """Open (or, on resume, reopen) the run's MLflow run; close it FINISHED, FAILED or KILLED."""
    if not enabled or cfg.logger.name == "none":
        yield NullTracker()
        return
    import mlflow

    experiment_id = configure_mlflow(cfg.logger)
    id_file = run_dir / RUN_ID_FILE
    previous = id_file.read_text().strip() if id_file.exists() and cfg.trainer.get("resume") else None
    run = mlflow.start_run(
        run_id=previous,
        experiment_id=None if previous else experiment_id,
        run_name=cfg.logger.get("run_name") or default_run_name(cfg),
        nested=mlflow.active_run() is not None,
        parent_run_id=None if previous else os.environ.get(PARENT_RUN_ENV),
    )
    id_file.write_text(run.info.run_id)
    tracker = MlflowTracker(run.info.run_id)
    status = "FAILED"
    try:
        if previous is None:
            _log_run_description(cfg, run_dir)
        yield tracker
        status = "FINISHED"
    except BaseException as err:
        status = "KILLED" if isinstance(err, (Preempted, KeyboardInterrupt)) else "FAILED"
        mlflow.set_tag("error", str(err)[:MAX_PARAM_LENGTH])
        raise
    finally:
        mlflow.end_run(status=status)


def record_failed_job(cfg: DictConfig, run_dir: Path, error: BaseException) -> None:
    """A sweep job that failed before its MLflow run opened (a bad value, missing data) still gets a
    FAILED child run that names the error, so that the sweep's record in MLflow is complete."""
    if cfg.logger.name == "none" or (run_dir / RUN_ID_FILE).exists():
        return
    import mlflow

    run = mlflow.start_run(
        experiment_id=configure_mlflow(cfg.logger),
        run_name=cfg.logger.get("run_name") or default_run_name(cfg),
        parent_run_id=os.environ.get(PARENT_RUN_ENV),
    )
    id_file = run_dir / RUN_ID_FILE
    id_file.write_text(run.info.run_id)
    mlflow.set_tags(
        {**group_choices(cfg), **sweep_tags(), "run_dir": str(run_dir), "error": str(error)[:MAX_PARAM_LENGTH]}
    )
    mlflow.end_run(status="FAILED")


def _log_run_description(cfg: DictConfig, run_dir: Path) -> None:
    import mlflow

    mlflow.log_params(flatten_params(OmegaConf.to_container(cfg, resolve=True)))
    mlflow.set_tags({**group_choices(cfg), **sweep_tags(), "git_commit": git_commit(), "run_dir": str(run_dir)})
    config_file = run_dir / "config.yaml"
    if config_file.exists():
        mlflow.log_artifact(str(config_file))


def flatten_params(tree: Mapping, prefix: str = "") -> dict[str, str]:
    """Nested config to MLflow params: dotted keys, values as strings cut to MLflow's length limit."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def group_choices(cfg: DictConfig) -> dict[str, str]:
    """Which option of each config group this run uses, from Hydra's record of the composition (`head`: the
    head the task trains, see OWN_HEADS)."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    picked = {group: str(choices.get(group, "?")) for group in GROUPS}
    return {**picked, "head": OWN_HEADS.get(picked["task"], picked["head"])}


def sweep_tags() -> dict[str, str]:
    """A multirun job's overrides as tags (`override.<key>`), the handles `cellexp.compare` groups runs by."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    tags = {
        "sweep.job_num": str(hydra_cfg.job.num),
        "sweep.keys": os.environ.get(SWEEP_KEYS_ENV, ""),
        "sweep.overrides": " ".join(overrides),
    }
    for override in overrides:
        key, _, value = override.partition("=")
        tags[f"override.{key.lstrip('+~')}"] = value[:MAX_PARAM_LENGTH]
    return tags


def default_run_name(cfg: DictConfig) -> str:
    """What tells runs apart at a glance: a sweep job's swept values, else the backbone and head."""
    tags = sweep_tags()
    swept = [key for key in tags.get("sweep.keys", "").split(",") if f"override.{key}" in tags]
    if swept:
        return " ".join(f"{key.rsplit('.', 1)[-1]}={tags[f'override.{key}']}" for key in swept)
    choices = group_choices(cfg)
    return f"{choices['backbone']} {choices['head']}"


def git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"
