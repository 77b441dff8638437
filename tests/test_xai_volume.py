"""3-D Grad-CAM and Grad-CAMO (the paper's z-stacks) on hand-built models, 3-D masks, how cells are drawn, and the
UMAP over training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cellexp.data.transforms import InputConfig
from cellexp.models.backbones3d import efficientnet3d
from cellexp.models.classifier import CellClassifier
from cellexp.models.heads import LinearHead
from cellexp.reports.animation import umap_gif
from cellexp.reports.xai import CellView, composite
from cellexp.reports.xai_volume import projections, volume_cell
from cellexp.xai.cams import cam_maps
from cellexp.xai.gradcamo import gradcamo, resize_masks
from cellexp.xai.targets import default_target_layer, find_layer
from cellexp.xai.trajectory import joint_umap

SHAPE = (6, 8, 8)  # (D, H, W)


class Gate(nn.Module):
    """Passes the voxels of a fixed mask through and zeroes the others: the layer Grad-CAM reads."""

    def __init__(self, keep: torch.Tensor):
        super().__init__()
        self.register_buffer("keep", keep)

    def forward(self, x):
        return x * self.keep


class ReadsOnly(nn.Module):
    """A hand-built 3-D classifier whose logits are sums of the voxels a fixed mask keeps (class 0: +, class 1: -)."""

    def __init__(self, keep: torch.Tensor, pool: int = 1):
        super().__init__()
        self.conv = nn.Conv3d(2, 3, kernel_size=1)
        nn.init.constant_(self.conv.weight, 0.5)
        nn.init.zeros_(self.conv.bias)
        self.pool = nn.AvgPool3d(pool)
        self.gate = Gate(keep)

    def forward(self, x):
        total = self.gate(self.pool(self.conv(x))).sum(dim=(1, 2, 3, 4))
        return torch.stack([total, -total], dim=1)


def _cell_mask() -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[1:5, 2:6, 3:7] = 1
    return mask


def _maps(model: nn.Module, x: torch.Tensor, method: str = "gradcam") -> np.ndarray:
    targets = np.zeros(len(x), np.int64)
    return np.concatenate(list(cam_maps(method, model, model.gate, None, lambda c: x[c], targets, batch_size=2)))


@pytest.mark.parametrize(("reads", "expected"), [("inside", 1.0), ("outside", 0.0)])
def test_3d_gradcam_of_a_model_reading_only_inside_or_outside_the_mask(reads, expected):
    mask = _cell_mask()
    keep = torch.from_numpy(mask if reads == "inside" else 1 - mask).float()
    x = torch.rand(3, 2, *SHAPE) + 0.1  # positive voxels: the activations are positive wherever they are kept
    maps = _maps(ReadsOnly(keep).eval(), x)
    assert maps.shape == (3, *SHAPE)  # the raw map at the crop's size, all three axes
    scores = gradcamo(maps, np.repeat(mask[None], 3, axis=0))
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_a_coarse_3d_map_is_resized_trilinearly_to_the_crop():
    keep = torch.ones(3, 4, 4)
    keep[0] = 0  # the model ignores the first third of the stack (coarse voxels)
    x = torch.rand(2, 2, *SHAPE) + 0.1
    maps = _maps(ReadsOnly(keep, pool=2).eval(), x)
    assert maps.shape == (2, *SHAPE) and np.isfinite(maps).all()
    assert maps[:, 0].max() == 0 and maps[:, -2:].min() > 0  # trilinear: zero where all its neighbours are


def test_3d_masks_resize_by_nearest_voxel():
    mask = np.zeros((1, 2, 4, 4), np.uint8)
    mask[0, 1, :2, :2] = 1
    resized = resize_masks(mask, (4, 8, 8))
    assert resized.shape == (1, 4, 8, 8) and set(np.unique(resized)) == {0, 1}
    assert resized[0, 2:, :4, :4].all() and resized.sum() == 2 * 16


def test_the_default_3d_target_layer_is_a_volume_of_at_least_two_voxels_per_axis():
    backbone = efficientnet3d("test", in_chans=5, image_size=32)
    backbone.input_config = InputConfig(image_size=32, in_chans=5, channels=5, depth=12)
    model = CellClassifier(backbone, LinearHead(backbone.num_features, 4)).eval()
    name = default_target_layer(model, 32)
    seen = []
    hook = find_layer(model, name).register_forward_hook(lambda _m, _a, out: seen.append(out.shape))
    model(torch.zeros(1, 5, 12, 32, 32))
    hook.remove()
    assert len(seen) == 1 and len(seen[0]) == 5 and min(seen[0][2:]) >= 2


def test_projections_are_maxima_along_z_y_and_x():
    volume = np.zeros((2, 3, 4, 5), np.float32)  # (C, D, H, W)
    volume[1, 2, 3, 4] = 1.0
    assert projections(volume, 0).shape == (2, 4, 5) and projections(volume, 0)[1, 3, 4] == 1
    assert projections(volume, 1).shape == (2, 3, 5) and projections(volume, 1)[1, 2, 4] == 1
    assert projections(volume, 2).shape == (2, 3, 4) and projections(volume[1], 2)[2, 3] == 1


def test_composite_draws_each_channel_in_its_colour_and_grey_as_grey():
    grey = np.full((2, 2), 0.5, np.float32)
    np.testing.assert_allclose(composite(grey), 0.5)
    channels = np.zeros((5, 2, 2), np.float32)
    channels[0] = 1.0  # DNA: blue, the only channel drawn in blue with magenta's Mito (off): half of the blue
    np.testing.assert_allclose(composite(channels)[0, 0], [0, 0, 0.5])
    channels[:] = 1.0
    np.testing.assert_allclose(composite(channels)[0, 0], [1, 1, 1])  # all on: white, not saturated beyond


def test_a_volume_cell_figure_is_written(tmp_path):
    view = CellView(np.random.rand(5, *SHAPE), _cell_mask(), np.random.rand(*SHAPE), "cell", True)
    path = volume_cell(tmp_path / "cell.png", view, "title", 0.5)
    assert Image.open(path).size[0] > 100


@pytest.mark.slow
def test_the_umap_over_training_has_one_frame_per_epoch_on_shared_axes(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    frames = [rng.normal(size=(40, 8)) + labels[:, None] * epoch for epoch in range(3)]  # classes part over epochs
    coords = joint_umap(frames, neighbours=5, seed=0)
    assert [c.shape for c in coords] == [(40, 2)] * 3
    path = umap_gif(tmp_path / "umap.gif", coords, labels, ["a", "b"], "test")
    with Image.open(path) as gif:
        assert gif.n_frames == 3 and gif.is_animated
