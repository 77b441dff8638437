"""A plate's fields on disk: find them, read one as a (C, Z, Y, X) stack with its voxel size, write one.

Layouts (`dataset.layout`), one module each:
    ome-tiff   one OME-TIFF per field, its CZYX stack and physical sizes in the OME-XML (tifffile)
    ome-zarr   OME-Zarr HCS plates, <plate>.zarr/<row>/<column>/<field>/, physical sizes in the scale (ome-zarr)
    planes     one TIFF per channel per plane, Opera Phenix / Harmony names, no physical sizes (tifffile)
Fields are named by plate, well (A01) and site; what a field's files are is the layout's business, so the crops of
one plate come out the same whichever way it was saved. A damaged field raises one of FIELD_ERRORS naming its file,
so that the caller can name it and go on with the others.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tifffile

from cellexp.data.cellpainting import ome_tiff, ome_zarr, planes
from cellexp.data.cellpainting.common import (
    CHANNELS,
    FieldError,
    FieldPixels,
    FieldRef,
    normal_well,
    well_name,
)
from cellexp.errors import DataError

__all__ = [
    "CHANNELS",
    "FIELD_ERRORS",
    "FIELD_PATTERNS",
    "LAYOUTS",
    "MAX_VOXELS",
    "FieldError",
    "FieldPixels",
    "FieldRef",
    "find_fields",
    "normal_well",
    "read_field",
    "well_name",
    "write_field",
]

_MODULES = {"ome-tiff": ome_tiff, "ome-zarr": ome_zarr, "planes": planes}
LAYOUTS = tuple(_MODULES)
# per layout, unless `dataset.field_pattern` says otherwise: ome-tiff matches a file's path relative to the root,
# ome-zarr a plate folder's, planes a file's name
FIELD_PATTERNS = {layout: module.PATTERN for layout, module in _MODULES.items()}
# what a damaged or foreign file raises from read_field (the readers raise FieldError, a ValueError, naming the file)
FIELD_ERRORS = (FieldError, OSError, ValueError, EOFError, KeyError, IndexError, tifffile.TiffFileError)
# the most voxels (C*Z*Y*X) a field's header may declare before read_field refuses it: 4 GiB of 16-bit pixels
MAX_VOXELS = 2**31


def find_fields(root: Path, layout: str, pattern: str | None = None) -> list[FieldRef]:
    """The plate's fields under `root`, sorted by plate, well and site."""
    root = Path(root)
    module = _module(layout)
    if not root.is_dir():
        raise DataError(f"plate folder {root} does not exist (set dataset.root)")
    try:
        regex = re.compile(pattern or module.PATTERN)
    except re.error as err:
        raise DataError(f"dataset.field_pattern {pattern!r} is not a regular expression ({err})") from err
    fields = module.find(root, regex, pattern)
    if not fields:
        raise DataError(f"no {layout} fields under {root} (names matching {regex.pattern!r})")
    return sorted(fields, key=lambda f: (f.plate, f.well, f.site))


def read_field(field: FieldRef, channels: int | None = None, *, max_voxels: int = MAX_VOXELS) -> FieldPixels:
    """The field's (C, Z, Y, X) pixels; raises one of FIELD_ERRORS, its message naming the file: for a damaged file,
    a missing plane, a header declaring more than `max_voxels` voxels, or a stack of another channel count than
    `channels`."""
    read = _module(field.layout).read(field, max_voxels)
    if channels is not None and len(read.pixels) != channels:
        raise FieldError(f"{field.path}: {len(read.pixels)} channels, the plate's fields have {channels}")
    return read


def write_field(
    root: Path, layout: str, field: tuple[str, str, int], pixels: np.ndarray, voxel_size: tuple[float, float, float]
) -> Path:
    """Save (C, Z, Y, X) pixels as field (plate, well, site) of a plate under `root` (each file written to a temporary
    name, then moved into place); returns the path find_fields gives the field."""
    plate, well, site = field
    if np.ndim(pixels) != 4:
        raise ValueError(f"field {plate}_{well}_s{site}: pixels of shape {np.shape(pixels)}, expected (C, Z, Y, X)")
    return _module(layout).write(Path(root), plate, normal_well(well), int(site), np.asarray(pixels), voxel_size)


def _module(layout: str):
    if layout not in _MODULES:
        raise DataError(f"dataset.layout={layout!r} is not one of {', '.join(LAYOUTS)}")
    return _MODULES[layout]
