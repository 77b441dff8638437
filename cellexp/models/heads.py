"""Classification heads: embedding (B, D) in, logits (B, C) out.

Every head is built as `head_factory(in_features=D, num_classes=C)`, so that tensor-network
heads slot in beside these without the rest of the code knowing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from cellexp.errors import ConfigError


class LinearHead(nn.Sequential):
    """Dropout then one linear layer: the paper's baseline head."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        super().__init__(nn.Dropout(dropout), nn.Linear(in_features, num_classes))


class MLPHead(nn.Sequential):
    """`depth` hidden layers of one width, GELU and dropout: the control for graph-shaped heads.

    Give `width`, a `param_budget`, or `match`: a head factory (e.g. a tensor-network head's config)
    whose parameter count becomes the budget, so that ablations compare heads of equal size.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        depth: int = 2,
        width: int | None = None,
        param_budget: int | None = None,
        match: Callable[..., nn.Module] | None = None,
        dropout: float = 0.0,
    ):
        if depth < 1:
            raise ConfigError(f"head.depth={depth} must be at least 1")
        if sum(x is not None for x in (width, param_budget, match)) != 1:
            raise ConfigError("give exactly one of head.width, head.param_budget and head.match")
        if match is not None:
            param_budget = param_count_of(match, in_features, num_classes)
        width = width or width_for_budget(in_features, num_classes, depth, param_budget)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(in_features if i == 0 else width, width), nn.GELU(), nn.Dropout(dropout)]
        super().__init__(*layers, nn.Linear(width, num_classes))


class PublishedMLPHead(nn.Sequential):
    """The published MLP control: Linear layers of `dims`, `activation` after each but the last, then Linear to
    the classes (the published loop adds no activation after its last hidden layer; kept as published).

    `trained=False` is the published control: its optimizer gets the backbone's parameters only, so the MLP
    keeps its initial weights (its parameters do not require gradients, and no optimizer is given them).
    """

    ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}

    def __init__(
        self, in_features: int, num_classes: int, dims: list[int], activation: str = "tanh", trained: bool = True
    ):
        if not dims or any(int(d) < 1 for d in dims):
            raise ConfigError(f"head.dims must be a non-empty list of positive widths, got {dims!r}")
        if activation not in self.ACTIVATIONS:
            raise ConfigError(f"unknown head.activation {activation!r}; valid: {', '.join(self.ACTIVATIONS)}")
        layers: list[nn.Module] = []
        for i, width in enumerate(dims):
            layers.append(nn.Linear(in_features if i == 0 else dims[i - 1], int(width)))
            if i < len(dims) - 1:
                layers.append(self.ACTIVATIONS[activation]())
        super().__init__(*layers, nn.Linear(int(dims[-1]), num_classes))
        self.requires_grad_(bool(trained))


def param_count_of(factory: Callable[..., nn.Module], in_features: int, num_classes: int) -> int:
    """Parameters of the head `factory` would build, counted on the meta device: no memory, no compute."""
    with torch.device("meta"):
        head = factory(in_features=in_features, num_classes=num_classes)
    return sum(p.numel() for p in head.parameters())


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
