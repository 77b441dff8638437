"""Classification metrics over a whole split, via torchmetrics; and, beside them, the published LIVECell-CLS
figures averaged over batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# torchmetrics is imported by the functions that use it: it imports its every domain (audio, image, text: with
# scipy and matplotlib, about 1.3 s of CPU a process), and DINO's evaluation (weighted_knn_accuracy,
# embedding_spread) needs none of it


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor, class_names: list[str]) -> dict[str, float]:
    """Loss, accuracy, balanced accuracy, macro/weighted F1, macro AUROC and recall of each class present.

    A split may lack some classes (a subset of lines, a small val split): balanced accuracy, AUROC and the
    recalls are taken over the classes present in `targets` only, as scikit-learn does, and `classes_present`
    says how many there were; macro F1 is over the classes that are true or predicted (scikit-learn's labels).
    """
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score, multiclass_recall

    logits, targets = logits.float().cpu(), targets.long().cpu()
    n = len(class_names)
    preds = logits.argmax(dim=1)
    present = present_classes(targets, n)
    recall = multiclass_recall(preds, targets, n, average=None)
    metrics = {
        "loss": F.cross_entropy(logits, targets).item(),
        "accuracy": multiclass_accuracy(preds, targets, n, average="micro").item(),
        "balanced_accuracy": recall[present].mean().item(),
        "macro_f1": multiclass_f1_score(preds, targets, n, average="macro").item(),
        "weighted_f1": multiclass_f1_score(preds, targets, n, average="weighted").item(),
        "auroc": present_class_auroc(logits.softmax(dim=1), targets),
        "classes_present": float(len(present)),
    }
    metrics.update({f"recall/{class_names[c]}": recall[c].item() for c in present.tolist()})
    return metrics


def batch_averaged_metrics(logits: torch.Tensor, targets: torch.Tensor, num_classes: int, batch: int) -> dict:
    """The published LIVECell-CLS figures: each batch of `batch` cells' metric (average='weighted', so AUROC too),
    then the batches' mean weighted by their size, as Lightning reports a per-batch value logged on_epoch.
    Accuracy so averaged is the whole split's; F1 and AUROC are not."""
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_auroc,
        multiclass_f1_score,
        multiclass_precision,
        multiclass_recall,
    )

    probs, targets = logits.float().cpu().softmax(dim=1), targets.long().cpu()
    kinds = {
        "accuracy": multiclass_accuracy,
        "weighted_f1": multiclass_f1_score,
        "weighted_auroc": multiclass_auroc,
        "weighted_precision": multiclass_precision,
        "weighted_recall": multiclass_recall,
    }
    sums = dict.fromkeys(kinds, 0.0)
    for start in range(0, len(targets), batch):
        p, t = probs[start : start + batch], targets[start : start + batch]
        for name, metric in kinds.items():
            sums[name] += metric(p, t, num_classes, average="weighted").item() * len(t)
    return {f"batched/{name}": total / len(targets) for name, total in sums.items()}


def present_classes(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Indices of the classes that occur in `targets`."""
    return torch.bincount(targets.long().cpu(), minlength=num_classes).nonzero().flatten()


def present_class_auroc(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """One-vs-rest AUROC averaged over the classes present in `targets` (torchmetrics scores an absent class 0
    and averages it in); NaN with fewer than two classes present, where no ranking can be judged."""
    from torchmetrics.functional.classification import multiclass_auroc

    probs, targets = probs.float().cpu(), targets.long().cpu()
    present = present_classes(targets, probs.shape[1])
    if len(present) < 2:
        return float("nan")
    per_class = multiclass_auroc(probs, targets, probs.shape[1], average=None)
    return per_class[present].mean().item()


def confusion_matrix(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows are true classes, columns predictions, raw counts."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    return multiclass_confusion_matrix(logits.argmax(dim=1).cpu(), targets.long().cpu(), num_classes)


def weighted_knn_accuracy(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> float:
    """Accuracy of a weighted kNN vote (cosine similarity, weights exp(sim / temperature)) of queries against a bank.

    The classifier DINO reports: no training, so it measures the embedding itself.
    """
    bank, queries = F.normalize(bank.float(), dim=1), F.normalize(queries.float(), dim=1)
    bank_labels, query_labels = bank_labels.long(), query_labels.long()
    classes = int(max(bank_labels.max(), query_labels.max())) + 1
    k = min(k, len(bank))
    correct = 0
    for start in range(0, len(queries), chunk):
        similarity, nearest = (queries[start : start + chunk] @ bank.T).topk(k, dim=1)
        votes = torch.zeros(len(nearest), classes, device=bank.device)
        votes.scatter_add_(1, bank_labels[nearest], (similarity / temperature).exp())
        correct += (votes.argmax(dim=1) == query_labels[start : start + chunk]).sum().item()
    return correct / len(queries)


def embedding_spread(x: torch.Tensor) -> float:
    """Per-dimension std of the L2-normalised embeddings, times sqrt(dim): about 1 for embeddings spread evenly
    over the sphere, 0 when every input maps to the same point (collapse)."""
    x = F.normalize(x.float(), dim=1)
    return (x.std(dim=0).mean() * x.shape[1] ** 0.5).item()
