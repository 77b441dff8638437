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
# what a broken file raises from tifffile or PIL: unreadable, truncated, not an image at all, or (PIL) a header
# declaring far more pixels than PIL decodes
READ_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    tifffile.TiffFileError,
    Image.DecompressionBombError,
)


def read_raw(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """The file's pixels as stored (dtype and layout kept): what label images are read with, never rescaled. With
    `max_pixels`, a file whose header declares more values than that is refused (ValueError) before decoding."""
    if max_pixels is not None:
        check_declared_size(Path(path), max_pixels)
    if Path(path).suffix.lower() in TIFF:
        return tifffile.imread(path)
    with Image.open(path) as img:
        img.load()
        return np.asarray(img)


def read_pixels(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """(C, H, W) uint8 or uint16; raises one of READ_ERRORS (ValueError naming the shape for arrays that are not
    images, or one over `max_pixels`)."""
    return stored(channel_first(read_raw(path, max_pixels)))


def check_declared_size(path: Path, max_pixels: int) -> None:
    """Refuse (ValueError) a file whose header declares more than `max_pixels` values (pages x height x width x
    samples), read from the header alone: a 40000x40000 TIFF or a PNG claiming 30000x30000 is never decoded."""
    if path.suffix.lower() in TIFF:
        with tifffile.TiffFile(path) as tif:
            shapes = [tuple(page.shape) for page in tif.pages]
    else:
        with Image.open(path) as img:  # reads the header; PIL refuses far larger ones itself
            shapes = [(img.height, img.width, len(img.getbands()))]
    declared = sum(int(np.prod(shape, dtype=np.int64)) for shape in shapes)
    if declared > max_pixels:
        size = "x".join(str(side) for side in shapes[0][:2][::-1])
        pages = f" in {len(shapes)} pages" if len(shapes) > 1 else ""
        raise ValueError(f"its header declares {size}{pages}, {declared} values: over task.max_pixels={max_pixels}")


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
