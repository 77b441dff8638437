"""Pictures of 3-D explanations (the Grad-CAMO paper's z-stacks): per cell, the maximum projections of the crop
along z, y and x (channels as colours) above the same projections of the map over it, the cell's mask projected
as an outline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cellexp.reports.xai import CellView, _caption_colour, _outline, _save, composite, overlay, plt

AXES = ("z", "y", "x")


def projections(view: np.ndarray, axis: int) -> np.ndarray:
    """Maximum along spatial `axis` (0: z, 1: y, 2: x) of (D, H, W) or (C, D, H, W)."""
    return np.asarray(view).max(axis=axis + (np.ndim(view) == 4))


def volume_cell(path: Path, cell: CellView, title: str, image_weight: float) -> Path:
    """Two rows of three panels: the crop's projections, then the map's over them."""
    fig, axes = plt.subplots(2, 3, figsize=(7.5, 5.0), squeeze=False)
    for axis, name in enumerate(AXES):
        image, cam = projections(cell.image, axis), projections(cell.cam, axis)
        mask = projections(cell.mask, axis)
        axes[0, axis].imshow(composite(image), aspect="auto")
        axes[1, axis].imshow(overlay(image, cam, image_weight), aspect="auto")
        for row in (0, 1):
            _outline(axes[row, axis], mask)
            axes[row, axis].axis("off")
        axes[0, axis].set_title(f"max along {name}", fontsize=8)
    axes[1, 0].set_title(cell.caption.replace("\n", "  "), fontsize=7, loc="left", color=_caption_colour(cell.correct))
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
