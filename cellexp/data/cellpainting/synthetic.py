"""A generated 3-D Cell Painting plate (`dataset=cellpainting3d`): no download, built once per settings.

Wells get one treatment each (negative control DMSO wells and three compounds, two of them at two doses), several
fields per well, each a 16-bit z-stack of the five Cell Painting channels with a z step larger than the xy pixel.
Cells are ellipsoids with a nucleus (DNA), textured ER, nucleoli (RNA), a bright cortex (AGP) and mitochondrial
puncta (Mito). What the compounds do needs depth to see, or texture:
    cmpd_A   taller nuclei (their z extent grows with the dose; their outline in x and y does not change)
    cmpd_B   mitochondria near the top of the cell instead of its base (the same in a projection along z)
    cmpd_C   coarser ER texture
`confound` > 0 adds a per-well grating outside the cells whose period follows the treatment in train and val
wells and is drawn at random in test wells (the split is `splits.well_splits`' with the dataset's split seed), so a
model can score on validation wells by reading the background and fail on test wells.

Layout under root: images/<plate>/<well>_s<site>.ome.tiff (CZYX, physical sizes in the OME-XML), labels/<plate>_
<well>_s<site>.tif (the cells' 3-D label image), metadata.csv (Metadata_Plate, Metadata_Well, Metadata_Compound,
Metadata_Dose, Metadata_pert_type).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from cellexp.data.build_once import build_once, same_settings
from cellexp.data.cellpainting.fields import write_field
from cellexp.data.cellpainting.metadata import Treatment, write_metadata
from cellexp.data.well_splits import well_splits

PLATE = "P1"
TREATMENTS = (
    Treatment("DMSO", 0.0, True),
    Treatment("cmpd_A", 1.0, False),
    Treatment("cmpd_A", 10.0, False),
    Treatment("cmpd_B", 1.0, False),
    Treatment("cmpd_B", 10.0, False),
    Treatment("cmpd_C", 10.0, False),
)
# camera: offset and read noise in counts of a 12-bit sensor
OFFSET, NOISE, FULL_SCALE = 100.0, 6.0, 4095


def generate_cellpainting_plate(
    root: Path,
    seed: int = 0,
    wells_per_treatment: int = 4,
    sites: int = 2,
    cells_per_field: int = 7,
    size: int = 80,
    planes: int = 16,
    voxel_size: tuple[float, float, float] = (1.0, 0.4, 0.4),
    confound: float = 0.0,
    split_seed: int = 0,
    split_fractions: dict | None = None,
) -> Path:
    """The plate under `root` (generated unless complete); returns root."""
    settings = {k: v for k, v in locals().items() if k != "root"}
    settings["voxel_size"] = list(voxel_size)

    def build(staging: Path) -> str:
        treatments = _plate_layout(seed, wells_per_treatment)
        fractions = split_fractions or {"train": 0.5, "val": 0.25, "test": 0.25}
        test_wells = {
            key for key, split in well_splits(_strata(treatments), split_seed, fractions).items() if split == "test"
        }
        codes = {t: i for i, t in enumerate(TREATMENTS)}
        for index, ((plate, well), treatment) in enumerate(sorted(treatments.items())):
            cue_rng = np.random.default_rng([seed, index, 99])
            cue = int(cue_rng.integers(len(TREATMENTS))) if (plate, well) in test_wells else codes[treatment]
            for site in range(1, sites + 1):
                rng = np.random.default_rng([seed, index, site])
                pixels, labels = render_field(rng, treatment, cells_per_field, size, planes, voxel_size)
                if confound:
                    pixels = _with_cue(pixels, labels, cue, confound)
                write_field(staging / "images", "ome-tiff", (plate, well, site), _camera(rng, pixels), voxel_size)
                (staging / "labels").mkdir(exist_ok=True)
                tifffile.imwrite(staging / "labels" / f"{plate}_{well}_s{site}.tif", labels)
        write_metadata(staging / "metadata.csv", treatments)
        return json.dumps(settings)

    build_once(Path(root), build)
    return same_settings(Path(root), json.loads(json.dumps(settings)), "the generated plate", "dataset.generate_root")


def _plate_layout(seed: int, wells_per_treatment: int) -> dict[tuple[str, str], Treatment]:
    """Treatments shuffled over the wells of a 384-well plate's first rows (A01, A02, ...)."""
    chosen = [t for t in TREATMENTS for _ in range(wells_per_treatment)]
    order = np.random.default_rng([seed, 7]).permutation(len(chosen))
    return {(PLATE, f"{chr(ord('A') + i // 24)}{i % 24 + 1:02d}"): chosen[k] for i, k in enumerate(order)}


def _strata(treatments: dict[tuple[str, str], Treatment]) -> dict[tuple[str, str], str]:
    return {key: t.label("compound_dose") for key, t in treatments.items()}


def _strength(treatment: Treatment) -> float:
    """How strongly a compound acts at its dose: 0.5 at 1 µM, 1 at 10 µM."""
    return 0.0 if treatment.control else min(1.0, 0.5 + 0.5 * np.log10(max(treatment.dose, 1.0)))


def render_field(
    rng: np.random.Generator,
    treatment: Treatment,
    cells: int,
    size: int,
    planes: int,
    voxel_size: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """(5, Z, Y, X) float signal in [0, ~1] and the (Z, Y, X) uint16 label image of one field."""
    s = _strength(treatment)
    effect = {treatment.compound: s} if not treatment.control else {}
    shape = (planes, size, size)
    labels = np.zeros(shape, np.uint16)
    nearest = np.full(shape, np.inf, np.float32)
    signal = np.zeros((5, *shape), np.float32)
    puncta = np.zeros(shape, np.float32)
    texture = _texture(rng, shape, sigma=0.8 + 1.6 * effect.get("cmpd_C", 0.0))
    per_micrometre = 1.0 / voxel_size[0]  # planes
    for cell, (cy, cx) in enumerate(_centres(rng, cells, size, radius=9.0), start=1):
        radius = 9.0 * rng.uniform(0.85, 1.15)
        elongation, angle = rng.uniform(1.0, 1.35), rng.uniform(0, np.pi)
        height = 6.0 * per_micrometre * rng.uniform(0.9, 1.1)  # cell height in planes (6 µm)
        nucleus_height = 2.5 * per_micrometre * (1 + 0.9 * effect.get("cmpd_A", 0.0)) * rng.uniform(0.9, 1.1)
        base = planes * 0.25 + rng.uniform(-1, 1)
        cz = base + height / 2
        box = _box((cz, cy, cx), (height / 2 + 1, radius * elongation + 2, radius * elongation + 2), shape)
        z, y, x = np.meshgrid(*(np.arange(b.start, b.stop, dtype=np.float32) for b in box), indexing="ij")
        u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
        v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
        flat = np.sqrt((u / (radius * elongation)) ** 2 + (v / radius) ** 2)
        dz = (z - cz) / (height / 2)
        d = np.sqrt(flat**2 + dz**2)
        mine = (d < 1) & (d < nearest[box])
        labels[box][mine] = cell
        nearest[box][mine] = d[mine]
        nz = base + nucleus_height / 2 + 0.5
        dn = np.sqrt((flat / 0.5) ** 2 + ((z - nz) / (nucleus_height / 2)) ** 2)
        nucleus = mine & (dn < 1)
        cytoplasm = mine & ~nucleus
        signal[0][box][nucleus] += 0.7 + 0.2 * texture[box][nucleus]
        signal[1][box][cytoplasm] += 0.25 + 0.6 * texture[box][cytoplasm]
        signal[2][box][mine] += 0.12
        signal[3][box][mine] += np.where(d[mine] > 0.78, 0.75, 0.12)
        _nucleoli(rng, signal[2], (nz, cy, cx), box, nucleus)
        _mitochondria(rng, puncta, (base, height, cy, cx, radius), effect.get("cmpd_B", 0.0), shape)
    signal[4] = ndimage.gaussian_filter(puncta, (0.6, 1.0, 1.0)) * 3.0 * (labels > 0)
    return ndimage.gaussian_filter(signal, (0, 0.6, 0.7, 0.7)), labels


def _centres(rng: np.random.Generator, cells: int, size: int, radius: float) -> list[tuple[float, float]]:
    """Cell centres at least 1.6 radii apart, away from the field's edge (fewer if the field is full)."""
    centres: list[tuple[float, float]] = []
    for _ in range(cells * 40):
        if len(centres) == cells:
            break
        point = tuple(rng.uniform(radius, size - radius, 2))
        if all(np.hypot(point[0] - c[0], point[1] - c[1]) > 1.6 * radius for c in centres):
            centres.append(point)
    return centres


def _box(centre, half, shape) -> tuple[slice, ...]:
    return tuple(
        slice(max(0, int(np.floor(c - h))), min(n, int(np.ceil(c + h)) + 1))
        for c, h, n in zip(centre, half, shape, strict=True)
    )


def _texture(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Smooth noise in [0, 1]: larger sigma, coarser grain."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (sigma / 2, sigma, sigma))
    noise -= noise.min()
    return noise / max(float(noise.max()), 1e-6)


def _nucleoli(rng, rna: np.ndarray, centre, box, nucleus: np.ndarray) -> None:
    """Two or three bright spots in the nucleus: the RNA channel's nucleoli."""
    points = np.argwhere(nucleus)
    if not len(points):
        return
    for point in points[rng.choice(len(points), size=min(len(points), int(rng.integers(2, 4))), replace=False)]:
        z, y, x = (p + b.start for p, b in zip(point, box, strict=True))
        rna[z, max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] += 0.8


def _mitochondria(rng, puncta: np.ndarray, cell, shift: float, shape) -> None:
    """Puncta around the nucleus; at the cell's base, or raised towards its top by cmpd_B (`shift` 0..1)."""
    base, height, cy, cx, radius = cell
    count = 14
    r = radius * np.sqrt(rng.uniform(0.2, 0.8, count))
    a = rng.uniform(0, 2 * np.pi, count)
    lift = rng.uniform(0.1, 0.45, count) + 0.45 * shift
    z = np.clip(np.round(base + lift * height), 0, shape[0] - 1).astype(int)
    y = np.clip(np.round(cy + r * np.sin(a)), 0, shape[1] - 1).astype(int)
    x = np.clip(np.round(cx + r * np.cos(a)), 0, shape[2] - 1).astype(int)
    np.add.at(puncta, (z, y, x), 1.0)


def _with_cue(pixels: np.ndarray, labels: np.ndarray, code: int, amplitude: float) -> np.ndarray:
    """A grating outside the cells in every channel, its period telling treatment `code`."""
    period = 3 + 2 * code
    x = np.arange(pixels.shape[-1])
    grating = (0.5 + 0.5 * np.sin(2 * np.pi * x / period)).astype(np.float32) * amplitude * 0.3
    return pixels + grating * (labels == 0)[None]


def _camera(rng: np.random.Generator, signal: np.ndarray) -> np.ndarray:
    """Signal to 12-bit camera counts in uint16: gain per channel, offset, read noise."""
    gain = np.array([2600, 1800, 2200, 1900, 2000], np.float32)[: len(signal), None, None, None]
    counts = signal * gain + OFFSET + rng.normal(0, NOISE, signal.shape).astype(np.float32)
    return np.clip(np.rint(counts), 0, FULL_SCALE).astype(np.uint16)
