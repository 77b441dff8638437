"""The MIL aggregator on the engine: Time-series Segment Samples of the training sequences as batches of bags,
whole sequences for evaluation.

An epoch draws `samples_per_sequence` TSS samples of every training sequence (by the sampler `task.tss.method`
chooses, `cellexp.mil.tss`), in a shuffle drawn from (seed, epoch), with a seed for each sample's frames drawn
alongside; so an epoch is the same on any number of processes and a resumed run (even mid-epoch) replays it exactly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from cellexp.data.timelapse.bags import Bag
from cellexp.engine.trainer import StepOutput, Trainer
from cellexp.mil.metrics import level_metrics
from cellexp.mil.tss import Sample, make_sampler
from cellexp.models.mil import pad_bags


class TSSSampler(Sampler):
    """An epoch: (bag, seed of its sample) for `per_sequence` draws of every bag, both drawn from (seed, epoch)."""

    def __init__(self, bags: int, per_sequence: int, seed: int):
        self.draws = np.repeat(np.arange(bags), per_sequence)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.draws)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.draws)
        seeds = rng.integers(0, 2**63, size=len(order))
        yield from zip(order.tolist(), seeds.tolist(), strict=True)


class TSSSamples(Dataset):
    """A TSS sample of a training bag: its kept frames' patch embeddings, its label, its weight."""

    def __init__(self, bags: list[Bag], features: torch.Tensor, labels: dict, sample: Sample):
        self.bags, self.features = bags, features
        self.targets = [labels[bag.sequence.key] for bag in bags]
        self.sample = sample

    def __len__(self) -> int:
        return len(self.bags)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        bag = self.bags[index]
        kept, weight = self.sample(bag.hours, np.random.Generator(np.random.PCG64(seed)))
        rows = torch.from_numpy(np.concatenate([bag.frames[i] for i in kept])).to(self.features.device)
        return self.features.index_select(0, rows), self.targets[index], weight


class WholeBags(Dataset):
    """Every patch of a sequence, with its label (-1 for a line the model does not know) and its index."""

    def __init__(self, bags: list[Bag], features: torch.Tensor, labels: dict):
        self.bags, self.features, self.labels = bags, features, labels

    def __len__(self) -> int:
        return len(self.bags)

    def __getitem__(self, index: int):
        bag = self.bags[index]
        return self.features[bag.rows], self.labels.get(bag.sequence.key, -1), index


def collate_bags(items):
    """Bags of different sizes, padded, with their mask and the other fields as tensors."""
    x, mask = pad_bags([item[0] for item in items])
    label, extra = zip(*((item[1], item[2]) for item in items), strict=True)
    device = x.device
    return x, mask, torch.tensor(label, device=device), torch.tensor(extra, device=device)


def train_loader(bags, features, labels, tss, bags_per_step: int, seed: int, drop_last: bool = True) -> DataLoader:
    """An epoch of TSS samples; `drop_last` drops the last incomplete step (ours: each step weighs the same)
    unless it is the only one; CLANet's loader keeps it (train_TSS_MIL.py L88)."""
    sampler = TSSSampler(len(bags), int(tss.samples_per_sequence), seed)
    dataset = TSSSamples(bags, features, labels, make_sampler(tss))
    drop_last = drop_last and len(sampler) >= bags_per_step
    return DataLoader(dataset, batch_size=bags_per_step, sampler=sampler, collate_fn=collate_bags, drop_last=drop_last)


def eval_loader(bags, features, labels, batch_size: int) -> DataLoader:
    return DataLoader(WholeBags(bags, features, labels), batch_size=batch_size, collate_fn=collate_bags)


class MILTrainer(Trainer):
    """`Trainer` for the gated-attention aggregator: coverage-weighted cross-entropy on TSS samples; evaluation
    on whole sequences at sequence and batch level, with `val/loss` the sequences' cross-entropy."""

    def __init__(self, *args, labels: dict, num_classes: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.labels, self.num_classes = labels, num_classes

    def train_step(self, batch) -> StepOutput:
        x, mask, target, weight = batch
        with self.autocast():
            logits, _ = self.model(x, mask)
        weight = weight.float()
        loss = (F.cross_entropy(logits.float(), target, reduction="none") * weight).sum() / weight.sum()
        return StepOutput(loss, samples=len(target))

    @torch.no_grad()
    def predict(self, dl: DataLoader) -> tuple[torch.Tensor, list[np.ndarray], list[int]]:
        """Whole-sequence logits (n, C), each sequence's attention over its patches, and the sequences' indices in
        the loader's bags, gathered from every rank."""
        self.model.eval()
        logits, attention, order = [], [], []
        for x, mask, _, index in dl:
            with self.autocast():
                out, weights = self.model(x, mask)
            # bags are padded to the longest of their batch: pad across ranks too before gathering
            weights, mask = (self.acc.pad_across_processes(t, dim=1) for t in (weights.float(), mask))
            out, weights, mask, index = self.acc.gather_for_metrics((out.float(), weights, mask, index))
            logits.append(out.cpu())
            attention += [w[m].cpu().numpy() for w, m in zip(weights, mask, strict=True)]
            order += index.tolist()
        return torch.cat(logits), attention, order

    def evaluate(self, dl: DataLoader) -> dict[str, float]:
        logits, _, order = self.predict(dl)
        bags = [dl.dataset.bags[i] for i in order]
        metrics = level_metrics(logits, bags, self.labels, self.num_classes)
        targets = torch.tensor([self.labels[b.sequence.key] for b in bags])
        return {**metrics, "loss": F.cross_entropy(logits, targets).item()}
