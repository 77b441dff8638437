"""MLflow for every run: where the store is, which run to write to, what goes into it, and sweeps' parent runs.

The tracking URI comes from MLFLOW_TRACKING_URI when set (MLflow's convention), else from
`cfg.logger.tracking_uri` (a sqlite file in the project root by default). Only the main process talks to
MLflow; other ranks get a tracker that does nothing. A new sqlite store is created under a file lock (MLflow's
table creation races between processes), and calls that meet a locked sqlite database, or lose a race to insert
the same row (two runs logging one dataset at the same instant), are retried with backoff. Against a server, where
no lock reaches, an experiment that another run created first is read back by name.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from cellexp.config import PARENT_RUN_ENV, default_tracking_uri
from cellexp.engine.preemption import Preempted, shielded, signals_held
from cellexp.engine.tracker import NullTracker
from cellexp.errors import TrialPruned
from cellexp.tracking.handoff import RunRecord, announce_end, announce_start
from cellexp.tracking.identity import (
    MAX_PARAM_LENGTH,
    command_line,
    default_run_name,
    git_state,
    run_label,
    sweep_tags,
    swept_params,
)
from cellexp.tracking.kinds import KIND_TAG, run_kind
from cellexp.tracking.param_order import ordered_params

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"
RETRIES = 6
# MLflow 3's UI opens an experiment of this kind on its runs table (a "genai_development" one, on traces); without
# the tag it guesses from what the experiment holds, and an empty one opens on traces.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
EXPERIMENT_TAGS = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
# tracking URIs of an MLflow server, which keeps (or proxies) the artifact store itself
SERVER_SCHEMES = ("http", "https")
# a sweep trial that its pruner stopped: FINISHED, with this tag PRUNED (and the reason beside it)
PRUNED_TAG = "optuna.trial.state"


# what a store says when a call may succeed if made again: sqlite busy, or another writer inserted the row that this
# call's get-or-create was about to insert (MLflow's log_inputs reads, then inserts, a dataset by its digest:
# PostgreSQL, sqlite and MySQL's words for the loser); the retry reads the row that is there now. A name that is
# taken for good (an experiment another process created first) is final, whatever words the store wraps it in
NAME_TAKEN = "RESOURCE_ALREADY_EXISTS"
RETRYABLE = (
    "database is locked",
    "duplicate key value violates unique constraint",
    "UNIQUE constraint failed",
    "Duplicate entry",
)


def retrying(call: Callable, *args, **kwargs):
    """`call`, retried with exponential backoff while the store says it may succeed if made again (RETRYABLE)."""
    for attempt in range(RETRIES):
        try:
            return call(*args, **kwargs)
        except Exception as err:  # MLflow wraps the database's errors in its own exceptions
            final = getattr(err, "error_code", None) == NAME_TAKEN
            if final or not any(words in str(err) for words in RETRYABLE) or attempt == RETRIES - 1:
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
        """An artifact store on this disk (file://) gets hard links to the folder's files, not a second copy: what is
        logged (checkpoints, reports) is replaced by renaming, never rewritten in place. Elsewhere, an upload."""
        target = local_path(self._mlflow_call("get_artifact_uri", artifact_path))
        if target is None or not _link_tree(Path(folder), target):
            self._mlflow_call("log_artifacts", str(folder), artifact_path)

    def set_tags(self, tags):
        self._mlflow_call("set_tags", dict(tags))

    def log_dataset(self, name, digest, source, split, size):
        """A split as an MLflow dataset input: the dataset's name, the split's digest and store folder, the split as
        its context and its number of crops as a tag."""
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource

        dataset = MetaDataset(LocalArtifactDatasetSource(str(source)), name=name, digest=digest)
        self._mlflow_call("log_input", dataset, context=split, tags={"crops": str(size)})

    def _mlflow_call(self, name: str, *args, **kwargs):
        return retrying(getattr(self._mlflow, name), *args, **kwargs)


def local_path(uri: str) -> Path | None:
    """The folder of a file:// (or plain path) artifact URI; None for a remote store."""
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme in ("", "file") else None


def _link_tree(folder: Path, target: Path) -> bool:
    """Hard-link every file of `folder` into `target`, replacing what an earlier upload left there, whole or not at
    all (False: links are not possible there, e.g. on another filesystem)."""
    staging = target.with_name(f".{target.name}.links-{uuid.uuid4().hex[:8]}")
    try:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                (staging / path.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
                os.link(path, staging / path.relative_to(folder))
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return False
    return True


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
        experiment = retrying(mlflow.get_experiment_by_name, logger_cfg.experiment_name)
        if experiment is None:
            return _create_experiment(logger_cfg, location=_artifact_location(logger_cfg, uri, from_environment))
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # made before cellexp set it, or by hand
            client = mlflow.tracking.MlflowClient()
            retrying(client.set_experiment_tag, experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment.experiment_id


def _artifact_location(logger_cfg: DictConfig, uri: str, from_environment: str | None) -> str | None:
    """A store named in the config keeps artifacts beside it; a server (or a store from the environment) decides."""
    return None if from_environment or urlparse(uri).scheme in SERVER_SCHEMES else logger_cfg.artifact_location


def _create_experiment(logger_cfg: DictConfig, location: str | None) -> str:
    """A new experiment, or the one that a process beside this one (where no file lock reaches) created first."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name = logger_cfg.experiment_name
    try:
        return retrying(mlflow.create_experiment, name, artifact_location=location, tags=EXPERIMENT_TAGS)
    except MlflowException as err:
        if err.error_code != NAME_TAKEN:
            raise
    return retrying(mlflow.get_experiment_by_name, name).experiment_id


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
    """Open (or, on resume, reopen) the run's MLflow run; close it FINISHED, FAILED or KILLED. A finished run's
    checkpoints are sealed (`CheckpointManager.seal`), and the run's first and last log lines say where it is."""
    if not enabled:
        yield NullTracker()
        return
    tracked = cfg.logger.name != "none"
    run, resumed, record, status = None, False, None, "FAILED"
    try:
        with signals_held():  # a signal while the MLflow run opens stops it once it is open, so it is closed KILLED
            run, resumed = _open_run(cfg, run_dir) if tracked else (None, False)
            record = RunRecord(
                task=str(cfg.task.name),
                run_dir=run_dir,
                run_id=run.info.run_id if run else None,
                experiment=cfg.logger.experiment_name if tracked else None,
                tracking_uri=tracking_uri(cfg.logger) if tracked else None,
                default_uri=default_tracking_uri(),
                overrides=command_line(),
                experiment_id=run.info.experiment_id if run else None,
            )
            announce_start(record)
        if run is not None:  # a resumed run completes what its first attempt did not log (killed before it did)
            _log_run_description(cfg, run_dir, run.data if resumed else None)
        tracker = MlflowTracker(run.info.run_id) if run else NullTracker()
        tracker.record = record
        yield tracker
        status = "FINISHED"
        _seal(cfg, run_dir)
    except TrialPruned as pruned:
        status = "FINISHED"  # stopped on purpose; the sweeper records the trial as PRUNED
        if run is not None:
            import mlflow

            retrying(mlflow.set_tags, {PRUNED_TAG: "PRUNED", f"{PRUNED_TAG}.reason": str(pruned)})
        _seal(cfg, run_dir)
        raise
    except BaseException as err:
        stopped = (err, err.__cause__, err.__context__)  # a signal's Preempted, as raised or wrapped on its way out
        status = "KILLED" if any(isinstance(e, (Preempted, KeyboardInterrupt)) for e in stopped) else "FAILED"
        if run is not None:
            with shielded():  # a second Ctrl-C does not break off the closing
                _close_run(run, status, error=err)
            run = None
        raise
    finally:
        with shielded():
            if run is not None:
                _close_run(run, status)
            if record is not None:
                announce_end(record, status)


def _seal(cfg: DictConfig, run_dir: Path) -> None:
    """A finished run keeps its last and best checkpoints, without optimizer state (unless asked to keep it)."""
    if not OmegaConf.select(cfg, "trainer.checkpoint.keep_training_state", default=False):
        from cellexp.engine.checkpoint import CheckpointManager  # torch: not for the sweep callback's import

        CheckpointManager(run_dir / "checkpoints").seal()


def _open_run(cfg: DictConfig, run_dir: Path):
    """The MLflow run of this run folder: a new one, or, when resuming, the one it recorded (then True)."""
    import mlflow

    experiment_id = configure_mlflow(cfg.logger)
    id_file = run_dir / RUN_ID_FILE
    previous = id_file.read_text().strip() if id_file.exists() and cfg.trainer.get("resume") else None
    system_metrics = bool(cfg.logger.get("system_metrics"))
    if system_metrics:
        mlflow.set_system_metrics_sampling_interval(float(cfg.logger.system_metrics_interval_s))
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # two INFO lines a run say little
    run = retrying(
        mlflow.start_run,
        run_id=previous,
        experiment_id=None if previous else experiment_id,
        run_name=cfg.logger.get("run_name") or default_run_name(cfg),
        nested=mlflow.active_run() is not None,
        parent_run_id=None if previous else os.environ.get(PARENT_RUN_ENV),
        log_system_metrics=system_metrics,
    )
    id_file.write_text(run.info.run_id)
    return run, previous is not None


def _close_run(run, status: str, error: BaseException | None = None) -> None:
    import mlflow

    if error is not None:
        retrying(mlflow.set_tag, "error", str(error)[:MAX_PARAM_LENGTH])
    elif "error" in run.data.tags:
        retrying(mlflow.delete_tag, "error")  # the stop that a resumed run recovered from
    retrying(mlflow.end_run, status=status)


def _log_run_description(cfg: DictConfig, run_dir: Path, logged=None) -> None:
    """The run's params, tags and config.yaml; for a resumed run (`logged`: its MLflow data so far) only those it
    lacks, since a param once logged cannot change (a resumed run's `trainer.resume` differs from the first's)."""
    import mlflow

    config_params = flatten_params(OmegaConf.to_container(cfg, resolve=True))
    params = ordered_params(config_params, swept_params(config_params))
    kind = {KIND_TAG: run_kind(cfg.task.name, cfg.task.get("fit"))}
    tags = {**run_label(cfg), **sweep_tags(), **git_state(), **kind, "run_dir": str(run_dir)}
    if logged is not None:
        params = {key: value for key, value in params.items() if key not in logged.params}
        tags = {key: value for key, value in tags.items() if key not in logged.tags}
    if params:
        retrying(mlflow.log_params, params)
    if tags:
        retrying(mlflow.set_tags, tags)
    config_file = run_dir / "config.yaml"
    if config_file.exists() and (logged is None or not _has_artifact(config_file.name)):
        retrying(mlflow.log_artifact, str(config_file))


def _has_artifact(name: str) -> bool:
    import mlflow

    run_id = mlflow.active_run().info.run_id
    return any(item.path == name for item in retrying(mlflow.MlflowClient().list_artifacts, run_id))


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
