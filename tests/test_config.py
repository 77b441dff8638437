"""Every shipped config composes and resolves; every backbone builds into a classifier that runs."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

import cellexp
from cellexp.errors import ConfigError
from cellexp.tracking.loading import build_model
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
    # training tasks select on validation metrics; task=xai reports on the maps it makes, predict and embed their cells
    reported = {"task=xai": "xai/", "task=predict": "predict/", "task=embed": "embed/"}
    assert resolved["task"]["optimized_metric"].startswith(reported.get(choice, "val/"))
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
    three_d = "spatial_dims: 3" in (CONF / "backbone" / f"{backbone}.yaml").read_text()
    data = ["dataset=cellpainting3d", "dataset.image_size=32"] if three_d else ["dataset.image_size=64"]
    cfg = make_cfg([f"backbone={backbone}", *data], tiny=False)
    model = build_model(cfg, num_classes=8).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 5, 12, 32, 32) if three_d else torch.randn(2, 1, 64, 64))
    assert logits.shape == (2, 8) and torch.isfinite(logits).all()


PAPER = CONF / "experiment" / "paper"


CONTROLS = ("_random", "_deep", "_wide")


def test_the_paper_table_has_a_baseline_and_an_elegans_preset_per_backbone():
    rows = {p.stem for p in PAPER.glob("*.yaml")} - {"protocol", "protocol_transformer"}
    table = {row for row in rows if not any(marker in row for marker in CONTROLS)}
    baselines = {row for row in table if not row.startswith("elegans_")}
    assert len(baselines) == 16 and table - baselines == {f"elegans_{b}" for b in baselines}
    assert baselines <= {p.stem for p in (CONF / "backbone").glob("*.yaml")}
    controls = rows - table
    assert controls == {
        "elegans_resnet18_random_ba",
        "elegans_resnet18_random_er",
        "elegans_resnet18_random_ws",
        "elegans_efficientnet_b0_random",
        *(f"{b}_{kind}" for b in ("resnet18", "densenet121", "efficientnet_b0") for kind in ("deep", "wide")),
    }


def test_paper_presets_follow_the_published_configs(make_cfg):
    """The values of _configs/elegans_resnet18.yaml (NeuRoNeLab/connectome-livecell-cls e675f76)."""
    cfg = make_cfg(["experiment=paper/elegans_densenet121"], tiny=False)
    assert (cfg.seed, cfg.dataset.image_size, cfg.dataset.in_chans, cfg.trainer.batch_size) == (42, 224, 3, 256)
    assert dict(cfg.dataset.normalize) == {"mean": 0.0, "std": 1.0}
    optimizer, scheduler = cfg.optim.optimizer, cfg.optim.scheduler
    assert (optimizer._target_, optimizer.lr, optimizer.weight_decay) == ("torch.optim.AdamW", 1e-4, 0.1)
    assert scheduler._target_.endswith("PlateauOnMetric") and (scheduler.factor, scheduler.patience) == (0.5, 2)
    assert (scheduler.monitor, scheduler.threshold, scheduler.threshold_mode) == ("val/loss", 1e-4, "rel")
    stopping = cfg.trainer.early_stopping
    assert (stopping.monitor, stopping.patience, stopping.min_epochs, cfg.trainer.max_epochs) == (
        "val/loss",
        10,
        25,
        250,
    )
    assert cfg.trainer.precision == "fp16" and cfg.task.balanced_sampling and not cfg.backbone.pretrained
    assert (cfg.task.optimized_metric, cfg.task.direction) == ("val/loss", "minimize")
    head = cfg.head
    assert head._target_ == "cellexp.models.elegans_published.published_graph_head"
    assert (head.variant, head.graph, head.dim, head.num_heads, head.activation) == (
        "published",
        "elegans",
        512,
        8,
        "hardtanh",
    )
    vit = make_cfg(["experiment=paper/vit_b16"], tiny=False)  # _configs/custom_vit_b16_livecell.yaml
    assert (vit.dataset.in_chans, vit.trainer.max_epochs, vit.trainer.batch_size) == (1, 80, 200)
    assert (vit.optim.optimizer.weight_decay, vit.optim.scheduler.factor) == (0.0, 0.1)


@pytest.mark.parametrize(
    ("row", "graph", "seed"),
    [("elegans_resnet18_random_ba", "ba_published", 1), ("elegans_efficientnet_b0_random", "er_published", 2)],
)
def test_random_control_presets_draw_published_style_graphs(make_cfg, row, graph, seed):
    cfg = make_cfg([f"experiment=paper/{row}"], tiny=False)
    assert (cfg.head.graph, cfg.head.graph_seed, cfg.head.variant) == (graph, seed, "published")


def test_mlp_control_presets_are_the_published_mlps(make_cfg):
    cfg = make_cfg(["experiment=paper/resnet18_deep"], tiny=False)
    with torch.device("meta"):
        model = build_model(cfg, num_classes=8)
    # _configs/resnet18-deep.yaml: six Linear(2048) with tanh between them (none after the last), then the classes
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [2048] * 6 + [8]
    assert sum(isinstance(m, torch.nn.Tanh) for m in model.head) == 5
    # and, as published, only the backbone is optimised (head.trained=true trains the MLP too: ours)
    assert not any(p.requires_grad for p in model.head.parameters())
    assert all(p.requires_grad for p in model.backbone.parameters())


@needs_reference
@pytest.mark.parametrize(
    ("row", "published_millions"), [("elegans_resnet18", 34.4), ("elegans_efficientnetv2_m", 76.7)]
)
def test_paper_presets_on_the_published_graph_have_the_published_size(make_cfg, row, published_millions):
    cfg = make_cfg([f"experiment=paper/{row}", f"head.graph_file={REFERENCE}"], tiny=False)
    with torch.device("meta"):
        model = build_model(cfg, num_classes=8)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == published_millions


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["task=ssl", "trainer.early_stopping={monitor:val/knn_accuracy,direction:maximize,patience:3}"],
            "trainer.early_stopping=.* does not apply here: DINO's schedules span the whole run",
        ),
        (
            ["task=ssl", "optim/scheduler=cosine"],
            r"task=ssl follows DINO's per-step schedules \(optim/scheduler=dino\)",
        ),
        (["task=ssl", "head=linear"], "task=ssl trains DINO's projection head: head=dino"),
        (
            ["task=xai", f"ckpt={'0' * 32}", "trainer.max_epochs=5"],  # a run id: looked up by the task
            "trainer.max_epochs=5 does not apply: task=xai trains nothing",
        ),
        (["head=dino"], "task=classify trains a classification head, not head=dino"),
        (["task.batch_metrics=0"], "task.batch_metrics must be null or a batch size of at least 1, got 0"),
        (
            ["head=mlp_published", "backbone.freeze=true"],
            "backbone.freeze=true with head.trained=false leaves task=classify nothing to train",
        ),
    ],
)
def test_a_setting_a_task_cannot_honour_is_refused_by_name(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        cellexp.run(make_cfg([*overrides, "logger=none"]))
