"""Prepared artefacts (generated datasets, crop and patch stores) are built once, atomically, by one process.

Every artefact is a folder that is complete when it holds COMPLETE_MARKER. It is built in a staging sibling
`<name>.partial` under a file lock, marked complete there, and renamed into place: concurrent ranks or jobs
wait and reuse it, a killed build leaves no half-written folder under the real name, and the next build starts
from the same staging folder, so nothing stale is left behind. A builder that keeps finished parts in the
staging folder (shards) resumes from them; others start from an empty one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from cellexp.errors import ConfigError

COMPLETE_MARKER = ".complete"


def is_complete(folder: Path) -> bool:
    return (Path(folder) / COMPLETE_MARKER).is_file()


def staging_folder(target: Path) -> Path:
    target = Path(target)
    return target.with_name(f"{target.name}.partial")


def build_once(
    target: Path,
    build: Callable[[Path], str | None],
    resumable: bool = False,
    before: Callable[[], None] | None = None,
) -> Path:
    """`target`, built by `build(staging)` unless already complete.

    `build` writes into the staging folder and may return the text of the completion marker (e.g. the
    settings it was built with). `before` runs under the lock before a build starts (a check that the target
    may be replaced). With `resumable`, what an interrupted build left in the staging folder is kept for
    `build` to reuse; otherwise it is cleared first.
    """
    target = Path(target)
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if is_complete(target):
            return target
        staging = staging_folder(target)
        if is_complete(staging):  # built, then killed before the rename
            _replace(target, staging)
            return target
        if before is not None:
            before()
        if not resumable:
            shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True, exist_ok=True)
        marker = build(staging)
        (staging / COMPLETE_MARKER).write_text(marker or "")
        _replace(target, staging)
    return target


def _replace(target: Path, staging: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def same_settings(root: Path, settings: dict, what: str, option: str) -> Path:
    """`root`, if the artefact in it was built with `settings` (its marker's text, as JSON): a folder made with other
    settings is not silently reused (its path names only some of them)."""
    recorded = json.loads((Path(root) / COMPLETE_MARKER).read_text() or "null")
    if recorded is not None and recorded != settings:
        differ = ", ".join(
            f"{key} {recorded.get(key)!r} there, {settings[key]!r} asked"
            for key in settings
            if recorded.get(key) != settings[key]
        )
        raise ConfigError(
            f"{what} in {root} was generated with other settings ({differ}); "
            f"give this one its own folder with {option}=<new folder>, or delete that one"
        )
    return root
