"""A run folder belongs to one run, and one process at a time works in it.

A run pointed at a folder that already holds another run's results (its checkpoints, its MLflow run id, its
reports) is refused by name unless it resumes that run (`trainer.resume`); otherwise its checkpoints would land
among the other run's, and that run's id would then load this one's weights. While a run works in its folder it
holds a lock there, so a second process resuming the same folder is refused by name instead of racing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from cellexp.config import BEFORE_RESULTS, RUN_LOCK
from cellexp.errors import ConfigError
from cellexp.tracking.session import RUN_ID_FILE


@contextmanager
def own_run_dir(cfg: DictConfig, run_dir: Path) -> Iterator[None]:
    """Hold the folder's lock for the block, after refusing a folder that another process or another run holds."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / RUN_LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(
            f"hydra.run.dir={run_dir} is in use by another process (it holds {RUN_LOCK}): wait for it to end, or "
            "give another folder"
        ) from None
    try:
        _refuse_another_runs(cfg, run_dir)
        yield
    finally:
        lock.release()


def _refuse_another_runs(cfg: DictConfig, run_dir: Path) -> None:
    if OmegaConf.select(cfg, "trainer.resume", default=None):
        return  # continuing the run this folder holds
    results = sorted(path.name for path in run_dir.iterdir() if path.name not in BEFORE_RESULTS)
    if results:
        id_file = run_dir / RUN_ID_FILE
        whose = f"MLflow run {id_file.read_text().strip()}" if id_file.is_file() else "another run"
        raise ConfigError(
            f"hydra.run.dir={run_dir} holds {whose}'s results ({', '.join(results[:4])}): give a new folder, or "
            "trainer.resume=auto to continue that run"
        )
