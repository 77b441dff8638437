"""The embedding space over a training run: the same cells' embeddings after every epoch, laid out by one UMAP
fit on all epochs together, so that the frames share their axes and a cell's moves from frame to frame are the
model's (the paper's UMAP animation over the training trajectory)."""

from __future__ import annotations

import numpy as np

from cellexp.xai.embedding import umap_2d


def joint_umap(frames: list[np.ndarray], neighbours: int, seed: int) -> list[np.ndarray]:
    """Per epoch, (N, 2) coordinates of its (N, D) embeddings, from one UMAP of all epochs' embeddings stacked."""
    if not frames:
        return []
    sizes = [len(frame) for frame in frames]
    coords = umap_2d(np.concatenate(frames).astype(np.float32), neighbours, seed)
    return np.split(coords, np.cumsum(sizes)[:-1])
