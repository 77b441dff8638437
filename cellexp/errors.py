"""Errors that carry a message for the user, printed without a traceback by train.py."""


class CellexpError(Exception):
    """Bad input or a failed run, explained in one message that names the culprit."""


class DataError(CellexpError):
    """A dataset folder, annotation file or image that cannot be used."""


class ConfigError(CellexpError, ValueError):
    """A config value that does not fit the rest of the run."""


class CheckpointError(CellexpError):
    """A checkpoint that cannot be found or does not fit the model."""


class NonFiniteLossError(CellexpError):
    """Training produced a NaN or infinite loss."""


class TrialPruned(Exception):
    """An Optuna pruner stopped this sweep trial early. Not a failure: the run is closed FINISHED and tagged, and
    train.py returns `PrunedValue(value)` to the sweeper, which records the trial as PRUNED."""

    def __init__(self, reason: str, value: float):
        super().__init__(reason)
        self.value = value


class PrunedValue(float):
    """A pruned job's last value, marked so that the sweeper records its trial as PRUNED (not COMPLETE, and not
    FAIL, as a raised exception would be; a sweeper that does not look just reads a float)."""
