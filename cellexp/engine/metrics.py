"""Classification metrics over a whole split (never averaged per batch), via torchmetrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_recall,
)


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor, class_names: list[str]) -> dict[str, float]:
    """Loss, accuracy, balanced accuracy, macro/weighted F1, macro AUROC and per-class recall."""
    logits, targets = logits.float().cpu(), targets.long().cpu()
    n = len(class_names)
    preds = logits.argmax(dim=1)
    metrics = {
        "loss": F.cross_entropy(logits, targets).item(),
        "accuracy": multiclass_accuracy(preds, targets, n, average="micro").item(),
        "balanced_accuracy": multiclass_recall(preds, targets, n, average="macro").item(),
        "macro_f1": multiclass_f1_score(preds, targets, n, average="macro").item(),
        "weighted_f1": multiclass_f1_score(preds, targets, n, average="weighted").item(),
        "auroc": multiclass_auroc(logits.softmax(dim=1), targets, n, average="macro").item(),
    }
    recall = multiclass_recall(preds, targets, n, average=None)
    metrics.update({f"recall/{name}": r.item() for name, r in zip(class_names, recall, strict=True)})
    return metrics


def confusion_matrix(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows are true classes, columns predictions, raw counts."""
    return multiclass_confusion_matrix(logits.argmax(dim=1).cpu(), targets.long().cpu(), num_classes)
