"""DINO's multi-crop views of a batch of crops (any channels; 8-bit, or 16-bit scaled by the training split's
per-channel ranges as in classification), made on the training device with whole-batch tensor ops.

Microscopy is grayscale and has no up or left, so the augmentations are geometric (random resized crops,
flips, 90-degree turns), photometric on intensity only (brightness, contrast; per channel where asked, for
multi-channel stains) and optical (Gaussian blur); nothing assumes colour. The crop boxes are cut here; flips,
turns, brightness, contrast and normalisation are `BatchTransform`'s, as in classification, so that pretraining
and fine-tuning see the same intensities.

3-D crops (B, C, D, S, S) get 3-D views: a box's volume share is drawn from the view's scale range, a cube root of
it along z and the rest in the xy plane (aspect as in 2-D), resampled trilinearly to the view's planes; turns and
flips are of y and x as in classification, a z flip is an option (`flip_z`: apical and basal sides differ, so
it is off by default), and the blur is of each plane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cellexp.data.transforms import BatchTransform

# Aspect ratios of the crop boxes, as in torchvision's RandomResizedCrop.
ASPECT = (3 / 4, 4 / 3)
# A box is sampled from the smallest pyramid level that it shrinks by at most this factor.
_MAX_SHRINK = 2.0


@dataclass(frozen=True)
class ViewKind:
    """`count` views of `size` px (and `depth` planes, for 3-D crops) whose boxes cover a share in `scale` of the
    crop's area (volume, in 3-D), blurred with `blur_prob`."""

    count: int
    size: int
    scale: tuple[float, float]
    blur_prob: float
    depth: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """A view's spatial shape: (S, S), or (D, S, S) for 3-D views."""
        return (self.size, self.size) if self.depth is None else (self.depth, self.size, self.size)


class MultiCrop(nn.Module):
    """uint8 or uint16 (B, C, S, S) or (B, C, D, S, S) crops -> list of normalised float views, in the order of
    `kinds` (global ones first; 3-D crops need kinds with a depth); `intensity` is the 16-bit data's per-channel
    ranges (the model's input config), None for 8-bit.

    Views come from the global RNG on the crops' device, so seeding torch seeds them. Boxes are sampled
    from an antialiased image pyramid, so a box is never shrunk by more than a factor of two in one step.
    """

    def __init__(
        self,
        kinds: list[ViewKind],
        brightness: float = 0.4,
        contrast: float = 0.4,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        mean: float = 0.5,
        std: float = 0.25,
        in_chans: int = 1,
        jitter_prob: float = 1.0,
        flip_prob: float | None = None,
        intensity: tuple[tuple[float, float], ...] | None = None,
        jitter_per_channel: bool = False,
        flip_z: bool = False,
    ):
        super().__init__()
        self.kinds, self.blur_sigma, self.flip_z = kinds, tuple(blur_sigma), flip_z
        self.scale = BatchTransform(1, intensity=intensity)  # its `unit`: the crops in [0, 1]
        jitter = {"brightness": brightness, "contrast": contrast, "jitter_prob": jitter_prob}
        self.finish = nn.ModuleList(
            BatchTransform(
                kind.size,
                mean,
                std,
                in_chans,
                augment=True,
                flip_prob=flip_prob,
                depth=kind.depth,
                jitter_per_channel=jitter_per_channel,
                **jitter,
            )
            for kind in kinds
        )

    @property
    def sizes(self) -> list[int]:
        return [kind.size for kind in self.kinds for _ in range(kind.count)]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [kind.shape for kind in self.kinds for _ in range(kind.count)]

    def forward(self, crops: torch.Tensor) -> list[torch.Tensor]:
        pyramid = _pyramid(self.scale.unit(crops), min(self.sizes))
        views = []
        for kind, finish in zip(self.kinds, self.finish, strict=True):
            for _ in range(kind.count):
                boxes = _resized_crops(pyramid, kind.size, kind.scale, kind.depth)
                # the finishing BatchTransforms (8-bit rule) take 0..255; blurring after their normalisation equals
                # blurring before.
                view = finish(boxes.mul_(255.0))
                if self.flip_z and view.ndim == 5:
                    view = _random_z_flips(view)
                views.append(_random_blur(view, kind.blur_prob, self.blur_sigma))
        return views


def _pyramid(x: torch.Tensor, smallest_view: int) -> list[torch.Tensor]:
    """x, x halved, halved again, ... (antialiased; 3-D crops in x and y only, by 2 x 2 means) down to about the
    smallest view size."""
    levels = [x]
    while levels[-1].shape[-1] >= 2 * smallest_view:
        last = levels[-1]
        if last.ndim == 5:
            levels.append(F.avg_pool3d(last, (1, 2, 2)))
        else:
            levels.append(F.interpolate(last, scale_factor=0.5, mode="bilinear", antialias=True))
    return levels


def _resized_crops(
    pyramid: list[torch.Tensor], size: int, scale: tuple[float, float], depth: int | None = None
) -> torch.Tensor:
    """One random box per cell (area share in `scale`, aspect in ASPECT), resampled to size x size; for 3-D crops
    a volume share in `scale`, its cube root along z, resampled to depth x size x size."""
    x = pyramid[0]
    n, device = x.shape[0], x.device
    area = torch.empty(n, device=device).uniform_(*scale)
    if depth is not None:
        thickness = area ** (1 / 3)  # the box's share of the planes
        area = area / thickness  # and of each plane's area
    log_aspect = torch.empty(n, device=device).uniform_(math.log(ASPECT[0]), math.log(ASPECT[1]))
    width = (area * log_aspect.exp()).sqrt().clamp(max=1.0)  # shares of the crop's side
    height = (area / log_aspect.exp()).sqrt().clamp(max=1.0)
    centre_x = (1 - width) * (2 * torch.rand(n, device=device) - 1)  # normalised coordinates, box inside
    centre_y = (1 - height) * (2 * torch.rand(n, device=device) - 1)
    zero = torch.zeros_like(width)
    if depth is None:
        affine = [[width, zero, centre_x], [zero, height, centre_y]]
        shape = (size, size)
    else:
        centre_z = (1 - thickness) * (2 * torch.rand(n, device=device) - 1)
        affine = [[width, zero, zero, centre_x], [zero, height, zero, centre_y], [zero, zero, thickness, centre_z]]
        shape = (depth, size, size)
    theta = torch.stack([torch.stack(row, 1) for row in affine], 1)
    grid = F.affine_grid(theta, [n, x.shape[1], *shape], align_corners=False)
    shrink = torch.maximum(width, height) * x.shape[-1] / size
    level = (shrink / _MAX_SHRINK).log2().ceil().clamp(0, len(pyramid) - 1).long()
    out = torch.empty(n, x.shape[1], *shape, device=device, dtype=x.dtype)
    for lvl in level.unique().tolist():
        rows = (level == lvl).nonzero().squeeze(1)
        out[rows] = F.grid_sample(pyramid[lvl][rows], grid[rows], mode="bilinear", align_corners=False)
    return out


def _random_z_flips(x: torch.Tensor) -> torch.Tensor:
    """3-D views (B, C, D, S, S) with half of them, drawn at random, upside down (z reversed)."""
    flipped = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flipped.view(-1, 1, 1, 1, 1), x.flip(2), x)


def _random_blur(x: torch.Tensor, prob: float, sigma: tuple[float, float]) -> torch.Tensor:
    """Gaussian blur of a random share `prob` of the (square) views, sigma in view pixels drawn per view; a 3-D
    view's planes alike.

    Separable, as two batched matrix products with per-view banded matrices: on CPU about twice as fast
    as a grouped convolution with one group per view (64-256 views of 16-112 px).
    """
    if x.ndim == 5:  # the planes as channels
        return _random_blur(x.flatten(1, 2), prob, sigma).view(x.shape)
    chosen = (torch.rand(x.shape[0], device=x.device) < prob).nonzero().squeeze(1)
    if chosen.numel() == 0:
        return x
    size = x.shape[-1]
    sigmas = torch.empty(chosen.numel(), device=x.device).uniform_(*sigma)
    radius = max(1, min(math.ceil(3 * sigma[1]), size - 1))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernels = torch.exp(-0.5 * (offsets[None] / sigmas[:, None]) ** 2)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)  # (m, 2r+1)
    # band[i, j + k, j] = kernels[i, k]: output pixel j reads padded pixels j .. j + 2r
    taps, pixels = torch.arange(2 * radius + 1, device=x.device), torch.arange(size, device=x.device)
    rows = taps[:, None] + pixels[None]  # (2r+1, size)
    band = x.new_zeros(chosen.numel(), size + 2 * radius, size)
    band[:, rows, pixels.expand_as(rows)] = kernels[:, :, None].expand(-1, -1, size)
    padded = F.pad(x[chosen], (radius, radius, radius, radius), mode="reflect")
    band = band[:, None]  # broadcast over channels
    out = x.clone()
    out[chosen] = band.transpose(-2, -1) @ (padded @ band)
    return out
