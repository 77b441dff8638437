"""Who a run is, for its MLflow record and its checkpoints: its label (the config groups chosen and what a sweep
varies), its name, its sweep's tags, the command line it was started with and the git state of the code."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from cellexp.config import SWEEP_KEYS_ENV

log = logging.getLogger(__name__)

# MLflow's longest param value
MAX_PARAM_LENGTH = 6000
# the config groups that name a run
GROUPS = ("dataset", "backbone", "head", "task")


def run_label(cfg: DictConfig) -> dict[str, str]:
    """Which option of each config group the run uses (dataset, backbone, head, task): the names runs are tagged,
    named and compared by. From Hydra's record of the composition; a config without one (a loaded run config)
    gives the model name of its backbone and the target of its head."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    if cfg.get("task", {}).get("name") == "predict":  # reads task.images, never `dataset`
        choices = {**choices, "dataset": "task.images"}
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


def command_line() -> tuple[str, ...]:
    """The run's overrides as given on the command line (Hydra's record; none without Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    return tuple(HydraConfig.get().overrides.task) if HydraConfig.initialized() else ()


def sweep_tags() -> dict[str, str]:
    """A multirun job's overrides as tags (`override.<key>`), the handles `cellexp.commands.compare` groups runs by."""
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


def swept_values(tags: Mapping[str, str] | None = None) -> dict[str, str]:
    """A sweep job's values of the keys its sweep varies, from its `sweep_tags`."""
    tags = sweep_tags() if tags is None else tags
    keys = [key for key in tags.get("sweep.keys", "").split(",") if f"override.{key}" in tags]
    return {key: tags[f"override.{key}"] for key in keys}


def swept_params(config_params: Mapping[str, str]) -> dict[str, str]:
    """A sweep job's swept values as params under short names (`head`, `lr`, `dim`): the UI's compare views
    (parallel coordinates, scatter and charts grouped by a param) offer params, not tags. A short name that two
    keys share, or that a config param already has, gives way to the dotted key; one already logged is skipped."""
    swept = swept_values()
    shorts = [key.rsplit(".", 1)[-1] for key in swept]
    params = {}
    for (key, value), short in zip(swept.items(), shorts, strict=True):
        name = short if shorts.count(short) == 1 and short not in config_params else key
        if name not in config_params:
            params[name] = value
    return params


def default_run_name(cfg: DictConfig) -> str:
    """What tells runs apart at a glance: a sweep job's swept values (numbers to 3 significant digits), else the
    backbone and head."""
    swept = swept_values()
    if swept:
        return " ".join(f"{key.rsplit('.', 1)[-1]}={short_number(value)}" for key, value in swept.items())
    label = run_label(cfg)
    return f"{label['backbone']} {label['head']}"


def short_number(value: str) -> str:
    """0.00012345678 -> 0.000123; integers and words as they are."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() and "." not in value and "e" not in value.lower() else f"{number:.3g}"


def git_state() -> dict[str, str]:
    """The code a run ran: the commit (also as MLflow's own source tag, which the UI shows) and whether tracked
    files differed from it."""
    commit = _git("rev-parse", "HEAD")
    changes = _git("status", "--porcelain", "--untracked-files=no")
    dirty = "unknown" if changes is None else str(bool(changes)).lower()
    return {"git_commit": commit or "unknown", "mlflow.source.git.commit": commit or "unknown", "git_dirty": dirty}


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
