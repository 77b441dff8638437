"""Attention maps of ViT-family backbones: rollout over all blocks, the last block, or the mean over blocks.

`all` is attention rollout (Abnar & Zuidema 2020): per block, the head-fused attention mixed half and
half with the identity (the residual path), rows renormalised, multiplied from the first block to the
last. `last` is the last block's attention alone, `mean` the average over blocks. The relevance of each
patch is the row of the class token, or, for models that average their tokens, the mean of the patch
rows; maps are upsampled to the input size and min-max scaled per image, as pytorch-grad-cam scales
its CAMs, so that Grad-CAMO compares across methods. They do not depend on the target class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cellexp.errors import ConfigError
from cellexp.progress import progress
from cellexp.xai.targets import token_grid

MODES: tuple[str, ...] = ("all", "last", "mean")
HEAD_FUSIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda a: a.mean(dim=1),
    "max": lambda a: a.amax(dim=1),
    "min": lambda a: a.amin(dim=1),
}


def check_rollout(backbone: nn.Module, origin: str, mode: str, head_fusion: str) -> None:
    """Rollout needs self-attention blocks: ViT and hybrid backbones have them, CNNs and Mixers do not.

    `origin` names the model in the message (e.g. "ckpt=outputs/...").
    """
    blocks = getattr(backbone, "blocks", None)
    if backbone.family not in ("vit", "hybrid") or not blocks or not all(hasattr(b, "attn") for b in blocks):
        raise ConfigError(
            f"xai.methods=rollout needs a backbone with self-attention (family vit or hybrid); the model of "
            f"{origin} is a {type(backbone).__name__} of family {backbone.family!r}: use a CAM method such as gradcam"
        )
    if mode not in MODES:
        raise ConfigError(f"xai.rollout.mode={mode!r} is not one of {', '.join(MODES)}")
    if head_fusion not in HEAD_FUSIONS:
        raise ConfigError(f"xai.rollout.head_fusion={head_fusion!r} is not one of {', '.join(HEAD_FUSIONS)}")


@contextmanager
def captured_attention(backbone: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, each forward pass appends every block's attention weights (B, heads, N, N)."""
    weights: list[torch.Tensor] = []
    fused = [block.attn.fused_attn for block in backbone.blocks]
    handles = []
    for block in backbone.blocks:
        block.attn.fused_attn = False  # the fused kernel never materialises the weights
        # timm applies attn_drop to the softmaxed weights: its input is what we want (identity in eval).
        handles.append(block.attn.attn_drop.register_forward_hook(lambda _m, args, _out: weights.append(args[0])))
    try:
        yield weights
    finally:
        for block, was_fused, handle in zip(backbone.blocks, fused, handles, strict=True):
            block.attn.fused_attn = was_fused
            handle.remove()


def relevance(attentions: list[torch.Tensor], mode: str, head_fusion: str, prefix: int, class_token: bool):
    """Per-block attentions (B, heads, N, N) -> patch relevance (B, N - prefix)."""
    fused = [HEAD_FUSIONS[head_fusion](a.float()) for a in attentions]
    if mode == "last":
        joint = fused[-1]
    elif mode == "mean":
        joint = torch.stack(fused).mean(dim=0)
    else:
        eye = torch.eye(fused[0].shape[-1], device=fused[0].device)
        joint = eye.expand_as(fused[0])
        for attention in fused:
            mixed = 0.5 * attention + 0.5 * eye
            joint = (mixed / mixed.sum(dim=-1, keepdim=True)) @ joint
    return joint[:, 0, prefix:] if class_token else joint[:, prefix:, prefix:].mean(dim=1)


@torch.no_grad()
def rollout_maps(
    backbone: nn.Module,
    inputs: Callable[[slice], torch.Tensor],
    count: int,
    image_size: int,
    batch_size: int,
    mode: str = "all",
    head_fusion: str = "mean",
) -> Iterator[np.ndarray]:
    """Yields maps (B, H, W) float32 in [0, 1], batch by batch, for the `count` cells `inputs(slice)` returns."""
    grid = token_grid(backbone, image_size)
    prefix = getattr(backbone, "num_prefix_tokens", 0)
    class_token = getattr(backbone, "global_pool", "token") == "token" and prefix > 0
    with (
        captured_attention(backbone) as attentions,
        progress(total=count, desc="xai rollout", unit="cell") as bar,
    ):
        for start in range(0, count, batch_size):
            attentions.clear()
            backbone(inputs(slice(start, start + batch_size)))
            patches = relevance(attentions, mode, head_fusion, prefix, class_token)
            upsampled = F.interpolate(
                patches.reshape(-1, 1, *grid), size=(image_size, image_size), mode="bilinear", align_corners=False
            )[:, 0]
            low = upsampled.flatten(1).amin(dim=1)[:, None, None]
            span = (upsampled.flatten(1).amax(dim=1)[:, None, None] - low).clamp(min=torch.finfo(upsampled.dtype).tiny)
            bar.update(len(upsampled))
            yield ((upsampled - low) / span).float().cpu().numpy()
