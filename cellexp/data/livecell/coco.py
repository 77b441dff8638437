"""COCO annotation files as LIVECell ships them (annotations keyed by id) or as the standard has them (a list).

Entries are checked one by one: an image without `id` or `file_name`, an annotation without `id`, `image_id` or a
usable `bbox` is named and skipped, like an unreadable image, instead of stopping the whole preparation. A file
that is not a COCO object at all (`5`, `images: null`) is one error naming the file and the key.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

from pycocotools.coco import COCO

from cellexp.errors import DataError


def read_coco(path: Path) -> tuple[COCO, list[dict]]:
    """The file indexed by pycocotools, and the entries skipped (each with its reason)."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"annotation file {path} holds {type(data).__name__} {str(data)[:40]!r}, not a COCO object")
    for key in ("images", "annotations"):
        if key not in data:
            raise DataError(f"annotation file {path} lacks the COCO key {key!r}")
    annotations = data["annotations"]
    if isinstance(annotations, dict):
        annotations = list(annotations.values())
    for key, value in (("images", data["images"]), ("annotations", annotations)):
        if not isinstance(value, list):
            raise DataError(f"annotation file {path}: {key!r} is {type(value).__name__}, not a list of entries")
    skipped: list[dict] = []
    images = [entry for k, entry in enumerate(data["images"]) if _image_ok(entry, k, skipped)]
    known = {entry["id"] for entry in images}
    anns = [entry for k, entry in enumerate(annotations) if _annotation_ok(entry, k, known, skipped)]
    for entry in anns:
        entry.setdefault("category_id", 1)  # pycocotools indexes by it; cells have one category
    coco = COCO()
    coco.dataset = {**data, "images": images, "annotations": anns}
    coco.dataset.setdefault("categories", [{"id": 1, "name": "cell"}])
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco, skipped


def load_coco(path: Path) -> COCO:
    """Read a COCO file whose `annotations` may be a list or a dict keyed by annotation id (bad entries dropped)."""
    return read_coco(path)[0]


def _read_json(path: Path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as err:
        raise DataError(f"cannot read annotation file {path}: {err.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"annotation file {path} is not valid JSON: {err}") from None


def _image_ok(entry, k: int, skipped: list[dict]) -> bool:
    reason = None
    if not isinstance(entry, dict):
        reason = f"not an object ({type(entry).__name__})"
    elif not isinstance(entry.get("id"), int) or isinstance(entry.get("id"), bool):
        reason = "no integer 'id'"
    elif not isinstance(entry.get("file_name"), str) or not entry["file_name"]:
        reason = "no 'file_name'"
    if reason:
        skipped.append({"image": f"images[{k}]", "reason": f"image entry skipped: {reason}"})
    return reason is None


def _annotation_ok(entry, k: int, images: set, skipped: list[dict]) -> bool:
    reason, name = None, f"annotations[{k}]"
    if not isinstance(entry, dict):
        reason = f"not an object ({type(entry).__name__})"
    else:
        name = f"annotation {entry.get('id', f'#{k}')}"
        bbox = entry.get("bbox")
        if not isinstance(entry.get("id"), int) or isinstance(entry.get("id"), bool):
            reason = "no integer 'id'"
        elif entry.get("image_id") not in images:
            reason = f"image_id {entry.get('image_id')!r} names no image of the file"
        elif not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) for v in bbox)):
            reason = f"bbox {str(bbox)[:40]} is not four finite numbers"
        elif bbox[2] < 0 or bbox[3] < 0:
            reason = f"bbox {bbox} has a negative size"
    if reason:
        skipped.append(
            {
                "image": f"image id {entry.get('image_id') if isinstance(entry, dict) else '?'}",
                "annotation_id": name,
                "reason": reason,
            }
        )
    return reason is None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
