"""One plate predicted image by image: read, check channels, outline, cut, classify; bad inputs named and skipped.

An image that cannot be used (unreadable, a mask of another size or without objects, the wrong number of
channels) is logged and listed in `skipped`, and the others go on; a plate none of whose images has the model's
channel count is one ConfigError naming both counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cellexp.data.prepare import CropSettings
from cellexp.errors import ConfigError, DataError
from cellexp.plates.cells import cut_cells
from cellexp.plates.files import PlateImage
from cellexp.plates.reading import READ_ERRORS, read_channels
from cellexp.progress import progress

log = logging.getLogger(__name__)

Classify = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # crops -> probabilities, embeddings


@dataclass
class PlateResult:
    rows: list[dict] = field(default_factory=list)
    probabilities: list[np.ndarray] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    images: int = 0
    pending: list[np.ndarray] = field(default_factory=list)  # crops cut, not yet classified
    seconds: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "outline": 0.0, "cut": 0.0, "model": 0.0})


def predict_plate(
    images: list[PlateImage], source, classify: Classify, settings: CropSettings, channels: int, batch_size: int
) -> PlateResult:
    """Every usable image's cells; `source.outlines(path, pixels)` gives their outlines (segmenter or masks).
    Crops wait until a batch is full: images of a few cells each would otherwise make many small model calls."""
    result = PlateResult()
    wrong_channels: set[int] = set()
    for image in progress(images, desc="predicting", unit="img"):
        reason = _cut_image(image, source, settings, channels, result, wrong_channels)
        if reason is not None:
            log.warning("skipped %s: %s", image.path, reason)
            result.skipped.append({"input": str(image.path), "reason": reason})
        if sum(len(c) for c in result.pending) >= batch_size:
            _classify_pending(classify, result, batch_size)
    _classify_pending(classify, result, batch_size, last=True)
    if wrong_channels and not result.images:
        found = ", ".join(str(c) for c in sorted(wrong_channels))
        raise ConfigError(
            f"the model was trained on {channels}-channel images; the plate's images have {found} channels "
            f"({len(images)} images, none with {channels})"
        )
    return result


def _classify_pending(classify: Classify, result: PlateResult, batch_size: int, last: bool = False) -> None:
    """Classify the pending crops in whole batches (the rest waits for the next image, unless `last`): batches of
    one shape, as the test loop's, are what the model runs fastest."""
    crops = np.concatenate(result.pending) if result.pending else np.zeros((0, 0, 0), np.uint8)
    ready = len(crops) if last else len(crops) // batch_size * batch_size
    if not ready:
        return
    start = time.perf_counter()
    probabilities, embeddings = classify(crops[:ready])
    result.probabilities.append(probabilities)
    result.embeddings.append(embeddings)
    result.pending = [crops[ready:]] if ready < len(crops) else []
    result.seconds["model"] += time.perf_counter() - start


def _cut_image(
    image: PlateImage, source, settings: CropSettings, channels: int, result: PlateResult, wrong: set
) -> str | None:
    """Adds the image's cells to `result` (their crops to its pending ones); returns why it was skipped, or None."""
    start = time.perf_counter()
    try:
        pixels = read_channels(image.path)
    except READ_ERRORS as err:
        return f"unreadable image ({type(err).__name__}: {err})"
    if len(pixels) != channels:
        wrong.add(len(pixels))
        return f"{len(pixels)} channels; the model was trained on {channels}-channel images"
    gray = pixels[0]
    outlined = time.perf_counter()
    try:
        outlines = source.outlines(image.path, gray)
    except DataError as err:
        return str(err)
    cut = time.perf_counter()
    if not outlines:
        return f"no cells: {source.empty}"
    cells = cut_cells(gray, outlines, settings)
    for reason, count in cells.dropped.items():
        result.dropped[reason] = result.dropped.get(reason, 0) + count
    if len(cells.crops):
        result.pending.append(cells.crops)
        meta = {
            "Metadata_Plate": image.plate,
            "Metadata_Image": image.path.name,
            **{f"Metadata_{key.capitalize()}": value for key, value in image.fields.items()},
        }
        result.rows += [{**meta, **row} for row in cells.rows]
    spans = (outlined - start, cut - outlined, time.perf_counter() - cut)
    for key, seconds in zip(("read", "outline", "cut"), spans, strict=True):
        result.seconds[key] += seconds
    result.images += 1
    return None if len(cells.crops) else "no cells left after training's filters (min_area, drop_border_cells)"
