"""Layout `ome-zarr`: OME-Zarr (NGFF) HCS plates, <plate>.zarr/<row>/<column>/<field>/ multiscale images with axes
(t,) c, z, y, x, read and written through the `ome-zarr` package.

Why ome-zarr and not bioio's OME-Zarr plugin: it is maintained by the OME team that writes the NGFF specification,
it reads the plate and well metadata (which wells, which fields) rather than leaving us to walk folders, it reads
both 0.4 (Zarr v2) and 0.5 (Zarr v3) plates, and it needs no plugin layer in between. Only level 0 of each pyramid
is read; the physical voxel size is its scale transformation (times the image's own, if any) in the axes' units.
Plates are written as OME-Zarr 0.5, one chunk per channel and plane, one writer at a time per plate.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Multiscales, Reader
from ome_zarr.writer import check_format, write_image, write_plate_metadata, write_well_metadata

from cellexp.data.cellpainting.common import (
    CHANNELS,
    READ_ERRORS,
    FieldError,
    FieldPixels,
    FieldRef,
    check_size,
    czyx,
    micrometres,
    reading,
    row_number,
    split_well,
    well_name,
)
from cellexp.errors import DataError

log = logging.getLogger(__name__)
# ome-zarr opens every location as 0.5 first and logs a WARNING for each 0.4 (Zarr v2) group it then detects: one per
# well and field of such a plate, and nothing wrong; reading both versions is what we ask of it
logging.getLogger("ome_zarr.io").addFilter(lambda record: not record.getMessage().startswith("version mismatch"))

# matched against a plate folder's path relative to the root (where the root is not itself a plate)
PATTERN = r"(?:.+/)?(?P<plate>[^/]+?)(?:\.ome)?\.zarr"


def find(root: Path, regex: re.Pattern, pattern: str | None) -> list[FieldRef]:
    """The fields the plates' metadata list: a plate's wells, each well's fields."""
    plates = [root] if "plate" in _attrs(root) else _plate_folders(root, regex)
    fields = []
    for folder in plates:
        try:
            fields += _plate_fields(root, folder, regex, pattern)
        except READ_ERRORS as err:
            raise DataError(f"{folder}: unreadable OME-Zarr plate metadata ({type(err).__name__}: {err})") from err
    return fields


def read(field: FieldRef, max_voxels: int) -> FieldPixels:
    path = field.path
    with reading(path):
        location = parse_url(path)
        if location is None:
            raise FieldError(f"{path}: no OME-Zarr group here (its zarr.json or .zattrs is missing or damaged)")
        node = next(iter(Reader(location)()), None)
        if node is None or node.load(Multiscales) is None:
            raise FieldError(f"{path}: no multiscales image")
        axes = [axis if isinstance(axis, str) else axis["name"] for axis in node.metadata["axes"]]
        if any(len(name) != 1 for name in axes):
            raise FieldError(f"{path}: axes {axes}, expected t, c, z, y and x")
        level = node.data[0]
        check_size(level.shape, path, max_voxels)
        pixels = czyx(level.compute(scheduler="synchronous"), "".join(axes), path)
        voxel = _voxel_size(node.metadata, location.root_attrs)
    return FieldPixels(pixels, voxel)


def write(
    root: Path, plate: str, well: str, site: int, pixels: np.ndarray, voxel_size: tuple[float, float, float]
) -> Path:
    """The image written beside the plate, moved into place, then listed in the well's and the plate's metadata."""
    row, column = split_well(well)
    folder = root / f"{plate}.zarr"
    plate_group = zarr.open_group(str(folder), mode="a")
    fmt = check_format(plate_group)  # 0.5 for a new plate, an existing 0.4 plate's own version
    well_group = plate_group.require_group(f"{row}/{column}")
    image = folder / row / str(column) / str(site)
    staging = root / f".{plate}.zarr.{row}{column}_{site}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    z, y, x = voxel_size
    write_image(
        pixels,
        str(staging),
        scale_factors=[],
        axes=["c", "z", "y", "x"],
        scale={"c": 1.0, "z": z, "y": y, "x": x},
        axes_units=dict.fromkeys("zyx", "micrometer"),
        storage_options={"chunks": (1, 1, *pixels.shape[2:])},
        name=f"{plate}_{well}_s{site}",
        fmt=fmt,
        omero=_omero(pixels),
    )
    if image.exists():
        shutil.rmtree(image)
    staging.rename(image)
    images = {entry["path"] for entry in _attrs(folder / row / str(column)).get("well", {}).get("images", [])}
    write_well_metadata(well_group, sorted(images | {str(site)}, key=_natural))
    metadata = _attrs(folder).get("plate", {})
    rows = {entry["name"] for entry in metadata.get("rows", [])} | {row}
    columns = {entry["name"] for entry in metadata.get("columns", [])} | {str(column)}
    wells = {entry["path"] for entry in metadata.get("wells", [])} | {f"{row}/{column}"}
    write_plate_metadata(
        plate_group,
        sorted(rows, key=row_number),
        sorted(columns, key=int),
        sorted(wells, key=lambda w: (row_number(w.split("/")[0]), int(w.split("/")[1]))),
        name=metadata.get("name") or plate,
        field_count=max(metadata.get("field_count", 0), len(images | {str(site)})),
    )
    return image


def _plate_fields(root: Path, folder: Path, regex: re.Pattern, pattern: str | None) -> list[FieldRef]:
    metadata = _attrs(folder).get("plate")
    if metadata is None:
        log.warning("%s: no OME-Zarr plate metadata; skipped", folder)
        return []
    match = regex.fullmatch(folder.relative_to(root).as_posix()) if folder != root else None
    name = metadata.get("name") or (match and match.groupdict().get("plate")) or _stem(folder)
    fields = []
    for well in metadata["wells"]:
        row, column = well["path"].split("/")
        images = _attrs(folder / well["path"]).get("well", {}).get("images")
        if not images:
            log.warning("%s: the plate lists well %s, which has no well metadata; skipped", folder, well["path"])
            continue
        for index, image in enumerate(images):
            site = int(image["path"]) if image["path"].isdigit() else index
            path = folder / well["path"] / image["path"]
            fields.append(FieldRef(name, well_name(row, column), site, "ome-zarr", path, pattern))
    return fields


def _plate_folders(root: Path, regex: re.Pattern) -> list[Path]:
    """Folders under root whose relative path matches, not looking inside any .zarr folder (its chunks)."""
    found = []
    for parent, children, _ in os.walk(root):
        children.sort()
        for child in list(children):
            folder = Path(parent) / child
            if regex.fullmatch(folder.relative_to(root).as_posix()):
                found.append(folder)
            if folder in found or child.endswith(".zarr"):
                children.remove(child)
    return found


def _attrs(path: Path) -> dict:
    """The OME attributes of the group at `path` (Zarr v2 or v3), {} where there is none."""
    location = parse_url(path)
    return location.root_attrs if location is not None else {}


def _voxel_size(metadata: dict, attrs: dict) -> tuple[float, float, float] | None:
    """z, y, x in micrometres: level 0's scale times the image's own scale, in the axes' units."""
    axes = [axis if isinstance(axis, dict) else {"name": axis} for axis in metadata["axes"]]
    names = [axis["name"] for axis in axes]
    transforms = (metadata.get("coordinateTransformations") or [[]])[0] or []
    transforms = transforms + (attrs.get("multiscales") or [{}])[0].get("coordinateTransformations", [])
    scales = [t["scale"] for t in transforms if t.get("type") == "scale"]
    if not scales or not set("zyx") <= set(names):
        return None
    scale = np.prod(np.asarray(scales, dtype=float), axis=0)
    return micrometres([scale[names.index(a)] for a in "zyx"], [axes[names.index(a)].get("unit") for a in "zyx"])


def _omero(pixels: np.ndarray) -> dict:
    """Channel names for viewers (napari, OMERO); the window is the dtype's range."""
    info = np.iinfo(pixels.dtype) if pixels.dtype.kind in "ui" else None
    low, high = (info.min, info.max) if info else (float(pixels.min()), float(pixels.max()))
    window = {"min": low, "max": high, "start": low, "end": high}
    names = [CHANNELS[c] if c < len(CHANNELS) else f"channel {c + 1}" for c in range(len(pixels))]
    return {"channels": [{"label": name, "color": "FFFFFF", "window": window} for name in names]}


def _natural(text: str) -> tuple:
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def _stem(folder: Path) -> str:
    return re.sub(r"(\.ome)?\.zarr$", "", folder.name)
