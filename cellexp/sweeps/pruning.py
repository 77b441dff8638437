"""A sweep job's side of Optuna pruning: report each epoch's value to this job's trial, and stop when its pruner says.

The sweeper (cellexp.sweeps.optuna_sweeper) runs every trial as a Hydra job and passes the trial's number as
`tuning.trial`; the job finds its study through the sweeper's own config (`hydra.sweeper.storage`, `study_name`),
which an RDB storage shares between processes and machines. The pruner is the one of
`tuning.pruners` that `tuning.pruner` names (conf/hparams_search/optuna.yaml), rebuilt in the job: Optuna keeps
pruners out of the storage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from omegaconf import DictConfig

from cellexp.errors import ConfigError

log = logging.getLogger(__name__)
PRUNER_MODULE = "optuna.pruners."
# the trial's user attributes from which the sweeper estimates the time pruning saved
EPOCHS_ATTR, MAX_EPOCHS_ATTR, EPOCH_SECONDS_ATTR = "epochs", "max_epochs", "epoch_s"


def make_pruner(tuning: DictConfig):
    """The Optuna pruner `tuning.pruner` names among `tuning.pruners`; only optuna.pruners.* is built."""
    from hydra.utils import instantiate

    pruners = tuning.get("pruners") or {}
    if tuning.pruner not in pruners:
        raise ConfigError(f"tuning.pruner={tuning.pruner!r} is not one of tuning.pruners: {', '.join(pruners)}")
    pruner_cfg = pruners[tuning.pruner]
    target = str(pruner_cfg.get("_target_", ""))
    if not target.startswith(PRUNER_MODULE):
        where = f"tuning.pruners.{tuning.pruner}._target_={target!r}"
        raise ConfigError(f"{where}: only Optuna's pruners ({PRUNER_MODULE}*) are built")
    return instantiate(pruner_cfg, _execution_whitelist_=(f"{PRUNER_MODULE}*",))


def trial_pruner(cfg: DictConfig) -> Callable[[int, float], str | None] | None:
    """For a job of an Optuna sweep with a pruner: the engine's `prune_check`. None elsewhere."""
    tuning = cfg.get("tuning") or {}
    if tuning.get("trial") is None or not tuning.get("pruner"):
        return None
    from hydra.core.hydra_config import HydraConfig

    sweeper = HydraConfig.get().sweeper if HydraConfig.initialized() else {}
    if not sweeper.get("storage") or not sweeper.get("study_name"):
        raise ConfigError(
            f"tuning.trial={tuning.trial} is set by the Optuna sweeper (hparams_search=optuna), which names the "
            "study's hydra.sweeper.storage and study_name: this job has neither"
        )
    return TrialReporter(
        sweeper.storage, sweeper.study_name, int(tuning.trial), make_pruner(tuning), int(cfg.trainer.max_epochs)
    )


class TrialReporter:
    """Reports a value per epoch to trial `number` of the study; answers why to stop when the pruner prunes it."""

    def __init__(self, storage: str, study_name: str, number: int, pruner, max_epochs: int):
        import optuna

        study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        self.trial, self.pruner_name = optuna.trial.Trial(study, trial_id), type(pruner).__name__
        self.trial.set_user_attr(MAX_EPOCHS_ATTR, max_epochs)
        self._started = time.perf_counter()

    def __call__(self, epoch: int, value: float) -> str | None:
        self.trial.report(value, step=epoch)
        self.trial.set_user_attr(EPOCHS_ATTR, epoch)
        self.trial.set_user_attr(EPOCH_SECONDS_ATTR, (time.perf_counter() - self._started) / epoch)
        if not self.trial.should_prune():
            return None
        return f"trial {self.trial.number} pruned by {self.pruner_name} after epoch {epoch} (value {value:.4g})"
