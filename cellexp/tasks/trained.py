"""The classifier a config describes and the weights a checkpoint holds: shared by every task that loads a model."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cellexp.checkpoints import ResolvedCheckpoint, resolve_checkpoint
from cellexp.engine.checkpoint import load_model_state
from cellexp.errors import CheckpointError
from cellexp.models.classifier import CellClassifier, build_classifier


def build_model(cfg: DictConfig, num_classes: int) -> CellClassifier:
    return build_classifier(
        instantiate(cfg.backbone),
        instantiate(cfg.head),
        in_chans=cfg.dataset.in_chans,
        image_size=cfg.dataset.image_size,
        num_classes=num_classes,
    )


def resolve(cfg: DictConfig, spec: str, option: str = "ckpt") -> ResolvedCheckpoint:
    """A `ckpt=`-style spec (checkpoint, run folder or MLflow run id) found through this run's logger settings;
    errors name `option`, the key the spec came from."""
    return resolve_checkpoint(spec, cfg.logger, Path(cfg.paths.cache_dir), option=option)


def load_weights(model: torch.nn.Module, folder: Path) -> None:
    try:
        model.load_state_dict(load_model_state(folder))
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {folder} does not fit the model built from its config: "
            f"{str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}"
        ) from None


def load_trained(source: ResolvedCheckpoint, num_classes: int) -> CellClassifier:
    """The model `source` was trained as, built from its run's config, with its weights, in eval mode."""
    model = build_model(source.config, num_classes)
    load_weights(model, source.folder)
    return model.eval()
