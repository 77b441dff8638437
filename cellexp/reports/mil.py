"""A MIL run's tables and figure: attention per test patch, predictions per sequence, the most-attended patches."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from cellexp.data.store import SplitStore


def write_attention(folder: Path, store: SplitStore, bags, attention, logits, class_names) -> list[Path]:
    """attention.csv: one row per test patch (sequence, frame, window, weight); predictions.csv: one per sequence."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = store.manifest()
    att_path, pred_path = folder / "attention.csv", folder / "predictions.csv"
    with open(att_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sequence", "image_file", "elapsed_hours", "patch_rank", "x", "y", "attention"])
        for bag, weights in zip(bags, attention, strict=True):
            for row, w in zip(bag.rows, weights, strict=True):
                m = manifest[row]
                writer.writerow(
                    [
                        bag.sequence.key,
                        m["image_file"],
                        m["elapsed_hours"],
                        m["annotation_id"],
                        m["bbox_x"],
                        m["bbox_y"],
                        f"{w:.6f}",
                    ]
                )
    probs = logits.softmax(1)
    with open(pred_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["sequence", "line", "batch", "well", "frames", "true", "predicted", *[f"p_{c}" for c in class_names]]
        )
        for bag, p in zip(bags, probs, strict=True):
            s = bag.sequence
            predicted = class_names[int(p.argmax())]
            writer.writerow(
                [s.key, s.line, s.batch, s.well, len(bag.frames), s.line, predicted, *[f"{v:.4f}" for v in p.tolist()]]
            )
    return [att_path, pred_path]


def attention_figure(path: Path, store: SplitStore, bags, attention, figure: DictConfig) -> Path:
    """The most-attended patches of a few test sequences (one per line first), each labelled with its weight.

    One image of tiles (a row per sequence) in one axes: drawing dozens of small axes costs seconds per run.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picked, seen = [], set()
    for i, bag in enumerate(bags):
        if bag.sequence.line not in seen:
            picked.append(i)
            seen.add(bag.sequence.line)
    picked, cols = picked[: figure.sequences], figure.patches
    size = store.images.shape[-1]
    gap = max(2, size // 16)
    montage = np.full((len(picked) * (size + gap), cols * (size + gap)), 255, dtype=np.uint8)
    fig, ax = plt.subplots(figsize=(1.2 * cols + 1.6, 1.3 * len(picked) + 0.6))
    for r, i in enumerate(picked):
        top = np.argsort(-attention[i])[:cols]
        for c, (patch, row) in enumerate(zip(store.images[bags[i].rows[top]], top, strict=True)):
            y, x = r * (size + gap), c * (size + gap)
            montage[y : y + size, x : x + size] = patch
            ax.text(x + size / 2, y + size + gap / 2, f"{attention[i][row]:.3f}", ha="center", va="center", fontsize=6)
        ax.text(-gap, r * (size + gap) + size / 2, bags[i].sequence.key, ha="right", va="center", fontsize=7)
    ax.imshow(montage, cmap="gray", vmin=0, vmax=255)
    ax.axis("off")
    ax.set_title("most-attended patches per sequence (attention weight)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
