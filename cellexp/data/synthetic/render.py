"""Drawing one synthetic phase-contrast image: background, cell outlines, bodies, nuclei, halos, noise."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from cellexp.data.synthetic.styles import LineStyle, Range

# LIVECell's frame; cell counts in the style table are per frame of this size.
_REFERENCE_AREA = 704 * 520
_BASE_VERTICES = 48
_MIN_AREA = 30.0
_MIN_VERTICES = 8


def polygon_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# A confounding cue's grating: period in px, and the band around each cell it leaves alone (the halo).
CUE_PERIOD = 9.0
CUE_CLEARANCE = 2


@dataclass(frozen=True)
class Debris:
    """Specks in the background only, `density` per 1,000 px^2, each a blob of `amplitude` grey levels at its peak:
    context that tells something about the line (how its culture sheds) without touching a cell."""

    density: float
    amplitude: float
    seed: tuple[int, ...]  # its own random stream, so the cells and the cue stay the same with or without it


@dataclass(frozen=True)
class Cue:
    """A grating in the background only, oriented by `index` of `kinds`: what a batch effect that follows the class
    looks like to a model, and a shortcut that never touches a cell."""

    index: int
    kinds: int
    amplitude: float


# ---------------------------------------------------------------- one image


def render_image(
    rng: np.random.Generator,
    style: LineStyle,
    height: int,
    width: int,
    density: float,
    cue: Cue | None = None,
    debris: Debris | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One uint8 image of a single line and the (N, 2) polygons of its cells, in drawing order; with `cue`, the
    cue's grating outside the cells, with `debris` its specks (both drawn without the image's random stream, so the
    cells are the same)."""
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
    if cue is not None or debris is not None:
        background = ~_near_cells(polygons, height, width)
        if cue is not None:
            canvas = canvas + _grating(cue, height, width) * background
        if debris is not None:
            canvas = canvas + _specks(debris, height, width) * background
    return _finish(rng, canvas), polygons


def stain_image(rng: np.random.Generator, polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """A fluorescence-like channel in [0, 1]: every cell filled with its own brightness on a dark background, a
    little blur and camera noise (later cells over earlier ones, as they are drawn)."""
    stain = Image.new("F", (width, height), 0.0)
    draw = ImageDraw.Draw(stain)
    for polygon in polygons:
        draw.polygon([tuple(p) for p in polygon.tolist()], fill=float(rng.uniform(0.3, 1.0)))
    blurred = ndimage.gaussian_filter(np.asarray(stain, dtype=np.float32), 1.2)
    return np.clip(blurred + 0.02 * rng.standard_normal((height, width), dtype=np.float32), 0.0, 1.0)


def _near_cells(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Where a cell or its halo (CUE_CLEARANCE px around it) is: what the background's additions leave alone."""
    cells = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(cells)
    for polygon in polygons:
        draw.polygon([tuple(p) for p in polygon.tolist()], fill=1)
    return ndimage.binary_dilation(np.asarray(cells, dtype=bool), iterations=CUE_CLEARANCE)


def _grating(cue: Cue, height: int, width: int) -> np.ndarray:
    """The cue's grating over the whole frame."""
    angle = math.pi * cue.index / cue.kinds
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return cue.amplitude * np.sin(2 * math.pi * (math.cos(angle) * xx + math.sin(angle) * yy) / CUE_PERIOD)


def _specks(debris: Debris, height: int, width: int) -> np.ndarray:
    """Bright blobs (a Gaussian of 1 px) at random places over the whole frame, peaks of the debris' amplitude."""
    rng = np.random.default_rng(list(debris.seed))
    count = rng.poisson(debris.density * height * width / 1000)
    impulses = np.zeros((height, width), np.float32)
    np.add.at(impulses, (rng.integers(0, height, count), rng.integers(0, width, count)), 1.0)
    return ndimage.gaussian_filter(impulses, 1.0) * (2 * math.pi * debris.amplitude)


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
    if len(clipped) < _MIN_VERTICES or polygon_area(clipped) < _MIN_AREA:
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
