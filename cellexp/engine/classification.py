"""Supervised classification on the engine: a step is cross-entropy on a transformed batch, evaluation the metrics
of a whole split (gathered across ranks without duplicates).

With `camo` (an object with `capture()`, `inside_share(logits, labels, masks, create_graph)` and `summary(shares)`,
such as `cellexp.xai.camo.GradCamo`), batches carry the cells' masks: each step adds `camo_weight` times the
share of the Grad-CAM mass outside the cell to the loss (logged as `camo_loss`), and evaluation reports the
Grad-CAMO of the split's cells."""

from __future__ import annotations

import numpy as np
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
        camo=None,
        camo_weight: float = 0.0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.criterion, self.class_names = criterion, class_names
        self.camo, self.camo_weight = camo, float(camo_weight)
        self.train_transform = train_transform.to(self.acc.device).train()
        self.eval_transform = eval_transform.to(self.acc.device).eval()

    def train_step(self, batch) -> StepOutput:
        if self.camo is not None and self.camo_weight > 0:
            return self._camo_step(*batch)
        crops, labels = batch[:2]
        inputs = self.model_input(self.train_transform(crops))
        with self.autocast():
            loss = self.criterion(self.model(inputs), labels)
        return StepOutput(loss, samples=labels.shape[0])

    def _camo_step(self, crops, labels, masks) -> StepOutput:
        """Cross-entropy plus the weighted share of Grad-CAM mass outside each cell (its gradient through the
        gradient: one extra backward above the target layer)."""
        inputs, masks = self.train_transform(crops, masks)
        with self.autocast(), self.camo.capture():
            logits = self.model(self.model_input(inputs))
            loss = self.criterion(logits, labels)
        share, _ = self.camo.inside_share(logits, labels, masks, create_graph=True)
        outside = 1.0 - share.mean()
        return StepOutput(loss + self.camo_weight * outside, samples=labels.shape[0], stats={"camo_loss": outside})

    @torch.no_grad()
    def predict(self, dl: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and targets of a whole split (a loader passed through `accelerator.prepare`)."""
        self.model.eval()
        logits, targets = [], []
        for crops, labels, *_ in dl:
            with self.autocast():
                out = self.model(self.model_input(self.eval_transform(crops)))
            out, labels = self.acc.gather_for_metrics((out.float(), labels))
            logits.append(out.cpu())
            targets.append(labels.cpu())
        return torch.cat(logits), torch.cat(targets)

    def evaluate(self, dl: DataLoader) -> dict[str, float]:
        if self.camo is None:
            return classification_metrics(*self.predict(dl), self.class_names)
        logits, targets, shares = self.predict_with_gradcamo(dl)
        return {**classification_metrics(logits, targets, self.class_names), **self.camo.summary(shares)}

    def predict_with_gradcamo(self, dl: DataLoader) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """`predict`'s logits and targets and each cell's Grad-CAMO (NaN where its map is empty), from the one
        forward pass that Grad-CAMO needs anyway (with grads, model in eval mode), gathered from every rank."""
        self.model.eval()
        logits, targets, shares = [], [], []
        for crops, labels, masks in dl:
            inputs, masks = self.eval_transform(crops, masks)
            with torch.enable_grad(), self.autocast(), self.camo.capture():
                out = self.model(self.model_input(inputs))
            with torch.enable_grad():
                share, has_mass = self.camo.inside_share(out, labels, masks, create_graph=False)
            share = torch.where(has_mass, share.detach(), torch.nan)
            out, labels, share = self.acc.gather_for_metrics((out.detach().float(), labels, share))
            logits.append(out.cpu())
            targets.append(labels.cpu())
            shares.append(share.cpu())
        return torch.cat(logits), torch.cat(targets), torch.cat(shares).numpy().astype(np.float64)
