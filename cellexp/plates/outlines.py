"""Cells as outlines, whoever drew them: a label image (the user's or the segmenter's) or a COCO file's polygons.

An outline is the cell's integer box in its image and its 0/1 mask inside that box: what the crop store's cutting
functions take, so that cells are cut exactly as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from cellexp.data.crops import cell_box, cell_mask, polygon_problem
from cellexp.data.livecell.coco import read_coco
from cellexp.data.pixels import READ_ERRORS, read_raw
from cellexp.errors import DataError

# names that cellpose and others give a label image beside (or for) image X.tif, in the order looked for
MASK_NAMES = ("{stem}_masks{suffix}", "{stem}_cp_masks{suffix}", "{stem}{suffix}")
MASK_SUFFIXES = (".tif", ".tiff", ".png")


@dataclass(frozen=True)
class Outline:
    object_id: int  # the label's value, or the COCO annotation's id
    box: tuple[int, int, int, int]  # x0, y0, x1, y1, end exclusive
    mask: np.ndarray  # (y1 - y0, x1 - x0) uint8 0/1


def from_labels(labels: np.ndarray) -> list[Outline]:
    """One outline per label value present (0 is background). Values beyond the image's pixel count (ids such as
    2^31-1) are numbered densely first, so that nothing is sized by the largest value; each keeps its id."""
    ids = None
    if labels.size and int(labels.max()) > labels.size:
        ids, dense = np.unique(labels, return_inverse=True)
        labels = dense.reshape(labels.shape) + (0 if ids[0] == 0 else 1)
        ids = ids if ids[0] == 0 else np.concatenate(([0], ids))
    outlines = []
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        rows, cols = found
        mask = (labels[found] == index).astype(np.uint8)
        object_id = index if ids is None else int(ids[index])
        outlines.append(Outline(object_id, (cols.start, rows.start, cols.stop, rows.stop), mask))
    return outlines


class LabelFolder:
    """Label images in a folder, one per image, found by name (X.tif: X_masks.tif, X_cp_masks.png or X.png)."""

    empty = "its mask has no objects"

    def __init__(self, folder: Path, max_pixels: int | None = None):
        if not folder.is_dir():
            raise DataError(f"task.masks={folder} is neither a folder of label images nor a COCO .json file")
        self.folder, self.max_pixels = folder, max_pixels

    def outlines(self, image: Path, pixels: np.ndarray) -> list[Outline]:
        """The image's cells; a DataError (naming the file) when its mask is missing, unreadable, too large, of
        another size than its image or holds negative labels: checked before any outline is made."""
        shape = pixels.shape
        path = self._mask_file(image)
        try:
            labels = read_raw(path, self.max_pixels)  # a huge one is refused from its header, before decoding
        except READ_ERRORS as err:
            raise DataError(f"mask {path} is unreadable ({type(err).__name__}: {' '.join(str(err).split())})") from None
        if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"mask {path} is not a label image (2-D integers), got {labels.dtype} {labels.shape}")
        if labels.shape != shape:
            raise DataError(f"mask {path} is {labels.shape[1]}x{labels.shape[0]}, its image {shape[1]}x{shape[0]}")
        if labels.size and labels.min() < 0:
            raise DataError(f"mask {path} holds negative labels (down to {labels.min()}): 0 is background, cells > 0")
        return from_labels(labels.astype(np.int64))

    def _mask_file(self, image: Path) -> Path:
        for name in MASK_NAMES:
            for suffix in MASK_SUFFIXES:
                path = self.folder / name.format(stem=image.stem, suffix=suffix)
                if path.is_file() and path.resolve() != image.resolve():
                    return path
        raise DataError(f"no mask for {image.name} in {self.folder} (looked for {image.stem}_masks.tif and the like)")


class CocoMasks:
    """A COCO file's polygons, matched to images by file name (its folder ignored)."""

    empty = "the COCO file has no usable annotation for it"

    def __init__(self, path: Path):
        coco, self.skipped = read_coco(path)
        self.path = path
        self.by_name = {
            Path(entry["file_name"]).name: coco.imgToAnns.get(image_id, []) for image_id, entry in coco.imgs.items()
        }

    def outlines(self, image: Path, pixels: np.ndarray) -> list[Outline]:
        shape = pixels.shape
        if image.name not in self.by_name:
            raise DataError(f"{image.name} has no entry in {self.path}")
        outlines = []
        for ann in self.by_name[image.name]:
            polygons = [p for p in ann.get("segmentation") or [] if isinstance(p, list) and len(p) >= 6]
            reason = polygon_problem(polygons, shape) if polygons else "no polygon (RLE masks are not read)"
            if reason is not None:
                self.skipped.append({"input": f"{self.path}: annotation {ann['id']}", "reason": reason})
                continue
            box = cell_box(ann["bbox"], *shape)
            outlines.append(Outline(int(ann["id"]), box, cell_mask(polygons, box)))
        return outlines
