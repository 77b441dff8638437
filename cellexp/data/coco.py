"""COCO annotation files as LIVECell ships them (annotations keyed by id) or as the standard has them (a list)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from pycocotools.coco import COCO

from cellexp.errors import DataError


def load_coco(path: Path) -> COCO:
    """Read a COCO file whose `annotations` may be a list or a dict keyed by annotation id."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as err:
        raise DataError(f"cannot read annotation file {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise DataError(f"annotation file {path} is not valid JSON: {err}") from None
    missing = {"images", "annotations"} - set(data)
    if missing:
        raise DataError(f"annotation file {path} lacks COCO keys: {', '.join(sorted(missing))}")
    if isinstance(data["annotations"], dict):
        data["annotations"] = list(data["annotations"].values())
    data.setdefault("categories", [{"id": 1, "name": "cell"}])
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco
