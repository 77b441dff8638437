"""Grad-CAMO as something to train on: a differentiable Grad-CAM at one or more layers and the share of its mass in
the cell.

    cam = relu(sum_k mean_space(d score / d A_k) * A_k),   share = sum(cam * m) / sum(cam)

`A` is the target layer's output on the step's own forward pass (a forward hook hands the model a clone, so the
hooked tensor is on the path to the logits), `score` the logit of each cell's true (or predicted) class, and `m`
the cell's mask averaged over each CAM cell (the CAM held constant within its cells). The penalty 1 - share is
the Grad-CAM mass outside the cell. Grad-CAM's weights are gradients, so the penalty's own gradient needs the
graph of that first gradient (`create_graph=True`): one extra backward through the layers above the target
layer, and its graph kept for the loss's backward.

`signed=True` scores |cam| rather than relu(cam): negative evidence outside the cell counts as outside too (plain
Grad-CAM drops it, so a model can read the background through channels whose map is negative there). Several
layers give the mean of their shares. Maps are 2-D (B, C, h, w), tokens reshaped to the patch grid, or 3-D
(B, C, d, h, w) for volume crops.

The Grad-CAMO of `cellexp.xai.gradcamo` (task=xai) scores the same raw map bilinearly upsampled to the input;
this one pools the mask instead, which is what makes it cheap enough for every step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack, contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cellexp.errors import ConfigError
from cellexp.xai.gradcamo import summarize
from cellexp.xai.targets import default_target_layer, find_layer, reshape_transform

TARGETS = ("true_class", "predicted")


class GradCamo:
    """The layers' Grad-CAM and each cell's share of it inside its mask, for the engine's classifier trainer: the
    monitor of every run with task.camo on, and the penalty of task.camo.method=gradcam.

    Use: `with camo.capture(): logits = model(x)`, then `camo.inside_share(logits, labels, masks)`; as a penalty,
    `camo(forward, x, labels, masks) -> (logits, penalty)`.
    """

    def __init__(
        self,
        model: nn.Module,
        image_size: int,
        layer: str | Sequence[str] | None = None,
        target: str = "true_class",
        signed: bool = False,
    ):
        if target not in TARGETS:
            raise ConfigError(f"task.camo.target={target!r}; choose one of {', '.join(TARGETS)}")
        names = [layer] if layer is None or isinstance(layer, str) else list(layer)
        if not names:
            raise ConfigError("task.camo.layer=[]: name a layer, several, or null for the default")
        self.layer_names = [name or default_target_layer(model, image_size) for name in names]
        self.layers = [find_layer(model, name, option="task.camo.layer") for name in self.layer_names]
        self.reshape = reshape_transform(model.backbone, image_size)
        self.target, self.signed = target, signed
        self.activations: list[torch.Tensor | None] = [None] * len(self.layers)

    @property
    def layer_name(self) -> str:
        return self.layer_names[0]

    @contextmanager
    def capture(self):
        """Record the target layers' outputs on the forward passes inside."""

        def hook(index: int):
            def record(module, inputs, output):
                # the model goes on from the clone: no in-place op can touch it
                self.activations[index] = output.clone()
                return self.activations[index]

            return record

        with ExitStack() as stack:
            for index, layer in enumerate(self.layers):
                stack.callback(layer.register_forward_hook(hook(index)).remove)
            yield self

    def __call__(
        self, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, labels: torch.Tensor, masks
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's logits and the mean share of the Grad-CAM mass outside the cells (differentiable)."""
        with self.capture():
            logits = forward(x)
        share, _ = self.inside_share(logits, labels, masks, create_graph=True)
        return logits, 1.0 - share.mean()

    def inside_share(
        self, logits: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, create_graph: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per cell, the share of the CAM inside its mask (B,) (0 where the map is empty; the mean over the layers)
        and whether every layer's map has any mass (B,) bool; differentiable with `create_graph`."""
        activations, self.activations = self.activations, [None] * len(self.layers)
        if any(a is None or not a.requires_grad for a in activations):
            raise RuntimeError("no target-layer activation with a gradient: call inside `capture()`, with grads on")
        classes = labels if self.target == "true_class" else logits.argmax(dim=1)
        score = logits.float().gather(1, classes[:, None]).sum()
        grads = torch.autograd.grad(score, activations, create_graph=create_graph)
        shares, has_mass = [], torch.ones(len(labels), dtype=torch.bool, device=logits.device)
        for activation, grad in zip(activations, grads, strict=True):
            share, mass = self._share(activation.float(), grad.float(), masks)
            shares.append(share)
            has_mass &= mass
        return torch.stack(shares).mean(dim=0), has_mass

    def _share(self, a: torch.Tensor, g: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.reshape is not None:
            a, g = self.reshape(a), self.reshape(g)
        space = tuple(range(2, a.ndim))
        cam = (g.mean(dim=space, keepdim=True) * a).sum(dim=1)  # (B, *map)
        cam = cam.abs() if self.signed else F.relu(cam)
        cells = tuple(range(1, cam.ndim))
        inside = (cam * pooled_masks(masks, cam.shape[1:])).sum(dim=cells)
        total = cam.sum(dim=cells)
        return inside / total.clamp_min(torch.finfo(total.dtype).tiny), total > 0

    @staticmethod
    def summary(shares: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
        """Mean and share above `threshold` of the finite scores, as task=xai reports them."""
        found = summarize(shares, threshold)
        return {key: found[key] for key in ("gradcamo_mean", f"gradcamo_frac_above_{threshold:g}")}


def pooled_masks(masks: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Cells' masks (B, 1, *space) (or (B, *space)) averaged over each cell of a map of `size`: (B, *size)."""
    space = masks.shape[-len(size) :]
    masks = masks.float().reshape(len(masks), 1, *space)
    pool = F.adaptive_avg_pool3d if len(size) == 3 else F.adaptive_avg_pool2d
    return pool(masks, tuple(size))[:, 0]
