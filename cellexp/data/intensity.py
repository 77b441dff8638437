"""One rule for bringing any image's pixels to the 8 bits that crops are stored in, at training and predict time.

8-bit images are used as they are. Wider ones (16-bit, 32-bit, float) have their 0.1th-99.9th percentile range
stretched onto 0-255 per image and channel: a 12-bit camera's images in a 16-bit file would be near black under a
fixed division by 257, and PIL's own conversion clips everything above 255 to white.
"""

from __future__ import annotations

import numpy as np

LOW, HIGH = 0.1, 99.9
RULE = f"uint8 as is; wider: per image and channel, percentiles {LOW}-{HIGH} stretched to 0-255"


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """`pixels` (any shape, one channel) as uint8 by RULE."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == bool:
        return pixels.astype(np.uint8) * 255
    values = pixels.astype(np.float32)
    low, high = np.percentile(values, (LOW, HIGH))
    if not high > low:
        return np.zeros(pixels.shape, np.uint8)
    return np.clip(np.rint((values - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)
