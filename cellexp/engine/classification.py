"""Supervised classification on the engine: a step is cross-entropy on a transformed batch, evaluation the metrics
of a whole split (gathered across ranks without duplicates)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from cellexp.engine.metrics import classification_metrics
from cellexp.engine.trainer import StepOutput, Trainer


class ClassifierTrainer(Trainer):
    """`Trainer` for (crops, labels) batches: `train_transform` and `eval_transform` make the model's input on the
    device; `criterion(logits, labels)` is the loss."""

    def __init__(
        self,
        *args,
        criterion: nn.Module,
        train_transform: nn.Module,
        eval_transform: nn.Module,
        class_names: list[str],
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.criterion, self.class_names = criterion, class_names
        self.train_transform = train_transform.to(self.acc.device).train()
        self.eval_transform = eval_transform.to(self.acc.device).eval()

    def train_step(self, batch) -> StepOutput:
        crops, labels = batch
        inputs = self.model_input(self.train_transform(crops))
        with self.autocast():
            loss = self.criterion(self.model(inputs), labels)
        return StepOutput(loss, samples=labels.shape[0])

    @torch.no_grad()
    def predict(self, dl: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and targets of a whole split (a loader passed through `accelerator.prepare`)."""
        self.model.eval()
        logits, targets = [], []
        for crops, labels in dl:
            with self.autocast():
                out = self.model(self.model_input(self.eval_transform(crops)))
            out, labels = self.acc.gather_for_metrics((out.float(), labels))
            logits.append(out.cpu())
            targets.append(labels.cpu())
        return torch.cat(logits), torch.cat(targets)

    def evaluate(self, dl: DataLoader) -> dict[str, float]:
        return classification_metrics(*self.predict(dl), self.class_names)
