"""How each synthetic cell line looks: the style table behind `cellexp.data.synthetic.livecell`.

Ranges overlap between look-alikes (BT474~MCF7, BV2~SkBr3, A172~SKOV3) so that a classifier has to
learn the distribution, not a single tell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

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
