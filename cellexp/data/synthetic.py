"""A small, fake LIVECell: phase-contrast-like images of 8 cell lines in the exact release format.

Tests and demos need data that reads like LIVECell (same folders, names, COCO json with a dict
of annotations) and that a small CNN can learn without being handed the answer. Each line has
a style (shape, size, texture, nucleus, halo, density) whose ranges overlap with its look-alike
(BT474~MCF7, BV2~SkBr3, A172~SKOV3), and every cell draws its own values inside those ranges.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from tqdm import tqdm

from cellexp.data.build_once import COMPLETE_MARKER, build_once, is_complete
from cellexp.data.livecell import (
    ANNOTATION_DIR,
    CELL_LINES,
    SPLITS,
    annotation_file_name,
    image_dir_for_split,
    image_file_name,
)
from cellexp.errors import ConfigError, DataError

__all__ = ["LineStyle", "LINE_STYLES", "DEFAULT_IMAGES_PER_LINE", "generate_synthetic_livecell"]

DEFAULT_IMAGES_PER_LINE: Mapping[str, int] = MappingProxyType({"train": 4, "val": 1, "test": 1})

# LIVECell's frame; cell counts in the style table are per frame of this size.
_REFERENCE_AREA = 704 * 520
_BASE_VERTICES = 48
_MIN_AREA = 30.0
_MIN_VERTICES = 8

Range = tuple[float, float]


@dataclass(frozen=True)
class LineStyle:
    """How one cell line looks. Ranges are (low, high) and are drawn per cell unless noted."""

    count: tuple[int, int]  # cells per 704x520 image at density 1, drawn per image
    radius: Range  # equivalent radius of the body in px
    elongation: Range  # major/minor axis ratio
    lobes: Range  # amplitude of boundary harmonics k=2..4 (blocky, lobed outlines)
    jag: Range  # amplitude of harmonics k=5..12 (ragged, irregular outlines)
    neurites: tuple[int, int]  # number of thin protrusions
    neurite_length: Range  # protrusion length in units of the radius
    body: Range  # interior gray level relative to the background (phase-dark < 0)
    texture: Range  # amplitude of the interior texture (gray levels, 1 sd)
    granularity: Range  # 0 = fine speckle, 1 = coarse granules
    nucleus_ratio: Range  # nucleus radius / cell radius
    nucleus: Range  # nucleus gray level relative to the body
    rim: Range  # bright rim just inside the boundary (gray levels)
    rim_width: Range  # its decay length in px
    halo: Range  # bright ring just outside the boundary (gray levels)
    spacing: float  # minimum centre distance / (sum of radii); < 1 lets neighbours overlap
    clustering: float  # share of cells placed around a few colony centres instead of uniformly


# fmt: off  (one line per cell line reads as a table)
LINE_STYLES: Mapping[str, LineStyle] = MappingProxyType(
    {
        # glioblastoma: spindly, irregular, a few short processes; look-alike of SKOV3
        "A172": LineStyle(
            count=(45, 75),
            radius=(13, 22),
            elongation=(1.6, 3.2),
            lobes=(0.05, 0.2),
            jag=(0.03, 0.08),
            neurites=(0, 2),
            neurite_length=(0.4, 1.0),
            body=(-22, -8),
            texture=(4, 8),
            granularity=(0.3, 0.7),
            nucleus_ratio=(0.3, 0.45),
            nucleus=(-10, 0),
            rim=(4, 12),
            rim_width=(1.0, 2.0),
            halo=(10, 25),
            spacing=0.9,
            clustering=0.0,
        ),
        # breast carcinoma: small, round, packed in dense colonies; look-alike of MCF7
        "BT474": LineStyle(
            count=(110, 150),
            radius=(7, 11),
            elongation=(1.0, 1.4),
            lobes=(0.02, 0.1),
            jag=(0.0, 0.03),
            neurites=(0, 0),
            neurite_length=(0, 0),
            body=(-22, -8),
            texture=(3, 7),
            granularity=(0.2, 0.6),
            nucleus_ratio=(0.4, 0.6),
            nucleus=(-12, -2),
            rim=(2, 8),
            rim_width=(0.8, 1.5),
            halo=(6, 16),
            spacing=0.75,
            clustering=0.8,
        ),
        # microglia: small, round, bright with a strong halo; look-alike of SkBr3
        "BV2": LineStyle(
            count=(80, 130),
            radius=(6.5, 11),
            elongation=(1.0, 1.4),
            lobes=(0.02, 0.1),
            jag=(0.0, 0.03),
            neurites=(0, 1),
            neurite_length=(0.3, 0.8),
            body=(-8, 8),
            texture=(2, 5),
            granularity=(0.0, 0.4),
            nucleus_ratio=(0.35, 0.55),
            nucleus=(-8, 4),
            rim=(8, 18),
            rim_width=(1.0, 2.0),
            halo=(16, 36),
            spacing=1.0,
            clustering=0.2,
        ),
        # hepatoma: large, flat, polygonal, coarse texture
        "Huh7": LineStyle(
            count=(40, 60),
            radius=(18, 28),
            elongation=(1.0, 1.6),
            lobes=(0.08, 0.22),
            jag=(0.01, 0.04),
            neurites=(0, 0),
            neurite_length=(0, 0),
            body=(-14, -2),
            texture=(6, 12),
            granularity=(0.6, 1.0),
            nucleus_ratio=(0.25, 0.4),
            nucleus=(-14, -4),
            rim=(2, 8),
            rim_width=(1.0, 2.5),
            halo=(6, 14),
            spacing=0.85,
            clustering=0.5,
        ),
        # breast adenocarcinoma: medium, round epithelial colonies; look-alike of BT474
        "MCF7": LineStyle(
            count=(90, 140),
            radius=(9, 13),
            elongation=(1.0, 1.5),
            lobes=(0.03, 0.12),
            jag=(0.0, 0.03),
            neurites=(0, 0),
            neurite_length=(0, 0),
            body=(-20, -6),
            texture=(3, 7),
            granularity=(0.3, 0.7),
            nucleus_ratio=(0.35, 0.55),
            nucleus=(-12, -2),
            rim=(2, 8),
            rim_width=(0.8, 1.8),
            halo=(6, 16),
            spacing=0.8,
            clustering=0.7,
        ),
        # neuroblastoma: small bodies with long thin neurites
        "SHSY5Y": LineStyle(
            count=(60, 100),
            radius=(7, 11),
            elongation=(1.0, 1.8),
            lobes=(0.03, 0.12),
            jag=(0.0, 0.04),
            neurites=(0, 3),
            neurite_length=(0.5, 2.2),
            body=(-18, -4),
            texture=(3, 6),
            granularity=(0.2, 0.6),
            nucleus_ratio=(0.4, 0.6),
            nucleus=(-10, 0),
            rim=(4, 12),
            rim_width=(0.8, 1.5),
            halo=(10, 22),
            spacing=0.95,
            clustering=0.3,
        ),
        # breast adenocarcinoma: medium, round, haloed; look-alike of BV2
        "SkBr3": LineStyle(
            count=(70, 110),
            radius=(7.5, 12.5),
            elongation=(1.0, 1.5),
            lobes=(0.03, 0.12),
            jag=(0.0, 0.04),
            neurites=(0, 1),
            neurite_length=(0.3, 0.8),
            body=(-10, 6),
            texture=(3, 6),
            granularity=(0.1, 0.5),
            nucleus_ratio=(0.35, 0.55),
            nucleus=(-10, 2),
            rim=(6, 16),
            rim_width=(1.0, 2.0),
            halo=(14, 32),
            spacing=0.95,
            clustering=0.3,
        ),
        # ovarian carcinoma: large, irregular, elongated; look-alike of A172
        "SKOV3": LineStyle(
            count=(40, 70),
            radius=(16, 25),
            elongation=(1.4, 2.6),
            lobes=(0.1, 0.25),
            jag=(0.02, 0.07),
            neurites=(0, 1),
            neurite_length=(0.3, 0.8),
            body=(-20, -6),
            texture=(5, 10),
            granularity=(0.4, 0.8),
            nucleus_ratio=(0.3, 0.45),
            nucleus=(-12, -2),
            rim=(3, 10),
            rim_width=(1.0, 2.0),
            halo=(8, 20),
            spacing=0.85,
            clustering=0.2,
        ),
    }
)
# fmt: on


# ---------------------------------------------------------------- public entry


def generate_synthetic_livecell(
    root: Path,
    *,
    seed: int = 0,
    images_per_line: Mapping[str, int] = DEFAULT_IMAGES_PER_LINE,
    height: int = 520,
    width: int = 704,
    density: float = 1.0,
) -> Path:
    """Write a LIVECell-format dataset into `root` once and return `root`.

    Built once (`cellexp.data.build_once`): concurrent callers generate once, an interrupted run leaves no
    half-written `root`, and a later call with `root/.complete` present returns immediately.
    """
    root = Path(root)
    settings = _settings(seed, images_per_line, height, width, density)
    if is_complete(root):
        return _checked_settings(root, settings)
    _check_arguments(seed, images_per_line, height, width, density)
    build_once(root, lambda staging: _write_dataset(staging, settings), before=lambda: _check_target_free(root))
    return _checked_settings(root, settings)


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


def _settings(seed: int, images_per_line: Mapping[str, int], height: int, width: int, density: float) -> dict:
    """The generator's arguments as its marker file records them."""
    return json.loads(
        json.dumps(
            {
                "seed": seed,
                "images_per_line": dict(images_per_line),
                "height": height,
                "width": width,
                "density": density,
            }
        )
    )


def _checked_settings(root: Path, settings: dict) -> Path:
    """`root`, if the dataset in it was generated with `settings`: a folder made with other settings is not
    silently reused (its path names only the seed)."""
    recorded = json.loads((root / COMPLETE_MARKER).read_text() or "null")
    if recorded is not None and recorded != settings:
        differ = ", ".join(
            f"{key} {recorded.get(key)!r} there, {settings[key]!r} asked"
            for key in settings
            if recorded.get(key) != settings[key]
        )
        raise ConfigError(
            f"the synthetic dataset in {root} was generated with other settings ({differ}); "
            "give this one its own folder with dataset.root=<new folder>, or delete that one"
        )
    return root


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
    for split, line, index in tqdm(jobs, desc="synthetic LIVECell", unit="img", leave=False):
        rng = np.random.default_rng([seed, SPLITS.index(split), CELL_LINES.index(line), index])
        name = _image_name(rng, split, line, index)
        pixels, polygons = _render_image(rng, LINE_STYLES[line], height, width, density)
        Image.fromarray(pixels, mode="L").save(out / image_dir_for_split(split) / name, format="TIFF")
        coco[split]["images"].append({"id": next_image_id, "file_name": name, "width": width, "height": height})
        for polygon in polygons:
            annotation = _annotation(next_annotation_id, next_image_id, polygon)
            coco[split]["annotations"][str(next_annotation_id)] = annotation
            next_annotation_id += 1
        next_image_id += 1

    for split in SPLITS:
        text = json.dumps(coco[split], separators=(",", ":"))
        (out / ANNOTATION_DIR / annotation_file_name(split)).write_text(text)
    return json.dumps(settings, sort_keys=True) + "\n"  # the completion marker records the settings


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
        "area": round(_polygon_area(polygon), 2),
        "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
        "iscrowd": 0,
    }


def _polygon_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# ---------------------------------------------------------------- one image


def _render_image(
    rng: np.random.Generator, style: LineStyle, height: int, width: int, density: float
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One uint8 image of a single line and the (N, 2) polygons of its cells, in drawing order."""
    background = _background(rng, height, width)
    canvas = background.copy()
    texture = _texture_fields(rng, height, width)
    count = _cell_count(rng, style, height, width, density)
    radii = rng.uniform(*style.radius, size=count)
    centres, radii = _place_centres(rng, style, radii, height, width)
    polygons = []
    for centre, radius in zip(centres, radii, strict=True):
        polygon = _clip_polygon(_cell_outline(rng, style, centre, radius), height, width)
        if polygon is None:
            continue
        _paint_cell(rng, style, canvas, background, texture, polygon, centre, radius)
        polygons.append(polygon)
    return _finish(rng, canvas), polygons


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Mid-gray field with a mild illumination gradient and faint large-scale blotches."""
    level = rng.uniform(112, 128)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * (xx / width - 0.5) + np.sin(angle) * (yy / height - 0.5)) * rng.uniform(4, 14)
    coarse = rng.standard_normal((max(2, height // 64), max(2, width // 64))).astype(np.float32)
    blotches = np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.Resampling.BICUBIC))
    return (level + ramp + 2.5 * blotches).astype(np.float32)


def _texture_fields(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-variance fine speckle and coarse granules; each cell mixes the two by its granularity."""
    fields = []
    for sigma in (0.7, 2.2):
        field = ndimage.gaussian_filter(rng.standard_normal((height, width), dtype=np.float32), sigma)
        fields.append(field / max(float(field.std()), 1e-6))
    return fields[0], fields[1]


def _finish(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Camera noise and a touch of optical blur, then 8 bits."""
    noisy = canvas + rng.uniform(2.5, 4.5) * rng.standard_normal(canvas.shape, dtype=np.float32)
    blurred = ndimage.gaussian_filter(noisy, 0.6)
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- where the cells go


def _cell_count(rng: np.random.Generator, style: LineStyle, height: int, width: int, density: float) -> int:
    """Cells per image scale with the frame's area and the requested density."""
    base = rng.integers(style.count[0], style.count[1] + 1)
    return max(1, int(round(base * density * height * width / _REFERENCE_AREA)))


def _place_centres(
    rng: np.random.Generator, style: LineStyle, radii: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Centres, and the radii of the cells that found room, kept `spacing` apart; some lines grow in colonies.

    Each cell tries a batch of candidates at once (vectorised); a cell with no free spot is
    dropped, so very high densities saturate instead of stacking cells on top of each other.
    """
    n_colonies = max(1, int(rng.integers(2, 6)))
    colonies = rng.uniform((0, 0), (width, height), size=(n_colonies, 2))
    spread = np.sqrt(len(radii) / n_colonies) * float(np.mean(radii)) * 0.8
    placed, placed_r = np.empty((0, 2)), np.empty(0)
    for radius in radii:
        candidates = _candidate_centres(rng, style, colonies, spread, height, width, n=24)
        if len(placed):
            gap = np.linalg.norm(candidates[:, None, :] - placed[None, :, :], axis=2)
            ok = np.all(gap >= style.spacing * (radius + placed_r[None, :]), axis=1)
            if not ok.any():
                continue
            candidates = candidates[ok]
        placed = np.vstack([placed, candidates[:1]])
        placed_r = np.append(placed_r, radius)
    return placed, placed_r


def _candidate_centres(
    rng: np.random.Generator, style: LineStyle, colonies: np.ndarray, spread: float, height: int, width: int, n: int
) -> np.ndarray:
    """Uniform candidates mixed with candidates around colony centres."""
    uniform = rng.uniform((0, 0), (width, height), size=(n, 2))
    around = colonies[rng.integers(0, len(colonies), size=n)] + rng.normal(0, spread, size=(n, 2))
    use_colony = rng.random(n) < style.clustering
    candidates = np.where(use_colony[:, None], around, uniform)
    return np.clip(candidates, (0, 0), (width - 1, height - 1))


# ---------------------------------------------------------------- one cell's outline


def _cell_outline(rng: np.random.Generator, style: LineStyle, centre: np.ndarray, radius: float) -> np.ndarray:
    """A star-shaped polygon r(theta) = R (1 + sum_k a_k cos(k theta + phi_k)) plus thin radial spikes.

    Star-shaped around the centre means it never self-intersects; the spikes (neurites) get extra
    vertices around their angle so they stay thin instead of being cut off between samples.
    """
    n_neurites = int(rng.integers(style.neurites[0], style.neurites[1] + 1))
    spike_angle = rng.uniform(0, 2 * math.pi, n_neurites)
    spike_width = rng.uniform(0.035, 0.07, n_neurites)
    spike_length = radius * rng.uniform(*style.neurite_length, n_neurites) if n_neurites else np.empty(0)

    theta = np.linspace(0, 2 * math.pi, _BASE_VERTICES, endpoint=False) + rng.uniform(0, 2 * math.pi / _BASE_VERTICES)
    around_spikes = (spike_angle[:, None] + spike_width[:, None] * np.linspace(-3, 3, 9)[None, :]).ravel()
    theta = np.unique(np.mod(np.concatenate([theta, around_spikes]), 2 * math.pi))

    shape = 1.0 + _harmonics(rng, theta, range(2, 5), style.lobes) + _harmonics(rng, theta, range(5, 13), style.jag)
    r = radius * np.maximum(shape, 0.35)
    for angle, width, length in zip(spike_angle, spike_width, spike_length, strict=True):
        offset = np.angle(np.exp(1j * (theta - angle)))  # wrapped to (-pi, pi]
        r = r + length * np.exp(-((offset / width) ** 2))

    elongation = math.sqrt(rng.uniform(*style.elongation))
    x, y = r * np.cos(theta) * elongation, r * np.sin(theta) / elongation
    turn = rng.uniform(0, math.pi)
    c, s = math.cos(turn), math.sin(turn)
    return np.stack([centre[0] + c * x - s * y, centre[1] + s * x + c * y], axis=1)


def _harmonics(rng: np.random.Generator, theta: np.ndarray, orders: range, amplitude: Range) -> np.ndarray:
    """Sum of cosines with random phases; the total amplitude is drawn from `amplitude`."""
    scale = rng.uniform(*amplitude)
    weights = rng.uniform(0.3, 1.0, len(orders))
    weights *= scale / weights.sum() * math.sqrt(len(orders))
    phases = rng.uniform(0, 2 * math.pi, len(orders))
    k = np.asarray(list(orders), dtype=np.float64)
    return (weights[:, None] * np.cos(k[:, None] * theta[None, :] + phases[:, None])).sum(axis=0)


def _clip_polygon(polygon: np.ndarray, height: int, width: int) -> np.ndarray | None:
    """Keep the polygon inside the frame (cells are cut at the border, as in LIVECell); None if too small."""
    clipped = np.round(np.clip(polygon, (0, 0), (width - 1, height - 1)), 2)
    keep = np.any(clipped != np.roll(clipped, 1, axis=0), axis=1)  # drop repeated vertices from clipping
    clipped = clipped[keep]
    if len(clipped) < _MIN_VERTICES or _polygon_area(clipped) < _MIN_AREA:
        return None
    return clipped


# ---------------------------------------------------------------- one cell's pixels


def _paint_cell(
    rng: np.random.Generator,
    style: LineStyle,
    canvas: np.ndarray,
    background: np.ndarray,
    texture: tuple[np.ndarray, np.ndarray],
    polygon: np.ndarray,
    centre: np.ndarray,
    radius: float,
) -> None:
    """Draw one cell into `canvas` in place, working only in a patch around its polygon.

    Inside the polygon the cell replaces what was there (later cells occlude earlier ones);
    outside it only adds its halo, so touching neighbours share bright seams as in phase contrast.
    """
    height, width = canvas.shape
    halo_reach = 6
    x0 = max(0, int(math.floor(polygon[:, 0].min())) - halo_reach)
    y0 = max(0, int(math.floor(polygon[:, 1].min())) - halo_reach)
    x1 = min(width, int(math.ceil(polygon[:, 0].max())) + halo_reach + 1)
    y1 = min(height, int(math.ceil(polygon[:, 1].max())) + halo_reach + 1)
    inside = _fill_mask(polygon - (x0, y0), y1 - y0, x1 - x0)
    if not inside.any():
        return
    depth = ndimage.distance_transform_edt(inside)  # px to the boundary, inside
    reach = ndimage.distance_transform_edt(~inside)  # px to the boundary, outside

    mix = rng.uniform(*style.granularity)
    grain = (1 - mix) * texture[0][y0:y1, x0:x1] + mix * texture[1][y0:y1, x0:x1]
    body = (
        rng.uniform(*style.body)
        + rng.uniform(*style.texture) * grain
        + rng.uniform(*style.rim) * np.exp(-(depth - 1) / rng.uniform(*style.rim_width))
        + rng.uniform(*style.nucleus) * _nucleus(rng, style, centre - (x0, y0), radius, inside.shape)
    )
    halo = rng.uniform(*style.halo) * np.exp(-reach / 1.6)

    patch = canvas[y0:y1, x0:x1]
    patch += np.where(inside, 0.0, halo).astype(np.float32)
    patch[inside] = background[y0:y1, x0:x1][inside] + body[inside]


def _fill_mask(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    image = Image.new("1", (width, height), 0)
    ImageDraw.Draw(image).polygon([tuple(p) for p in polygon.tolist()], fill=1)
    return np.asarray(image, dtype=bool)


def _nucleus(
    rng: np.random.Generator, style: LineStyle, centre: np.ndarray, radius: float, shape: tuple[int, int]
) -> np.ndarray:
    """A soft-edged ellipse near the centre, weight 1 inside, fading to 0 over ~15% of its radius."""
    ratio = rng.uniform(*style.nucleus_ratio)
    a, b = radius * ratio * rng.uniform(0.9, 1.3), radius * ratio * rng.uniform(0.8, 1.1)
    cx, cy = centre + rng.normal(0, 0.12 * radius, 2)
    turn = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    dx, dy = xx - cx, yy - cy
    u = (math.cos(turn) * dx + math.sin(turn) * dy) / a
    v = (-math.sin(turn) * dx + math.cos(turn) * dy) / b
    q = np.sqrt(u * u + v * v)
    return np.clip((1.0 - q) / 0.15, 0.0, 1.0)
