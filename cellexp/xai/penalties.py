"""What task.camo trains with: a penalty on the model reading outside the cell, by `task.camo.method`.

Each penalty is called as `penalty(forward, x, labels, masks) -> (logits, penalty)`, with `forward` the model
under the step's autocast, `x` the model's input (B, C, *space) (2-D or 3-D) and `masks` the cells' masks
(B, 1, *space) bool, moved with the augmentation. The step's cross-entropy is taken on `logits`.

    gradcam            1 - the share of the Grad-CAM mass inside the cell (cellexp.xai.camo.GradCamo), at one or
                       several layers, relu'd (Grad-CAM's own) or `signed` (|map|); a double backward above the
                       layers
    input_gradients    "right for the right reasons" (Ross, Hughes and Doshi-Velez, IJCAI 2017): the squared
                       gradient of the summed log-probabilities with respect to the input pixels outside the cell,
                       summed over the pixels, averaged over the cells; a double backward through the whole model
    background_swap    the output's change when the background is replaced by another cell's: KL(p(x) || p(x'))
                       with x' the cell on the next crop's surroundings (cellexp.data.transforms.replace_background;
                       a consistency loss over Xiao et al.'s mixed backgrounds, ICLR 2021); one forward of a doubled
                       batch, no double backward

Each is 0 when the model reads nothing outside the mask. The gradient penalties constrain a local, first-order
view of the model (a Grad-CAM's channel-averaged weights, or the input gradient at the crop as it is);
background_swap asks the finite question that a cue at test time poses (does the answer change when the
surroundings do?), costs a doubled forward and backward rather than a second-order graph, and passes through any
attention kernel.

Double backward through timm's fused attention (`F.scaled_dot_product_attention`) is not implemented on CPU
(its flash kernel's backward has no derivative): the gradient penalties switch timm's attention modules to their
explicit softmax path (`fused_attn = False`, the same function, slower and heavier on memory); background_swap
keeps the fused kernel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from cellexp.data.transforms import replace_background
from cellexp.errors import ConfigError
from cellexp.xai.camo import GradCamo

log = logging.getLogger(__name__)

METHODS = ("gradcam", "input_gradients", "background_swap")
SECOND_ORDER = ("gradcam", "input_gradients")

Forward = Callable[[torch.Tensor], torch.Tensor]


class InputGradients:
    """Right for the right reasons: sum over pixels outside the mask of (d sum_k log p_k / d x)^2, mean over cells."""

    def __call__(self, forward: Forward, x: torch.Tensor, labels, masks: torch.Tensor):
        x = x.detach().requires_grad_(True)
        logits = forward(x)
        log_probs = F.log_softmax(logits.float(), dim=1).sum()
        (grad,) = torch.autograd.grad(log_probs, x, create_graph=True)
        outside = (grad.float() * ~masks).square()
        return logits, outside.sum(dim=tuple(range(1, x.ndim))).mean()


class BackgroundSwap:
    """KL(p(x) || p(x')), x' each cell on the next crop's surroundings, both from one forward of the doubled batch."""

    def __call__(self, forward: Forward, x: torch.Tensor, labels, masks: torch.Tensor):
        both = forward(torch.cat([x, replace_background(x, masks, "swap")]))
        logits, swapped = both.chunk(2)
        log_p, log_q = F.log_softmax(logits.float(), dim=1), F.log_softmax(swapped.float(), dim=1)
        return logits, (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


def check_camo(camo: Mapping) -> None:
    """Refuse, by name, a task.camo setting its method does not read."""
    method, weight = camo.get("method", "gradcam"), camo.get("weight", 0.0)
    if method not in METHODS:
        raise ConfigError(f"task.camo.method={method!r}; choose one of {', '.join(METHODS)}")
    several = camo.get("layer") is not None and not isinstance(camo.get("layer"), str)
    for key, used in (("signed", bool(camo.get("signed"))), ("layer", several)):
        if used and (method != "gradcam" or not weight):
            value = "true" if key == "signed" else list(camo["layer"])
            raise ConfigError(
                f"task.camo.{key}={value} is a setting of the gradcam penalty (task.camo.method=gradcam, "
                f"task.camo.weight > 0); with method={method}, weight={weight} nothing reads it "
                "(the Grad-CAMO monitor takes one layer's positive map)"
            )


def build_penalty(model: nn.Module, image_size: int, camo: Mapping):
    """The penalty task.camo asks for (check_camo'd), hooked on `model` where it needs to be."""
    method = camo.get("method", "gradcam")
    if method in SECOND_ORDER:
        differentiable_attention(model, method)
    if method == "gradcam":
        return GradCamo(model, image_size, camo.get("layer"), camo.get("target", "true_class"), camo.get("signed"))
    return InputGradients() if method == "input_gradients" else BackgroundSwap()


def differentiable_attention(model: nn.Module, method: str) -> None:
    """timm's attention modules on their explicit softmax path, which has a double backward."""
    switched = 0
    for module in model.modules():
        if getattr(module, "fused_attn", False):
            module.fused_attn = False
            switched += 1
    if switched:
        log.info("task.camo.method=%s: %d attention modules off scaled_dot_product_attention", method, switched)
