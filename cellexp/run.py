"""Dispatch a composed config to its task, after the chores every task shares."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cellexp.config import is_main_rank
from cellexp.errors import ConfigError

log = logging.getLogger(__name__)

TASKS = ("classify", "xai", "ssl", "mil")


def run(cfg: DictConfig) -> float:
    """Persist the resolved config beside the run, then run `cellexp.tasks.<cfg.task.name>`."""
    name = cfg.task.name
    if name not in TASKS:
        raise ConfigError(f"task.name={name!r} is not implemented; available: {', '.join(TASKS)}")
    run_dir = Path(cfg.paths.output_dir)
    if is_main_rank():
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    else:
        _silence_file_logs()
    task = importlib.import_module(f"cellexp.tasks.{name}")
    return task.run(cfg)


def _silence_file_logs() -> None:
    """Hydra opens the run's log file on every rank; only the main rank should write it."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
