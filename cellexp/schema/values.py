"""Ranges and choices of the values that reach data preparation, the generator, the logger and the heads, checked
with the rest of cellexp.schema.sections before the run folder is kept, the MLflow run opened or any data made.

These keys are optional (not every dataset has them); a key that is there must hold a value that can work: a seed
numpy takes, a positive crop size, finite rates, a generator image of at least 32 px, cell lines that exist, a
head whose width its attention heads divide, an optimized metric that the task logs. Kept apart from schema.py's
classes so that each can grow on its own.
"""

from __future__ import annotations

from typing import Annotated, Literal

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from cellexp.data.livecell.release import CELL_LINES
from cellexp.errors import ConfigError

Seed = Annotated[StrictInt, Field(ge=0, le=2**32 - 1)]  # numpy's and torch's seeds are 32-bit
PositiveInt = Annotated[StrictInt, Field(ge=1)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
GeneratedSide = Annotated[StrictInt, Field(ge=32)]  # the synthetic generator draws cells of up to ~30 px
# the crop stores' formats, whose classes are LIVECell's cell lines
LIVECELL_FORMATS = ("livecell", "livecell_cls")
# heads whose width is split among attention heads
ATTENTION_HEADS = ("cellexp.models.tensor_network.graph_head", "cellexp.models.elegans_published.published_graph_head")
# what task=classify logs for each split (cellexp.engine.metrics.classification_metrics); recall/<line> and the
# Grad-CAMO figures besides
CLASSIFY_METRICS = ("loss", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "auroc", "classes_present")


class _Values(BaseModel):
    model_config = ConfigDict(extra="allow")


class Augmentation(_Values):
    degrees: Annotated[float, Field(ge=0, le=180, allow_inf_nan=False)] | None = None
    scale: Annotated[list[Positive], Field(min_length=2, max_length=2)] | None = None
    translate: Fraction | None = None
    brightness: NonNegative | None = None
    contrast: NonNegative | None = None


class Generate(_Values):
    seed: Seed | None = None
    images_per_line: dict[Literal["train", "val", "test"], Annotated[StrictInt, Field(ge=0)]] | None = None
    height: GeneratedSide | None = None
    width: GeneratedSide | None = None
    density: Positive | None = None
    confound: NonNegative | None = None
    confounded_splits: list[Literal["train", "val", "test"]] | None = None
    context: NonNegative | None = None
    channels: Literal[1, 2, 3, 4, 5, 6, 7, 8] | None = None
    bit_depth: Literal[8, 16] | None = None


class DatasetValues(_Values):
    crop_size: PositiveInt | None = None
    shard_images: PositiveInt | None = None
    prepare_workers: PositiveInt | None = None
    min_area: NonNegative | None = None
    context_margin: NonNegative | None = None
    cell_lines: list[str] | None = None
    augmentation: Augmentation | None = None
    generate: Generate | None = None


class LoggerValues(_Values):
    system_metrics_interval_s: Positive | None = None


class OptimizerValues(_Values):
    lr: Finite
    weight_decay: Finite = 0.0


class OptimValues(_Values):
    optimizer: OptimizerValues


class Values(_Values):
    seed: Seed
    dataset: DatasetValues
    logger: LoggerValues
    optim: OptimValues


def check_choices(cfg: DictConfig) -> None:
    """What a type cannot say: choices that depend on other keys. One ConfigError naming the key and value."""
    dataset = cfg.get("dataset") or {}
    lines = dataset.get("cell_lines")
    if lines and dataset.get("format") in LIVECELL_FORMATS:
        unknown = [str(line) for line in lines if line not in CELL_LINES]
        repeated = sorted({str(line) for line in lines if list(lines).count(line) > 1})
        if unknown or repeated:
            what = f"unknown {unknown}" if unknown else f"repeats {repeated}"
            raise ConfigError(f"dataset.cell_lines={_plain(lines)}: {what}; choose from {', '.join(CELL_LINES)}")
    head = cfg.get("head") or {}
    if head.get("_target_") in ATTENTION_HEADS and head.get("head_dim") is None:
        dim, heads = head.get("dim"), head.get("num_heads")
        if isinstance(dim, int) and isinstance(heads, int) and (heads < 1 or dim < 1 or dim % heads):
            raise ConfigError(f"head.dim={dim}: must be a positive multiple of head.num_heads={heads}")
    _check_metric(cfg)


def _check_metric(cfg: DictConfig) -> None:
    """task=classify's optimized metric must be one it logs at every epoch (val/ or train/ figures)."""
    task = cfg.get("task") or {}
    if task.get("name") != "classify" or not task.get("fit", True):
        return
    metric = str(task.get("optimized_metric"))
    split, _, name = metric.partition("/")
    known = name in CLASSIFY_METRICS or name.startswith(("recall/", "gradcamo_"))
    if split not in ("val", "train") or not (known or split == "train"):
        raise ConfigError(
            f"task.optimized_metric={metric!r} is not logged by task=classify: give val/<name> with name one of "
            f"{', '.join(CLASSIFY_METRICS)}, recall/<cell line> or a gradcamo_ figure (task.camo)"
        )


def _plain(value):
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
