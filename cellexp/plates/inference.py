"""Crops through a trained classifier: class probabilities and the embedding that enters its head, per cell."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cellexp.data.store import channel_batch
from cellexp.errors import ConfigError


@torch.no_grad()
def classify_crops(
    model: nn.Module,
    transform: nn.Module,
    crops: np.ndarray,
    batch_size: int,
    device: torch.device,
    layer: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, S, S) (or grey (N, S, S), or 3-D (N, C, D, S, S)) crops -> probabilities (N, classes) and embeddings
    (N, features), float32; `model` has a `backbone` and a `head` (a CellClassifier) and is in eval mode; `transform`
    is its input config's. The embedding is what enters the head, or the backbone's `layer`'s activations averaged
    over their spatial axes (the paper's profiles are intermediate activations)."""
    probabilities, embeddings, captured = [], [], []
    hook = (
        backbone_layer(model.backbone, layer).register_forward_hook(lambda m, i, out: captured.append(out))
        if layer
        else None
    )
    try:
        for start in range(0, len(crops), batch_size):
            batch = torch.from_numpy(channel_batch(np.asarray(crops[start : start + batch_size]))).to(device)
            embedding = model.backbone(transform(batch))
            probabilities.append(model.head(embedding).float().softmax(dim=1).cpu())
            if captured:
                activations = captured.pop()
                embedding = (
                    activations.mean(dim=tuple(range(2, activations.ndim))) if activations.ndim > 2 else activations
                )
            embeddings.append(embedding.float().cpu())
    finally:
        if hook is not None:
            hook.remove()
    if not probabilities:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return torch.cat(probabilities).numpy(), torch.cat(embeddings).numpy()


def backbone_layer(backbone: nn.Module, name: str) -> nn.Module:
    """The backbone's submodule `name` (a dotted path, as `named_modules` lists them), or one error naming it."""
    try:
        return backbone.get_submodule(name)
    except AttributeError:
        shown = ", ".join(child for child, _ in backbone.named_children())
        raise ConfigError(
            f"task.layer={name}: the backbone has no such layer; its top-level layers are {shown}"
        ) from None
