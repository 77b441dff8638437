"""A small, fake LIVECell: phase-contrast-like images of 8 cell lines in the exact release format.

Tests and demos need data that reads like LIVECell (same folders, names, COCO json with a dict
of annotations) and that a small CNN can learn without being handed the answer. Each line has
a style (shape, size, texture, nucleus, halo, density) whose ranges overlap with its look-alike
(BT474~MCF7, BV2~SkBr3, A172~SKOV3), and every cell draws its own values inside those ranges.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np
import tifffile
from PIL import Image

from cellexp.data.build_once import COMPLETE_MARKER, build_once, is_complete, same_settings
from cellexp.data.livecell.release import (
    ANNOTATION_DIR,
    CELL_LINES,
    SPLITS,
    annotation_file_name,
    image_dir_for_split,
    image_file_name,
)
from cellexp.data.synthetic.render import Cue, Debris, polygon_area, render_image, stain_image
from cellexp.data.synthetic.styles import LINE_STYLES
from cellexp.errors import ConfigError, DataError
from cellexp.progress import progress

__all__ = ["DEFAULT_IMAGES_PER_LINE", "generate_synthetic_livecell"]

# the phase channel and up to seven stained ones (Cell Painting's five fit)
MAX_CHANNELS = 8
DEFAULT_IMAGES_PER_LINE: Mapping[str, int] = MappingProxyType({"train": 4, "val": 1, "test": 1})
# the splits whose confounding cue follows the line (elsewhere it is drawn at random)
CONFOUNDED_SPLITS = ("train", "val")
# `context`'s debris per 1,000 px^2 of background, by line, in every split: each look-alike pair (BT474~MCF7,
# BV2~SkBr3, A172~SKOV3) differs, so that a cell's surroundings tell what the cell alone leaves in doubt
DEBRIS_DENSITY: Mapping[str, float] = MappingProxyType(
    {"A172": 0.0, "BT474": 4.0, "BV2": 0.0, "Huh7": 2.0, "MCF7": 0.0, "SHSY5Y": 2.0, "SkBr3": 4.0, "SKOV3": 4.0}
)

# ---------------------------------------------------------------- public entry


def generate_synthetic_livecell(
    root: Path,
    *,
    seed: int = 0,
    images_per_line: Mapping[str, int] = DEFAULT_IMAGES_PER_LINE,
    height: int = 520,
    width: int = 704,
    density: float = 1.0,
    confound: float = 0.0,
    channels: int = 1,
    bit_depth: int = 8,
    context: float = 0.0,
    confounded_splits: Sequence[str] = CONFOUNDED_SPLITS,
) -> Path:
    """Write a LIVECell-format dataset into `root` once and return `root`.

    `channels` > 1 adds fluorescence-like channels (each cell stained with its own brightness, on a dark
    background) after the phase-contrast one, written as a channel-first multi-page TIFF; `bit_depth=16` writes
    16-bit images, a 12-bit camera's range in them. The phase channel is the same in every variant.

    `confound` > 0 adds a shortcut for Grad-CAMO to catch: a background grating of that amplitude (grey levels)
    outside the cells whose orientation follows the cell line in train and val and is drawn at random in test
    (the image's `cue` in its COCO entry). A model that uses it does well on val and badly on test.
    `confounded_splits` names the splits where the cue follows the line; `[]` draws it at random in every split
    (the same images, unconfounded: a benchmark's oracle).

    `context` > 0 adds context that does inform, in every split: debris specks of that amplitude (grey levels) in
    the background, as dense as the line sheds them (DEBRIS_DENSITY), so that a model that throws the surroundings
    away loses something and one that reads the cue loses more.

    Built once (`cellexp.data.build_once`): concurrent callers generate once, an interrupted run leaves no
    half-written `root`, and a later call with `root/.complete` present returns immediately.
    """
    root = Path(root)
    settings = _settings(seed, images_per_line, height, width, density, confound, channels, bit_depth)
    settings.update(_context_settings(context, confounded_splits))
    if is_complete(root):
        return same_settings(root, settings, "the synthetic dataset", "dataset.root")
    _check_arguments(seed, images_per_line, height, width, density)
    for name, value in (("confound", confound), ("context", context)):
        if not 0 <= value <= 64:
            raise ConfigError(f"{name} is an amplitude in grey levels, in [0, 64], got {value!r}")
    if not set(confounded_splits) <= set(SPLITS):
        raise ConfigError(f"confounded_splits must be some of {', '.join(SPLITS)}, got {list(confounded_splits)}")
    if channels not in range(1, MAX_CHANNELS + 1) or bit_depth not in (8, 16):
        raise ConfigError(
            f"channels must be 1-{MAX_CHANNELS} and bit_depth 8 or 16, got channels={channels!r}, "
            f"bit_depth={bit_depth!r}"
        )
    build_once(root, lambda staging: _write_dataset(staging, settings), before=lambda: _check_target_free(root))
    return same_settings(root, settings, "the synthetic dataset", "dataset.root")


def _check_arguments(seed: int, images_per_line: Mapping[str, int], height: int, width: int, density: float) -> None:
    """Fail before any work on settings that cannot make a dataset."""
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer (it seeds numpy's Generator), got {seed!r}")
    unknown = set(images_per_line) - set(SPLITS)
    if unknown:
        raise ConfigError(f"images_per_line has unknown splits {sorted(unknown)}; expected some of {SPLITS}")
    if any(int(n) < 0 for n in images_per_line.values()):
        raise ConfigError(f"images_per_line must be non-negative, got {dict(images_per_line)}")
    if height < 32 or width < 32:
        raise ConfigError(f"height and width must be at least 32 px, got {height}x{width}")
    if not density > 0:
        raise ConfigError(f"density must be positive, got {density}")


def _settings(
    seed: int,
    images_per_line: Mapping[str, int],
    height: int,
    width: int,
    density: float,
    confound: float,
    channels: int,
    bit_depth: int,
) -> dict:
    """The generator's arguments as its marker file records them (confound, channels and bit depth only when not
    their defaults, so that datasets made before they existed still match)."""
    settings = {
        "seed": seed,
        "images_per_line": dict(images_per_line),
        "height": height,
        "width": width,
        "density": density,
    }
    if confound:
        settings["confound"] = confound
    if channels != 1:
        settings["channels"] = channels
    if bit_depth != 8:
        settings["bit_depth"] = bit_depth
    return json.loads(json.dumps(settings))


def _context_settings(context: float, confounded_splits: Sequence[str]) -> dict:
    """`context` and `confounded_splits` as the marker records them: only when not their defaults."""
    settings = {"context": context} if context else {}
    if tuple(confounded_splits) != CONFOUNDED_SPLITS:
        settings["confounded_splits"] = list(confounded_splits)
    return settings


def _check_target_free(root: Path) -> None:
    """Never replace a folder with someone else's files in it."""
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(
            f"{root} exists, is not empty and has no {COMPLETE_MARKER} marker; "
            "refusing to overwrite it with synthetic data (pick an empty or new folder)"
        )


# ---------------------------------------------------------------- dataset assembly


def _write_dataset(out: Path, settings: dict) -> str:
    """Images and the three json files; returns the completion marker's text (the settings)."""
    seed, images_per_line, height, width, density = (
        settings[key] for key in ("seed", "images_per_line", "height", "width", "density")
    )
    for split in SPLITS:
        (out / image_dir_for_split(split)).mkdir(parents=True, exist_ok=True)
    (out / ANNOTATION_DIR).mkdir(parents=True, exist_ok=True)

    jobs = [
        (split, line, index)
        for split in SPLITS
        for line in CELL_LINES
        for index in range(int(images_per_line.get(split, 0)))
    ]
    coco = {split: _empty_coco(seed) for split in SPLITS}
    next_image_id, next_annotation_id = 1, 1
    for split, line, index in progress(jobs, desc="synthetic LIVECell", unit="img"):
        rng = np.random.default_rng([seed, SPLITS.index(split), CELL_LINES.index(line), index])
        name = _image_name(rng, split, line, index)
        cue = _cue(settings, split, line, index)
        debris = None
        if settings.get("context"):
            stream = (seed, SPLITS.index(split), CELL_LINES.index(line), index, 2)
            debris = Debris(DEBRIS_DENSITY[line], settings["context"], stream)
        pixels, polygons = render_image(rng, LINE_STYLES[line], height, width, density, cue, debris)
        path = out / image_dir_for_split(split) / name
        if settings.get("channels", 1) == 1 and settings.get("bit_depth", 8) == 8:
            Image.fromarray(pixels, mode="L").save(path, format="TIFF")
        else:
            stain = np.random.default_rng([seed, SPLITS.index(split), CELL_LINES.index(line), index, 1])
            tifffile.imwrite(path, _variant(stain, pixels, polygons, settings))
        entry = {"id": next_image_id, "file_name": name, "width": width, "height": height}
        coco[split]["images"].append(entry if cue is None else {**entry, "cue": cue.index})
        for polygon in polygons:
            annotation = _annotation(next_annotation_id, next_image_id, polygon)
            coco[split]["annotations"][str(next_annotation_id)] = annotation
            next_annotation_id += 1
        next_image_id += 1

    for split in SPLITS:
        text = json.dumps(coco[split], separators=(",", ":"))
        (out / ANNOTATION_DIR / annotation_file_name(split)).write_text(text)
    return json.dumps(settings, sort_keys=True) + "\n"  # the completion marker records the settings


def _variant(rng: np.random.Generator, phase: np.ndarray, polygons: list[np.ndarray], settings: dict) -> np.ndarray:
    """The image as `settings` asks: the phase channel and its stained channels, at 8 or 16 bits; (H, W) for one
    channel, else (C, H, W)."""
    stains = [stain_image(rng, polygons, *phase.shape) for _ in range(settings.get("channels", 1) - 1)]
    if settings.get("bit_depth", 8) == 16:  # a 12-bit camera: offset 100, about 4,000 levels
        layers = [phase.astype(np.float32) * 16 + 100, *(s * 3500 + 200 for s in stains)]
        dtype, top = np.uint16, 65535
    else:
        layers = [phase.astype(np.float32), *(s * 220 + 10 for s in stains)]
        dtype, top = np.uint8, 255
    stack = np.stack([np.clip(np.rint(layer), 0, top).astype(dtype) for layer in layers])
    return stack[0] if len(stack) == 1 else stack


def _cue(settings: dict, split: str, line: str, index: int) -> Cue | None:
    """The confounding cue of one image: its own line's in the confounded splits (train and val), a random line's
    elsewhere (test)."""
    if not settings.get("confound"):
        return None
    kinds = len(CELL_LINES)
    if split not in settings.get("confounded_splits", CONFOUNDED_SPLITS):
        stream = [settings["seed"], 99, CELL_LINES.index(line), index]
        rng = np.random.default_rng(stream if split == "test" else [*stream, SPLITS.index(split)])
        return Cue(int(rng.integers(kinds)), kinds, settings["confound"])
    return Cue(CELL_LINES.index(line), kinds, settings["confound"])


def _empty_coco(seed: int) -> dict:
    return {
        "info": {"description": "synthetic LIVECell-format data (cellexp)", "version": "1.0", "seed": seed},
        "licenses": [],
        "images": [],
        "annotations": {},  # keyed by str(id), as in the LIVECell release
        "categories": [{"id": 1, "name": "cell"}],
    }


def _image_name(rng: np.random.Generator, split: str, line: str, index: int) -> str:
    """A LIVECell-style name; the well row encodes the split and the column the index, so names never collide."""
    well = f"{'CDE'[SPLITS.index(split)]}{index + 1}"
    location = int(rng.integers(1, 5))
    hours = 4 * int(rng.integers(0, 19))
    tile = int(rng.integers(1, 5))
    return image_file_name(line, well, location, hours, tile)


def _annotation(annotation_id: int, image_id: int, polygon: np.ndarray) -> dict:
    """COCO record for one polygon: flat [x1, y1, ...] segmentation, shoelace area, tight bbox."""
    xs, ys = polygon[:, 0], polygon[:, 1]
    x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": 1,
        "segmentation": [polygon.ravel().tolist()],  # already rounded to 0.01 px by _clip_polygon
        "area": round(polygon_area(polygon), 2),
        "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
        "iscrowd": 0,
    }
