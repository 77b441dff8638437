"""Find a dataset's files under its root: LIVECell's annotation files and image folders, or
LIVECell-CLS's published crop folders."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cellexp.data.livecell.prepare import CropFolderSource, SplitSource
from cellexp.data.livecell.release import SPLITS, annotation_file_name, image_dir_for_split
from cellexp.errors import DataError


def find_livecell_sources(root: Path, annotation_files: Mapping[str, str] | None = None) -> dict[str, SplitSource]:
    """Per split, the annotation file (explicit, else searched for under root) and its image folder."""
    root = _existing(root, "LIVECell")
    sources = {}
    for split in SPLITS:
        explicit = (annotation_files or {}).get(split)
        annotation = Path(explicit) if explicit else _search(root, annotation_file_name(split))
        if not annotation.is_file():
            raise DataError(f"annotation file for split {split!r} not found: {annotation}")
        image_dir = root / image_dir_for_split(split)
        if not image_dir.is_dir():
            raise DataError(f"image folder for split {split!r} not found: {image_dir}")
        sources[split] = SplitSource(annotation, image_dir)
    return sources


def find_livecell_cls_sources(root: Path) -> dict[str, CropFolderSource]:
    """LIVECell-CLS keeps LIVECell's splits as folders: <root>/{train,val,test}/<cell line>/*.png."""
    root = _existing(root, "LIVECell-CLS")
    missing = [split for split in SPLITS if not (root / split).is_dir()]
    if missing:
        raise DataError(f"{root} has no {', '.join(missing)} folder (expected {{train,val,test}}/<cell line>/*.png)")
    return {split: CropFolderSource(root / split) for split in SPLITS}


def _existing(root: Path, what: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist (set dataset.root to your {what} folder)")
    return root


def _search(root: Path, name: str) -> Path:
    """People keep LIVECell's json files in different places: take the shallowest match."""
    matches = sorted(root.rglob(name), key=lambda p: (len(p.parts), str(p)))
    if not matches:
        raise DataError(f"no {name} under {root} (or give dataset.annotation_files.<split>)")
    return matches[0]
