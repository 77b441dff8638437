"""The picture of a predicted plate: which share of each well's cells each class has."""

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
