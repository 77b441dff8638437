"""Learning-rate schedules stepped once per epoch, by the epoch or by a validation metric."""

from __future__ import annotations

from collections.abc import Mapping

from torch.optim.lr_scheduler import ReduceLROnPlateau

from cellexp.errors import ConfigError


class PlateauOnMetric(ReduceLROnPlateau):
    """ReduceLROnPlateau that names the metric it watches (`monitor`, e.g. val/loss) and which way is better
    (`direction`, as everywhere in the configs), so the loop can feed it."""

    def __init__(self, optimizer, monitor: str = "val/loss", direction: str = "minimize", **kwargs):
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"optim.scheduler.direction={direction!r} must be 'maximize' or 'minimize'")
        super().__init__(optimizer, mode="min" if direction == "minimize" else "max", **kwargs)
        self.monitor = monitor


def step_scheduler(scheduler, metrics: Mapping[str, float]) -> None:
    """One epoch's step: a metric-watching schedule gets its metric, any other just steps."""
    monitor = getattr(scheduler, "monitor", None)
    if monitor is None:
        scheduler.step()
        return
    if monitor not in metrics:
        raise ConfigError(f"optim.scheduler.monitor={monitor!r} is not among the metrics: {', '.join(sorted(metrics))}")
    scheduler.step(metrics[monitor])
