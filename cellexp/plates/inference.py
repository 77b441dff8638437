"""Crops through a trained classifier: class probabilities and the embedding that enters its head, per cell."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cellexp.data.store import channel_batch


@torch.no_grad()
def classify_crops(
    model: nn.Module, transform: nn.Module, crops: np.ndarray, batch_size: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, S, S) (or grey (N, S, S)) crops -> probabilities (N, classes) and embeddings (N, features), float32;
    `model` has a `backbone` and a `head` (a CellClassifier) and is in eval mode; `transform` is its input config's."""
    probabilities, embeddings = [], []
    for start in range(0, len(crops), batch_size):
        batch = torch.from_numpy(channel_batch(np.asarray(crops[start : start + batch_size]))).to(device)
        embedding = model.backbone(transform(batch))
        probabilities.append(model.head(embedding).float().softmax(dim=1).cpu())
        embeddings.append(embedding.float().cpu())
    if not probabilities:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return torch.cat(probabilities).numpy(), torch.cat(embeddings).numpy()
