"""The order of a run's params, which the MLflow UI's run page lists as logged: what tells runs apart first (a sweep's
swept values, the task, data, model and optimiser), the rest of the config after, and unset keys (`ckpt None`,
`tuning.trial None`) last."""

from __future__ import annotations

from collections.abc import Mapping

FIRST = (
    "task.name",
    "dataset.name",
    "backbone.model_name",
    "head._target_",
    "optim.optimizer.lr",
    "optim.optimizer.weight_decay",
    "trainer.batch_size",
    "trainer.max_epochs",
    "seed",
    "ckpt",
)


def ordered_params(config_params: Mapping[str, str], swept: Mapping[str, str]) -> dict[str, str]:
    """The swept values, then FIRST, then the other config params in config order, those whose value is None last."""
    first = {key: config_params[key] for key in FIRST if key in config_params and config_params[key] != "None"}
    rest = {key: value for key, value in config_params.items() if key not in first}
    return {**swept, **first, **dict(sorted(rest.items(), key=lambda item: item[1] == "None"))}
