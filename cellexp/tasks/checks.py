"""Settings a task cannot honour are refused by name before any work is done, never silently ignored."""

from __future__ import annotations

import functools
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cellexp.config import project_root
from cellexp.errors import ConfigError, DataError

DINO_HEAD = "cellexp.models.dino.DinoHead"
MIL_HEAD = "cellexp.models.mil.GatedAttentionMIL"
OTHER_TASKS_HEADS = {DINO_HEAD: "head=dino (task=ssl's)", MIL_HEAD: "head=gated_attention (task=mil's)"}
# trainer keys that only a training run reads
TRAINING_KEYS = (
    "max_epochs",
    "batch_size",
    "grad_accum_steps",
    "grad_clip",
    "channels_last",
    "compile",
    "split_batches",
    "sync_batchnorm",
    "early_stopping",
    "resume",
    "checkpoint",
)


# what each task refuses to start without a trained model (the tasks that need one, and when)
NEEDS_CKPT = {
    "classify": "task.fit=false evaluates a trained model: give ckpt=<checkpoint, run folder or MLflow run id>",
    "mil": "task.fit=false predicts with a trained MIL model: give ckpt=<a task=mil run or checkpoint>",
    "xai": "task=xai explains a trained model: give ckpt=<checkpoint, run folder or MLflow run id>",
}


def preflight(cfg: DictConfig) -> None:
    """What is refused before a task module (torch, timm, MLflow: seconds) is even imported: a missing `ckpt=`
    and a dataset folder that is not there, so that the commonest slips answer at once."""
    name = cfg.task.name
    needs_model = name == "xai" or (name in NEEDS_CKPT and not cfg.task.get("fit", True))
    if needs_model and not cfg.get("ckpt"):
        raise ConfigError(NEEDS_CKPT[name])
    if name == "predict":  # reads task.images with the trained run's settings, never `dataset`
        return
    dataset = cfg.get("dataset") or {}
    root = Path(str(dataset.get("root") or "")).expanduser()
    if dataset.get("root") and dataset.get("generate") is None and not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"dataset folder {root} {what} (set dataset.root to your dataset={dataset.get('name')} folder)")


def head_target(cfg: DictConfig) -> str:
    return str(cfg.head.get("_target_", ""))


def require_head(cfg: DictConfig, task: str, target: str, choice: str) -> None:
    """`task` trains one kind of head: refuse the others by name."""
    if head_target(cfg) != target:
        raise ConfigError(f"{task} trains {choice}; the head config given builds {head_target(cfg) or 'nothing'}")


def refuse_head(cfg: DictConfig, what: str, refused: dict[str, str]) -> None:
    if head_target(cfg) in refused:
        raise ConfigError(f"{what}, not {refused[head_target(cfg)]}")


def require_value(cfg: DictConfig, key: str, allowed: tuple, why: str) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        shown = ", ".join("null" if v is None else str(v).lower() for v in allowed)
        raise ConfigError(f"{key}={value} does not apply here: {why} (give {key}={shown})")


def refuse_training_keys(cfg: DictConfig, task: str) -> None:
    """For a task that trains nothing: every training key of `trainer` must keep its shipped default."""
    defaults = _trainer_defaults()
    for key in TRAINING_KEYS:
        if key in defaults and key in cfg.trainer and _plain(cfg.trainer[key]) != _plain(defaults[key]):
            raise ConfigError(f"trainer.{key}={_plain(cfg.trainer[key])} does not apply: {task} trains nothing")


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


@functools.lru_cache(maxsize=1)
def _trainer_defaults() -> DictConfig:
    defaults = OmegaConf.load(Path(project_root()) / "conf" / "trainer" / "default.yaml")
    defaults.pop("resume", None)  # interpolates a resolver: a requeued SLURM job sets it
    return defaults
