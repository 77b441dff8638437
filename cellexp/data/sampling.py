"""Class-balanced sampling that every rank draws identically and a resumed run draws again."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler


class BalancedSampler(Sampler[int]):
    """Draw indices with probability inversely proportional to class frequency, seeded by (seed, epoch)."""

    def __init__(self, labels: np.ndarray, seed: int = 0, num_samples: int | None = None):
        counts = np.bincount(labels)
        weights = 1.0 / counts[labels]
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.num_samples = num_samples or len(labels)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator).tolist()


class SeededShuffleSampler(Sampler[int]):
    """A plain shuffle with the same (seed, epoch) contract as BalancedSampler."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.randperm(self.size, generator=generator).tolist()
