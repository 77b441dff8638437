"""Which images a plate has, and what their names say: plate (folder), well, site and time by a regex; with a
channel pattern, which files are the channels of one field."""

from __future__ import annotations

import glob
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from cellexp.data.pixels import SUFFIXES
from cellexp.errors import ConfigError, DataError

# file names of masks that tools write beside their images (cellpose: X_masks.tif, X_cp_masks.png, X_seg.npy)
MASK_MARKERS = ("_masks", "_cp_masks", "_seg")
FIELDS = ("well", "site", "time")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlateImage:
    path: Path  # the file; for a field of channel files, its name with the channel part taken out
    plate: str  # the folder it is in
    fields: dict  # well, site, time: None where the name does not give them
    channel_files: tuple[Path, ...] = ()  # a field's channel files, in channel order (none: `path` is the file)


def find_images(
    specs: list[str], pattern: str | None, channel_pattern: str | None = None
) -> tuple[list[PlateImage], list[dict]]:
    """The images that `specs` (folders, searched recursively, or globs) name, in name order, and the folders or
    globs that hold none (each a skipped entry). With `channel_pattern`, files whose names differ only in its
    `channel` group are one field's channels. No image at all is a DataError naming every spec."""
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
    if channel_pattern is None:
        images = [PlateImage(p, p.parent.name, _fields(p.name, regex)) for p in sorted(found)]
        return _warn_unnamed(images, pattern), skipped
    fields, unmatched = _channel_fields(sorted(found), _channel_regex(channel_pattern))
    if not fields:
        raise DataError(
            f"task.channel_pattern={channel_pattern!r} matches no image name there (e.g. {unmatched[0].name})"
        )
    skipped += [
        {"input": str(p), "reason": f"its name has no channel (task.channel_pattern={channel_pattern!r})"}
        for p in unmatched
    ]
    images = [PlateImage(path, path.parent.name, _fields(path.name, regex), files) for path, files in fields.items()]
    return _warn_unnamed(images, pattern), skipped


def missing_inputs(specs: list[str]) -> list[str]:
    """The specs that name a file or folder (no glob characters) that is not there: refused before any work."""
    return [spec for spec in specs if not glob.has_magic(spec) and not Path(spec).expanduser().exists()]


def _warn_unnamed(images: list[PlateImage], pattern: str | None) -> list[PlateImage]:
    """A pattern that reads no well from some names leaves their well and site empty in every table: say so once."""
    unnamed = [image.path.name for image in images if pattern and image.fields["well"] is None]
    if unnamed:
        log.warning(
            "%d of %d image names do not match task.name_pattern=%r (e.g. %s): their well, site and time are left "
            "empty; give task.name_pattern a regex with groups well, site, time that your names match",
            len(unnamed),
            len(images),
            pattern,
            unnamed[0],
        )
    return images


def _channel_regex(pattern: str) -> re.Pattern:
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"task.channel_pattern={pattern!r} is not a regular expression: {err}") from None
    if "channel" not in regex.groupindex:
        raise ConfigError(f"task.channel_pattern={pattern!r} needs a group named channel, e.g. '_ch(?P<channel>\\d+)'")
    return regex


def _channel_fields(paths: list[Path], regex: re.Pattern) -> tuple[dict[Path, tuple[Path, ...]], list[Path]]:
    """Files grouped into fields (the name without the pattern's match), channels in the order of their `channel`
    value (numbers as numbers); the files whose names the pattern does not match."""
    groups: dict[Path, list[tuple[tuple, Path]]] = {}
    unmatched = []
    for path in paths:
        match = regex.search(path.name)
        if match is None:
            unmatched.append(path)
            continue
        field = path.with_name(path.name[: match.start()] + path.name[match.end() :])
        value = match["channel"]
        order = (0, int(value), "") if value.isdigit() else (1, 0, value)
        groups.setdefault(field, []).append((order, path))
    return {field: tuple(p for _, p in sorted(members)) for field, members in sorted(groups.items())}, unmatched


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


def name_fields(name: str, pattern: str | None) -> dict:
    """Well, site and time as `pattern` (task.name_pattern) reads them from a file name; None where it does not."""
    return _fields(name, _compiled(pattern))


def _fields(name: str, regex: re.Pattern | None) -> dict:
    match = regex.search(name) if regex else None
    return {key: (match.groupdict().get(key) if match else None) for key in FIELDS}
