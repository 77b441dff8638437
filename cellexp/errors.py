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
