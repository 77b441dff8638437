"""cellexp's Optuna sweeper (cellexp.sweeps.optuna_sweeper) as a Hydra plugin, registered through the `hydra.plugins`
entry point (pyproject.toml): Hydra builds sweepers only from plugins it knows. Hydra loads this module at every
start, so Optuna is imported only when a sweep begins."""

from hydra.plugins.sweeper import Sweeper


class CellexpOptunaSweeper(Sweeper):
    def __init__(self, **config):
        from cellexp.sweeps.optuna_sweeper import OptunaSweeper

        self.sweeper = OptunaSweeper(**config)

    def setup(self, **kwargs) -> None:
        self.sweeper.setup(**kwargs)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
