"""Which images a plate has, and what their names say: plate (folder), well, site and time by a regex."""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from cellexp.errors import ConfigError, DataError
from cellexp.plates.reading import SUFFIXES

# file names of masks that tools write beside their images (cellpose: X_masks.tif, X_cp_masks.png, X_seg.npy)
MASK_MARKERS = ("_masks", "_cp_masks", "_seg")
FIELDS = ("well", "site", "time")


@dataclass(frozen=True)
class PlateImage:
    path: Path
    plate: str  # the folder it is in
    fields: dict  # well, site, time: None where the name does not give them


def find_images(specs: list[str], pattern: str | None) -> tuple[list[PlateImage], list[dict]]:
    """The images that `specs` (folders, searched recursively, or globs) name, in name order, and the folders or
    globs that hold none (each a skipped entry). No image at all is a DataError naming every spec."""
    regex = _compiled(pattern)
    found: dict[Path, None] = {}
    skipped = []
    for spec in specs:
        paths = _expand(spec)
        if not paths:
            skipped.append({"input": spec, "reason": "no images (" + ", ".join(SUFFIXES) + ")"})
        found.update(dict.fromkeys(paths))
        if Path(spec).expanduser().is_dir():
            skipped += _empty_folders(Path(spec).expanduser(), set(paths))
    if not found:
        raise DataError(f"task.images={specs}: no image files ({', '.join(SUFFIXES)}) there")
    return [PlateImage(p, p.parent.name, _fields(p.name, regex)) for p in sorted(found)], skipped


def is_image(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES and not path.stem.endswith(MASK_MARKERS) and path.is_file()


def _expand(spec: str) -> list[Path]:
    path = Path(spec).expanduser()
    candidates = path.rglob("*") if path.is_dir() else (Path(p) for p in glob.glob(str(path), recursive=True))
    return sorted(p for p in candidates if is_image(p))


def _empty_folders(root: Path, images: set[Path]) -> list[dict]:
    """Sub-folders of a plate folder without a single image below them: named, since a plate there was expected."""
    holding = {parent for p in images for parent in p.parents}
    return [
        {"input": str(folder), "reason": "folder with no images"}
        for folder in sorted(p for p in root.rglob("*") if p.is_dir())
        if folder not in holding
    ]


def _compiled(pattern: str | None) -> re.Pattern | None:
    if not pattern:
        return None
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"task.name_pattern={pattern!r} is not a regular expression: {err}") from None
    unknown = set(regex.groupindex) - set(FIELDS)
    if unknown:
        raise ConfigError(f"task.name_pattern names groups {sorted(unknown)}; it may name {', '.join(FIELDS)}")
    return regex


def _fields(name: str, regex: re.Pattern | None) -> dict:
    match = regex.search(name) if regex else None
    return {key: (match.groupdict().get(key) if match else None) for key in FIELDS}
