"""Torch datasets over a crop store: uint8 crops straight from memory-mapped shards, no decoding."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch.utils.data import Dataset

from cellexp.data.store import CropStore, channel_batch


class CropDataset(Dataset):
    """(crop (C,S,S), label) pairs of one split.

    `rows` restricts it to some of the split's crops (a patch store holds every sequence's patches in one
    split); `classes` keeps some cell lines only (store labels, in the order given, become 0..k-1); `limit`
    keeps a seeded random subset. A DataLoader asks for a whole batch at once (`__getitems__`),
    which reads each shard's rows in one go; `collate_batch` passes the result through.
    """

    def __init__(
        self,
        store: CropStore,
        split: str,
        limit: int | None = None,
        seed: int = 0,
        classes: list[int] | None = None,
        rows: np.ndarray | None = None,
        with_masks: bool = False,
    ):
        self.store, self.split, self.with_masks = store, split, with_masks
        stored = store.labels(split)
        relabel = np.full(max(len(store.class_names), 1), -1, dtype=np.int64)
        relabel[classes if classes is not None else np.arange(len(store.class_names))] = np.arange(
            len(classes) if classes is not None else len(store.class_names)
        )
        candidates = np.arange(len(stored)) if rows is None else np.asarray(rows, dtype=np.int64)
        kept = candidates[relabel[stored[candidates]] >= 0]
        self.indices = kept[_subset(len(kept), limit, seed)]
        self.labels = relabel[stored[self.indices]]
        self._images = self._masks = None  # opened lazily so that DataLoader workers each map the shards themselves

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        crops, labels = self.__getitems__([i])
        return crops[0], int(labels[0])

    def __getitems__(self, positions: list[int]) -> tuple[torch.Tensor, ...]:
        """(crops (B,C,S,S) uint8 or uint16, labels (B,)), and the cells' masks (B,1,S,S) uint8 0/1 `with_masks`."""
        if self._images is None:
            self._images = self.store.images(self.split)
        positions = np.asarray(positions)
        rows = self.indices[positions]
        crops = torch.from_numpy(channel_batch(self._images[rows]))
        labels = torch.from_numpy(self.labels[positions])
        if not self.with_masks:
            return crops, labels
        if self._masks is None:
            self._masks = self.store.masks(self.split)
        return crops, labels, torch.from_numpy(np.ascontiguousarray(self._masks[rows])).unsqueeze(1)

    def excluding(self, others: list[CropDataset]) -> CropDataset:
        """These cells less those that `others` of the same store split hold (a transductive train split less
        the evaluated cells)."""
        held = [other.indices for other in others if other.store is self.store and other.split == self.split]
        keep = ~np.isin(self.indices, np.concatenate([np.zeros(0, np.int64), *held]))
        out = copy.copy(self)
        out.indices, out.labels, out._images, out._masks = self.indices[keep], self.labels[keep], None, None
        return out

    def masked(self) -> CropDataset:
        """The same cells, with their masks in every batch."""
        out = copy.copy(self)
        out.with_masks, out._images, out._masks = True, None, None
        return out


def collate_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset already made the batch (`__getitems__`); nothing to stack."""
    return batch


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
