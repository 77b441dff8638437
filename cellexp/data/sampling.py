"""Samplers that every rank draws identically and a resumed run draws again: seeded by (seed, epoch)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler


class _EpochSeeded(Sampler[int]):
    def __init__(self, num_samples: int, seed: int):
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)


class BalancedSampler(_EpochSeeded):
    """Draw with replacement, each class equally likely whatever its frequency."""

    def __init__(self, labels: np.ndarray, seed: int = 0, num_samples: int | None = None):
        super().__init__(num_samples or len(labels), seed)
        self.weights = torch.as_tensor(1.0 / np.bincount(labels)[labels], dtype=torch.double)

    def __iter__(self):
        yield from torch.multinomial(
            self.weights, self.num_samples, replacement=True, generator=self._generator()
        ).tolist()


class SeededShuffleSampler(_EpochSeeded):
    """A plain shuffle of every index once."""

    def __init__(self, size: int, seed: int = 0):
        super().__init__(size, seed)

    def __iter__(self):
        yield from torch.randperm(self.num_samples, generator=self._generator()).tolist()


def stratified_subset(labels: np.ndarray, count: int | None, seed: int) -> np.ndarray:
    """Sorted indices of `count` items spread evenly over the classes (all of a class that has too few); seeded.

    Classes take turns: each contributes its first, then its second (in a seeded shuffle), and so on.
    """
    if count is None or count >= len(labels):
        return np.arange(len(labels))
    order = np.random.default_rng(seed).permutation(len(labels))
    turn = np.empty(len(labels), dtype=np.int64)
    taken: dict[int, int] = {}
    for position in order:
        label = int(labels[position])
        turn[position] = taken.get(label, 0)
        taken[label] = turn[position] + 1
    return np.sort(order[np.argsort(turn[order], kind="stable")[:count]])
