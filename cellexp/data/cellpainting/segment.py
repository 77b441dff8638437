"""Cells of a z-stack as a 3-D label image (0 background, 1..n cells).

`dataset.segmentation.method`:
    classical  built in (scikit-image): nuclei from the DNA channel (smoothed, Otsu, touching ones split by a
               distance-transform watershed from its h-maxima) seed a watershed over the AGP channel, whose bright
               cortex separates touching cells, within the foreground of the cytoplasm channels; smoothing and
               distances in micrometres, so anisotropic voxels are handled
    labels     the user's label images: one 3-D label TIFF per field, <labels folder>/<plate>_<well>_s<site>.tif
    cellpose   cellpose in 3-D (the paper's segmenter; `pip install -e .[cellpose]`), from a weights file that
               must be on disk (cellpose downloads its weights on first use, which these machines cannot)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from cellexp.data.cellpainting.fields import CHANNELS, FieldRef
from cellexp.errors import DataError

METHODS = ("classical", "labels", "cellpose")
# cellpose's own default: the file it downloads into its models folder
CELLPOSE_MODEL = "cpsam"


@dataclass(frozen=True)
class Segmentation:
    method: str = "classical"
    labels: str | None = None  # the folder of label images (method labels)
    cellpose_model: str | None = None  # a weights file (method cellpose); None: cellpose's models folder
    # touching nuclei are split where the dip between them is this deep (micrometres of distance to their edge)
    split_um: float = 0.5
    smoothing_um: float = 0.5

    def __post_init__(self):
        if self.method not in METHODS:
            raise DataError(f"dataset.segmentation.method={self.method!r} is not one of {', '.join(METHODS)}")
        if self.method == "labels" and not self.labels:
            raise DataError("dataset.segmentation.method=labels needs dataset.segmentation.labels=<folder>")


def segment(field: FieldRef, pixels: np.ndarray, voxel: tuple[float, float, float], how: Segmentation) -> np.ndarray:
    """(Z, Y, X) int32 labels of the field's cells; a ValueError names a label image that does not fit."""
    if how.method == "labels":
        return label_image(Path(how.labels) / f"{field.name}.tif", pixels.shape[1:])
    if how.method == "cellpose":
        return cellpose_labels(pixels, voxel, how.cellpose_model)
    return classical_labels(pixels, voxel, how)


def label_image(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"no label image {path}")
    labels = tifffile.imread(path)
    if labels.shape != tuple(shape) or labels.dtype.kind not in "iu":
        raise ValueError(f"label image {path} is {labels.dtype} {labels.shape}; its field is {tuple(shape)}")
    return labels.astype(np.int32)


def classical_labels(pixels: np.ndarray, voxel: tuple[float, float, float], how: Segmentation) -> np.ndarray:
    sigma = [how.smoothing_um / v for v in voxel]
    dna = ndimage.gaussian_filter(pixels[CHANNELS.index("DNA")].astype(np.float32), sigma)
    nuclei_mask = dna > threshold_otsu(dna)
    distance = ndimage.distance_transform_edt(nuclei_mask, sampling=voxel)
    seeds = ndimage.label(h_maxima(distance, how.split_um))[0]  # one seed per nucleus, touching ones split
    nuclei = watershed(-distance, seeds, mask=nuclei_mask)
    rest = [c for c in range(len(pixels)) if c != CHANNELS.index("DNA")]
    cytoplasm = ndimage.gaussian_filter(_scaled(pixels[rest]).sum(axis=0), sigma)
    foreground = (cytoplasm > threshold_otsu(cytoplasm)) | nuclei_mask
    cortex = ndimage.gaussian_filter(pixels[CHANNELS.index("AGP")].astype(np.float32), sigma)
    return watershed(cortex, nuclei, mask=foreground).astype(np.int32)


def _scaled(channels: np.ndarray) -> np.ndarray:
    """Each channel onto [0, 1] by its 1-99.9th percentiles, so that no stain outweighs the others."""
    flat = channels.reshape(len(channels), -1).astype(np.float32)
    low, high = np.percentile(flat, (1, 99.9), axis=1)
    scaled = (flat - low[:, None]) / np.maximum(high - low, 1e-6)[:, None]
    return np.clip(scaled, 0, 1).reshape(channels.shape)


def cellpose_weights(model: str | None) -> Path:
    """The cellpose weights file to load: the one given, else cellpose's default in its models folder."""
    if model:
        return Path(model).expanduser()
    folder = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH", Path.home() / ".cellpose" / "models")
    return Path(folder) / CELLPOSE_MODEL


def require_cellpose_weights(model: str | None) -> Path:
    """The weights file, or one message naming where it was looked for and how to provide it."""
    weights = cellpose_weights(model)
    if not weights.is_file():
        raise DataError(
            f"cellpose weights not found: {weights}. Cellpose downloads them on first use, which needs the internet: "
            f"copy the file there from a machine that has it, or give dataset.segmentation.cellpose_model=<file>"
        )
    return weights


def cellpose_labels(pixels: np.ndarray, voxel: tuple[float, float, float], model: str | None) -> np.ndarray:
    weights = require_cellpose_weights(model)
    try:
        from cellpose import models
    except ImportError:
        raise DataError("dataset.segmentation.method=cellpose needs cellpose: pip install -e '.[cellpose]'") from None
    net = models.CellposeModel(gpu=False, pretrained_model=str(weights))
    cyto = np.stack([pixels[CHANNELS.index("AGP")], pixels[CHANNELS.index("DNA")]], axis=1)  # (Z, 2, Y, X)
    masks, *_ = net.eval(cyto, do_3D=True, z_axis=0, channel_axis=1, anisotropy=voxel[0] / voxel[1])
    return np.asarray(masks, np.int32)
