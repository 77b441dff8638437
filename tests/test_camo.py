"""Grad-CAMO in training: the differentiable share, the penalty, context crops of a confounded dataset, a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image
from scipy import ndimage

import cellexp
from cellexp.data.livecell.coco import load_coco
from cellexp.data.livecell.release import ANNOTATION_DIR, CELL_LINES, annotation_file_name, image_dir_for_split
from cellexp.data.synthetic.livecell import DEBRIS_DENSITY, generate_synthetic_livecell
from cellexp.errors import ConfigError
from cellexp.xai.camo import GradCamo
from cellexp.xai.cams import cam_maps
from cellexp.xai.gradcamo import gradcamo
from tests.conftest import tracked_run


class _Backbone(torch.nn.Module):
    """A conv stage (the CAM's layer) on an 8x8 input, as a timm CNN would name it."""

    family = "cnn"

    def __init__(self):
        super().__init__()
        self.layer1 = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU())
        self.feature_info = [{"module": "layer1", "reduction": 1}]

    def forward(self, x):
        return self.layer1(x).mean((2, 3))


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = _Backbone()
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.backbone(x))


def _share(model, x, labels, masks, create_graph=False):
    camo = GradCamo(model, image_size=8, target="true_class")
    with camo.capture():
        logits = model(x)
    return camo.inside_share(logits, labels, masks, create_graph=create_graph)


def test_the_training_share_equals_task_xais_grad_camo_of_the_raw_map():
    torch.manual_seed(0)
    model = _Model()
    x, labels = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    masks = torch.zeros(5, 1, 8, 8)
    masks[:, :, 2:6, 1:5] = 1
    share, has_mass = _share(model, x, labels, masks)
    layer = model.backbone.layer1
    raw = next(cam_maps("gradcam", model, layer, None, lambda chunk: x, labels.numpy(), 5, cam_map="raw"))
    expected = gradcamo(raw, masks[:, 0].numpy())
    assert has_mass.all()
    np.testing.assert_allclose(share.detach().numpy(), expected, atol=1e-5)


def test_the_penalty_is_zero_when_all_the_map_is_inside_the_cell_and_its_gradient_is_finite():
    torch.manual_seed(0)
    model = _Model()
    x = torch.zeros(2, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0  # nothing to activate outside the cell...
    with torch.no_grad():
        model.backbone.layer1[0].bias.fill_(-0.05)  # ...not even a bias
        model.backbone.layer1[0].weight.abs_()
        model.head.weight.abs_()
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, 2:6, 2:6] = 1  # the 3x3 conv spreads the cell by one pixel
    labels = torch.tensor([0, 1])
    share, has_mass = _share(model, x, labels, masks, create_graph=True)
    penalty = 1 - share.mean()
    assert has_mass.all() and penalty.item() == pytest.approx(0.0, abs=1e-6)
    moved = torch.zeros(2, 1, 8, 8)
    moved[:, :, 0:2, 0:2] = 1  # a mask elsewhere: the whole map is outside
    share, _ = _share(model, x, labels, moved, create_graph=True)
    penalty = 1 - share.mean()
    penalty.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert penalty.item() == pytest.approx(1.0, abs=1e-6)
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_a_bad_layer_or_target_is_named():
    with pytest.raises(ConfigError, match="task.camo.layer='backbone.layer9'.*close matches"):
        GradCamo(_Model(), image_size=8, layer="backbone.layer9")
    with pytest.raises(ConfigError, match="task.camo.target='true'"):
        GradCamo(_Model(), image_size=8, target="true")


def test_a_confounded_dataset_hides_a_cue_outside_the_cells_that_follows_the_line_except_in_test(tmp_path):
    kwargs = {"images_per_line": {"train": 1, "val": 0, "test": 1}, "height": 96, "width": 128}
    plain = generate_synthetic_livecell(tmp_path / "plain", **kwargs)
    cued = generate_synthetic_livecell(tmp_path / "cued", confound=12.0, **kwargs)
    train = load_coco(cued / ANNOTATION_DIR / annotation_file_name("train"))
    test = load_coco(cued / ANNOTATION_DIR / annotation_file_name("test"))
    lines = list(CELL_LINES)
    assert all(img["cue"] == lines.index(img["file_name"].split("_")[0]) for img in train.imgs.values())
    test_cues = [img["cue"] for img in test.imgs.values()]
    test_lines = [lines.index(img["file_name"].split("_")[0]) for img in test.imgs.values()]
    assert sum(c == t for c, t in zip(test_cues, test_lines, strict=True)) < len(test_cues) / 2  # shuffled
    image = next(iter(train.imgs.values()))
    folder = image_dir_for_split("train")
    a = np.asarray(Image.open(plain / folder / image["file_name"]), dtype=np.int16)
    b = np.asarray(Image.open(cued / folder / image["file_name"]), dtype=np.int16)
    cells = np.zeros(a.shape, bool)
    for ann in train.imgToAnns[image["id"]]:
        cells |= train.annToMask(ann).astype(bool)
    deep_inside = ndimage.binary_erosion(cells, iterations=3)
    away = ~ndimage.binary_dilation(cells, iterations=5)
    assert np.array_equal(a[deep_inside], b[deep_inside])  # the cells are untouched
    assert np.abs(a[away] - b[away]).mean() > 4  # the background carries the cue


def test_context_debris_follows_the_line_in_every_split_and_the_oracle_unconfounds_train_and_val(tmp_path):
    kwargs = {"images_per_line": {"train": 2, "val": 0, "test": 1}, "height": 96, "width": 128, "confound": 12.0}
    cued = generate_synthetic_livecell(tmp_path / "cued", **kwargs)
    both = generate_synthetic_livecell(tmp_path / "both", context=30.0, **kwargs)
    oracle = generate_synthetic_livecell(tmp_path / "oracle", confounded_splits=[], **kwargs)
    lines = list(CELL_LINES)
    for split in ("train", "test"):
        coco = load_coco(cued / ANNOTATION_DIR / annotation_file_name(split))
        for image in coco.imgs.values():
            path = image_dir_for_split(split) + "/" + image["file_name"]
            a, b = (np.asarray(Image.open(root / path), dtype=np.int16) for root in (cued, both))
            line = image["file_name"].split("_")[0]
            specks = (b - a) > 8  # debris only adds, in the background
            assert specks.any() == (DEBRIS_DENSITY[line] > 0), (split, line)
    test = [load_coco(root / ANNOTATION_DIR / annotation_file_name("test")) for root in (cued, oracle)]
    assert [i["cue"] for i in test[0].imgs.values()] == [i["cue"] for i in test[1].imgs.values()]  # the same test
    train = load_coco(oracle / ANNOTATION_DIR / annotation_file_name("train"))
    follows = [img["cue"] == lines.index(img["file_name"].split("_")[0]) for img in train.imgs.values()]
    assert sum(follows) < len(follows) / 2  # the oracle's cue tells nothing in training
    with pytest.raises(ConfigError, match="confounded_splits must be some of train, val, test"):
        generate_synthetic_livecell(tmp_path / "bad", confounded_splits=["training"], **kwargs)


CAMO_RUN = [
    "head=linear",
    "dataset.context_margin=0.5",
    "dataset.generate.confound=12.0",
    "dataset.root=${paths.data_dir}/synthetic_confounded/seed0",
    "dataset.image_size=32",
    "dataset.limit=512",
    "trainer.max_epochs=3",
    "task.camo.monitor=true",
    # at 32 px the default layer (layer3) is 2x2: a centred cell covers each quarter alike, so no map can move
    "task.camo.layer=backbone.layer2",
]


# The regularised run's gain over the plain run of the same seed is not asserted: over seeds 0-4 it was +0.025 in
# val/gradcamo_mean (sd 0.016; weight 20, 8 epochs, lr 3e-3, layer1 or signed maps: +0.02 to +0.06, sd 0.02-0.06),
# within the seeds' noise, so a bar on it would be a coin flip (docs/tasks/camo.md, "What the test asserts").
@pytest.mark.slow
def test_a_regularised_run_and_a_plain_one_report_grad_camo_every_epoch(make_cfg):
    values = {}
    for weight in (0.0, 5.0):
        cfg = make_cfg([*CAMO_RUN, f"task.camo.weight={weight}"], run_name=f"camo{weight}")
        cellexp.run(cfg)
        run = tracked_run(cfg)
        client = MlflowClient(cfg.logger.tracking_uri)
        history = client.get_metric_history(run.info.run_id, "val/gradcamo_mean")
        assert [m.step for m in history] == [1, 2, 3] and all(0 <= m.value <= 1 for m in history)
        values[weight] = run.data.metrics, client.get_metric_history(run.info.run_id, "train/camo_loss")
    (plain, plain_loss), (regularised, penalty) = values[0.0], values[5.0]
    assert not plain_loss and "train/camo_loss" not in plain  # weight 0 measures Grad-CAMO and trains without it
    assert [m.step for m in penalty] == [1, 2, 3] and all(0 <= m.value <= 1 for m in penalty)  # 1 - share
    for metrics in (plain, regularised):
        assert 0 <= metrics["test/gradcamo_mean"] <= 1 and 0 <= metrics["test/gradcamo_frac_above_0.5"] <= 1


def test_camo_on_black_background_crops_warns_and_bad_weights_are_refused(make_cfg, caplog):
    with pytest.raises(ConfigError, match="task.camo.weight must be a number >= 0"):
        cellexp.run(make_cfg(["task.camo.weight=-1"]))
    with pytest.raises(ConfigError, match="task.camo.weight > 0 with backbone.freeze=true"):
        cellexp.run(make_cfg(["task.camo.weight=1", "backbone.freeze=true"]))
    with pytest.raises(ConfigError, match="task.camo.layer="):
        cellexp.run(make_cfg(["task.camo.weight=1", "task.camo.layer=backbone.nolayer", "trainer.max_epochs=1"]))
    assert "nothing outside the cell is there to cheat on" in caplog.text
    with pytest.raises(ConfigError, match="task.camo.method='saliency'; choose one of"):
        cellexp.run(make_cfg(["task.camo.method=saliency"], run_name="method"))
    with pytest.raises(ConfigError, match="task.camo.signed=true is a setting of the gradcam penalty"):
        cellexp.run(
            make_cfg(["task.camo.weight=1", "task.camo.method=input_gradients", "task.camo.signed=true"], run_name="s")
        )
    with pytest.raises(ConfigError, match="dataset.background=black on crops that are black outside the cell"):
        cellexp.run(make_cfg(["dataset.background=black"], run_name="black"))
    with pytest.raises(ConfigError, match="dataset.background='grey'; choose one of keep, black, swap, noise"):
        cellexp.run(make_cfg(["dataset.background=grey"], run_name="grey"))


@pytest.mark.slow
@pytest.mark.parametrize("background", ["black", "swap"])
def test_the_background_baselines_train_and_report_grad_camo(make_cfg, background):
    overrides = [*CAMO_RUN, "dataset.limit=128", "trainer.max_epochs=1", f"dataset.background={background}"]
    cfg = make_cfg(overrides, run_name=background)
    cellexp.run(cfg)
    metrics = tracked_run(cfg).data.metrics
    assert 0 <= metrics["test/gradcamo_frac_above_0.5"] <= 1 and 0 <= metrics["test/balanced_accuracy"] <= 1


@pytest.mark.parametrize("task", ["ssl", "xai", "mil", "embed"])
def test_the_background_baselines_are_refused_where_no_task_applies_them(make_cfg, task):
    from cellexp.tasks.checks import preflight

    with pytest.raises(ConfigError, match=f"dataset.background=black is applied by task=classify .* task={task}"):
        preflight(make_cfg([f"task={task}", "dataset.background=black", "dataset.context_margin=0.5", "ckpt=run"]))
