"""CAM methods through pytorch-grad-cam, computed a batch of cells at a time.

Two kinds of map, `cam_map`:

- "raw" (the default): relu of the method's class-activation map as it comes out of the library's
  per-layer `get_cam_image` (the weighted activations, before any scaling), bilinearly resized to the
  model input. Grad-CAMO is a share of this map's mass, so it must not be rescaled per image: min-max
  scaling subtracts each map's floor and changes the share.
- "normalized": the library's output, relu, resized and min-max scaled to [0, 1] per image (twice:
  per layer and after aggregation). What pictures want; FullGrad only has this one (it scales every
  channel before summing), and aug_smooth works on it only.

ScoreCAM and AblationCAM run one forward pass per channel of the target layer for every image; the
library loops over the images itself, so for them a batch only saves the gradient pass.
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

from cellexp.errors import ConfigError
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
CAM_MAPS: tuple[str, ...] = ("raw", "normalized")
# Methods without an unscaled map: FullGrad min-max scales every channel before it sums them.
NORMALIZED_ONLY: frozenset[str] = frozenset({"fullgrad"})


def map_kind(method: str, cam_map: str, aug_smooth: bool) -> str:
    """The kind of map `method` gives under these settings: raw where the method has one, else normalized."""
    if cam_map not in CAM_MAPS:
        raise ConfigError(f"xai.cam_map={cam_map!r}; choose one of {', '.join(CAM_MAPS)}")
    if cam_map == "raw" and aug_smooth:
        raise ConfigError("xai.aug_smooth=true averages min-max scaled maps: it needs xai.cam_map=normalized")
    return "normalized" if method in NORMALIZED_ONLY else cam_map


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
    cam_map: str = "raw",
) -> Iterator[np.ndarray]:
    """Yields maps (B, H, W) float32, batch by batch, for the cells whose model inputs `inputs(slice)` returns.

    A generator, so that a whole split's maps never have to fit in memory at once.
    """
    raw = map_kind(method, cam_map, aug_smooth) == "raw"
    cam = make_cam(method, model, layer, reshape, batch_size)
    try:
        with (
            library_bars_off(score_cam, ablation_cam),
            progress(total=len(targets), desc=f"xai {method}", unit="cell") as bar,
        ):
            for start in range(0, len(targets), batch_size):
                chunk = slice(start, start + batch_size)
                classes = [ClassifierOutputTarget(int(t)) for t in targets[chunk]]
                x = inputs(chunk)
                if raw:
                    maps = raw_maps(cam, x, classes, eigen_smooth)
                else:
                    maps = cam(x, classes, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
                bar.update(len(classes))
                yield maps.astype(np.float32, copy=False)
    finally:
        # Not `with cam:`: its __exit__ prints and swallows IndexErrors.
        cam.activations_and_grads.release()


def raw_maps(cam: BaseCAM, x: torch.Tensor, targets: list, eigen_smooth: bool = False) -> np.ndarray:
    """relu(raw map) of the first target layer, resized bilinearly to x's size: (B, H, W) float32, unscaled; for 3-D
    inputs (B, C, D, H, W), trilinearly to (B, D, H, W).

    The same steps as the library's forward up to its per-layer map (hooked forward, zero_grad, backward of
    the summed targets, `get_cam_image`), without the min-max scaling it applies next.
    """
    x = x.to(cam.device)
    if cam.compute_input_gradient:
        x = x.requires_grad_(True)
    outputs = cam.activations_and_grads(x)
    if cam.uses_gradients:
        cam.model.zero_grad()
        loss = sum(target(output) for target, output in zip(targets, outputs, strict=True))
        if cam.detach:
            loss.backward(retain_graph=True)
        else:
            torch.autograd.grad(loss, x, retain_graph=True, create_graph=True)
    recorded = cam.activations_and_grads
    activations, grads = recorded.activations[0], recorded.gradients[0] if recorded.gradients else None
    if cam.detach:
        activations = activations.cpu().numpy()
        grads = grads.cpu().numpy() if grads is not None else None
    raw = cam.get_cam_image(x, cam.target_layers[0], targets, activations, grads, eigen_smooth)
    raw = np.maximum(np.asarray(raw, dtype=np.float32), 0)
    volume = x.dim() == 5  # (B, C, D, H, W): the map is (B, d, h, w), resized in all three axes
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(raw).unsqueeze(1),
        size=tuple(x.shape[2:]),
        mode="trilinear" if volume else "bilinear",
        align_corners=False,
    )
    return resized.squeeze(1).numpy()
