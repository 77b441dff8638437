"""One plate predicted image by image: read, check channels, outline, cut, classify; bad inputs named and skipped.

An image that cannot be used (unreadable, a mask of another size or without objects, another number of channels
or bit depth than the model's) is logged and listed in `skipped`, and the others go on; a plate none of whose images
is of the model's kind is one ConfigError naming both kinds and the files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cellexp.data.livecell.prepare import CropSettings
from cellexp.data.pixels import READ_ERRORS, describe
from cellexp.data.transforms import InputConfig
from cellexp.errors import ConfigError, DataError
from cellexp.plates.cells import cut_cells
from cellexp.plates.files import PlateImage
from cellexp.plates.reading import as_trained, read_field
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
    preview: tuple | None = None  # the first image with cells: its name, first channel and outlines, to draw


def predict_plate(
    images: list[PlateImage],
    source,
    classify: Classify,
    settings: CropSettings,
    inputs: InputConfig,
    batch_size: int,
    max_pixels: int | None = None,
) -> PlateResult:
    """Every usable image's cells; `source.outlines(path, pixels)` gives their outlines (segmenter or masks), from
    the first channel. Crops wait until a batch is full: images of a few cells each would otherwise make many small
    model calls."""
    result = PlateResult()
    wrong: dict[str, list[str]] = {}  # images of another kind than the model's, by kind
    for image in progress(images, desc="predicting", unit="img"):
        reason = _cut_image(image, source, settings, inputs, result, wrong, max_pixels)
        if reason is not None:
            log.warning("skipped %s: %s", image.path, reason)
            result.skipped.append({"input": str(image.path), "reason": reason})
        if sum(len(c) for c in result.pending) >= batch_size:
            _classify_pending(classify, result, batch_size)
    _classify_pending(classify, result, batch_size, last=True)
    if wrong and not result.images:
        found = "; ".join(
            f"{kind} ({', '.join(files[:3])}{' and more' if len(files) > 3 else ''})" for kind, files in wrong.items()
        )
        one_file_each = inputs.channels > 1 and not any(image.channel_files for image in images)
        hint = "; if each channel is a file of its own, give task.channel_pattern (e.g. '_ch(?P<channel>\\d+)')"
        raise ConfigError(
            f"the model was trained on {inputs.channels}-channel images ({inputs.kind}); the plate's images have "
            f"{found}: none of the {len(images)} images fits it{hint if one_file_each else ''}"
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
    image: PlateImage,
    source,
    settings: CropSettings,
    inputs: InputConfig,
    result: PlateResult,
    wrong: dict,
    max_pixels: int | None,
) -> str | None:
    """Adds the image's cells to `result` (their crops to its pending ones); returns why it was skipped, or None."""
    start = time.perf_counter()
    try:
        raw = read_field(image, max_pixels)
    except READ_ERRORS as err:
        return f"unreadable image ({type(err).__name__}: {' '.join(str(err).split())})"
    pixels = as_trained(raw, inputs)
    if pixels is None:
        wrong.setdefault(describe(raw), []).append(image.path.name)
        return f"{describe(raw)}; the model was trained on {inputs.channels}-channel images ({inputs.kind})"
    outlined = time.perf_counter()
    try:
        outlines = source.outlines(image.path, pixels[0])
    except DataError as err:
        return str(err)
    cut = time.perf_counter()
    if not outlines:
        return f"no cells: {source.empty}"
    cells = cut_cells(pixels, outlines, settings)
    if result.preview is None and len(cells.crops):
        result.preview = (image.path.name, pixels[0], outlines)
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
