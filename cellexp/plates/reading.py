"""A plate's field of view to the (C, H, W) pixels its model was trained on.

A field is one file (grey, colour, or a multi-page / channel-first TIFF: `data/pixels.py`) or one file per channel
(`task.channel_pattern`), stacked in channel order. Pixels follow `intensity.RULE` as the training data did: an 8-bit
model gets 8 bits (wider images stretched per image and channel), a 16-bit model gets 16-bit pixels as they are,
which its recorded per-channel ranges scale.
"""

from __future__ import annotations

import numpy as np

from cellexp.data.intensity import to_uint8
from cellexp.data.pixels import describe, read_pixels
from cellexp.data.transforms import InputConfig
from cellexp.plates.files import PlateImage


def read_field(image: PlateImage, max_pixels: int | None = None) -> np.ndarray:
    """(C, H, W) uint8 or uint16; raises one of `pixels.READ_ERRORS` (a ValueError naming the files whose channels
    do not stack: another size, bit depth, or several channels in one channel file; or a file whose header declares
    more than `max_pixels` values, before it is decoded)."""
    if not image.channel_files:
        return read_pixels(image.path, max_pixels)
    channels = [read_pixels(path, max_pixels) for path in image.channel_files]
    shown = ", ".join(
        f"{path.name} ({describe(c)}, {c.shape[2]}x{c.shape[1]})"
        for path, c in zip(image.channel_files, channels, strict=True)
    )
    if any(len(c) != 1 for c in channels) or len({(c.shape, c.dtype) for c in channels}) > 1:
        raise ValueError(f"channel files that do not stack into one image: {shown}")
    return np.concatenate(channels)


def as_trained(pixels: np.ndarray, inputs: InputConfig) -> np.ndarray | None:
    """The pixels as the model's training data had them, or None where they cannot be (another channel count, or
    8-bit images for a model trained on 16-bit ones)."""
    if len(pixels) != inputs.channels:
        return None
    if inputs.intensity is None:
        return np.stack([to_uint8(channel) for channel in pixels])
    return pixels if pixels.dtype == np.uint16 else None
