"""Multiruns: one folder name and one MLflow parent run per sweep, whatever launches the jobs.

Hydra calls `SweepCallback` in the process that starts a multirun, before the first job and after
the last. It exports what jobs need to find their sweep through the environment, which in-process
jobs, submitit's local subprocesses and SLURM jobs (requeued ones too) all inherit.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cellexp.config import PARENT_RUN_ENV, SWEEP_ID_ENV, SWEEP_KEYS_ENV, is_main_rank, run_id
from cellexp.sweeps import records as sweep_runs

log = logging.getLogger(__name__)
# what Optuna tunes in heads that have it (hparams_search=optuna): widths, and dropout in [0, 0.5]
HEAD_DIMS = (32, 64, 128, 256)
HEAD_SEARCH = {
    "dim": lambda trial, key: trial.suggest_categorical(key, HEAD_DIMS),
    "dropout": lambda trial, key: trial.suggest_float(key, 0.0, 0.5),
}
# files the sweepers leave in the sweep folder, attached to the parent run when the sweep ends
SWEEP_RECORDS = ("multirun.yaml", "optimization_results.yaml")


class SweepCallback(Callback):
    """Names the sweep folder once, and opens (then closes) the MLflow parent run of the sweep's jobs."""

    def __init__(self) -> None:
        self._exported: list[str] = []
        self._parent: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._export(SWEEP_ID_ENV, os.environ.get(SWEEP_ID_ENV) or run_id())
        keys = swept_keys(config)
        self._export(SWEEP_KEYS_ENV, ",".join(keys))
        if config.logger.name == "none":
            return
        self._parent = sweep_runs.open_parent_run(config, os.environ[SWEEP_ID_ENV], keys)
        self._export(PARENT_RUN_ENV, self._parent)
        # A sweep killed before on_multirun_end must not leave the parent RUNNING.
        atexit.register(self._close, "FAILED")
        log.info("MLflow parent run %s for this sweep", self._parent)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra calls this from a `finally`: an exception on its way out is a sweep that failed."""
        failed = sys.exc_info()[1] is not None
        parent = self._parent
        if parent is not None:
            sweep_runs.record_sweep_results(parent, Path(str(config.hydra.sweep.dir)), SWEEP_RECORDS)
        self._close("FAILED" if failed else "FINISHED")
        if parent is not None:
            log.info("%s", sweep_runs.summary(parent, config))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """Runs in the job's own process: a job that failed before its MLflow run opened is recorded too."""
        from hydra.core.utils import JobStatus

        if job_return.status is not JobStatus.FAILED or not os.environ.get(PARENT_RUN_ENV) or not is_main_rank():
            return
        try:
            _ = job_return.return_value  # a failed job's return value re-raises its exception
        except Exception as error:
            sweep_runs.record_failed_job(config, Path(config.hydra.runtime.output_dir), error)

    def _close(self, status: str) -> None:
        if self._parent is not None:
            sweep_runs.close_parent_run(self._parent, status)
            self._parent = None
        for name in self._exported:
            os.environ.pop(name, None)
        self._exported.clear()

    def _export(self, name: str, value: str) -> None:
        if name not in os.environ:
            self._exported.append(name)
        os.environ[name] = value


def swept_keys(config: DictConfig) -> list[str]:
    """Keys that take several values in this sweep: sweep overrides on the command line, then the
    sweeper's own `params` (a grid preset or an Optuna search space)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]
    keys += [str(key) for key in (config.hydra.sweeper.get("params") or {})]
    if config.hydra.sweeper.get("custom_search_space") == f"{__name__}.{suggest_head_params.__name__}":
        keys += [f"head.{name}" for name in HEAD_SEARCH if name in config.head]
    return list(dict.fromkeys(keys))


def suggest_head_params(config: DictConfig, trial: Any) -> None:
    """Optuna search-space extension: tune what the chosen head has, so that one preset tunes every head:
    `head.dim` (the graph heads) and `head.dropout` (all but the published ones, which have none)."""
    for name, suggest in HEAD_SEARCH.items():
        if name in config.head:
            suggest(trial, f"head.{name}")
