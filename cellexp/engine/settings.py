"""What a task tells the engine besides its step: which validation metric selects the best epoch, when to stop
early, and the `trainer` config as the engine reads it."""

from __future__ import annotations

from dataclasses import dataclass

from cellexp.errors import ConfigError

DIRECTIONS = ("maximize", "minimize")


def check_direction(key: str, direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ConfigError(f"{key}={direction!r} must be 'maximize' or 'minimize'")


@dataclass
class Selection:
    """Which validation metric picks the best epoch, which way is better, and who wins a tie."""

    metric: str
    direction: str = "maximize"
    later_wins_ties: bool = False

    def __post_init__(self):
        check_direction("task.direction", self.direction)

    def improves(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        if value == best:
            return self.later_wins_ties
        return value > best if self.direction == "maximize" else value < best


@dataclass
class EarlyStopping:
    """Stop after `patience` epochs in a row without the monitored metric improving, never before `min_epochs`."""

    monitor: str = "val/loss"
    direction: str = "minimize"
    patience: int = 5
    min_epochs: int = 0

    def __post_init__(self):
        check_direction("trainer.early_stopping.direction", self.direction)

    def update(self, value: float, best: float | None, bad_epochs: int) -> tuple[float, int]:
        """The new (best value, epochs without improvement) after an epoch that scored `value`."""
        if Selection(self.monitor, self.direction).improves(value, best):
            return value, 0
        return best, bad_epochs + 1


@dataclass(frozen=True)
class TrainerSettings:
    """The `trainer` config as the engine reads it."""

    max_epochs: int
    seed: int
    grad_clip: float | None = None
    channels_last: bool = False
    early_stopping: EarlyStopping | None = None
    sample_unit: str = "images"

    @classmethod
    def from_config(cls, trainer_cfg, seed: int, **overrides) -> TrainerSettings:
        stopping = trainer_cfg.get("early_stopping")
        return cls(
            max_epochs=int(trainer_cfg.max_epochs),
            seed=int(seed),
            grad_clip=trainer_cfg.get("grad_clip"),
            channels_last=bool(trainer_cfg.get("channels_last", False)),
            early_stopping=EarlyStopping(**stopping) if stopping else None,
            **overrides,
        )
