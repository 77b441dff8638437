"""Settings a task cannot honour are refused by name before any work is done, never silently ignored."""

from __future__ import annotations

import functools
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cellexp.config import project_root
from cellexp.errors import ConfigError, DataError
from cellexp.tracking.follow_up import TRAINING_KEYS

DINO_HEAD = "cellexp.models.dino.DinoHead"
MIL_HEAD = "cellexp.models.mil.GatedAttentionMIL"
OTHER_TASKS_HEADS = {DINO_HEAD: "head=dino (task=ssl's)", MIL_HEAD: "head=gated_attention (task=mil's)"}
# the crops that task=ssl and task=xai are made for (pixels.pixel_kind's words)
GREY = "1 channel of uint8"


# what each task refuses to start without a trained model (the tasks that need one, and when)
NEEDS_CKPT = {
    "classify": "task.fit=false evaluates a trained model: give ckpt=<checkpoint, run folder or MLflow run id>",
    "mil": "task.fit=false predicts with a trained MIL model: give ckpt=<a task=mil run or checkpoint>",
    "xai": "task=xai explains a trained model: give ckpt=<checkpoint, run folder or MLflow run id>",
    "embed": "task=embed tabulates a trained model's view of a dataset: give ckpt=<checkpoint, run folder or run id>",
}


def preflight(cfg: DictConfig) -> None:
    """What is refused before a task module (torch, timm, MLflow: seconds) is even imported: a missing `ckpt=`
    and a dataset folder that is unset or not there, so that the commonest slips answer at once."""
    name = cfg.task.name
    needs_model = name in ("xai", "embed") or (name in NEEDS_CKPT and not cfg.task.get("fit", True))
    if needs_model and not cfg.get("ckpt"):
        raise ConfigError(NEEDS_CKPT[name])
    if name == "predict":  # reads task.images with the trained run's settings, never `dataset`
        return
    dataset = cfg.get("dataset") or {}
    background = dataset.get("background") or "keep"
    if background != "keep" and name != "classify":
        raise ConfigError(
            f"dataset.background={background} is applied by task=classify (training and evaluation) only: "
            f"task={name} would show the model its crops as imaged; give dataset.background=keep"
        )
    if not dataset.get("root") and dataset.get("generate") is None:
        raise ConfigError(
            f"dataset.root is not set: dataset={dataset.get('name')} reads your copy of the data, "
            "give dataset.root=<its folder>"
        )
    root = Path(str(dataset.get("root") or "")).expanduser()
    if dataset.get("generate") is None and not root.is_dir():
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


def require_grey(kind: str, task: str, source: str) -> None:
    """`task` works on grey 8-bit crops only (xai.images: image files are read as grey 8-bit): refuse others."""
    if kind != GREY:
        raise ConfigError(f"{task} takes grey 8-bit crops ({GREY}); {source} has crops of {kind}")


def require_crops(cfg: DictConfig, trained: str, data: str) -> None:
    """A trained model evaluated or tabulated on `cfg.dataset` must take its kind of crops (channels, bit depth)."""
    if trained != data:
        raise ConfigError(
            f"ckpt={cfg.ckpt} was trained on crops of {trained}; dataset={cfg.dataset.name} has crops of {data}"
        )


def refuse_training_keys(cfg: DictConfig, task: str) -> None:
    """For a task that trains nothing: every training key of `trainer` must keep its shipped default."""
    defaults = _trainer_defaults()
    for key in TRAINING_KEYS:
        if key in defaults and key in cfg.trainer and plain(cfg.trainer[key]) != plain(defaults[key]):
            raise ConfigError(f"trainer.{key}={plain(cfg.trainer[key])} does not apply: {task} trains nothing")


def plain(value):
    """A config value as plain Python (lists, dicts), for comparing and showing."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


@functools.lru_cache(maxsize=1)
def _trainer_defaults() -> DictConfig:
    defaults = OmegaConf.load(Path(project_root()) / "conf" / "trainer" / "default.yaml")
    defaults.pop("resume", None)  # interpolates a resolver: a requeued SLURM job sets it
    return defaults
