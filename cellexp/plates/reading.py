"""Image files to (channels, height, width) uint8 arrays, scaled by the same rule as the crop store's images.

TIFF goes through tifffile (16-bit, multi-page: one page per channel); PNG and JPEG through PIL. An RGB file whose
channels are equal is grey saved as colour and counts as one channel; an alpha channel is dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from cellexp.data.intensity import to_uint8

TIFF = (".tif", ".tiff")
SUFFIXES = (*TIFF, ".png", ".jpg", ".jpeg")
# what a broken file raises from tifffile or PIL: unreadable, truncated, not an image at all
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, tifffile.TiffFileError)


def read_raw(path: Path) -> np.ndarray:
    """The file's pixels as stored (dtype kept): what label images are read with, never rescaled."""
    if path.suffix.lower() in TIFF:
        return tifffile.imread(path)
    with Image.open(path) as img:
        img.load()
        return np.asarray(img)


def read_channels(path: Path) -> np.ndarray:
    """(C, H, W) uint8; raises one of READ_ERRORS (ValueError naming the shape for arrays that are not images)."""
    pixels = read_raw(path)
    if pixels.ndim == 2:
        stack = pixels[None]
    elif pixels.ndim == 3 and pixels.shape[-1] in (3, 4) and pixels.shape[0] > 4:
        stack = np.moveaxis(pixels[..., :3], -1, 0)  # colour, channels last
    elif pixels.ndim == 3:
        stack = pixels  # multi-page TIFF or a channel-first array
    else:
        raise ValueError(f"pixels of shape {pixels.shape}: expected (H, W), (H, W, 3|4) or (C, H, W)")
    if len(stack) > 1 and all(np.array_equal(stack[0], channel) for channel in stack[1:]):
        stack = stack[:1]
    return np.stack([to_uint8(channel) for channel in stack])
