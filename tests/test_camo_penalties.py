"""task.camo's penalties: zero when the model reads only inside the mask, positive with a finite gradient when it
reads outside (2-D and 3-D), the settings a method does not read refused by name, a ViT trained through them, and
dataset.background's replacements."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cellexp.data.transforms import BatchTransform, replace_background
from cellexp.errors import ConfigError
from cellexp.models.backbones import timm_backbone
from cellexp.models.classifier import CellClassifier
from cellexp.xai.penalties import build_penalty, check_camo

SIDE = 8
# (method settings) -> each penalty task.camo can train with
PENALTIES = {
    "gradcam": {"method": "gradcam", "layer": "backbone.layer2"},
    "gradcam_signed_two_layers": {"method": "gradcam", "layer": ["backbone.layer1", "backbone.layer2"], "signed": True},
    "input_gradients": {"method": "input_gradients", "layer": "backbone.layer2"},
    "background_swap": {"method": "background_swap", "layer": "backbone.layer2"},
}


class _Backbone(nn.Module):
    """Two conv stages (the CAMs' layers), 2-D or 3-D; `window` (a 0/1 mask of the input) gates what it reads."""

    family = "cnn"

    def __init__(self, dims: int, window: torch.Tensor | None):
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.layer1 = nn.Sequential(conv(1, 4, 3, padding=1, bias=False), nn.ReLU())
        self.layer2 = nn.Sequential(conv(4, 4, 1, bias=False), nn.ReLU())
        self.feature_info = [{"module": "layer1", "reduction": 1}, {"module": "layer2", "reduction": 1}]
        self.register_buffer("window", window)

    def forward(self, x):
        if self.window is not None:
            x = x * self.window
        return self.layer2(self.layer1(x)).mean(tuple(range(2, x.ndim)))


class _Model(nn.Module):
    def __init__(self, dims: int = 2, window: torch.Tensor | None = None):
        super().__init__()
        self.backbone = _Backbone(dims, window)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.backbone(x))


def _box(dims: int, low: int, high: int) -> torch.Tensor:
    """(1, 1, *space) 0/1, ones in [low, high) along every axis."""
    box = torch.zeros(1, 1, *[SIDE] * dims)
    box[(..., *[slice(low, high)] * dims)] = 1
    return box


def _penalty(model: nn.Module, settings: dict, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    penalty = build_penalty(model, SIDE, {"weight": 1.0, "target": "true_class", **settings})
    _, value = penalty(model, x, torch.tensor([0, 1, 2, 0]), masks)
    return value


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", list(PENALTIES))
def test_each_penalty_is_zero_when_the_model_reads_only_inside_the_mask(name, dims):
    torch.manual_seed(0)
    window = _box(dims, 3, 5)  # what the model reads
    model = _Model(dims, window)
    with torch.no_grad():
        for layer in (model.backbone.layer1[0], model.backbone.layer2[0]):
            layer.weight.abs_()  # every map positive where the model reads, zero elsewhere...
        model.head.weight.abs_()  # ...and every class's Grad-CAM too
    x = torch.rand(4, 1, *[SIDE] * dims)
    # the masks: what the model reads, and the one pixel its 3x3 conv spreads that to (for the CAMs)
    masks = (_box(dims, 2, 6) > 0).expand(4, 1, *[SIDE] * dims)
    assert _penalty(model, PENALTIES[name], x, masks).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", list(PENALTIES))
def test_each_penalty_is_positive_with_a_finite_gradient_when_the_model_reads_outside(name, dims):
    torch.manual_seed(0)
    model = _Model(dims)  # reads the whole crop
    x = torch.rand(4, 1, *[SIDE] * dims)
    masks = (_box(dims, 3, 5) > 0).expand(4, 1, *[SIDE] * dims)
    value = _penalty(model, PENALTIES[name], x, masks)
    value.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]  # a CAM takes no gradient from the head's bias
    assert value.item() > 0
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_settings_a_method_does_not_read_are_refused_by_name():
    check_camo({"method": "gradcam", "weight": 1.0, "signed": True, "layer": ["a", "b"]})
    check_camo({"method": "input_gradients", "weight": 1.0, "layer": "backbone.layer2"})  # the monitor's layer
    with pytest.raises(ConfigError, match="task.camo.method='saliency'; choose one of gradcam, input_gradients"):
        check_camo({"method": "saliency"})
    with pytest.raises(ConfigError, match="task.camo.signed=true is a setting of the gradcam penalty"):
        check_camo({"method": "input_gradients", "weight": 1.0, "signed": True})
    with pytest.raises(ConfigError, match="task.camo.signed=true .* weight=0"):
        check_camo({"method": "gradcam", "weight": 0.0, "signed": True})
    with pytest.raises(ConfigError, match=r"task.camo.layer=\['a', 'b'\] is a setting of the gradcam penalty"):
        check_camo({"method": "background_swap", "weight": 1.0, "layer": ["a", "b"]})


@pytest.mark.parametrize("method", ["gradcam", "input_gradients", "background_swap"])
def test_a_vit_trains_with_each_penalty_on_cpu(method):
    """Double backward through scaled_dot_product_attention is not implemented on CPU: the gradient penalties
    switch timm's attention to its explicit path."""
    torch.manual_seed(0)
    backbone = timm_backbone("test_vit", "vit", in_chans=1, image_size=32)
    model = CellClassifier(backbone, nn.Linear(backbone.num_features, 3))
    x, masks = torch.rand(2, 1, 32, 32), (_box(2, 2, 6) > 0).repeat(2, 1, 4, 4)
    penalty = build_penalty(model, 32, {"method": method, "weight": 1.0, "target": "true_class"})
    logits, value = penalty(model, x, torch.tensor([0, 1]), masks)
    (nn.functional.cross_entropy(logits, torch.tensor([0, 1])) + value).backward()
    assert torch.isfinite(value) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_backgrounds_are_replaced_outside_the_cell_only():
    torch.manual_seed(0)
    x = torch.rand(3, 2, SIDE, SIDE) + 1
    masks = (_box(2, 2, 6) > 0).expand(3, 1, SIDE, SIDE)
    for how in ("black", "swap", "noise"):
        out = replace_background(x, masks, how)
        assert torch.equal(out[masks.expand_as(x)], x[masks.expand_as(x)])
        assert not torch.equal(out, x)
    assert (replace_background(x, masks, "black")[~masks.expand_as(x)] == 0).all()
    assert torch.equal(replace_background(x, masks, "swap")[1][:, 0, 0], x[0][:, 0, 0])  # the previous crop's


def test_a_swapped_background_does_not_show_the_other_crops_cell_around_this_one():
    small, large = (_box(2, 3, 5) > 0), (_box(2, 1, 7) > 0)
    masks = torch.cat([large, small])  # crop 1's background comes from crop 0, whose cell is larger
    background = torch.tensor([0.2, 0.1]).view(2, 1, 1, 1)
    x = torch.where(masks, torch.ones(1), background).expand(2, 1, SIDE, SIDE)
    swapped = replace_background(x, masks, "swap")[1, 0]
    assert torch.equal(swapped > 0.5, small[0, 0])  # the cell's outline is its own, not the union of both
    assert torch.allclose(swapped[~small[0, 0]], torch.tensor(0.2))  # crop 0's background, its cell filled with it


def test_black_backgrounds_are_applied_in_evaluation_and_random_ones_in_training_only():
    crops = torch.full((2, 1, SIDE, SIDE), 200, dtype=torch.uint8)
    masks = _box(2, 2, 6).to(torch.uint8).expand(2, 1, SIDE, SIDE)
    black = BatchTransform(SIDE, mean=0.0, std=1.0, background="black").eval()
    x, _ = black(crops, masks)
    assert x[0, 0, 0, 0] == 0 and x[0, 0, 3, 3] == pytest.approx(200 / 255)
    noise = BatchTransform(SIDE, mean=0.0, std=1.0, background="noise").eval()
    assert torch.equal(noise(crops, masks)[0], crops.float() / 255)  # evaluation sees the crops as imaged
    with pytest.raises(ValueError, match="pass its masks"):
        black(crops)
    with pytest.raises(ConfigError, match="dataset.background='grey'"):
        BatchTransform(SIDE, background="grey")
