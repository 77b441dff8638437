"""The composed config's types, ranges and choices, checked before any work is done.

Hydra checks that keys exist; this checks that their values can work: `trainer.max_epochs=abc`,
`trainer.batch_size=0` or `trainer.precision=fp8` stop the run at once with one line naming the key, before any
data is prepared or any heavy library is imported. Only what every task reads is described here; a group's own
options (a head's, a dataset format's) are checked where they are used, also before any work.
"""

from __future__ import annotations

from typing import Annotated, Literal

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from cellexp.errors import ConfigError
from cellexp.schema.values import Values, check_choices

PositiveInt = Annotated[StrictInt, Field(ge=1)]
Count = Annotated[StrictInt, Field(ge=0)]
Direction = Literal["maximize", "minimize"]


class _Section(BaseModel):
    """A config section: the keys listed are checked, others are left to the code that reads them."""

    model_config = ConfigDict(extra="allow")


class EarlyStopping(_Section):
    model_config = ConfigDict(extra="forbid")
    monitor: str
    direction: Direction
    patience: PositiveInt
    min_epochs: Count = 0


class Checkpoint(_Section):
    keep_last: PositiveInt
    keep_training_state: StrictBool = False


class Trainer(_Section):
    max_epochs: PositiveInt
    batch_size: PositiveInt
    eval_batch_size: PositiveInt
    precision: Literal["no", "fp16", "bf16"]
    grad_accum_steps: PositiveInt
    grad_clip: Annotated[float, Field(gt=0)] | None = None
    channels_last: StrictBool
    sync_batchnorm: StrictBool | None = None
    compile: StrictBool
    cpu: StrictBool
    num_workers: Count
    split_batches: StrictBool
    checkpoint: Checkpoint
    resume: str | None = None
    early_stopping: EarlyStopping | None = None


class Normalize(_Section):
    mean: float
    std: Annotated[float, Field(gt=0)]


class Dataset(_Section):
    name: str
    format: str
    in_chans: PositiveInt
    image_size: PositiveInt
    normalize: Normalize
    limit: PositiveInt | None = None


class Optimizer(_Section):
    lr: Annotated[float, Field(ge=0)]
    weight_decay: Annotated[float, Field(ge=0)] = 0.0


class Optim(_Section):
    optimizer: Optimizer


class Task(_Section):
    name: str
    optimized_metric: str
    direction: Direction


class Logger(_Section):
    name: Literal["mlflow", "none"]


class RunConfig(_Section):
    seed: Count
    ckpt: str | None = None
    trainer: Trainer
    dataset: Dataset
    optim: Optim
    task: Task
    logger: Logger


def validate(cfg: DictConfig) -> None:
    """Raise one ConfigError that names every bad key and value (types and ranges: this module's and
    cellexp.schema.values'), then one for a choice that does not fit the others."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    errors = []
    for model in (RunConfig, Values):
        try:
            model.model_validate(tree)
        except ValidationError as err:
            errors += [_describe(error, cfg) for error in err.errors()]
    if errors:
        raise ConfigError("; ".join(dict.fromkeys(errors)))
    check_choices(cfg)


def _describe(error: dict, cfg: DictConfig) -> str:
    key = ".".join(str(part) for part in error["loc"])
    value = OmegaConf.select(cfg, key, default="(missing)")
    shown = "null" if value is None else repr(value) if isinstance(value, str) else value
    return f"{key}={shown}: {error['msg'][0].lower()}{error['msg'][1:]}"
