"""The per-image baseline MIL is measured against, on the same embeddings: a strong, separately tuned linear model
of each frame, not a straw man."""

from __future__ import annotations

import numpy as np
import torch

from cellexp.data.timelapse.bags import Bag
from cellexp.mil.metrics import level_metrics, prefixed


def baseline_metrics(features: torch.Tensor, split_bags: dict, labels: dict, num_classes: int, grid) -> dict:
    """The baseline's test metrics, as `test/baseline/<level>/<metric>`."""
    probs = per_image_baseline(features, split_bags, labels, num_classes, grid)
    return prefixed("test/baseline", level_metrics(None, split_bags["test"], labels, num_classes, probs=probs))


def per_image_baseline(
    features: torch.Tensor, split_bags: dict[str, list[Bag]], labels: dict, num_classes: int, grid
) -> torch.Tensor:
    """Test sequences' scores from multinomial logistic regression of each frame's mean patch embedding, fitted to
    convergence (L-BFGS), its inverse regularisation picked on val sequence top-1 from `grid`; a sequence's
    score is the mean of its frames' softmax."""
    from sklearn.linear_model import LogisticRegression

    def frames_of(bags):
        x = np.stack([features[rows].mean(0).cpu().numpy() for bag in bags for rows in bag.frames])
        owner = np.asarray([i for i, bag in enumerate(bags) for _ in bag.frames])
        return x, owner

    def sequence_probs(model, bags):
        x, owner = frames_of(bags)
        p = np.zeros((len(x), num_classes))
        p[:, model.classes_] = model.predict_proba(x)
        return torch.from_numpy(np.stack([p[owner == i].mean(0) for i in range(len(bags))])).float()

    x, owner = frames_of(split_bags["train"])
    y = np.asarray([labels[split_bags["train"][i].sequence.key] for i in owner])
    val_targets = torch.tensor([labels[b.sequence.key] for b in split_bags["val"]])
    best, best_model = -1.0, None
    for c in grid:
        model = LogisticRegression(C=float(c), max_iter=2000).fit(x, y)
        value = (sequence_probs(model, split_bags["val"]).argmax(1) == val_targets).float().mean().item()
        if value > best:
            best, best_model = value, model
    return sequence_probs(best_model, split_bags["test"])
