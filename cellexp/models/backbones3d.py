"""3-D backbones from MONAI that map (B, in_chans, D, S, S) crops to a pooled (B, num_features) embedding, so that
every head takes them unchanged.

The Grad-CAMO paper trained a 3-D EfficientNet (shijianjian/EfficientNet-PyTorch-3D); MONAI's `EfficientNetBN`
with `spatial_dims=3` is the maintained network of the same design (the B0-B7 block table, compound scaling,
squeeze-and-excitation, drop connect). A 3-D ResNet (MONAI's ResNet 10/18/34/50) is the second family.
Configs under conf/backbone/ point here with `_partial_: true`; the caller completes them with the data's `in_chans`
and `image_size` (CNNs take any size; it is not needed). Modules carry `num_features`, `family` ("cnn3d") and
`spatial_dims` (3), which the 2-D/3-D check before any data reads from the config.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.nets import EfficientNet, EfficientNetBN, ResNet
from torch import nn

from cellexp.errors import ConfigError

FAMILY = "cnn3d"
RESNET_LAYERS = {"resnet10": [1, 1, 1, 1], "resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3]}
# the B0 block table, cut to two stages and narrowed: a network of a few thousand weights, for tests
TINY_BLOCKS = ["r1_k3_s11_e1_i32_o16_se0.25", "r1_k3_s22_e2_i16_o24_se0.25"]


def efficientnet3d(
    model_name: str,
    in_chans: int,
    image_size: int,
    family: str = FAMILY,
    pretrained: bool = False,
    drop_rate: float | None = None,
    bn_momentum: float = 0.1,
    spatial_dims: int = 3,
    init_from: str | None = None,
    freeze: bool = False,
) -> nn.Module:
    """MONAI's EfficientNet (`efficientnet-b0` ... `-b7`, or `test` for the tiny one) in 3-D, its classifier dropped:
    the pooled features (after the network's own dropout) are the embedding.

    `bn_momentum` is PyTorch's (the weight of each batch in the running statistics). MONAI's default, 0.01, is the
    TensorFlow reference's 0.99 decay: right for 350 epochs of ImageNet, but after a few hundred steps on a plate its
    running statistics are still near their initial values and evaluation sees another network (val at chance
    while the training loss falls); 0.1 is PyTorch's default."""
    _check(family, spatial_dims, pretrained)
    norm = ("batch", {"eps": 1e-3, "momentum": bn_momentum})
    if model_name == "test":
        model = EfficientNet(
            TINY_BLOCKS, spatial_dims=3, in_channels=in_chans, num_classes=1, width_coefficient=0.25, norm=norm
        )
    else:
        model = EfficientNetBN(
            model_name, pretrained=False, spatial_dims=3, in_channels=in_chans, num_classes=1, norm=norm
        )
    _pad_each_input(model)
    if drop_rate is not None:
        model._dropout.p = drop_rate
    model.num_features = model._fc.in_features
    model._fc = nn.Identity()
    return _tag(model, init_from, freeze)


def resnet3d(
    model_name: str,
    in_chans: int,
    image_size: int,
    family: str = FAMILY,
    pretrained: bool = False,
    spatial_dims: int = 3,
    init_from: str | None = None,
    freeze: bool = False,
) -> nn.Module:
    """MONAI's 3-D ResNet without its classifier (`feed_forward=False`): the pooled last stage is the embedding."""
    _check(family, spatial_dims, pretrained)
    if model_name not in RESNET_LAYERS:
        raise ConfigError(f"backbone.model_name={model_name!r} is not one of {', '.join(RESNET_LAYERS)}")
    block = "bottleneck" if model_name == "resnet50" else "basic"
    model = ResNet(
        block, RESNET_LAYERS[model_name], [64, 128, 256, 512], spatial_dims=3, n_input_channels=in_chans,
        feed_forward=False,
    )  # fmt: skip
    model.num_features = 512 * (4 if block == "bottleneck" else 1)
    return _tag(model, init_from, freeze)


class SamePad(nn.Module):
    """TensorFlow's "same" padding for one convolution, worked out for each input's size: MONAI works it out once, when
    the network is built, for a cube of the model's nominal image size (224), which sends anisotropic crops (12
    planes of 32 px) to zero planes before the last stage."""

    def __init__(self, conv: nn.Conv3d):
        super().__init__()
        self.kernel, self.stride, self.dilation = conv.kernel_size, conv.stride, conv.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[2:], self.kernel, self.stride, self.dilation, strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        return F.pad(x, [side for pair in reversed(pads) for side in pair])


def _pad_each_input(model: nn.Module) -> None:
    """Every `<conv>_padding` of MONAI's EfficientNet that pads a strided or wide convolution becomes a SamePad."""
    for module in list(model.modules()):
        for name, conv in list(module.named_children()):
            padder = getattr(module, f"{name}_padding", None)
            if isinstance(conv, nn.Conv3d) and isinstance(padder, nn.ConstantPad3d):
                setattr(module, f"{name}_padding", SamePad(conv))


def _check(family: str, spatial_dims: int, pretrained: bool) -> None:
    if family != FAMILY:
        raise ConfigError(f"backbone.family={family!r}: this factory builds 3-D networks (family {FAMILY!r})")
    if spatial_dims != 3:
        raise ConfigError(f"backbone.spatial_dims={spatial_dims}: this backbone is a 3-D network")
    if pretrained:
        raise ConfigError("backbone.pretrained=true: MONAI ships no pretrained 3-D weights for it; train from scratch")


def _tag(model: nn.Module, init_from: str | None, freeze: bool) -> nn.Module:
    model.family, model.spatial_dims, model.init_from, model.freeze = FAMILY, 3, init_from, freeze
    return model
