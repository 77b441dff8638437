"""Backbone plus head; `model.backbone(x)` is the embedding that enters the head."""

from __future__ import annotations

import torch
from torch import nn


class CellClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.backbone_frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    @property
    def input_config(self):
        """What the model takes (size, channels, normalisation), carried by its backbone."""
        return self.backbone.input_config

    def freeze_backbone(self) -> None:
        """Train the head only (a linear probe with a linear head): no gradients for the backbone, which also
        stays in eval mode, so that its batch-norm statistics and dropout do not change either."""
        self.backbone.requires_grad_(False)
        self.backbone_frozen = True
        self.backbone.eval()

    def train(self, mode: bool = True) -> CellClassifier:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self
