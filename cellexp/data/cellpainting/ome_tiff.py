"""Layout `ome-tiff`: one OME-TIFF per field, <plate>/<well>_s<site>.ome.tiff, its CZYX stack and physical sizes in
the OME-XML, read and written by tifffile."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import tifffile

from cellexp.data.cellpainting.common import (
    CHANNELS,
    FieldError,
    FieldPixels,
    FieldRef,
    check_size,
    czyx,
    micrometres,
    normal_well,
    reading,
)

# matched against a file's path relative to the root
PATTERN = r"(?P<plate>[^/]+)/(?P<well>[A-Za-z]{1,2}\d{1,2})_s(?P<site>\d+)\.ome\.tiff?"


def find(root: Path, regex: re.Pattern, pattern: str | None) -> list[FieldRef]:
    fields = []
    for path in sorted(root.rglob("*")):
        match = regex.fullmatch(path.relative_to(root).as_posix())
        if match is None or not path.is_file():
            continue
        parts = match.groupdict()
        plate = parts.get("plate") or root.name
        fields.append(FieldRef(plate, normal_well(parts["well"]), int(parts["site"]), "ome-tiff", path, pattern))
    return fields


def read(field: FieldRef, max_voxels: int) -> FieldPixels:
    path = field.path
    with reading(path), tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise FieldError(f"{path}: no image series")
        series = tif.series[0]
        check_size(series.shape, path, max_voxels)
        # tifffile writes the OME-XML at the end: a file cut short loses it and reads as its first planes
        if path.name.lower().endswith((".ome.tif", ".ome.tiff")) and not tif.is_ome:
            raise FieldError(f"{path}: no OME-XML (the file is cut short, or not an OME-TIFF)")
        pixels = czyx(series.asarray(), series.axes, path)
        voxel = _voxel_size(tif.ome_metadata) if tif.is_ome else None
    return FieldPixels(pixels, voxel)


def write(
    root: Path, plate: str, well: str, site: int, pixels: np.ndarray, voxel_size: tuple[float, float, float]
) -> Path:
    path = root / plate / f"{well}_s{site}.ome.tiff"
    path.parent.mkdir(parents=True, exist_ok=True)
    z, y, x = voxel_size
    metadata = {
        "axes": "CZYX",
        "PhysicalSizeZ": z,
        "PhysicalSizeY": y,
        "PhysicalSizeX": x,
        "Channel": {"Name": list(CHANNELS[: len(pixels)])},
    }
    staging = path.with_name(path.name + ".tmp")
    tifffile.imwrite(staging, pixels, ome=True, metadata=metadata)
    staging.replace(path)
    return path


def _voxel_size(ome_xml: str | None) -> tuple[float, float, float] | None:
    """PhysicalSizeZ/Y/X of the first image's Pixels element, in micrometres (OME's default unit where none is
    given); None where any is missing."""
    if not ome_xml:
        return None
    pixels = next((e for e in ElementTree.fromstring(ome_xml).iter() if e.tag.endswith("Pixels")), None)
    if pixels is None:
        return None
    sizes = [pixels.get(f"PhysicalSize{axis}") for axis in "ZYX"]
    return micrometres(sizes, [pixels.get(f"PhysicalSize{axis}Unit", "\u00b5m") for axis in "ZYX"])
