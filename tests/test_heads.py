"""Heads: shapes, and the MLP control sized to a parameter budget."""

from __future__ import annotations

import pytest
import torch

from cellexp.errors import ConfigError
from cellexp.models.heads import LinearHead, MLPHead, PublishedMLPHead, mlp_param_count


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_linear_head_maps_embeddings_to_logits():
    assert LinearHead(32, 8)(torch.randn(4, 32)).shape == (4, 8)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_mlp_parameter_count_formula(depth):
    head = MLPHead(96, 8, depth=depth, width=40)
    assert n_params(head) == mlp_param_count(96, 8, depth, 40)
    assert head(torch.randn(3, 96)).shape == (3, 8)


@pytest.mark.parametrize(("depth", "budget"), [(1, 50_000), (2, 776_000), (3, 23_204_360)])
def test_mlp_width_from_budget_comes_within_one_width_step(depth, budget):
    head = MLPHead(512, 8, depth=depth, param_budget=budget)
    width = head[0].out_features
    count = n_params(head)
    step = abs(mlp_param_count(512, 8, depth, width + 1) - mlp_param_count(512, 8, depth, width))
    assert abs(count - budget) <= step / 2 + 1


def test_mlp_matches_the_size_of_another_head_built_on_the_meta_device():
    matched = MLPHead(512, 8, depth=2, match=lambda in_features, num_classes: MLPHead(in_features, 8, width=700))
    assert abs(n_params(matched) - mlp_param_count(512, 8, 2, 700)) <= 2 * 700
    assert matched[0].weight.device.type == "cpu"


def test_mlp_needs_exactly_one_size():
    with pytest.raises(ConfigError, match="exactly one of head.width, head.param_budget and head.match"):
        MLPHead(16, 8, width=8, param_budget=1000)
    with pytest.raises(ConfigError, match="exactly one"):
        MLPHead(16, 8)


def test_the_published_mlp_control_passes_gradients_on_but_takes_none_itself():
    """As published (backbone_lit_wrapper.py L214: the optimizer gets the backbone's parameters only)."""
    torch.manual_seed(0)
    head = PublishedMLPHead(8, 3, dims=[16, 16], trained=False)
    x = torch.randn(4, 8, requires_grad=True)
    head(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the backbone below still learns through it
    assert all(p.grad is None and not p.requires_grad for p in head.parameters())
    assert all(p.requires_grad for p in PublishedMLPHead(8, 3, dims=[16], trained=True).parameters())
