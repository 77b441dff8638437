"""A plate's fields on disk: find them, read one as a (C, Z, Y, X) stack with its voxel size, write one.

Layouts (`dataset.layout`):
    ome-tiff   one OME-TIFF per field, its CZYX stack and physical sizes in the OME-XML (read by tifffile)
    ome-zarr   ...
    planes     ...
Fields are named by plate, well (A01) and site; what a field's files are is the layout's business, so the crops of
one plate come out the same whichever way it was saved.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from cellexp.errors import DataError

# Cell Painting's five channels, in the order of the JUMP protocol
CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")
LAYOUTS = ("ome-tiff",)
# a field's path relative to the plate root, per layout, unless `dataset.field_pattern` says otherwise
FIELD_PATTERNS = {"ome-tiff": r"(?P<plate>[^/]+)/(?P<well>[A-Za-z]{1,2}\d{1,2})_s(?P<site>\d+)\.ome\.tiff?"}
# what a damaged or foreign file raises from the readers
FIELD_ERRORS = (OSError, ValueError, EOFError, KeyError, IndexError, tifffile.TiffFileError)


@dataclass(frozen=True)
class FieldRef:
    plate: str
    well: str  # A01: a row letter and a two-digit column
    site: int
    layout: str
    path: Path  # the field's file (ome-tiff), image group (ome-zarr) or first plane (planes)

    @property
    def name(self) -> str:
        return f"{self.plate}_{self.well}_s{self.site}"


@dataclass(frozen=True)
class FieldPixels:
    pixels: np.ndarray  # (C, Z, Y, X)
    voxel_size: tuple[float, float, float] | None  # z, y, x in micrometres, where the file records them


def well_name(row: str | int, column: str | int) -> str:
    """'A01' from a row (letter, or 1-based number) and a column: the JUMP and pycytominer spelling."""
    letter = row.upper() if isinstance(row, str) and row.isalpha() else chr(ord("A") + int(row) - 1)
    return f"{letter}{int(column):02d}"


def normal_well(text: str) -> str:
    """'a1', 'A1' and 'A01' all as 'A01'."""
    match = re.fullmatch(r"([A-Za-z]{1,2})(\d{1,3})", str(text).strip())
    if not match:
        raise DataError(f"{text!r} is not a well name (a row letter and a column number, e.g. A01)")
    return well_name(match.group(1), match.group(2))


def find_fields(root: Path, layout: str, pattern: str | None = None) -> list[FieldRef]:
    """The plate's fields under `root`, sorted by plate, well and site."""
    root = Path(root)
    if layout not in LAYOUTS:
        raise DataError(f"dataset.layout={layout!r} is not one of {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise DataError(f"plate folder {root} does not exist (set dataset.root)")
    regex = re.compile(pattern or FIELD_PATTERNS[layout])
    fields = []
    for path in sorted(root.rglob("*")):
        match = regex.fullmatch(path.relative_to(root).as_posix())
        if match is None or not path.is_file():
            continue
        parts = match.groupdict()
        plate = parts.get("plate") or root.name
        fields.append(FieldRef(plate, normal_well(parts["well"]), int(parts["site"]), layout, path))
    if not fields:
        raise DataError(f"no {layout} fields under {root} (names matching {regex.pattern!r})")
    return sorted(fields, key=lambda f: (f.plate, f.well, f.site))


def read_field(field: FieldRef) -> FieldPixels:
    """The field's (C, Z, Y, X) pixels; raises one of FIELD_ERRORS, its message naming the file."""
    return _read_ome_tiff(field.path)


def write_field(
    root: Path, layout: str, field: tuple[str, str, int], pixels: np.ndarray, voxel_size: tuple[float, float, float]
) -> Path:
    """Save (C, Z, Y, X) pixels as field (plate, well, site) of a plate under `root`, atomically."""
    plate, well, site = field
    path = Path(root) / plate / f"{well}_s{site}.ome.tiff"
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


def _read_ome_tiff(path: Path) -> FieldPixels:
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ValueError(f"{path}: no image series")
        series = tif.series[0]
        pixels = _czyx(series.asarray(), series.axes, path)
        voxel = _ome_voxel_size(tif.ome_metadata) if tif.is_ome else None
    return FieldPixels(pixels, voxel)


def _czyx(array: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """An array with tifffile's axis letters as (C, Z, Y, X): a single time point, missing C or Z added."""
    axes = axes.upper().replace("S", "C") if "C" not in axes.upper() else axes.upper()
    if "T" in axes:
        if array.shape[axes.index("T")] != 1:
            raise ValueError(f"{path}: {array.shape[axes.index('T')]} time points; a field is one z-stack")
        array, axes = array.take(0, axis=axes.index("T")), axes.replace("T", "")
    for axis in "CZ":
        if axis not in axes:
            array, axes = array[None], axis + axes
    if sorted(axes) != sorted("CZYX"):
        raise ValueError(f"{path}: axes {axes}, expected C, Z, Y and X")
    return np.moveaxis(array, [axes.index(a) for a in "CZYX"], range(4))


def _ome_voxel_size(ome_xml: str | None) -> tuple[float, float, float] | None:
    """PhysicalSizeZ/Y/X of the first image's Pixels element, in micrometres; None where any is missing."""
    if not ome_xml:
        return None
    pixels = next((e for e in ElementTree.fromstring(ome_xml).iter() if e.tag.endswith("Pixels")), None)
    if pixels is None:
        return None
    sizes = [pixels.get(f"PhysicalSize{axis}") for axis in "ZYX"]
    if any(size is None for size in sizes):
        return None
    units = [pixels.get(f"PhysicalSize{axis}Unit", "µm") for axis in "ZYX"]
    return tuple(float(size) * _MICROMETRES.get(unit, 1.0) for size, unit in zip(sizes, units, strict=True))


_MICROMETRES = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}
