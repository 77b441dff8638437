"""The one entry point: compose conf/ with Hydra, run the task, return its objective to sweepers."""

import logging
import os
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import cellexp
from cellexp.config import BUILDABLE, release_run_dir
from cellexp.engine.preemption import Preempted
from cellexp.errors import PrunedValue, TrialPruned

log = logging.getLogger("cellexp")
# what Hydra may build besides the run's own objects: its launchers and sweepers, cellexp's sweeper and sweep
# callback and the Optuna search space it ships, Optuna's samplers
APP_BUILDABLE = (
    *BUILDABLE,
    "hydra_plugins.*",
    "optuna.samplers.*",
    "cellexp.sweeps.plugin.CellexpOptunaSweeper",
    "cellexp.sweeps.callback.SweepCallback",
    "cellexp.sweeps.callback.suggest_head_params",
)
INTERRUPTED = 130  # a shell's exit status for a command ended by Ctrl-C
if not sys.stderr.isatty():  # Optuna colours its log lines (colorlog) even into a file; NO_COLOR turns that off
    os.environ.setdefault("NO_COLOR", "1")
# MLflow draws a bar for every artifact download (a checkpoint of ckpt=<run id>: a fraction of a second)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@hydra.main(config_path="conf", config_name="config", execution_whitelist=APP_BUILDABLE)
def main(cfg: DictConfig) -> float:
    try:
        return cellexp.run(cfg)
    except TrialPruned as pruned:
        log.info("%s", pruned)
        return PrunedValue(pruned.value)
    except Preempted as stop:
        log.warning("%s", stop)
        _end(stop, exit_status=INTERRUPTED if stop.signal_name == "SIGINT" else 0)
    except KeyboardInterrupt:  # Ctrl-C before the run's own handling starts (while composing or checking)
        stop = Preempted(signal_name="SIGINT")
        log.warning("%s", stop)
        _end(stop, exit_status=INTERRUPTED)
    except cellexp.CellexpError as err:
        log.error("%s", err)
        _end(err, exit_status=f"error: {err}")


def _end(err: BaseException, exit_status) -> None:
    """A single run exits with one clear line, leaving no folder if it wrote nothing; a multirun job raises, so that
    the sweeper records it as failed and goes on with the other jobs (exiting would end the whole sweep)."""
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        if isinstance(err, Exception):
            raise err
        raise RuntimeError(str(err)) from None  # a stopped job: failed for the sweeper, which records it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a further Ctrl-C while exiting changes nothing
    if not isinstance(err, Preempted):
        release_run_dir(HydraConfig.get().runtime.output_dir)
    sys.exit(exit_status)


if __name__ == "__main__":
    main()
