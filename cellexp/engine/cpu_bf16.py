"""A guard for bf16 autocast on CPU: strided convolutions on maps smaller than their stride run in float32.

oneDNN's bf16 weight gradient of such a convolution (the AVX-512 `brgconv_bwd_w` kernels of oneDNN 3.12, in
torch 2.14) comes back as garbage, often NaN, even though its inputs are finite: the kernel taps that see only
padding are not written. A CNN meets this when its feature map shrinks to 1 px before a strided stage, as a
ResNet's last stage does on DINO's small local views. Such convolutions are tiny, so computing them again in
float32 costs next to nothing, whereas turning oneDNN off makes every bf16 convolution ~40x slower.
"""

from __future__ import annotations

import torch
from torch import nn


def guard_small_strided_convs(model: nn.Module) -> None:
    """Make every strided 2-d convolution of `model` compute in float32 when its input is smaller than its stride."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and max(module.stride) > 1:
            module.register_forward_hook(_float32_below_stride)


def _float32_below_stride(conv: nn.Conv2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
    (x,) = inputs
    if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu") or not torch.is_grad_enabled():
        return None
    if all(size >= stride for size, stride in zip(x.shape[-2:], conv.stride, strict=True)):
        return None
    with torch.autocast("cpu", enabled=False):
        return conv.forward(x.float())  # replaces the bf16 output, so its backward never runs
