"""Backbones built through timm that map (B, in_chans, S, S) images to a pooled (B, num_features) embedding.

Configs under conf/backbone/ point at `timm_backbone` or `hybrid_backbone` with `_partial_: true`; the
caller completes them with the data's `in_chans` and `image_size`. Every returned module carries
`num_features` (embedding width, from timm) and `family` (cnn | vit | mixer | hybrid) so that later code,
e.g. XAI target-layer selection, can branch on the architecture kind without parsing model names.

Two options of every backbone config (conf/config.yaml) are for the task that trains it and are only
recorded on the module: `init_from` (a checkpoint whose backbone to start from) and `freeze` (train the
head only). Loading weights needs the run's checkpoint resolver and freezing is a training choice; a
trained model rebuilt from its config takes its own checkpoint and must stay differentiable for XAI.
"""

from __future__ import annotations

from functools import partial

import timm
from timm.layers import HybridEmbed, PatchEmbed
from timm.models import VisionTransformer, get_pretrained_cfg
from torch import nn

from cellexp.errors import ConfigError

FAMILIES: tuple[str, ...] = ("cnn", "vit", "mixer", "hybrid")
# Families whose timm models cut the image into patches and size their layers from `img_size`.
PATCH_FAMILIES: tuple[str, ...] = ("vit", "mixer")
# timm.create_model options that load a file named by the config
FILE_READING_KWARGS = frozenset({"checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "weights_only"})


def timm_backbone(
    model_name: str,
    family: str,
    in_chans: int,
    image_size: int,
    pretrained: bool = False,
    drop_rate: float = 0.0,
    drop_path_rate: float | None = None,
    kwargs: dict | None = None,
    init_from: str | None = None,
    freeze: bool = False,
) -> nn.Module:
    """Headless timm model; ViT/Mixer also get `img_size` so their patch grid matches the data, not 224."""
    _check_family(family, ("cnn", *PATCH_FAMILIES))
    _check_kwargs(kwargs)
    size_kwargs = {"img_size": image_size} if family in PATCH_FAMILIES else {}
    if pretrained and family == "mixer":
        _check_mixer_pretrained_size(model_name, image_size)
    model = timm.create_model(
        model_name,
        pretrained=pretrained,
        num_classes=0,
        in_chans=in_chans,
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,  # None is dropped by timm, for models without stochastic depth
        **size_kwargs,
        **(kwargs or {}),
    )
    if family in PATCH_FAMILIES:
        _check_patch_divisible(model, image_size, model_name)
    return _tag(model, family, init_from, freeze)


def hybrid_backbone(
    model_name: str,
    in_chans: int,
    image_size: int,
    family: str = "hybrid",
    feature_stage: int = -1,
    pretrained: bool = False,
    embed_dim: int = 768,
    depth: int = 12,
    num_heads: int = 12,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    kwargs: dict | None = None,
    init_from: str | None = None,
    freeze: bool = False,
) -> VisionTransformer:
    """ViT whose tokens are the pixels (patch size 1) of one CNN stage's feature map, as in ViT's hybrids.

    `model_name` names the CNN; `pretrained` loads only its weights (the ViT starts random). `feature_stage` is
    timm's `features_only` index (for ResNets 1..4 = layer1..layer4, -1 = last). HybridEmbed runs the CNN once
    on an image_size input to size the token grid, so the grid follows image_size.
    """
    _check_family(family, ("hybrid",))
    _check_kwargs(kwargs)
    cnn = timm.create_model(
        model_name, pretrained=pretrained, features_only=True, out_indices=(feature_stage,), in_chans=in_chans
    )
    model = VisionTransformer(
        img_size=image_size,
        patch_size=1,
        in_chans=in_chans,
        num_classes=0,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
        embed_layer=partial(HybridEmbed, backbone=cnn),
        **(kwargs or {}),
    )
    return _tag(model, family, init_from, freeze)


def _check_family(family: str, allowed: tuple[str, ...]) -> None:
    """Reject a misspelt or misplaced family early, since XAI code trusts the tag."""
    if family not in allowed:
        raise ConfigError(f"backbone family {family!r} is not one of {allowed} for this factory")


def _check_kwargs(kwargs: dict | None) -> None:
    """timm options that read weights from a file of the config's choosing (through torch.load) are refused: a
    backbone's starting weights come from `backbone.init_from` (safetensors) or timm's own pretrained ones."""
    reading = sorted(set(kwargs or {}) & FILE_READING_KWARGS)
    if reading:
        raise ConfigError(
            f"backbone.kwargs.{reading[0]} is not taken: it reads a weights file through pickle; "
            "give backbone.init_from=<checkpoint, run folder or MLflow run id> instead"
        )


def _check_mixer_pretrained_size(model_name: str, image_size: int) -> None:
    """Mixer token-mixing weights are sized by the patch count, so pretrained ones only fit their own image size."""
    pretrained_size = get_pretrained_cfg(model_name).input_size[-1]
    if image_size != pretrained_size:
        raise ConfigError(
            f"pretrained {model_name} needs image_size={pretrained_size} (its token-mixing MLPs are sized by "
            f"the patch count); got image_size={image_size}"
        )


def _check_patch_divisible(model: nn.Module, image_size: int, model_name: str) -> None:
    """Fail at build time rather than silently cropping (or failing at the first batch) on a partial patch."""
    patch = next(m for m in model.modules() if isinstance(m, PatchEmbed)).patch_size[0]
    if image_size % patch:
        raise ConfigError(f"image_size={image_size} is not divisible by the patch size {patch} of {model_name}")


def _tag(model: nn.Module, family: str, init_from: str | None, freeze: bool) -> nn.Module:
    """Record the family and the training options on the module itself, so no wrapper hides timm's API
    (num_features, forward_features)."""
    model.family, model.init_from, model.freeze = family, init_from, freeze
    return model
