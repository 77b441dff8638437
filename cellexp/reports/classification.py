"""Files people read after a run: the confusion matrix as a picture and a table, and per-sample predictions."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def write_confusion_matrix(cm: torch.Tensor, class_names: Sequence[str], folder: Path, title: str) -> list[Path]:
    """CSV of raw counts and a PNG with row-normalised colour (recall) and the counts written in."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = folder / "confusion_matrix.csv", folder / "confusion_matrix.png"
    counts = cm.tolist()
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *class_names])
        writer.writerows([name, *row] for name, row in zip(class_names, counts, strict=True))
    recall = cm.float() / cm.sum(dim=1, keepdim=True).clamp(min=1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 0.8 + 0.6 * n))
    image = ax.imshow(recall, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                counts[i][j],
                ha="center",
                va="center",
                fontsize=8,
                color="white" if recall[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return [csv_path, png_path]


def write_predictions(
    path: Path, ids: Sequence[dict], logits: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]
) -> Path:
    """One row per sample: its identifying fields, true and predicted class, class probabilities."""
    probs = logits.float().softmax(dim=1)
    preds = probs.argmax(dim=1)
    id_fields = list(ids[0]) if ids else []
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*id_fields, "true", "predicted", *(f"p_{c}" for c in class_names)])
        for row_ids, t, p, pr in zip(ids, targets.tolist(), preds.tolist(), probs.tolist(), strict=True):
            writer.writerow(
                [*(row_ids[k] for k in id_fields), class_names[t], class_names[p], *(f"{x:.5f}" for x in pr)]
            )
    return path
