"""A picture of a prepared dataset: crops per class and split, a few crops of every class, and for several channels
how correlated they are."""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from cellexp.data.channels import split_correlation
from cellexp.data.intensity import to_uint8
from cellexp.data.store import CropStore, channel_batch

log = logging.getLogger(__name__)

EXAMPLES_PER_CLASS = 8
OUTLINE = np.array([228, 87, 86], dtype=np.uint8)


def store_summary_figure(store: CropStore, split: str = "train") -> Path:
    """The store's summary picture, drawn once and kept beside the `split` crops it shows."""
    key = hashlib.sha256("|".join(str(s.path) for s in store.splits.values()).encode()).hexdigest()[:12]
    path = store.splits[split].folder / f"summary-{key}.png"
    if not path.is_file():
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.png")
        plot_store_summary(store, tmp, split)
        tmp.replace(path)
    return path


def plot_store_summary(store: CropStore, path: Path, split: str = "train") -> Path:
    """Bar chart of crops per class in each split, beside `split` crops of every class with their masks outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = store.class_names
    fig, (counts, examples) = plt.subplots(
        1, 2, figsize=(13, 0.8 + 0.6 * len(names)), gridspec_kw={"width_ratios": [1, 1.6]}
    )
    width = 0.8 / len(store.splits)
    for k, (name, split_store) in enumerate(store.splits.items()):
        per_class = [split_store.summary["per_class"].get(line, 0) for line in names]
        counts.barh(np.arange(len(names)) + k * width, per_class, height=width, label=f"{name} ({sum(per_class)})")
    counts.set_yticks(np.arange(len(names)) + width * (len(store.splits) - 1) / 2, names)
    counts.invert_yaxis()
    counts.set_xlabel("crops")
    counts.legend(loc="lower right", fontsize=8)
    examples.imshow(_montage(store, split))
    examples.set_yticks((np.arange(len(names)) + 0.5) * store.images(split).shape[-1], names)
    examples.set_xticks([])
    examples.set_title(f"{split} crops, cell outline in red", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _montage(store: CropStore, split: str) -> np.ndarray:
    """One RGB image: a row per class of its first crops (their first channel, 16-bit ones stretched to 8 bits for
    the eye; 3-D ones as their maximum along z), the mask's boundary drawn over them."""
    size = store.images(split).shape[-1]
    labels = store.labels(split)
    out = np.zeros((len(store.class_names) * size, EXAMPLES_PER_CLASS * size, 3), dtype=np.uint8)
    for row in range(len(store.class_names)):
        chosen = np.flatnonzero(labels == row)[:EXAMPLES_PER_CLASS]
        crops = channel_batch(store.images(split)[chosen])[:, 0]
        masks = store.masks(split)[chosen].astype(bool)
        if crops.ndim == 4:  # 3-D crops: their projections along z
            crops, masks = crops.max(axis=1), masks.any(axis=1)
        crops = to_uint8(crops)
        for col, (crop, mask) in enumerate(zip(crops, masks, strict=True)):
            tile = np.repeat(crop[:, :, None], 3, axis=2)
            tile[mask & ~_eroded(mask)] = OUTLINE
            out[row * size : (row + 1) * size, col * size : (col + 1) * size] = tile
    return out


def _eroded(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def split_digest(store, dataset) -> str:
    """A split's identity: its store folder (named by the hash of its sources and settings) and its crops in it."""
    digest = hashlib.sha256(store.splits[dataset.split].path.name.encode())
    digest.update(np.ascontiguousarray(dataset.indices, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def log_data_summary(tracker, data, run_dir: Path, dataset_name: str) -> None:
    """Crops per split, failed images (logged by name) and the summary figure, for the run's record."""
    summary = data.store.summary
    counts = {f"data/{split}_crops": len(ds) for split, ds in data.splits.items()}
    tracker.log_metrics({**counts, "data/images_failed": len(summary["failed_images"])})
    for split, dataset in data.splits.items():
        folder = data.store.splits[dataset.split].path
        tracker.log_dataset(dataset_name, split_digest(data.store, dataset), folder, split, len(dataset))
    tracker.log_artifact(data.store.write_summary(run_dir / "data" / "summary.json"), "data")
    shown = next(iter(data.store.splits))  # train, or a patch store's one split
    tracker.log_artifact(shutil.copy(store_summary_figure(data.store, shown), run_dir / "data" / "summary.png"), "data")
    if data.split_table is not None:
        tracker.log_artifact(write_split_table(data.split_table, run_dir / "data" / "splits.csv"), "data")
    if data.store.channels > 1 and len(data.splits["train"]):
        matrix = split_correlation(data.splits["train"], seed=0)
        for path in write_channel_correlation(matrix, run_dir / "data"):
            tracker.log_artifact(path, "data")
        off = matrix[~np.eye(len(matrix), dtype=bool)]
        tracker.log_metrics({"data/channel_corr_mean_abs": float(np.nanmean(np.abs(off)))})
    for failure in summary["failed_images"]:
        log.warning("image skipped during preparation: %s (%s)", failure["image"], failure["reason"])


def write_split_table(rows: list[dict], path: Path) -> Path:
    """The wells of a plate and the split each is in (every well in one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["plate", "well", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_channel_correlation(matrix: np.ndarray, folder: Path) -> list[Path]:
    """channel_correlation.csv (the matrix, a row per channel) and channel_correlation.png (its heatmap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    names = [f"channel_{c}" for c in range(len(matrix))]
    table = folder / "channel_correlation.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["channel", *names])
        writer.writerows([name, *(f"{v:.6f}" for v in row)] for name, row in zip(names, matrix, strict=True))
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(matrix), 0.8 + 0.7 * len(matrix)))
    shown = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(matrix)), range(len(matrix)))
    ax.set_yticks(range(len(matrix)), range(len(matrix)))
    ax.set_title("Pearson correlation of channels\nover cell pixels (training crops)", fontsize=9)
    fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    figure = folder / "channel_correlation.png"
    fig.savefig(figure, dpi=110)
    plt.close(fig)
    return [table, figure]
