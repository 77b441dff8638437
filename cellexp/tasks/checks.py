"""Settings a task cannot honour are refused by name before any work is done, never silently ignored."""

from __future__ import annotations

import functools
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cellexp.config import project_root
from cellexp.errors import ConfigError

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
