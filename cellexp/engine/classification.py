"""Supervised classification on the engine: a step is cross-entropy on a transformed batch, evaluation the metrics
of a whole split (gathered across ranks without duplicates).

Batches may carry the cells' masks (crops, labels, masks): the transforms then move them with the crops (and may
replace the background, `dataset.background`). With `camo` (an object with `capture()`, `inside_share(logits,
labels, masks, create_graph)` and `summary(shares)`, such as `cellexp.xai.camo.GradCamo`) evaluation reports the
Grad-CAMO of the split's cells; with `camo_penalty` (`penalty(forward, x, labels, masks) -> (logits, penalty)`,
one of `cellexp.xai.penalties`) each step adds `camo_weight` times the penalty to the loss (logged as
`camo_loss`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from cellexp.data.transforms import model_inputs
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
        camo_penalty=None,
        camo_weight: float = 0.0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.criterion, self.class_names = criterion, class_names
        self.camo, self.camo_penalty, self.camo_weight = camo, camo_penalty, float(camo_weight)
        self.train_transform = train_transform.to(self.acc.device).train()
        self.eval_transform = eval_transform.to(self.acc.device).eval()

    def train_step(self, batch) -> StepOutput:
        inputs, labels, masks = model_inputs(self.train_transform, batch)
        inputs = self.model_input(inputs)
        if self.camo_penalty is None or not self.camo_weight > 0:
            with self.autocast():
                loss = self.criterion(self.model(inputs), labels)
            return StepOutput(loss, samples=labels.shape[0])
        logits, penalty = self.camo_penalty(self._forward, inputs, labels, masks)
        with self.autocast():
            loss = self.criterion(logits, labels)
        return StepOutput(loss + self.camo_weight * penalty, samples=labels.shape[0], stats={"camo_loss": penalty})

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.model(x)

    @torch.no_grad()
    def predict(self, dl: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and targets of a whole split (a loader passed through `accelerator.prepare`)."""
        self.model.eval()
        logits, targets = [], []
        for batch in dl:
            inputs, labels, _ = model_inputs(self.eval_transform, batch)
            with self.autocast():
                out = self.model(self.model_input(inputs))
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
        for batch in dl:
            inputs, labels, masks = model_inputs(self.eval_transform, batch)
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
