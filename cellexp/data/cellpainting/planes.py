"""Layout `planes`: one single-plane TIFF per channel per plane, as Opera Phenix / Harmony export them
(r01c01f01p01-ch1sk1fk1fl1.tiff: row, column, field, plane, channel; sk the time point), read by tifffile.

The files carry no physical sizes (Harmony keeps them in its Index.xml), so a field's voxel size is None and the
caller falls back to its configured one. A field is read only when its channels all have the same planes 1..Z and
its channels are 1..C: a missing file is named, not read as a gap."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import tifffile

from cellexp.data.cellpainting.common import (
    FieldError,
    FieldPixels,
    FieldRef,
    check_size,
    normal_well,
    reading,
    row_number,
    split_well,
    well_name,
)
from cellexp.errors import DataError

# matched against a file's name; groups row and col (or well), field (or site), plane, channel, optionally plate
PATTERN = r"r(?P<row>\d+)c(?P<col>\d+)f(?P<field>\d+)p(?P<plane>\d+)-ch(?P<channel>\d+)sk\d+fk\d+fl\d+\.tiff?"


def find(root: Path, regex: re.Pattern, pattern: str | None) -> list[FieldRef]:
    """One FieldRef per (plate, well, site), its path the field's first plane of its first channel."""
    _check_groups(regex)
    firsts: dict[tuple[str, str, int], tuple[tuple[int, int], Path]] = {}
    for path in sorted(root.rglob("*")):
        match = regex.fullmatch(path.name)
        if match is None or not path.is_file():
            continue
        relative = path.relative_to(root).parts
        plate = match.groupdict().get("plate") or (relative[0] if len(relative) > 1 else root.name)
        key = (plate, _well(match), _site(match))
        order = (int(match["channel"]), int(match["plane"]))
        if key in firsts and firsts[key][1].parent != path.parent:
            raise DataError(f"field {key} has planes in both {firsts[key][1].parent} and {path.parent}")
        if key not in firsts or order < firsts[key][0]:
            firsts[key] = (order, path)
    return [FieldRef(*key, "planes", path, pattern) for key, (_, path) in firsts.items()]


def read(field: FieldRef, max_voxels: int) -> FieldPixels:
    regex = re.compile(field.pattern or PATTERN)
    with reading(field.path.parent):
        grid = _grid(field, regex)
    channels = max(c for c, _ in grid)
    planes = max(p for _, p in grid)
    first = grid[min(grid)]
    with reading(first), tifffile.TiffFile(first) as tif:
        shape, dtype = tif.series[0].shape, tif.series[0].dtype
    check_size((channels, planes, *shape), first, max_voxels)
    if len(shape) != 2:
        raise FieldError(f"{first}: a {'x'.join(map(str, shape))} image; a plane file holds one 2-D plane")
    pixels = np.empty((channels, planes, *shape), dtype)
    for (channel, plane), path in grid.items():
        with reading(path), tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            if series.shape != shape or series.dtype != dtype:
                raise FieldError(f"{path}: a {series.dtype} {series.shape} plane, the field's first is {dtype} {shape}")
            pixels[channel - 1, plane - 1] = series.asarray()
    return FieldPixels(pixels, None)


def write(
    root: Path, plate: str, well: str, site: int, pixels: np.ndarray, voxel_size: tuple[float, float, float]
) -> Path:
    """Harmony's names, channels and planes numbered from 1; each file written to a temporary name first."""
    row, column = split_well(well)
    folder = root / plate
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for channel, stack in enumerate(pixels, start=1):
        for plane, image in enumerate(stack, start=1):
            path = folder / f"r{row_number(row):02d}c{column:02d}f{site:02d}p{plane:02d}-ch{channel}sk1fk1fl1.tiff"
            staging = path.with_name(path.name + ".tmp")
            tifffile.imwrite(staging, image, photometric="minisblack")
            staging.replace(path)
            paths.append(path)
    return paths[0]


def _grid(field: FieldRef, regex: re.Pattern) -> dict[tuple[int, int], Path]:
    """The field's files by (channel, plane), refused where one is missing or twice there."""
    match = regex.fullmatch(field.path.name)
    if match is None:
        raise FieldError(f"{field.path}: its name does not match the planes pattern {regex.pattern!r}")
    key = _key(match)
    folder = field.path.parent
    names = _names_by_field(folder, regex.pattern, folder.stat().st_mtime_ns).get(key, ())
    grid: dict[tuple[int, int], Path] = {}
    spans: dict[tuple[int, int], re.Match] = {}
    for name in names:
        other = regex.fullmatch(name)
        cell = (int(other["channel"]), int(other["plane"]))
        if cell in grid:
            raise FieldError(
                f"{folder / name}: channel {cell[0]} plane {cell[1]} again (also {grid[cell].name}; time points?)"
            )
        grid[cell], spans[cell] = folder / name, other
    if not grid:
        raise FieldError(f"{field.path}: no plane files for {field.name}")
    if min(c for c, _ in grid) < 1 or min(p for _, p in grid) < 1:
        raise FieldError(f"{field.path.parent}: {field.name}'s channels and planes are not numbered from 1")
    channels, planes = max(c for c, _ in grid), max(p for _, p in grid)
    missing = [(c, p) for c in range(1, channels + 1) for p in range(1, planes + 1) if (c, p) not in grid]
    if missing:
        wanted = [_missing_name(cell, spans) for cell in missing]
        shown = ", ".join(wanted[:6]) + (f" and {len(wanted) - 6} more" if len(wanted) > 6 else "")
        raise FieldError(
            f"{field.path.parent}: {field.name} lacks {len(missing)} of its {channels}x{planes} channel-plane "
            f"files: {shown}"
        )
    return grid


@lru_cache(maxsize=8)
def _names_by_field(folder: Path, pattern: str, stamp: int) -> dict[tuple, tuple[str, ...]]:
    """The folder's file names matching `pattern` by field (_key): listed once per process and folder state
    (`stamp`, the folder's mtime), not once per field, as a Harmony export holds every field's planes in one folder."""
    regex = re.compile(pattern)
    names: dict[tuple, list[str]] = {}
    for name in sorted(os.listdir(folder)):
        match = regex.fullmatch(name)
        if match is not None:
            names.setdefault(_key(match), []).append(name)
    return {key: tuple(found) for key, found in names.items()}


def _missing_name(cell: tuple[int, int], spans: dict[tuple[int, int], re.Match]) -> str:
    """The missing file's name: a sibling's, its channel or plane number replaced (same width)."""
    channel, plane = cell
    for (c, p), match in spans.items():
        if c == channel or p == plane:
            group, number = ("plane", plane) if c == channel else ("channel", channel)
            start, end = match.span(group)
            name = match.string
            return f"{name[:start]}{number:0{end - start}d}{name[end:]}"
    return f"channel {channel} plane {plane}"


def _key(match: re.Match) -> tuple[str | None, str, int]:
    """Which field a file belongs to within its folder: (the pattern's plate, if it has one, well, site)."""
    return match.groupdict().get("plate"), _well(match), _site(match)


def _well(match: re.Match) -> str:
    groups = match.groupdict()
    return normal_well(groups["well"]) if groups.get("well") else well_name(groups["row"], groups["col"])


def _site(match: re.Match) -> int:
    groups = match.groupdict()
    return int(groups["field"] if groups.get("field") is not None else groups["site"])


def _check_groups(regex: re.Pattern) -> None:
    names = set(regex.groupindex)
    has_well = {"row", "col"} <= names or "well" in names
    if not (has_well and names & {"field", "site"} and {"plane", "channel"} <= names):
        raise DataError(
            f"dataset.field_pattern {regex.pattern!r} for layout planes needs the groups row and col (or well), "
            "field (or site), plane and channel"
        )
