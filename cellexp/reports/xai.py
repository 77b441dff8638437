"""Pictures of explanations: cell grids with overlays and mask outlines, run comparisons, histograms, UMAPs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from pytorch_grad_cam.utils.image import show_cam_on_image  # noqa: E402

from cellexp.reports.tables import write_csv  # noqa: E402
from cellexp.xai.cells import Cells, Explained  # noqa: E402
from cellexp.xai.gradcamo import per_class  # noqa: E402

OUTLINE = "cyan"
PER_ROW = 4  # cells per row of a grid, two panels each
# a colour per channel of a composite, in order (Cell Painting's DNA, ER, RNA, AGP, Mito: blue, green, yellow, red,
# magenta, as the field draws them); more channels cycle
CHANNEL_COLOURS = np.array([[0, 0, 1], [0, 1, 0], [1, 1, 0], [1, 0, 0], [1, 0, 1], [0, 1, 1]], dtype=np.float32)


@dataclass(frozen=True)
class CellView:
    """One cell as drawn: input image and mask at the map's size, its map and a caption."""

    image: np.ndarray  # (H, W) grey or (C, H, W) channels, in [0, 1]; 3-D: (D, H, W) or (C, D, H, W)
    mask: np.ndarray  # (H, W) binary; 3-D: (D, H, W)
    cam: np.ndarray  # (H, W), non-negative (raw maps are scaled for display only); 3-D: (D, H, W)
    caption: str
    correct: bool | None  # None: true class unknown


def composite(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]: a grey (H, W) image as grey, channels (C, H, W) each in its colour, each of R, G
    and B the mean of the channels drawn in it (one channel is drawn grey)."""
    image = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    if image.ndim == 2 or len(image) == 1:
        return np.repeat(image.reshape(image.shape[-2:])[..., None], 3, axis=-1)
    colours = CHANNEL_COLOURS[np.arange(len(image)) % len(CHANNEL_COLOURS)]
    colours = colours / np.maximum(colours.sum(axis=0), 1)  # each of R, G, B the mean of the channels it shows
    return np.clip(np.einsum("chw,ck->hwk", image, colours), 0, 1)


def overlay(image: np.ndarray, cam: np.ndarray, image_weight: float) -> np.ndarray:
    """The map in the jet colour map over the image (grey, or its channels' composite): RGB uint8, `image_weight` of
    it the image. A raw map is divided by its maximum for the picture only (its zero stays zero, unlike a min-max
    scaling)."""
    rgb = composite(image)
    cam = np.maximum(cam.astype(np.float32), 0)
    peak = float(cam.max())
    return show_cam_on_image(rgb, cam / peak if peak > 0 else cam, use_rgb=True, image_weight=image_weight)


def _outline(ax, mask: np.ndarray) -> None:
    if mask.any() and not mask.all():
        ax.contour(mask, levels=[0.5], colors=OUTLINE, linewidths=0.8)


def _caption_colour(correct: bool | None) -> str:
    return {True: "green", False: "red", None: "black"}[correct]


def cell_grid(path: Path, cells: Sequence[CellView], title: str, image_weight: float) -> Path:
    """Per cell: the input with its mask outline, then the overlay with the same outline; caption in green
    (correct), red (wrong) or black (true class unknown)."""
    per_row = max(1, min(PER_ROW, len(cells)))
    rows = max(1, -(-len(cells) // per_row))
    fig, axes = plt.subplots(rows, 2 * per_row, figsize=(2 * per_row * 1.4, rows * 2.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, cell in enumerate(cells):
        left, right = axes[i // per_row, 2 * (i % per_row)], axes[i // per_row, 2 * (i % per_row) + 1]
        left.imshow(composite(cell.image))
        right.imshow(overlay(cell.image, cell.cam, image_weight))
        for ax in (left, right):
            _outline(ax, cell.mask)
        left.set_title(cell.caption, fontsize=6, loc="left", color=_caption_colour(cell.correct))
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def comparison_grid(
    path: Path,
    runs: Sequence[str],
    inputs: Sequence[str],
    cells: Sequence[Sequence[CellView]],
    title: str,
    image_weight: float,
) -> Path:
    """One row per cell: the input captioned `inputs[i]`, then each run's overlay (cells[r][i]: run r, cell i)."""
    count = len(inputs)
    fig, axes = plt.subplots(count, 1 + len(runs), figsize=(2.0 * (1 + len(runs)), 2.0 * count), squeeze=False)
    for i, caption in enumerate(inputs):
        first = cells[0][i]
        axes[i, 0].imshow(composite(first.image))
        _outline(axes[i, 0], first.mask)
        axes[i, 0].set_title(caption, fontsize=6, loc="left")
        for r, run in enumerate(runs):
            view = cells[r][i]
            ax = axes[i, 1 + r]
            ax.imshow(overlay(view.image, view.cam, image_weight))
            _outline(ax, view.mask)
            ax.set_title(f"{run}\n{view.caption}", fontsize=6, loc="left", color=_caption_colour(view.correct))
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def channel_grid(path: Path, cells: Sequence[CellView], title: str, image_weight: float) -> Path:
    """One row per cell of a multi-channel crop: the composite, each channel alone (grey), the overlay; every
    panel with the mask outline."""
    channels = len(cells[0].image)
    fig, axes = plt.subplots(len(cells), channels + 2, figsize=(1.5 * (channels + 2), 1.7 * len(cells)), squeeze=False)
    for i, cell in enumerate(cells):
        panels = [composite(cell.image), *cell.image, overlay(cell.image, cell.cam, image_weight)]
        names = ["composite", *(f"channel {c}" for c in range(channels)), "map"]
        for j, (panel, name) in enumerate(zip(panels, names, strict=True)):
            axes[i, j].imshow(panel, cmap="gray", vmin=0, vmax=1)
            _outline(axes[i, j], cell.mask)
            axes[i, j].set_title(name if j else f"{cell.caption}", fontsize=6, loc="left")
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def histogram(path: Path, scores: np.ndarray, correct: np.ndarray | None, threshold: float, title: str) -> Path:
    """Grad-CAMO distribution over [0, 1], split into correct and wrong cells where the truth is known."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(0, 1, 21)
    finite = np.isfinite(scores)
    if correct is None:
        ax.hist(scores[finite], bins=bins, color="tab:blue", label="cells")
    else:
        groups = [scores[finite & correct], scores[finite & ~correct]]
        ax.hist(groups, bins=bins, stacked=True, color=["tab:green", "tab:red"], label=["correct", "wrong"])
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("Grad-CAMO (share of the map inside the cell)")
    ax.set_ylabel("cells")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


LEGEND = 20


def umap_scatter(path: Path, coords: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str) -> Path:
    """2-D embedding, one colour per class; small markers so that tens of thousands of cells stay legible; a legend
    up to LEGEND names (a plate's wells are too many to name: their colours repeat)."""
    fig, ax = plt.subplots(figsize=(6, 5))
    size = max(1.0, min(12.0, 3000 / max(len(coords), 1)))
    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c, name in enumerate(class_names):
        chosen = labels == c
        if chosen.any():
            ax.scatter(*coords[chosen].T, s=size, color=colours(c % colours.N), label=name, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    if len(class_names) <= LEGEND:
        ax.legend(fontsize=7, markerscale=max(1.0, 12 / size), loc="best")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ tables

ID_FIELDS: tuple[str, ...] = ("cell", "source_index", "image_file", "annotation_id", "true", "predicted", "confidence")


def truth(cells: Cells, class_names: list[str], index: int, unknown: str = "?") -> str:
    return class_names[cells.labels[index]] if cells.known[index] else unknown


def id_row(cells: Cells, explained: Explained, class_names: list[str], i: int) -> list:
    return [
        i,
        *cells.sources[i],
        truth(cells, class_names, i, unknown=""),
        class_names[explained.predicted[i]],
        float(explained.confidence[i]),
    ]


def write_cells(path: Path, cells: Cells, explained: Explained, class_names: list[str]) -> Path:
    return write_csv(path, ID_FIELDS, [id_row(cells, explained, class_names, i) for i in range(len(cells))])


def write_scores(
    folder: Path, cells: Cells, explained: Explained, class_names: list[str], scores: np.ndarray, threshold: float
) -> None:
    rows = [[*id_row(cells, explained, class_names, i), scores[i]] for i in range(len(scores))]
    write_csv(folder / "gradcamo.csv", [*ID_FIELDS, "gradcamo"], rows)
    table = per_class(scores, cells.labels, class_names, threshold)
    write_csv(folder / "per_class.csv", list(table[0]), [list(row.values()) for row in table])
    right = cells.known & (explained.predicted == cells.labels) & (scores < threshold)
    order = [i for i in np.argsort(scores) if right[i]]
    write_csv(folder / "right_but_outside.csv", [*ID_FIELDS, "gradcamo"], [rows[i] for i in order])


def write_comparison(
    path: Path, cells: Cells, runs: list[Explained], class_names: list[str], scores: list[np.ndarray]
) -> None:
    header = ["cell", "source_index", "image_file", "annotation_id", "true"]
    header += [f"{field} {run.label}" for run in runs for field in ("predicted", "gradcamo")]
    rows = [
        [i, *cells.sources[i], truth(cells, class_names, i, unknown="")]
        + [value for run, s in zip(runs, scores, strict=True) for value in (class_names[run.predicted[i]], s[i])]
        for i in range(len(cells))
    ]
    write_csv(path, header, rows)
