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
