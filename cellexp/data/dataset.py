"""Torch datasets over a crop store: uint8 crops straight from memory-mapped arrays, no decoding."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from cellexp.data.store import CropStore


class CropDataset(Dataset):
    """(crop (1,S,S) uint8, label) pairs of one split, optionally a seeded subset of `limit` crops."""

    def __init__(self, store: CropStore, split: str, limit: int | None = None, seed: int = 0):
        self.store, self.split = store, split
        self.labels_all = store.labels(split)
        self.indices = _subset(len(self.labels_all), limit, seed)
        self._images = None  # opened lazily so that DataLoader workers each map the file themselves

    @property
    def labels(self) -> np.ndarray:
        return self.labels_all[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self._images is None:
            self._images = self.store.images(self.split)
        crop = torch.from_numpy(np.array(self._images[self.indices[i]]))
        return crop.unsqueeze(0), int(self.labels_all[self.indices[i]])


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
