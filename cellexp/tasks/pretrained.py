"""Backbones that start from, or are, another run's backbone: `backbone.init_from=` and an embedding task's `ckpt=`.

Every run's checkpoint holds a backbone: a task=ssl run's teacher (`teacher.backbone.*`, the network DINO
hands on) or a classifier's (`backbone.*`). A ViT trained at another image size gets its position
embedding resampled to the new patch grid, as timm does for pretrained weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from timm.layers import resample_abs_pos_embed
from torch import nn

from cellexp.checkpoints import ResolvedCheckpoint, resolve_checkpoint
from cellexp.engine.checkpoint import load_model_state
from cellexp.errors import CheckpointError

# Where a checkpoint keeps its backbone, in order of preference.
BACKBONE_PREFIXES = ("teacher.backbone.", "backbone.")


def init_backbone(cfg: DictConfig, backbone: nn.Module) -> ResolvedCheckpoint | None:
    """Load the weights `backbone.init_from` names into `backbone`, built from `cfg`; the source, for the record."""
    spec = backbone.init_from
    if not spec:
        return None
    option = f"backbone.init_from={spec}"
    source = resolve_checkpoint(spec, cfg.logger, Path(cfg.paths.cache_dir), option="backbone.init_from")
    load_backbone(backbone, source, option, (cfg.backbone.get("model_name"), cfg.dataset.in_chans))
    return source


def pretrained_backbone(cfg: DictConfig, spec: str, option: str = "ckpt") -> tuple[nn.Module, ResolvedCheckpoint]:
    """The backbone a checkpoint holds, rebuilt from its own run's config, with its weights, in eval mode.

    For tasks that embed cells with a trained backbone (the MIL task's `ckpt=`): use `forward` for the
    pooled embedding, or timm's `forward_features` / `get_intermediate_layers` for tokens.
    """
    source = resolve_checkpoint(spec, cfg.logger, Path(cfg.paths.cache_dir), option=option)
    run = source.config
    backbone = instantiate(run.backbone)(in_chans=run.dataset.in_chans, image_size=run.dataset.image_size)
    load_backbone(backbone, source, f"{option}={spec}", (run.backbone.get("model_name"), run.dataset.in_chans))
    return backbone.eval(), source


def backbone_weights(folder: Path, option: str) -> dict[str, torch.Tensor]:
    """The backbone's tensors in a checkpoint, keyed as in the backbone itself."""
    state = load_model_state(folder)
    for prefix in BACKBONE_PREFIXES:
        found = {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}
        if found:
            return found
    raise CheckpointError(f"{option}: {folder} holds no backbone (no weights under {' or '.join(BACKBONE_PREFIXES)})")


def load_backbone(backbone: nn.Module, source: ResolvedCheckpoint, option: str, built: tuple[str, int]) -> None:
    """Copy the checkpoint's backbone into `backbone` (built as `built` = (model name, input channels))."""
    weights = _fit_position_embedding(backbone, backbone_weights(source.folder, option))
    try:
        backbone.load_state_dict(weights)
    except RuntimeError as err:
        theirs = (source.config.backbone.get("model_name"), source.config.dataset.get("in_chans"))
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise CheckpointError(
            f"{option}: its backbone ({theirs[0]}, {theirs[1]} input channels, from {source.folder}) does not fit "
            f"this run's ({built[0]}, {built[1]} input channels): {lines[1] if len(lines) > 1 else lines[0]}"
        ) from None


def _fit_position_embedding(backbone: nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    ours, theirs = getattr(backbone, "pos_embed", None), weights.get("pos_embed")
    if ours is None or theirs is None or theirs.shape == ours.shape or theirs.shape[-1] != ours.shape[-1]:
        return weights
    prefix = 0 if getattr(backbone, "no_embed_class", False) else backbone.num_prefix_tokens
    resampled = resample_abs_pos_embed(theirs, new_size=list(backbone.patch_embed.grid_size), num_prefix_tokens=prefix)
    return {**weights, "pos_embed": resampled}
