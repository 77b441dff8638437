"""Classification heads: embedding (B, D) in, logits (B, C) out.

Every head is built as `head_factory(in_features=D, num_classes=C)`, so that tensor-network
heads can slot in beside the linear one without the rest of the code knowing.
"""

from __future__ import annotations

from torch import nn


class LinearHead(nn.Sequential):
    """Dropout then one linear layer: the paper's baseline head."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        super().__init__(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
