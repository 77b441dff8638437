"""Whole-batch preprocessing and augmentation on the training device: uint8 crops in, model input out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BatchTransform(nn.Module):
    """Scale to [0,1], normalise, resize crop_size -> image_size; when training, flips and 90-degree turns.

    Runs on whole batches (on the GPU when there is one), so the loader only moves bytes.
    """

    def __init__(self, image_size: int, mean: float = 0.5, std: float = 0.25, augment: bool = False):
        super().__init__()
        self.image_size, self.mean, self.std, self.augment = image_size, mean, std, augment

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.float().div_(255.0)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False
            )
        if self.augment and self.training:
            x = _random_dihedral(x)
        return (x - self.mean) / self.std


def _random_dihedral(x: torch.Tensor) -> torch.Tensor:
    """Each sample gets one of the 8 flips/rotations of the square, drawn from torch's global RNG."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    turns = torch.randint(0, 4, (x.shape[0],), device=x.device)
    out = x.clone()
    for k in (1, 2, 3):
        chosen = turns == k
        if chosen.any():
            out[chosen] = torch.rot90(x[chosen], k, dims=(-2, -1))
    return out
