"""cellexp: train, compare and explain single-cell microscopy classifiers."""

from cellexp import config as _config  # noqa: F401  (registers the resolvers conf/ uses)
from cellexp import moved
from cellexp.errors import CellexpError
from cellexp.run import run  # binds the function over the submodule of the same name

moved.install()

__all__ = ["CellexpError", "run"]
