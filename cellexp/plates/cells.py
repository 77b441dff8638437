"""Outlines to crops cut as the crop store cuts training cells, and each cell's place and size in its image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from cellexp.data.crops import cut_channels
from cellexp.data.livecell.prepare import CropSettings
from cellexp.plates.outlines import Outline


@dataclass(frozen=True)
class CutCells:
    crops: np.ndarray  # (N, C, S, S), the image's dtype
    rows: list[dict]  # Metadata_ObjectNumber, bbox, centroid, area per crop
    dropped: dict[str, int]  # cells that training's settings leave out, by reason


def crop_settings(dataset_cfg) -> CropSettings:
    """The settings the checkpoint's crops were cut with (its run's `dataset`)."""
    return CropSettings(
        crop_size=int(dataset_cfg.crop_size),
        min_area=float(dataset_cfg.get("min_area") or 0.0),
        drop_border_cells=bool(dataset_cfg.get("drop_border_cells", False)),
        context_margin=float(dataset_cfg.get("context_margin") or 0.0),
    )


def cut_cells(pixels: np.ndarray, outlines: list[Outline], settings: CropSettings) -> CutCells:
    """Crops of one (C, H, W) image: the cell on black (context_margin 0) or in its surroundings, as trained."""
    pictures = [Image.fromarray(channel) for channel in pixels]
    height, width = pixels.shape[1:]
    crops, rows, dropped = [], [], {}
    for outline in outlines:
        reason = _dropped(outline, height, width, settings)
        if reason is not None:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        crop, _ = cut_channels(pictures, pixels, outline.mask, outline.box, settings.crop_size, settings.context_margin)
        crops.append(crop)
        rows.append(_row(outline))
    empty = np.zeros((0, len(pixels), settings.crop_size, settings.crop_size), pixels.dtype)
    return CutCells(np.stack(crops) if crops else empty, rows, dropped)


def _dropped(outline: Outline, height: int, width: int, settings: CropSettings) -> str | None:
    """Training's filters (min_area, drop_border_cells), and masks without a pixel."""
    area = int(outline.mask.sum())
    if area == 0:
        return "empty outline"
    if area < settings.min_area:
        return "below min_area"
    x0, y0, x1, y1 = outline.box
    if settings.drop_border_cells and (x0 <= 0 or y0 <= 0 or x1 >= width or y1 >= height):
        return "touches border"
    return None


def _row(outline: Outline) -> dict:
    x0, y0, x1, y1 = outline.box
    ys, xs = np.nonzero(outline.mask)
    return {
        "Metadata_ObjectNumber": outline.object_id,
        "Metadata_BBox_X": x0,
        "Metadata_BBox_Y": y0,
        "Metadata_BBox_W": x1 - x0,
        "Metadata_BBox_H": y1 - y0,
        "Metadata_Centroid_X": float(xs.mean() + x0),
        "Metadata_Centroid_Y": float(ys.mean() + y0),
        "Metadata_Area": len(xs),
    }
