"""Hydra's Optuna sweeper, with pruning and trials that do not wait for each other.

hydra-optuna-sweeper asks `n_jobs` trials, launches them as one batch and waits for the slowest, and records a job
that raised as FAIL. This sweeper (`hparams_search=optuna`) keeps its config, search spaces and result file, and
changes three things:

- up to `n_jobs` trials run at once, each launched on its own as soon as a slot frees, when the launcher runs jobs
  in processes of their own (submitit local or SLURM); the in-process launcher runs them one after another;
- each job is told its trial's number (`tuning.trial`), so that it reports every epoch's value to its trial and
  stops when `tuning.pruner` prunes it (cellexp.sweeps.pruning); such a job returns a PrunedValue, told as PRUNED;
- the result file and the log say how many trials were pruned and about how much time that saved;
- a job that ends without a result (its node died, it was cancelled) is a failed trial, its MLflow run is closed
  FAILED, and the sweep goes on.
"""

from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import OmegaConf
from optuna.trial import TrialState

from cellexp.errors import PrunedValue
from cellexp.sweeps import records as sweep_runs
from cellexp.sweeps.pruning import EPOCH_SECONDS_ATTR, EPOCHS_ATTR, MAX_EPOCHS_ATTR

log = logging.getLogger(__name__)
TRIAL_KEY = "tuning.trial"
# launchers whose jobs run in processes of their own, so that several can be launched from threads at once
PROCESS_LAUNCHERS = ("hydra_plugins.hydra_submitit_launcher.",)


class OptunaSweeper(OptunaSweeperImpl):
    def __init__(self, sampler: Any, **options: Any) -> None:
        allowed = ("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*")
        super().__init__(instantiate(sampler, _execution_whitelist_=allowed), **options)

    def sweep(self, arguments: list[str]) -> None:
        self._process_searchspace_config()
        distributions, fixed_params, fixed_overrides = create_params_from_overrides(
            self._parse_sweeper_params_config() + list(arguments)
        )
        for name in fixed_params:
            distributions.pop(name, None)
        if self._is_grid():
            grid = {name: self._to_grid_sampler_choices(d) for name, d in distributions.items()}
            self.sampler = self.sampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(choices) for choices in grid.values()))
        directions = self._get_directions()
        if len(directions) != 1:
            raise ValueError(f"cellexp's Optuna sweeper optimises one objective; hydra.sweeper.direction={directions}")
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=self.sampler,
            direction=directions[0],
            load_if_exists=True,
        )
        workers = self.n_jobs if self._launches_processes() else 1
        log.info("Study %s in %s: %d trials, %d at a time", study.study_name, self.storage, self.n_trials, workers)
        run = _TrialRun(self, study, (distributions, fixed_params, fixed_overrides))
        with ThreadPoolExecutor(workers, thread_name_prefix="trial") as pool:
            for future in [pool.submit(run.work) for _ in range(workers)]:
                future.result()
        run.raise_if_too_many_failed()
        self._save_results(study, run.trials)

    def _is_grid(self) -> bool:
        return getattr(self.sampler, "func", None) is optuna.samplers.GridSampler

    def _launches_processes(self) -> bool:
        return type(self.launcher).__module__.startswith(PROCESS_LAUNCHERS)

    def _save_results(self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> None:
        best = study.best_trial
        pruned = [t for t in trials if t.state is TrialState.PRUNED]
        saved = sum(_seconds_saved(t) for t in pruned)
        results = {
            "name": "optuna",
            "best_params": best.params,
            "best_value": best.value,
            "trials": len(trials),
            "pruned_trials": len(pruned),
            "failed_trials": sum(t.state is TrialState.FAIL for t in trials),
            "pruning_saved_s": round(saved, 1),
        }
        log.info("Best value %s with %s", best.value, best.params)
        if pruned:
            spent = sum(t.duration.total_seconds() for t in trials if t.duration is not None)
            shares = (len(pruned), len(trials), saved, spent)
            log.info("Pruned %d of %d trials: about %.0f s saved (%.0f s spent)", *shares)
        OmegaConf.save(OmegaConf.create(results), f"{self.config.hydra.sweep.dir}/optimization_results.yaml")


class _TrialRun:
    """The trials of one sweep: asked and told under a lock, launched one per worker thread."""

    def __init__(self, sweeper: OptunaSweeper, study: optuna.Study, space: tuple) -> None:
        self.sweeper, self.study, self.space = sweeper, study, space
        self.lock = threading.Lock()
        self.asked, self.trials, self.failures = 0, [], []

    def work(self) -> None:
        while (job := self._next()) is not None:
            trial, overrides, job_idx = job
            try:
                (result,) = self.sweeper.launcher.launch([overrides], initial_job_idx=job_idx)
            except Exception as error:  # the job ended without a result: its node died, or it was killed
                result = JobReturn(status=JobStatus.FAILED, _return_value=error)
                sweep_runs.fail_lost_job(job_idx, error)
            with self.lock:
                self._tell(trial, result)

    def _next(self) -> tuple[optuna.Trial, tuple[str, ...], int] | None:
        with self.lock:
            if self.asked >= self.sweeper.n_trials or self._too_many_failed():
                return None
            trial = self.study.ask()
            (overrides,) = self.sweeper._configure_trials([trial], *self.space)
            job_idx, self.asked = self.sweeper.job_idx, self.asked + 1
            self.sweeper.job_idx += 1
            return trial, (*overrides, f"{TRIAL_KEY}={trial.number}"), job_idx

    def _tell(self, trial: optuna.Trial, result: JobReturn) -> None:
        try:
            value = float(result.return_value)
        except Exception as error:  # the job raised (its message was logged there), or returned no number
            log.warning("Trial %d failed: %s", trial.number, error)
            self.failures.append(result)
            state, values = TrialState.FAIL, None
        else:
            pruned = isinstance(result.return_value, PrunedValue)
            state, values = (TrialState.PRUNED, None) if pruned else (TrialState.COMPLETE, [value])
        try:
            self.study.tell(trial, state=state, values=values)
        except RuntimeError as error:  # the grid sampler stops the study once its grid is done, outside optimize()
            if "Study.stop" not in str(error):
                raise
        self.trials.append(self.study._storage.get_trial(trial._trial_id))

    def _too_many_failed(self) -> bool:
        """The sweeper's max_failure_rate, over the trials finished so far once a first round of n_jobs has."""
        done = len(self.trials)
        return done >= self.sweeper.n_jobs and len(self.failures) / done > self.sweeper.max_failure_rate

    def raise_if_too_many_failed(self) -> None:
        if self.failures and self._too_many_failed():
            log.error(
                "%d of %d trials failed (max_failure_rate=%s)",
                len(self.failures),
                len(self.trials),
                self.sweeper.max_failure_rate,
            )
            _ = self.failures[-1].return_value  # re-raises the job's exception, with its traceback


def _seconds_saved(trial: optuna.trial.FrozenTrial) -> float:
    """Epochs a pruned trial did not run, times its own mean epoch time."""
    attrs = trial.user_attrs
    if not {EPOCHS_ATTR, MAX_EPOCHS_ATTR, EPOCH_SECONDS_ATTR} <= attrs.keys():
        return 0.0
    return max(attrs[MAX_EPOCHS_ATTR] - attrs[EPOCHS_ATTR], 0) * attrs[EPOCH_SECONDS_ATTR]
