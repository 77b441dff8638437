"""Every shipped config composes and resolves; every backbone builds into a classifier that runs."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from cellexp.tasks.classify import build_model
from tests.conftest import CONF

NEEDS = {"dataset=livecell": ["dataset.root=/data/LIVECell"]}


def _options() -> list[str]:
    """`group=option` for every yaml under conf/ (nested groups included), Hydra's own group aside."""
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        group = path.parent.relative_to(CONF).as_posix()
        if group not in (".", "hydra"):
            found.append(f"{group}={path.stem}")
    return found


@pytest.mark.parametrize("choice", _options())
def test_every_config_option_composes_and_resolves(make_cfg, choice):
    cfg = make_cfg([choice, *NEEDS.get(choice, [])], tiny=False)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert resolved["task"]["optimized_metric"].startswith("val/")
    assert resolved["task"]["direction"] in ("maximize", "minimize")


def test_options_cover_every_group():
    groups = {choice.split("=")[0] for choice in _options()}
    assert {
        "dataset",
        "backbone",
        "head",
        "task",
        "optim",
        "optim/scheduler",
        "trainer",
        "logger",
        "paths",
        "debug",
        "experiment",
        "experiment/paper",
        "hparams_search",
    } <= groups


@pytest.mark.parametrize("backbone", sorted(p.stem for p in (CONF / "backbone").glob("*.yaml")))
def test_every_backbone_builds_a_classifier(make_cfg, backbone):
    torch.manual_seed(0)
    cfg = make_cfg([f"backbone={backbone}", "dataset.image_size=64"], tiny=False)
    model = build_model(cfg, num_classes=8).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 64, 64))
    assert logits.shape == (2, 8) and torch.isfinite(logits).all()
