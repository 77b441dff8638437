"""Whole-batch preprocessing and augmentation on the training device: uint8 crops in, model input out."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cellexp.data.pixels import pixel_kind
from cellexp.errors import ConfigError

# what a batch shows outside each cell (BatchTransform's `background`, dataset.background)
BACKGROUNDS = ("keep", "black", "swap", "noise")


@dataclass(frozen=True)
class InputConfig:
    """What a model takes: crops of `channels` channels resized to `image_size`, `in_chans` channels (a grey crop
    repeated, as the paper's to_rgb does), pixels scaled to [0, 1] (x / 255, or per channel from its `intensity`
    range for 16-bit data), then (x - mean) / std. Built models carry it (`backbone.input_config`, as timm models
    carry their pretrained config) and checkpoints record it, so every transform is made from the model and a
    trained model is rebuilt, and its inputs scaled, as it was trained."""

    image_size: int
    in_chans: int = 1
    mean: float = 0.5
    std: float = 0.25
    channels: int = 1  # of the stored crops (the data's)
    # per channel, the stored values scaled to 0 and 1 (16-bit data: the training split's percentiles); None: / 255
    intensity: tuple[tuple[float, float], ...] | None = None
    # planes of 3-D crops (C, depth, S, S) as the model takes them; None: 2-D crops
    depth: int | None = None

    @classmethod
    def from_dataset(cls, dataset_cfg: DictConfig) -> InputConfig:
        normalize = dataset_cfg.get("normalize") or {}
        return cls(
            int(dataset_cfg.image_size),
            int(dataset_cfg.get("in_chans", 1)),
            float(normalize.get("mean", 0.5)),
            float(normalize.get("std", 0.25)),
        )

    @classmethod
    def from_record(cls, record: dict) -> InputConfig:
        """The input config a checkpoint's meta.json recorded (older checkpoints: grey 8-bit crops)."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in record.items() if key in known}
        if values.get("intensity") is not None:
            values["intensity"] = tuple(tuple(float(v) for v in pair) for pair in values["intensity"])
        return cls(**values)

    @property
    def kind(self) -> str:
        """'2 channels of uint16': the crops it takes, as error messages name them."""
        return pixel_kind(self.channels, "uint16" if self.intensity else "uint8", self.depth)

    def transform(self, augment: bool = False, **strengths) -> BatchTransform:
        """The batch transform that makes this input (augmented when `augment`)."""
        return BatchTransform(
            self.image_size,
            self.mean,
            self.std,
            self.in_chans,
            augment=augment,
            intensity=self.intensity,
            depth=self.depth,
            **strengths,
        )


class BatchTransform(nn.Module):
    """Scale to [0,1] (x / 255, or per channel by its `intensity` range, clipped), resize crop_size -> image_size,
    repeat a grey crop to `in_chans`, normalise; when training, augment.

    Augmentations: flips and 90-degree turns, a small random affine (rotation up to `degrees`,
    zoom in `scale`, shift up to `translate` of the side; resampled together with the resize, the
    flip and the turn in one pass), and brightness/contrast jitter of the cell (the black
    background stays black) for a share `jitter_prob` of the samples. `background` (which needs the cells' masks)
    blacks out everything outside the cell in every batch (`black`: the cell alone, as LIVECell-CLS crops are), or,
    when training, replaces it with another crop's surroundings (`swap`) or with noise (`noise`); see
    `replace_background`. `flip_prob` replaces the
    flips and turns by a vertical and a horizontal flip, each with that chance and no turn (CLANet's
    DINO recipe: 0.3); it takes no affine.
    3-D crops (B, C, D, S, S) get the same in the xy plane (every plane alike: the affine is a rotation about z, the
    turns and flips are of y and x); z is never flipped, since a cell's apical and basal sides differ, and `depth`
    planes are what the model takes (resampled in z only where the crops have another depth).
    Everything runs on whole batches on the device, drawn from torch's RNG (seeded per epoch), so
    the loader only moves bytes and results do not depend on the number of loader workers.
    """

    def __init__(
        self,
        image_size: int,
        mean: float = 0.5,
        std: float = 0.25,
        in_chans: int = 1,
        augment: bool = False,
        degrees: float = 0.0,
        scale: tuple[float, float] = (1.0, 1.0),
        translate: float = 0.0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        jitter_prob: float = 1.0,
        flip_prob: float | None = None,
        intensity: tuple[tuple[float, float], ...] | None = None,
        depth: int | None = None,
        background: str = "keep",
        jitter_per_channel: bool = False,
    ):
        super().__init__()
        if background not in BACKGROUNDS:
            raise ConfigError(f"dataset.background={background!r}; choose one of {', '.join(BACKGROUNDS)}")
        self.background = background
        self.image_size, self.mean, self.std, self.augment = image_size, mean, std, augment
        self.in_chans, self.depth = in_chans, depth
        self.intensity = None if intensity is None else torch.tensor(intensity, dtype=torch.float32)
        self.degrees, self.scale, self.translate = degrees, tuple(scale), translate
        self.brightness, self.contrast, self.jitter_prob = brightness, contrast, jitter_prob
        self.jitter_per_channel = jitter_per_channel
        self.flip_prob = flip_prob
        if flip_prob is not None and (degrees or translate or self.scale != (1.0, 1.0)):
            raise ValueError("flip_prob (independent flips, no turns) takes no random affine")

    def forward(self, crops: torch.Tensor, masks: torch.Tensor | None = None):
        """crops (B, C, S, S) (or (B, C, D, S, S)) uint8 or uint16 -> model input; with masks (B, 1, S, S) (or
        (B, 1, D, S, S)) 0/1, also the masks moved by the same flips, turns and affine (bool, at image_size), so that
        a cell's mask stays on the cell."""
        if (crops.ndim == 5) != (self.depth is not None):
            expected = "(B, C, S, S)" if self.depth is None else "(B, C, D, S, S)"
            raise ValueError(f"crops of shape {tuple(crops.shape)}; the model takes {expected} crops")
        x = self.unit(crops)
        if masks is not None:
            x = torch.cat([x, masks.to(x.dtype)], dim=1)
        augment = self.augment and self.training
        if augment and (self.degrees or self.translate or self.scale != (1.0, 1.0)):
            x = self._random_affine(x)  # flips and turns included in the same resampling
        else:
            if tuple(x.shape[2:]) != self._size:
                x = _resized(x, self._size)
            if augment:
                x = _random_dihedral(x) if self.flip_prob is None else _random_flips(x, self.flip_prob)
        if masks is not None:
            x, masks = x[:, :-1], x[:, -1:] > 0.5
        if self.background == "black" or (augment and self.background != "keep"):
            if masks is None:
                raise ValueError(f"background={self.background!r} replaces what is outside the cell: pass its masks")
            x = replace_background(x, masks, self.background)
        if augment and (self.brightness or self.contrast):
            x = self._jitter(x)
        if x.shape[1] != self.in_chans:
            if x.shape[1] != 1:
                raise ValueError(f"crops have {x.shape[1]} channels; the model takes {self.in_chans}")
            x = x.expand(-1, self.in_chans, *x.shape[2:])  # a grey crop repeated, as to_rgb does
        x = (x - self.mean) / self.std
        return x if masks is None else (x, masks)

    @property
    def _size(self) -> tuple[int, ...]:
        """The model's spatial input size: (S, S), or (D, S, S) for 3-D crops."""
        plane = (self.image_size, self.image_size)
        return plane if self.depth is None else (self.depth, *plane)

    def unit(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops as floats in [0, 1] by the one intensity rule: 8-bit over 255, 16-bit by each channel's range."""
        return crops.float().div_(255.0) if self.intensity is None else self._scaled(crops)

    def _scaled(self, crops: torch.Tensor) -> torch.Tensor:
        """Each channel's intensity range onto [0, 1], clipped (the percentile stretch of `intensity.py`)."""
        if crops.shape[1] != len(self.intensity):
            raise ValueError(f"crops have {crops.shape[1]} channels, intensity ranges {len(self.intensity)}")
        ranges = self.intensity.to(crops.device).view(-1, 2, *[1] * (crops.ndim - 2))
        low, high = ranges[:, 0], ranges[:, 1]
        return ((crops.float() - low) / (high - low)).clamp_(0.0, 1.0)

    def _random_affine(self, x: torch.Tensor) -> torch.Tensor:
        """Rotation (a random quarter turn plus up to `degrees`), mirror, zoom and shift, resampled once."""
        n, device = x.shape[0], x.device
        turns = torch.randint(0, 4, (n,), device=device) * (math.pi / 2)
        angle = turns + _uniform(n, -self.degrees, self.degrees, device) * (math.pi / 180)
        zoom = _uniform(n, *self.scale, device)
        mirror = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0)
        shift = _uniform(2 * n, -2 * self.translate, 2 * self.translate, device).view(n, 2)  # in [-1, 1] units
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        if x.ndim == 5:  # a rotation about z: x and y move, every plane alike
            zero, one = torch.zeros_like(cos), torch.ones_like(cos)
            rows = [
                [cos * mirror, -sin, zero, shift[:, 0]],
                [sin * mirror, cos, zero, shift[:, 1]],
                [zero, zero, one, zero],
            ]
        else:
            rows = [[cos * mirror, -sin, shift[:, 0]], [sin * mirror, cos, shift[:, 1]]]
        theta = torch.stack([torch.stack(row, 1) for row in rows], 1)
        grid = F.affine_grid(theta, [n, x.shape[1], *self._size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Contrast around the cell's mean, then a brightness gain; pixels outside the cell stay 0. One draw per
        sample, or per sample and channel (`jitter_per_channel`: stains that vary independently).

        ((x - m) * c + m) * g is x * (c g) + m (1 - c) g: one multiply-add per pixel.
        """
        n, device, space = x.shape[0], x.device, [1] * (x.ndim - 2)
        channels = x.shape[1] if self.jitter_per_channel else 1
        dims = tuple(range(2 if self.jitter_per_channel else 1, x.ndim))  # the cell's mean, per channel or not
        each = (n, channels, *space)
        cell = x > 0
        mean = x.sum(dims, keepdim=True) / cell.sum(dims, keepdim=True).clamp(min=1)
        contrast = _uniform(n * channels, 1 - self.contrast, 1 + self.contrast, device).view(each)
        gain = _uniform(n * channels, 1 - self.brightness, 1 + self.brightness, device).view(each)
        if self.jitter_prob < 1.0:
            spared = (torch.rand(n, device=device) >= self.jitter_prob).view(n, 1, *space)
            contrast, gain = contrast.masked_fill(spared, 1.0), gain.masked_fill(spared, 1.0)
        return torch.addcmul(mean * (1 - contrast) * gain, x, contrast * gain).clamp_(0, 1).mul_(cell)


def replace_background(x: torch.Tensor, masks: torch.Tensor, how: str) -> torch.Tensor:
    """Crops (B, C, *space) with what lies outside each cell's mask (B, 1, *space) bool replaced: by 0 (`black`), by
    the next crop's background in the batch (`swap`: another cell's surroundings, the background randomisation of
    Xiao et al., ICLR 2021; that crop's own cell, centred too, is filled with its background mean, so that a larger
    cell does not show around this one and change its outline), or by Gaussian noise of the crop's own background
    mean and deviation (`noise`)."""
    if how == "black":
        return x * masks
    if how == "swap":
        other, other_masks = x.roll(1, dims=0), masks.roll(1, dims=0)
        mean, _ = _background_moments(other, other_masks)
        return torch.where(masks, x, torch.where(other_masks, mean, other))
    if how != "noise":
        raise ValueError(f"background {how!r}; choose one of {', '.join(BACKGROUNDS[1:])}")
    mean, std = _background_moments(x, masks)
    return torch.where(masks, x, mean + std * torch.randn_like(x))


def _background_moments(x: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each crop's per-channel mean and deviation outside its mask, shaped (B, C, 1, ...) to broadcast over space."""
    outside, space = ~masks, tuple(range(2, x.ndim))
    count = outside.sum(space, keepdim=True).clamp_min(1)
    mean = (x * outside).sum(space, keepdim=True) / count
    std = (((x - mean) * outside).square().sum(space, keepdim=True) / count).sqrt()
    return mean, std


def model_inputs(transform: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A (crops, labels) or (crops, labels, masks) batch through `transform`: (inputs, labels, masks or None)."""
    crops, labels, *rest = batch
    if not rest:
        return transform(crops), labels, None
    inputs, masks = transform(crops, rest[0])
    return inputs, labels, masks


def augmentation(dataset_cfg: DictConfig) -> dict:
    """BatchTransform's augmentation strengths from `dataset.augmentation` (none given: flips and turns only)."""
    strengths = OmegaConf.to_container(dataset_cfg.get("augmentation") or {})
    if "scale" in strengths:
        strengths["scale"] = tuple(strengths["scale"])
    return strengths


def _resized(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Images resized (antialiased bilinear), or 3-D crops (trilinear, which takes no antialiasing)."""
    if x.ndim == 5:
        return F.interpolate(x, size=size, mode="trilinear", align_corners=False)
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def _uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.rand(n, device=device) * (high - low) + low


def _random_flips(x: torch.Tensor, prob: float) -> torch.Tensor:
    """A vertical, then a horizontal flip, each of a sample with chance `prob` (torchvision's RandomVerticalFlip
    and RandomHorizontalFlip in a row)."""
    flip_rows, flip_cols = (torch.rand(2, x.shape[0], *[1] * (x.ndim - 1), device=x.device) < prob).unbind(0)
    x = torch.where(flip_rows, x.flip(-2), x)
    return torch.where(flip_cols, x.flip(-1), x)


def _random_dihedral(x: torch.Tensor) -> torch.Tensor:
    """Each (square) sample gets one of the 8 flips/rotations: a random transpose, then random flips of
    either axis, each a whole-batch select."""
    transpose, flip_rows, flip_cols = (torch.rand(3, x.shape[0], *[1] * (x.ndim - 1), device=x.device) < 0.5).unbind(0)
    x = torch.where(transpose, x.transpose(-2, -1), x)
    x = torch.where(flip_rows, x.flip(-2), x)
    return torch.where(flip_cols, x.flip(-1), x)
