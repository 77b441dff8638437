"""One rule for the intensities of every image, at training and predict time.

8-bit images are used as they are (x / 255). 16-bit ones are stored as they are, and each channel is scaled by
the 0.1th-99.9th percentile range of the training split's cell pixels in that channel, which the model records
(`InputConfig.intensity`) so that a 16-bit plate is scaled as its training data was; a fixed division by 257 would
leave a 12-bit camera's images near black. Images of any other type (32-bit, float) have that percentile range
stretched onto 0-255 per image and channel, as have 16-bit images given to a model trained on 8-bit ones.
"""

from __future__ import annotations

import numpy as np

LOW, HIGH = 0.1, 99.9
RULE = (
    f"uint8 as is; uint16 stored as is and scaled per channel by the training split's {LOW}-{HIGH} percentiles "
    f"(recorded with the model); other types, or uint16 for an 8-bit model: per image and channel, percentiles "
    f"{LOW}-{HIGH} stretched to 0-255"
)
STORED_TYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """`pixels` (any shape, one channel) as uint8: as is if 8-bit, else its percentile range stretched."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == bool:
        return pixels.astype(np.uint8) * 255
    values = pixels.astype(np.float32)
    low, high = np.percentile(values, (LOW, HIGH))
    if not high > low:
        return np.zeros(pixels.shape, np.uint8)
    return np.clip(np.rint((values - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)


def stored(channels: np.ndarray) -> np.ndarray:
    """(C, H, W) pixels as a crop store keeps them: uint8 and uint16 as they are, other types by `to_uint8`."""
    if channels.dtype in STORED_TYPES:
        return channels
    return np.stack([to_uint8(channel) for channel in channels])


def channel_ranges(crops: np.ndarray, masks: np.ndarray) -> tuple[tuple[float, float], ...]:
    """Per channel of (N, C, S, S) crops, the LOW-HIGH percentiles of the pixels inside the cells' (N, S, S) masks:
    the range a 16-bit channel is scaled to [0, 1] by (a black background would pull the low end to 0)."""
    inside = masks.astype(bool)
    ranges = []
    for channel in range(crops.shape[1]):
        values = crops[:, channel][inside] if inside.any() else crops[:, channel].ravel()
        low, high = np.percentile(values.astype(np.float64), (LOW, HIGH)) if values.size else (0.0, 1.0)
        ranges.append((float(low), float(max(high, low + 1.0))))
    return tuple(ranges)
