"""Dispatch a composed config to its task, after the chores every task shares."""

from __future__ import annotations

import errno
import importlib
import logging
from contextlib import contextmanager, nullcontext
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cellexp.config import is_main_rank
from cellexp.engine.preemption import stop_on_signals
from cellexp.errors import CellexpError, ConfigError
from cellexp.schema.sections import validate
from cellexp.tasks.checks import preflight
from cellexp.tasks.sources import check_sources
from cellexp.tracking.run_folder import own_run_dir

log = logging.getLogger(__name__)

TASKS = ("classify", "xai", "ssl", "mil", "predict", "embed")
# how a full disk reads when a library wraps the OSError (sqlite: MLflow's store)
DISK_FULL_WORDS = ("No space left on device", "database or disk is full", "Disk quota exceeded")


def run(cfg: DictConfig) -> float:
    """Check the config, persist it resolved beside the run, then run `cellexp.tasks.<cfg.task.name>`; a preemption
    signal at any point ends the run as `Preempted` (MLflow: KILLED), never as a silent exit."""
    name = cfg.task.name
    if name not in TASKS:
        raise ConfigError(f"task.name={name!r} is not implemented; available: {', '.join(TASKS)}")
    validate(cfg)  # before any heavy import or any work
    preflight(cfg)
    check_sources(cfg)  # the checkpoints it names, before its run folder is kept or its MLflow run opened
    run_dir = Path(cfg.paths.output_dir)
    if not is_main_rank():
        _quiet_other_ranks()
    # the main rank holds the folder (refusing one that another process or another run holds); other ranks follow it
    with own_run_dir(cfg, run_dir) if is_main_rank() else nullcontext(), disk_full_named():
        if is_main_rank():
            OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
        with stop_on_signals():
            task = importlib.import_module(f"cellexp.tasks.{name}")
            return task.run(cfg)


@contextmanager
def disk_full_named():
    """A full disk (or quota) anywhere in the run is one line naming the file: what was finished stays (checkpoints
    and data are written under temporary names and renamed), so the run resumes once there is space."""
    try:
        yield
    except Exception as err:
        full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
        if isinstance(err, CellexpError) or not (full or any(words in str(err) for words in DISK_FULL_WORDS)):
            raise
        where = getattr(err, "filename", None) or "a file"
        raise CellexpError(
            f"no space left on the device writing {where}: free some space, then rerun with trainer.resume=auto "
            "(finished checkpoints and prepared data are kept)"
        ) from None


def _quiet_other_ranks() -> None:
    """Every rank runs the same code, so its info and warnings repeat the main rank's (a skipped file, once
    per process): other ranks keep errors only on the console, and Hydra's run log file is the main rank's."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
        else:
            handler.setLevel(max(handler.level, logging.ERROR))
