"""Which layer a CAM method reads, per backbone family, and how token layers become (B, C, h, w) maps.

CNNs: the deepest stage of timm's `feature_info` whose map is still at least 2x2 at the model's image
size (at 32 px a stride-32 stage is 1x1, which a CAM cannot localise on). Token models (ViT, hybrid,
Mixer): the first LayerNorm of the last block, whose output feeds token mixing, so patch tokens get
gradients even when only the class token reaches the head. Tokens are reshaped to the patch grid,
computed from the patch size (times the CNN's stride for hybrids) and the image size. 3-D CNNs (MONAI, no
feature_info): the last module, in forward order, whose output is still a volume at least 2 voxels deep, high and
wide, found by one forward pass of an empty crop of the model's input size.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections import Counter
from collections.abc import Callable

import torch
from torch import nn

from cellexp.errors import ConfigError

log = logging.getLogger(__name__)

TOKEN_FAMILIES: tuple[str, ...] = ("vit", "hybrid", "mixer")
MIN_GRID = 2


def default_target_layer(model: nn.Module, image_size: int) -> str:
    """Name (in `model.named_modules()`) of the layer CAM methods read by default."""
    backbone = model.backbone
    if getattr(backbone, "spatial_dims", 2) == 3:
        return _volume_layer(model, image_size)
    if backbone.family in TOKEN_FAMILIES:
        return f"backbone.blocks.{len(backbone.blocks) - 1}.norm1"
    stages = backbone.feature_info  # a CNN's stages, shallow to deep, with their strides
    usable = [s for s in stages if math.ceil(image_size / s["reduction"]) >= MIN_GRID] or stages[:1]
    chosen = usable[-1]
    if chosen is not stages[-1]:
        log.info(
            "xai: target layer %s (stride %d) rather than the last stage %s, whose map is below %dx%d at %d px",
            chosen["module"],
            chosen["reduction"],
            stages[-1]["module"],
            MIN_GRID,
            MIN_GRID,
            image_size,
        )
    return f"backbone.{chosen['module']}"


@torch.no_grad()
def _volume_layer(model: nn.Module, image_size: int) -> str:
    """The deepest module of a 3-D backbone whose (B, C, D, H, W) output is at least MIN_GRID in every axis."""
    inputs = model.input_config
    shapes: list[tuple[str, tuple[int, ...]]] = []

    def record(name):
        return lambda _m, _args, out: shapes.append((name, tuple(out.shape))) if torch.is_tensor(out) else None

    named = [(n, m) for n, m in model.backbone.named_modules() if n]
    hooks = [m.register_forward_hook(record(n)) for n, m in named]
    was_training = model.training
    try:
        model.eval()
        probe = next(model.parameters())
        model.backbone(probe.new_zeros(1, inputs.in_chans, inputs.depth, image_size, image_size))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    calls = Counter(n for n, _ in shapes)  # a module called twice (a shared activation) is no target
    volumes = [(n, shape) for n, shape in shapes if len(shape) == 5 and calls[n] == 1]
    usable = [n for n, shape in volumes if min(shape[2:]) >= MIN_GRID] or [n for n, _ in volumes[:1]]
    if not usable:
        raise ConfigError("the 3-D backbone has no module with a volume output: give xai.target_layer")
    return f"backbone.{usable[-1]}"


def find_layer(model: nn.Module, name: str, option: str = "xai.target_layer") -> nn.Module:
    """The module called `name` in the classifier (or, without the `backbone.` prefix, in its backbone); a wrong
    name is an error naming `option`, the setting it came from, with close matches."""
    modules = dict(model.named_modules())
    for candidate in (name, f"backbone.{name}"):
        if candidate and candidate in modules:
            return modules[candidate]
    # Both spellings are valid input, so both are candidates: "layer5" is close to "layer4", not "backbone.layer4".
    names = [n for n in modules if n] + [n.removeprefix("backbone.") for n in modules if n.startswith("backbone.")]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else f"top-level modules: {', '.join(_top_level(model))}"
    raise ConfigError(f"{option}={name!r} is not a module of the model; {hint}")


def _top_level(model: nn.Module) -> list[str]:
    return [f"{outer}.{inner}" for outer, child in model.named_children() for inner, _ in child.named_children()]


def token_grid(backbone: nn.Module, image_size: int) -> tuple[int, int] | None:
    """(h, w) of the patch grid of a token backbone at `image_size`; None for CNNs."""
    if backbone.family not in TOKEN_FAMILIES:
        return None
    embed = getattr(backbone, "patch_embed", None) or backbone.stem  # timm's MLP-Mixer calls it `stem`
    # A hybrid's patches are pixels of a CNN feature map: timm's feature_ratio (image size // map size, so
    # the map fits in image size // ratio) multiplies the patch size.
    ratio = getattr(embed, "feature_ratio", (1, 1))
    return tuple(image_size // (p * r) for p, r in zip(embed.patch_size, ratio, strict=True))


def reshape_transform(backbone: nn.Module, image_size: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Tokens (B, prefix + h*w, C) -> (B, C, h, w) for token backbones; maps that are already 4-D pass."""
    grid = token_grid(backbone, image_size)
    if grid is None:
        return None
    prefix = getattr(backbone, "num_prefix_tokens", 0)

    def to_grid(tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() == 4:
            return tokens
        patches = tokens[:, prefix:]
        if patches.shape[1] != grid[0] * grid[1]:
            raise ConfigError(
                f"the target layer gives {patches.shape[1]} patch tokens, not the {grid[0]}x{grid[1]} grid "
                f"of a {image_size} px image: pick another xai.target_layer"
            )
        return patches.reshape(tokens.shape[0], grid[0], grid[1], tokens.shape[2]).permute(0, 3, 1, 2)

    return to_grid
