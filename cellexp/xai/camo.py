"""Grad-CAMO as something to train on: a differentiable Grad-CAM at one layer and the share of its mass in the cell.

    cam = relu(sum_k mean_hw(d score / d A_k) * A_k),   share = sum(cam * m) / sum(cam)

`A` is the target layer's output on the step's own forward pass (a forward hook hands the model a clone, so the
hooked tensor is on the path to the logits), `score` the logit of each cell's true (or predicted) class, and `m`
the cell's mask averaged over each CAM cell (the CAM held constant within its cells). The penalty 1 - share is
the Grad-CAM mass outside the cell. Grad-CAM's weights are gradients, so the penalty's own gradient needs the
graph of that first gradient (`create_graph=True`): one extra backward through the layers above the target
layer, and its graph kept for the loss's backward.

The Grad-CAMO of `cellexp.xai.gradcamo` (task=xai) scores the same raw map bilinearly upsampled to the input;
this one pools the mask instead, which is what makes it cheap enough for every step.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cellexp.errors import ConfigError
from cellexp.xai.gradcamo import summarize
from cellexp.xai.targets import default_target_layer, find_layer, reshape_transform

TARGETS = ("true_class", "predicted")


class GradCamo:
    """The layer's Grad-CAM and each cell's share of it inside its mask, for the engine's classifier trainer.

    Use: `with camo.capture(): logits = model(x)`, then `camo.inside_share(logits, labels, masks)`.
    """

    def __init__(self, model: nn.Module, image_size: int, layer: str | None = None, target: str = "true_class"):
        if target not in TARGETS:
            raise ConfigError(f"task.camo.target={target!r}; choose one of {', '.join(TARGETS)}")
        self.layer_name = layer or default_target_layer(model, image_size)
        self.layer = find_layer(model, self.layer_name, option="task.camo.layer")
        self.reshape = reshape_transform(model.backbone, image_size)
        self.target = target
        self.activation: torch.Tensor | None = None

    @contextmanager
    def capture(self):
        """Record the target layer's output on the forward passes inside."""

        def hook(module, inputs, output):
            self.activation = output.clone()  # the model goes on from the clone: no in-place op can touch it
            return self.activation

        handle = self.layer.register_forward_hook(hook)
        try:
            yield self
        finally:
            handle.remove()

    def inside_share(
        self, logits: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, create_graph: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per cell, the share of the CAM inside its mask (B,) (0 where the map is empty) and whether the map has
        any mass (B,) bool; differentiable with `create_graph`."""
        activation, self.activation = self.activation, None
        if activation is None or not activation.requires_grad:
            raise RuntimeError("no target-layer activation with a gradient: call inside `capture()`, with grads on")
        classes = labels if self.target == "true_class" else logits.argmax(dim=1)
        score = logits.float().gather(1, classes[:, None]).sum()
        (grad,) = torch.autograd.grad(score, activation, create_graph=create_graph)
        a, g = activation.float(), grad.float()
        if self.reshape is not None:
            a, g = self.reshape(a), self.reshape(g)
        cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1))  # (B, h, w)
        pooled = F.adaptive_avg_pool2d(masks.float().reshape(len(masks), 1, *masks.shape[-2:]), cam.shape[-2:])
        inside = (cam * pooled[:, 0]).sum(dim=(1, 2))
        total = cam.sum(dim=(1, 2))
        has_mass = total > 0
        return inside / total.clamp_min(torch.finfo(total.dtype).tiny), has_mass

    @staticmethod
    def summary(shares: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
        """Mean and share above `threshold` of the finite scores, as task=xai reports them."""
        found = summarize(shares, threshold)
        return {key: found[key] for key in ("gradcamo_mean", f"gradcamo_frac_above_{threshold:g}")}
