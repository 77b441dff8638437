"""What fields.py and its layout modules share: a field's name and pixels, well names, and the checks every reader
makes (a damaged file raises FieldError naming it; a header declaring an absurd stack is refused before any pixel
is allocated)."""

from __future__ import annotations

import math
import re
import struct
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from cellexp.errors import DataError

# Cell Painting's five channels, in the order of the JUMP protocol
CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")
# what readers raise on a damaged or foreign file, before `reading` names the file: tifffile's own errors, struct
# and zlib errors from a TIFF cut short, RuntimeError from a zarr chunk that does not decompress, TypeError from
# metadata of the wrong shape
READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    IndexError,
    TypeError,
    RuntimeError,
    struct.error,
    zlib.error,
    tifffile.TiffFileError,
)


class FieldError(ValueError):
    """A field that cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class FieldRef:
    plate: str
    well: str  # A01: a row letter and a two-digit column
    site: int
    layout: str
    path: Path  # the field's file (ome-tiff), image group (ome-zarr) or first plane (planes)
    pattern: str | None = None  # the file-name pattern find_fields was given (planes: how to find the other files)

    @property
    def name(self) -> str:
        return f"{self.plate}_{self.well}_s{self.site}"


@dataclass(frozen=True)
class FieldPixels:
    pixels: np.ndarray  # (C, Z, Y, X)
    voxel_size: tuple[float, float, float] | None  # z, y, x in micrometres, where the file records them


def well_name(row: str | int, column: str | int) -> str:
    """'A01' from a row (letters, or 1-based number: 27 is AA, as on a 1536-well plate) and a column: the JUMP and
    pycytominer spelling."""
    if isinstance(row, str) and row.isalpha():
        letters = row.upper()
    else:
        number = int(row)
        letters = (chr(ord("A") + (number - 1) // 26 - 1) if number > 26 else "") + chr(ord("A") + (number - 1) % 26)
    return f"{letters}{int(column):02d}"


def normal_well(text: str) -> str:
    """'a1', 'A1' and 'A01' all as 'A01'."""
    row, column = split_well(text)
    return well_name(row, column)


def split_well(text: str) -> tuple[str, int]:
    """('A', 1) from 'A01': the row letters and the column number."""
    match = re.fullmatch(r"([A-Za-z]{1,2})(\d{1,3})", str(text).strip())
    if not match:
        raise DataError(f"{text!r} is not a well name (a row letter and a column number, e.g. A01)")
    return match.group(1).upper(), int(match.group(2))


def row_number(letters: str) -> int:
    """1 for A, 26 for Z, 27 for AA: the inverse of well_name's row."""
    *first, last = letters.upper()
    return 26 * (ord(first[0]) - ord("A") + 1 if first else 0) + ord(last) - ord("A") + 1


@contextmanager
def reading(path: Path):
    """Any error reading `path` as a FieldError whose message names it."""
    try:
        yield
    except FieldError:
        raise
    except READ_ERRORS as err:
        raise FieldError(f"{path}: damaged or not an image ({type(err).__name__}: {err})") from err


def check_size(shape: tuple[int, ...], path: Path, max_voxels: int) -> None:
    """Refuse a stack whose header declares more than `max_voxels` voxels, before anything is allocated for it."""
    voxels = math.prod(int(n) for n in shape)
    if voxels > max_voxels:
        raise FieldError(
            f"{path}: the header declares a {'x'.join(str(n) for n in shape)} stack ({voxels} voxels), "
            f"over read_field's max_voxels={max_voxels}"
        )


def czyx(array: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """An array with one letter per axis (tifffile's, or OME-Zarr's t, c, z, y, x) as (C, Z, Y, X): a single time
    point, missing C or Z added."""
    axes = axes.upper().replace("S", "C") if "C" not in axes.upper() else axes.upper()
    if "T" in axes:
        if array.shape[axes.index("T")] != 1:
            raise FieldError(f"{path}: {array.shape[axes.index('T')]} time points; a field is one z-stack")
        array, axes = array.take(0, axis=axes.index("T")), axes.replace("T", "")
    for axis in "CZ":
        if axis not in axes:
            array, axes = array[None], axis + axes
    if sorted(axes) != sorted("CZYX"):
        raise FieldError(f"{path}: axes {axes}, expected C, Z, Y and X")
    return np.moveaxis(array, [axes.index(a) for a in "CZYX"], range(4))


def micrometres(sizes: list, units: list) -> tuple[float, float, float] | None:
    """z, y, x sizes in micrometres from sizes in the given units (OME-XML symbols or OME-Zarr's UDUNITS names);
    None where any size or unit is missing or unknown, so the caller falls back to its configured voxel size."""
    factors = [_MICROMETRES.get(unit) for unit in units]
    if any(size is None for size in sizes) or any(factor is None for factor in factors):
        return None
    return tuple(float(size) * factor for size, factor in zip(sizes, factors, strict=True))


_MICROMETRES = {
    "\u00b5m": 1.0,  # the micro sign, as OME-XML writes it
    "\u03bcm": 1.0,  # the Greek letter mu
    "um": 1.0,
    "micrometer": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "mm": 1e3,
    "millimeter": 1e3,
    "m": 1e6,
    "meter": 1e6,
}
