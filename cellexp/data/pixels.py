"""Image files to channel-first (C, H, W) arrays, for the crop store and for task=predict's plates alike.

TIFF goes through tifffile (16-bit; a multi-page file or a channel-first array is one page per channel); PNG and
JPEG through PIL. An RGB file whose channels are equal is grey saved as colour and counts as one channel; an alpha
channel is dropped. Pixels are kept as the store keeps them (`intensity.stored`: uint8 and uint16 as they are).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from cellexp.data.intensity import stored

TIFF = (".tif", ".tiff")
SUFFIXES = (*TIFF, ".png", ".jpg", ".jpeg")
# what a broken file raises from tifffile or PIL: unreadable, truncated, not an image at all
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, tifffile.TiffFileError)


def read_raw(path: Path) -> np.ndarray:
    """The file's pixels as stored (dtype and layout kept): what label images are read with, never rescaled."""
    if Path(path).suffix.lower() in TIFF:
        return tifffile.imread(path)
    with Image.open(path) as img:
        img.load()
        return np.asarray(img)


def read_pixels(path: Path) -> np.ndarray:
    """(C, H, W) uint8 or uint16; raises one of READ_ERRORS (ValueError naming the shape for arrays that are not
    images)."""
    return stored(channel_first(read_raw(path)))


def channel_first(pixels: np.ndarray) -> np.ndarray:
    """(H, W) grey, (H, W, 3|4) colour or (C, H, W) pages as (C, H, W); equal colour channels as one."""
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
    return stack


def describe(pixels: np.ndarray) -> str:
    """'2 channels of uint16': how errors name an image's (C, H, W) pixels."""
    return pixel_kind(len(pixels), pixels.dtype)


def pixel_kind(channels: int, dtype, depth: int | None = None) -> str:
    """'2 channels of uint16', '1 channel of uint8', '5 channels of uint16 in 3-D (16 planes)': how errors name
    images, crops and what a model takes."""
    kind = f"{channels} channel{'s' if channels != 1 else ''} of {np.dtype(dtype)}"
    return kind if depth is None else f"{kind} in 3-D ({depth} planes)"
