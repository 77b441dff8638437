"""`ckpt=`: one resolver for every task, taking a checkpoint folder or file, a run folder, or an MLflow run id."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cellexp.engine.checkpoint import BEST, MODEL_FILE
from cellexp.errors import CheckpointError

RUN_CONFIG = "config.yaml"
_MLFLOW_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class ResolvedCheckpoint:
    folder: Path  # holds model.safetensors
    config: DictConfig  # the resolved config of the run that wrote it


def resolve_checkpoint(spec: str, logger_cfg: DictConfig, cache_dir: Path, option: str = "ckpt") -> ResolvedCheckpoint:
    """`option` names the config key the spec came from, in error messages."""
    path = Path(str(spec)).expanduser()
    if path.exists():
        folder = _checkpoint_folder(path, option)
        return ResolvedCheckpoint(folder, _run_config(folder))
    if _MLFLOW_RUN_ID.match(str(spec)):
        return _from_mlflow(str(spec), logger_cfg, cache_dir, option)
    raise CheckpointError(
        f"{option}={spec!r} is neither an existing file or folder nor an MLflow run id (32 hex characters)"
    )


def _checkpoint_folder(path: Path, option: str) -> Path:
    if path.is_file():
        if path.name != MODEL_FILE:
            raise CheckpointError(f"{option}={path} is not a {MODEL_FILE} file")
        return path.parent
    for candidate in (path, path / BEST, path / "checkpoints" / BEST):
        if (candidate / MODEL_FILE).is_file():
            return candidate
    raise CheckpointError(f"{option}={path}: no {MODEL_FILE} in it, nor in {BEST}/ or checkpoints/{BEST}/ below it")


def _run_config(folder: Path) -> DictConfig:
    """The run's resolved config, found in the nearest folder above the checkpoint that has one."""
    for parent in (folder, *folder.parents):
        if (parent / RUN_CONFIG).is_file():
            return OmegaConf.load(parent / RUN_CONFIG)
    raise CheckpointError(f"no {RUN_CONFIG} in {folder} or any folder above it: cannot tell which model it holds")


def _from_mlflow(run_id: str, logger_cfg: DictConfig, cache_dir: Path, option: str) -> ResolvedCheckpoint:
    import mlflow
    from mlflow.exceptions import MlflowException

    from cellexp.tracking import configure_mlflow

    configure_mlflow(logger_cfg)
    try:
        run = mlflow.get_run(run_id)
    except MlflowException as err:
        raise CheckpointError(
            f"{option}={run_id}: no such MLflow run in {mlflow.get_tracking_uri()} ({err.message})"
        ) from None
    local = Path(run.data.tags.get("run_dir", ""))
    if run.data.tags.get("run_dir") and (local / "checkpoints" / BEST / MODEL_FILE).is_file():
        return ResolvedCheckpoint(local / "checkpoints" / BEST, OmegaConf.load(local / RUN_CONFIG))
    target = cache_dir / "mlflow_checkpoints" / run_id
    try:
        folder = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=f"checkpoints/{BEST}", dst_path=str(target)
            )
        )
        config = Path(
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=RUN_CONFIG, dst_path=str(target))
        )
    except (MlflowException, OSError) as err:
        raise CheckpointError(
            f"{option}={run_id}: run has no checkpoints/{BEST} artifact (was logger.log_checkpoints false?): {err}"
        ) from None
    return ResolvedCheckpoint(folder, OmegaConf.load(config))
