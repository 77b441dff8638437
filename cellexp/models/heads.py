"""Classification heads: embedding (B, D) in, logits (B, C) out.

Every head is built as `head_factory(in_features=D, num_classes=C)`, so that tensor-network
heads slot in beside these without the rest of the code knowing.
"""

from __future__ import annotations

import math

from torch import nn

from cellexp.errors import ConfigError


class LinearHead(nn.Sequential):
    """Dropout then one linear layer: the paper's baseline head."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        super().__init__(nn.Dropout(dropout), nn.Linear(in_features, num_classes))


class MLPHead(nn.Sequential):
    """`depth` hidden layers of one width, GELU and dropout: the control for graph-shaped heads.

    Give `width`, or `param_budget` to choose the width whose parameter count comes closest to it
    (e.g. a tensor-network head's), so that ablations compare heads of equal size.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        depth: int = 2,
        width: int | None = None,
        param_budget: int | None = None,
        dropout: float = 0.0,
    ):
        if depth < 1:
            raise ConfigError(f"head.depth={depth} must be at least 1")
        if (width is None) == (param_budget is None):
            raise ConfigError("give exactly one of head.width and head.param_budget")
        width = width or width_for_budget(in_features, num_classes, depth, param_budget)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(in_features if i == 0 else width, width), nn.GELU(), nn.Dropout(dropout)]
        super().__init__(*layers, nn.Linear(width, num_classes))


def mlp_param_count(in_features: int, num_classes: int, depth: int, width: int) -> int:
    return (in_features + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * num_classes


def width_for_budget(in_features: int, num_classes: int, depth: int, budget: int) -> int:
    """The width whose MLP parameter count is closest to `budget` (solves the quadratic, then rounds)."""
    a = depth - 1
    b = in_features + 1 + (depth - 1) + num_classes
    c = num_classes - budget
    root = -c / b if a == 0 else (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    candidates = {max(1, math.floor(root)), max(1, math.ceil(root))}
    return min(candidates, key=lambda w: abs(mlp_param_count(in_features, num_classes, depth, w) - budget))
