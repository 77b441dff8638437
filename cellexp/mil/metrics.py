"""Metrics of sequence predictions at two levels: each sequence, and each experimental batch of a line (a batch's
score is the mean softmax of its sequences), as CLANet reports them."""

from __future__ import annotations

from collections import defaultdict

import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from cellexp.data.timelapse.bags import Bag
from cellexp.engine.metrics import present_class_auroc


def ranking_metrics(probs: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Top-1/3/5 accuracy (k below the class count only), macro F1 and one-vs-rest macro AUC of class scores, the AUC
    over the classes present (a test on a subset of lines has absent ones)."""
    probs, targets = probs.float().cpu(), targets.long().cpu()
    out = {
        f"top{k}": multiclass_accuracy(probs, targets, num_classes, average="micro", top_k=k).item()
        for k in (1, 3, 5)
        if k == 1 or k < num_classes
    }
    out["macro_f1"] = multiclass_f1_score(probs.argmax(1), targets, num_classes, average="macro").item()
    out["auc"] = present_class_auroc(probs, targets)
    return out


def level_metrics(logits: torch.Tensor | None, bags: list[Bag], labels: dict, num_classes: int, probs=None) -> dict:
    """`sequence/<metric>` over sequences and `batch/<metric>` over batches."""
    probs = logits.softmax(dim=1) if probs is None else probs
    targets = torch.tensor([labels[b.sequence.key] for b in bags])
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, bag in enumerate(bags):
        groups[(bag.sequence.line, bag.sequence.batch)].append(i)
    batch_probs = torch.stack([probs[idx].mean(0) for idx in groups.values()])
    batch_targets = torch.stack([targets[idx[0]] for idx in groups.values()])
    out = {f"sequence/{k}": v for k, v in ranking_metrics(probs, targets, num_classes).items()}
    out.update({f"batch/{k}": v for k, v in ranking_metrics(batch_probs, batch_targets, num_classes).items()})
    return out


def prefixed(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}/{key}": value for key, value in metrics.items()}
