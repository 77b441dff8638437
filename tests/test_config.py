"""Every shipped config composes and resolves; every backbone builds into a classifier that runs."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from cellexp.tasks.trained import build_model
from tests.conftest import CONF
from tests.test_graphs import REFERENCE, needs_reference

NEEDS = {"dataset=livecell": ["dataset.root=/data/LIVECell"], "dataset=livecell_cls": ["dataset.root=/data/CLS"]}


def _options() -> list[str]:
    """`group=option` for every yaml under conf/ (nested groups included), Hydra's own group aside."""
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        group = path.parent.relative_to(CONF).as_posix()
        if group.startswith("experiment/"):  # subfolders of presets name options (experiment=paper/x), not groups
            found.append(f"experiment={path.relative_to(CONF / 'experiment').with_suffix('').as_posix()}")
        elif group != "." and not group.startswith("hydra"):
            found.append(f"{group}={path.stem}")
    return found


@pytest.mark.parametrize("choice", _options())
def test_every_config_option_composes_and_resolves(make_cfg, choice):
    cfg = make_cfg([choice, *NEEDS.get(choice, [])], tiny=False)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    # training tasks select on validation metrics; task=xai reports on the maps it makes
    assert resolved["task"]["optimized_metric"].startswith("xai/" if choice == "task=xai" else "val/")
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


PAPER = CONF / "experiment" / "paper"


def test_the_paper_table_has_a_baseline_and_an_elegans_preset_per_backbone():
    rows = {p.stem for p in PAPER.glob("*.yaml")} - {"protocol"}
    baselines = {row for row in rows if not row.startswith("elegans_")}
    assert len(baselines) == 16 and rows - baselines == {f"elegans_{b}" for b in baselines}
    assert baselines <= {p.stem for p in (CONF / "backbone").glob("*.yaml")}


def test_paper_presets_follow_the_published_protocol(make_cfg):
    cfg = make_cfg(["experiment=paper/elegans_densenet121"], tiny=False)
    assert (cfg.dataset.image_size, cfg.trainer.batch_size, cfg.optim.optimizer.lr) == (224, 256, 1e-4)
    assert cfg.optim.optimizer._target_ == "torch.optim.AdamW" and cfg.task.balanced_sampling
    assert cfg.trainer.early_stopping.monitor == "val/loss" and not cfg.backbone.pretrained
    assert (cfg.backbone.model_name, cfg.head.graph, cfg.head.dim, cfg.head.wiring) == (
        "densenet121",
        "elegans",
        512,
        "paper",
    )


@needs_reference
@pytest.mark.parametrize(
    ("row", "published_millions"), [("elegans_resnet18", 34.4), ("elegans_efficientnetv2_m", 76.7)]
)
def test_paper_presets_on_the_published_graph_have_the_published_size(make_cfg, row, published_millions):
    cfg = make_cfg([f"experiment=paper/{row}", f"head.graph_file={REFERENCE}", "dataset.in_chans=3"], tiny=False)
    with torch.device("meta"):
        model = build_model(cfg, num_classes=8)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == published_millions
