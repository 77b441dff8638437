"""The pictures of a predicted plate: its first image with the cells' outlines, and which share of each well's cells
each class has."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def class_shares_figure(path: Path, wells, class_names: list[str]) -> Path:
    """Stacked bars, one per (plate, well) row of the per-well table, of the predicted classes' shares."""
    counts = wells[[f"count_{name}" for name in class_names]].to_numpy(dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    labels = [
        f"{plate} {well}" if isinstance(well, str) and well else str(plate)
        for plate, well in zip(wells["Metadata_Plate"], wells["Metadata_Well"], strict=True)
    ]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(labels) + 2.5), 4.0))
    bottom = np.zeros(len(labels))
    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for k, name in enumerate(class_names):
        ax.bar(range(len(labels)), shares[:, k], bottom=bottom, label=name, color=colours(k % colours.N))
        bottom += shares[:, k]
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_ylabel("share of the well's cells")
    ax.set_ylim(0, 1)
    ax.set_title("predicted class per well")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def outlines_figure(
    path: Path, name: str, pixels: np.ndarray, outlines, predicted: dict, class_names: list[str]
) -> Path:
    """The image with each cell's outline over it in its predicted class's colour: the first check of a segmentation
    (did it find the cells, split touching ones, miss dim ones?). `predicted`: object id -> class (none: grey)."""
    height, width = pixels.shape
    fig, ax = plt.subplots(figsize=(min(12.0, 2.0 + width / 80), min(10.0, 1.0 + height / 80)))
    low, high = np.percentile(pixels, (0.5, 99.5))
    ax.imshow(pixels, cmap="gray", vmin=low, vmax=max(high, low + 1))
    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    colour = {cls: colours(k % colours.N) for k, cls in enumerate(class_names)}
    for outline in outlines:
        x0, y0, x1, y1 = outline.box
        padded = np.pad(outline.mask, 1)  # closed contours at the box's edges
        xs, ys = np.arange(x0 - 1, x1 + 1), np.arange(y0 - 1, y1 + 1)
        shade = colour.get(predicted.get(outline.object_id), (0.6, 0.6, 0.6, 1.0))
        ax.contour(xs, ys, padded, levels=[0.5], colors=[shade], linewidths=0.8)
    handles = [plt.Line2D([], [], color=colour[cls], label=cls) for cls in class_names if cls in predicted.values()]
    if handles:
        ax.legend(handles=handles, fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title(f"{name}: {len(outlines)} cells, outlined in their predicted class's colour", fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
