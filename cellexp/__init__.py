"""cellexp: train, compare and explain single-cell microscopy classifiers."""

from cellexp import config as _config  # registers the OmegaConf resolvers the configs use
from cellexp.errors import CellexpError
from cellexp.run import run  # binds the function over the submodule of the same name

__all__ = ["CellexpError", "run"]
