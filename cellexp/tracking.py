"""MLflow for every run: where the store is, which run to write to, what goes into it, and sweeps' parent runs.

The tracking URI comes from MLFLOW_TRACKING_URI when set (MLflow's convention), else from
`cfg.logger.tracking_uri` (a sqlite file in the project root by default). Only the main process talks to
MLflow; other ranks get a tracker that does nothing. A new sqlite store is created under a file lock (MLflow's
table creation races between processes), and calls that meet a locked sqlite database are retried with backoff.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from cellexp.config import PARENT_RUN_ENV, SWEEP_KEYS_ENV
from cellexp.engine.preemption import Preempted
from cellexp.engine.tracker import NullTracker

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"
MAX_PARAM_LENGTH = 6000
GROUPS = ("dataset", "backbone", "head", "task")
RETRIES = 6


def _retrying(call: Callable, *args, **kwargs):
    """`call`, retried with exponential backoff while sqlite says the database is locked."""
    for attempt in range(RETRIES):
        try:
            return call(*args, **kwargs)
        except Exception as err:  # MLflow wraps sqlite's OperationalError in its own exceptions
            if "database is locked" not in str(err) or attempt == RETRIES - 1:
                raise
            time.sleep(0.1 * 2**attempt)


class MlflowTracker(NullTracker):
    def __init__(self, run_id: str):
        import mlflow

        self._mlflow, self.run_id = mlflow, run_id

    def log_metrics(self, metrics, step=None):
        """Every value, NaN and infinities included (a silent gap would hide why a run stopped)."""
        self._mlflow_call("log_metrics", {k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path, artifact_path=None):
        self._mlflow_call("log_artifact", str(path), artifact_path)

    def log_artifacts(self, folder, artifact_path=None):
        self._mlflow_call("log_artifacts", str(folder), artifact_path)

    def set_tags(self, tags):
        self._mlflow_call("set_tags", dict(tags))

    def _mlflow_call(self, name: str, *args, **kwargs):
        return _retrying(getattr(self._mlflow, name), *args, **kwargs)


def tracking_uri(logger_cfg: DictConfig) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or logger_cfg.tracking_uri


def configure_mlflow(logger_cfg: DictConfig) -> str:
    """Point MLflow at the store and experiment (creating them once, under a lock); return the experiment id."""
    import mlflow

    from_environment = os.environ.get("MLFLOW_TRACKING_URI")
    uri = tracking_uri(logger_cfg)
    mlflow.set_tracking_uri(uri)
    # MLflow exports the URI to the environment; undo that so that the next run's config still counts.
    if from_environment is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    with _store_lock(uri):
        experiment = _retrying(mlflow.get_experiment_by_name, logger_cfg.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        # A store named in the config keeps artifacts beside it; a server from the environment decides itself.
        location = None if from_environment else logger_cfg.artifact_location
        return _retrying(mlflow.create_experiment, logger_cfg.experiment_name, artifact_location=location)


@contextmanager
def _store_lock(uri: str):
    """A file lock beside a sqlite store (other stores need none)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        yield


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
    run = _retrying(
        mlflow.start_run,
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
        if previous is not None and "error" in run.data.tags:
            _retrying(mlflow.delete_tag, "error")  # the stop that a resumed run recovered from
    except BaseException as err:
        status = "KILLED" if isinstance(err, (Preempted, KeyboardInterrupt)) else "FAILED"
        _retrying(mlflow.set_tag, "error", str(err)[:MAX_PARAM_LENGTH])
        raise
    finally:
        _retrying(mlflow.end_run, status=status)


def record_failed_job(cfg: DictConfig, run_dir: Path, error: BaseException) -> None:
    """A sweep job that failed before its MLflow run opened (a bad value, missing data) still gets a
    FAILED child run that names the error, so that the sweep's record in MLflow is complete."""
    if cfg.logger.name == "none" or (run_dir / RUN_ID_FILE).exists():
        return
    import mlflow

    run = _retrying(
        mlflow.start_run,
        experiment_id=configure_mlflow(cfg.logger),
        run_name=cfg.logger.get("run_name") or default_run_name(cfg),
        parent_run_id=os.environ.get(PARENT_RUN_ENV),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_ID_FILE).write_text(run.info.run_id)
    tags = {**run_label(cfg), **sweep_tags(), "run_dir": str(run_dir), "error": str(error)[:MAX_PARAM_LENGTH]}
    _retrying(mlflow.set_tags, tags)
    _retrying(mlflow.end_run, status="FAILED")


def _log_run_description(cfg: DictConfig, run_dir: Path) -> None:
    import mlflow

    _retrying(mlflow.log_params, flatten_params(OmegaConf.to_container(cfg, resolve=True)))
    tags = {**run_label(cfg), **sweep_tags(), "git_commit": git_commit(), "run_dir": str(run_dir)}
    _retrying(mlflow.set_tags, tags)
    config_file = run_dir / "config.yaml"
    if config_file.exists():
        _retrying(mlflow.log_artifact, str(config_file))


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


# ------------------------------------------------------------------------------------------ who a run is


def run_label(cfg: DictConfig) -> dict[str, str]:
    """Which option of each config group the run uses (dataset, backbone, head, task): the names runs are tagged,
    named and compared by. From Hydra's record of the composition; a config without one (a loaded run config)
    gives the model name of its backbone and the target of its head."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    fallback = {
        "dataset": cfg.get("dataset", {}).get("name", "?"),
        "backbone": cfg.get("backbone", {}).get("model_name", "?"),
        "head": str(cfg.get("head", {}).get("_target_", "?")).rsplit(".", 1)[-1],
        "task": cfg.get("task", {}).get("name", "?"),
    }
    return {group: str(choices.get(group) or fallback[group]) for group in GROUPS}


def checkpoint_meta(cfg: DictConfig, input_config, class_names: list[str]) -> dict:
    """What every checkpoint records besides its counters: who trained it, its input and its classes."""
    return {"labels": run_label(cfg), "input": asdict(input_config), "classes": list(class_names)}


def backbone_source_tags(spec: str, source) -> dict[str, str]:
    """Where a backbone's starting weights came from: as given, the checkpoint, and the task that made it."""
    tags = {
        "backbone.init_from": str(spec),
        "backbone.init_checkpoint": str(source.folder),
        "backbone.init_task": str(source.config.get("task", {}).get("name", "?")),
    }
    log.info("backbone starts from %s", "  ".join(f"{k}={v}" for k, v in tags.items()))
    return tags


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
    label = run_label(cfg)
    return f"{label['backbone']} {label['head']}"


def git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


# ------------------------------------------------------------------------------------- sweeps' parent runs


def open_parent_run(config: DictConfig, sweep_id: str, keys: list[str]) -> str:
    """The MLflow parent run of a sweep's jobs; its id."""
    from mlflow.tracking import MlflowClient

    experiment_id = configure_mlflow(config.logger)
    overrides = " ".join(OmegaConf.to_container(config.hydra.overrides.task)) or "(none)"
    sweeper = str(config.hydra.sweeper.get("_target_", "?")).rsplit(".", 1)[-1]
    run = _retrying(
        MlflowClient().create_run,
        experiment_id,
        run_name=f"sweep {sweep_id}",
        tags={
            "sweep.dir": str(config.hydra.sweep.dir),
            "sweep.sweeper": sweeper,
            "sweep.keys": ",".join(keys),
            "sweep.overrides": overrides,
            "mlflow.note.content": f"{sweeper} over {', '.join(keys) or 'nothing'}: {overrides}",
        },
    )
    return run.info.run_id


def record_sweep_results(parent: str, sweep_dir: Path, records: tuple[str, ...]) -> None:
    """The sweep's record files as the parent's artifacts, and the Optuna result as its metric and tags."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for name in records:
        if (sweep_dir / name).is_file():
            _retrying(client.log_artifact, parent, str(sweep_dir / name), "sweep")
    results = sweep_dir / "optimization_results.yaml"
    if results.is_file():
        best = OmegaConf.load(results)
        if "best_value" in best:
            _retrying(client.log_metric, parent, "sweep/best_value", float(best.best_value))
            for key, value in best.best_params.items():
                _retrying(client.set_tag, parent, f"sweep.best.{key}", str(value))


def close_parent_run(parent: str, status: str) -> None:
    from mlflow.tracking import MlflowClient

    _retrying(MlflowClient().set_terminated, parent, status=status)
