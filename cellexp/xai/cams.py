"""CAM methods through pytorch-grad-cam, computed a batch of cells at a time.

Every method gives, per cell, a non-negative map of the model input's size scaled to [0, 1] (the
library ReLUs the map, resizes it and min-max scales it per image). ScoreCAM and AblationCAM run one
forward pass per channel of the target layer for every image; the library loops over the images
itself, so for them a batch only saves the gradient pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytorch_grad_cam
import torch
from pytorch_grad_cam import ablation_cam, score_cam
from pytorch_grad_cam.ablation_layer import AblationLayer, AblationLayerVit
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from cellexp.progress import progress
from cellexp.xai.quiet import library_bars_off

CAM_METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": pytorch_grad_cam.GradCAM,
    "xgradcam": pytorch_grad_cam.XGradCAM,
    "gradcam++": pytorch_grad_cam.GradCAMPlusPlus,
    "gradcamelementwise": pytorch_grad_cam.GradCAMElementWise,
    "eigencam": pytorch_grad_cam.EigenCAM,
    "eigengradcam": pytorch_grad_cam.EigenGradCAM,
    "fullgrad": pytorch_grad_cam.FullGrad,
    "hirescam": pytorch_grad_cam.HiResCAM,
    "layercam": pytorch_grad_cam.LayerCAM,
    "scorecam": pytorch_grad_cam.ScoreCAM,
    "randomcam": pytorch_grad_cam.RandomCAM,
    "ablationcam": pytorch_grad_cam.AblationCAM,
}


def make_cam(method: str, model: nn.Module, layer: nn.Module, reshape: Callable | None, batch_size: int) -> BaseCAM:
    """The library's CAM object for `method`, hooked on `layer` (FullGrad picks its own layers)."""
    if method == "fullgrad":
        # FullGrad reads the bias gradients of every Conv2d/BatchNorm2d; those are 4-D already, so no reshape.
        return pytorch_grad_cam.FullGrad(model, [])
    if method == "ablationcam":
        ablation = AblationLayerVit() if reshape is not None else AblationLayer()
        return pytorch_grad_cam.AblationCAM(model, [layer], reshape, ablation_layer=ablation, batch_size=batch_size)
    cam = CAM_METHODS[method](model, [layer], reshape_transform=reshape)
    if method == "scorecam":
        cam.batch_size = batch_size  # masked copies scored per forward pass (the library's default is 16)
    return cam


def cam_maps(
    method: str,
    model: nn.Module,
    layer: nn.Module | None,
    reshape: Callable | None,
    inputs: Callable[[slice], torch.Tensor],
    targets: np.ndarray,
    batch_size: int,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
) -> Iterator[np.ndarray]:
    """Yields maps (B, H, W) float32, batch by batch, for the cells whose model inputs `inputs(slice)` returns.

    A generator, so that a whole split's maps never have to fit in memory at once.
    """
    cam = make_cam(method, model, layer, reshape, batch_size)
    try:
        with (
            library_bars_off(score_cam, ablation_cam),
            progress(total=len(targets), desc=f"xai {method}", unit="cell") as bar,
        ):
            for start in range(0, len(targets), batch_size):
                chunk = slice(start, start + batch_size)
                classes = [ClassifierOutputTarget(int(t)) for t in targets[chunk]]
                maps = cam(inputs(chunk), classes, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
                bar.update(len(classes))
                yield maps.astype(np.float32, copy=False)
    finally:
        # Not `with cam:`: its __exit__ prints and swallows IndexErrors.
        cam.activations_and_grads.release()
