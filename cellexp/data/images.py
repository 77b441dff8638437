"""Single-cell crops a user hands in as image files, brought to the crop store's form.

Each file is read as 8-bit grey and squared as LIVECell-CLS crops are prepared: resized with its aspect
kept, zero-padded, its mask the nonzero pixels (such crops are black outside the cell). A parent
folder named like a class (LIVECell-CLS keeps `<split>/<line>/*.png`) gives the true class;
otherwise it is unknown (-1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError

from cellexp.data.crops import square_masked_crop
from cellexp.data.livecell.prepare import cell_line_named, read_gray
from cellexp.errors import DataError

UNKNOWN = -1


@dataclass(frozen=True)
class ImageCrops:
    images: np.ndarray  # (N, S, S) uint8
    masks: np.ndarray  # (N, S, S) uint8 0/1
    labels: np.ndarray  # (N,) int64, UNKNOWN where no folder names the class
    paths: list[Path]


def read_crop_images(paths: list[str | Path], size: int, class_names: list[str]) -> ImageCrops:
    """Crops and masks (size x size) from image files; a missing or unreadable file is named in a DataError."""
    if not paths:
        raise DataError("xai.images is empty: give image files, e.g. xai.images=[a.png,b.png]")
    images, masks, labels, resolved = [], [], [], []
    for spec in paths:
        path = Path(str(spec)).expanduser()
        if not path.is_file():
            raise DataError(f"xai.images: image file {path} does not exist")
        try:
            pixels = read_gray(path)
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"xai.images: cannot read {path} as an image ({err})") from None
        crop, mask = square_masked_crop(pixels, size)
        images.append(crop)
        masks.append(mask)
        labels.append(_true_class(path, class_names))
        resolved.append(path)
    return ImageCrops(np.stack(images), np.stack(masks), np.array(labels, np.int64), resolved)


def _true_class(path: Path, class_names: list[str]) -> int:
    """The class a LIVECell-CLS-style folder names (`<line>/<file>`), else UNKNOWN: a file name's prefix
    is not trusted here, since a user's own files may be named anyhow."""
    line = cell_line_named(path.parent.name)
    return class_names.index(line) if line in class_names else UNKNOWN
