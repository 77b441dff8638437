"""A fake CLANet time-lapse release: brightfield-like frames of several cell lines, batches, wells and timepoints.

What it must make hard: every batch has its own look (illumination gradient, contrast, focus, cell density),
and only one batch per line trains in the batch-separated split, so batch artefacts and line identity are
confounded in training. Lines differ only in the shape of a minority of their cells (the rest are a generic
round cell shared by all lines), so the line is told by some cells of a frame, not by the frame's overall look.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from cellexp.data.build_once import build_once
from cellexp.errors import ConfigError
from cellexp.progress import progress

log = logging.getLogger(__name__)

LINE_NAMES = ("A549", "HeLa", "MCF7", "U2OS", "HEK293", "PC3", "Jurkat", "NIH3T3")
# D1 beside D11 and B1: names a substring match would confuse
WELLS = ("D1", "D11", "B1", "B11", "C1", "C11", "E1", "E11")


@dataclass(frozen=True)
class Morphology:
    """The key cells of one line: semi-axes in px at scale 1, whether the body is a hollow ring, a dark nucleus."""

    radius: float
    elongation: float
    ring: bool
    nucleus: bool


# Generic cells look like a mid-sized round cell; each line's own cells differ from it and from each other.
GENERIC = Morphology(4.5, 1.0, False, False)
MORPHOLOGIES = (
    Morphology(3.0, 1.0, False, True),
    Morphology(6.5, 1.0, True, False),
    Morphology(4.0, 2.6, False, False),
    Morphology(6.0, 1.0, False, True),
    Morphology(4.0, 2.4, True, False),
    Morphology(3.2, 1.8, False, True),
    Morphology(7.0, 1.6, False, False),
    Morphology(3.5, 1.0, True, True),
)


@dataclass(frozen=True)
class BatchLook:
    """One experimental batch's artefacts, shared by all its frames."""

    background: float
    gradient: float
    angle: float
    contrast: float
    blur: float
    density: float


def draw_batch_look(rng: np.random.Generator) -> BatchLook:
    return BatchLook(
        background=rng.uniform(0.45, 0.65),
        gradient=rng.uniform(0.0, 0.35),
        angle=rng.uniform(0, 2 * np.pi),
        contrast=rng.uniform(0.7, 1.3),
        blur=rng.uniform(0.0, 1.0),
        density=rng.uniform(0.6, 1.5),
    )


def render_frame(
    rng: np.random.Generator,
    height: int,
    width: int,
    morphology: Morphology,
    look: BatchLook,
    cells: int,
    key_share: float,
    scale: float,
    colonies: int = 0,
) -> np.ndarray:
    """One uint8 frame: cells darker than the background with a bright rim, under the batch's artefacts.
    With `colonies`, the line's own cells gather around that many points, the generic ones spread evenly."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(look.angle) * (xx / width - 0.5) + np.sin(look.angle) * (yy / height - 0.5)) * 2
    signal = np.zeros((height, width), np.float32)
    centres = rng.uniform(0, [height, width], (max(colonies, 1), 2))
    spread = 2.5 * morphology.radius * scale
    for _ in range(cells):
        if rng.random() < key_share:
            at = centres[rng.integers(len(centres))] + rng.normal(0, spread, 2) if colonies else None
            shape = morphology
        else:
            at, shape = None, GENERIC
        _stamp(signal, rng, shape, scale, rng.uniform(0, [height, width]) if at is None else at)
    signal = ndimage.gaussian_filter(signal, look.blur) if look.blur > 0.05 else signal
    image = look.background * (1 + look.gradient * ramp) + 0.35 * look.contrast * signal
    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def _stamp(signal: np.ndarray, rng: np.random.Generator, m: Morphology, scale: float, centre: np.ndarray) -> None:
    """Add one cell to `signal` (negative inside the body, positive on the rim), on its bounding window only."""
    height, width = signal.shape
    a = m.radius * scale * rng.uniform(0.85, 1.15)
    b = a / (m.elongation * rng.uniform(0.9, 1.1))
    reach = int(np.ceil(a + 3))
    cy, cx = centre
    y0, y1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, height)
    x0, x1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, width)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    u = ((xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)) / a
    v = (-(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)) / b
    r = np.sqrt(u * u + v * v)
    body = np.clip((1 - r) * 4, 0, 1)
    if m.ring:
        body = body * np.clip((r - 0.45) * 6, 0, 1)
    rim = np.exp(-(((r - 1.1) / 0.12) ** 2))
    cell = -body + 0.6 * rim
    if m.nucleus:
        cell -= 0.8 * np.exp(-((r / 0.3) ** 2))
    signal[y0:y1, x0:x1] += cell


def generate_timelapse(
    root: Path,
    lines: int = 6,
    batches: int = 4,
    wells: int = 4,
    timepoints: int = 6,
    interval_hours: float = 2.0,
    height: int = 890,
    width: int = 1408,
    cells: int = 40,
    key_share: float = 0.35,
    scale: float = 1.0,
    colonies: int = 0,
    seed: int = 0,
    ext: str = "jpg",
) -> Path:
    """Write `<root>/<line>/batch_<k>/VID<exp>_<well>_<flask>_<DD>d<HH>h<MM>m.<ext>` once; later calls reuse it.

    Built once (`cellexp.data.build_once`), so concurrent runs do not see half of it.
    """
    if not 2 <= lines <= len(LINE_NAMES):
        raise ConfigError(f"dataset.generate.lines={lines}: between 2 and {len(LINE_NAMES)}")
    if batches < 2 or not 1 <= wells <= len(WELLS) or timepoints < 1:
        raise ConfigError(f"dataset.generate needs batches >= 2, 1 <= wells <= {len(WELLS)} and timepoints >= 1")
    return build_once(
        Path(root),
        lambda staging: _write_timelapse(
            staging,
            lines,
            batches,
            wells,
            timepoints,
            interval_hours,
            height,
            width,
            cells,
            key_share,
            scale,
            colonies,
            seed,
            ext,
        ),
    )


def _write_timelapse(
    out: Path,
    lines,
    batches,
    wells,
    timepoints,
    interval_hours,
    height,
    width,
    cells,
    key_share,
    scale,
    colonies,
    seed,
    ext,
) -> None:
    rng = np.random.default_rng(seed)
    jobs = [(line, batch) for line in range(lines) for batch in range(batches)]
    frames = len(jobs) * wells * timepoints
    log.info("generating a synthetic time-lapse: %d frames of %dx%d under %s", frames, width, height, out)
    # counted in frames, not batches: a batch of large frames takes long enough to look stuck
    with progress(total=frames, desc="synthetic time-lapse", unit="frame") as bar:
        for line, batch in jobs:
            look = draw_batch_look(rng)
            folder = out / LINE_NAMES[line] / f"batch_{batch + 1}"
            folder.mkdir(parents=True, exist_ok=True)
            experiment = 1700 + 10 * line + batch  # ids like VID1709, next to wells like D1 / D11
            for well in WELLS[:wells]:
                for t in range(timepoints):
                    hours = t * interval_hours + rng.uniform(0, 0.2)
                    count = int(cells * look.density * (1 + 0.03 * hours))
                    shape = MORPHOLOGIES[line]
                    frame = render_frame(rng, height, width, shape, look, count, key_share, scale, colonies)
                    name = f"VID{experiment}_{well}_{batch + 1}_{_stamp_time(hours)}.{ext}"
                    Image.fromarray(frame).save(folder / name, quality=95)
                    bar.update(1)


def _stamp_time(hours: float) -> str:
    minutes = int(round(hours * 60))
    return f"{minutes // 1440:02d}d{minutes // 60 % 24:02d}h{minutes % 60:02d}m"
