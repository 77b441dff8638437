"""Backbones: the tiny timm test models through their shipped configs, image-size handling, and the hybrid."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from cellexp.models.backbones import FAMILIES, hybrid_backbone, timm_backbone

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf" / "backbone"
TINY_HYBRID = dict(embed_dim=32, depth=1, num_heads=2)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run slower multi-threaded, by 3-4x on a shared CPU; restore the setting for other modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(config_name: str, in_chans: int, image_size: int) -> torch.nn.Module:
    """Instantiate a shipped config the way the training code does."""
    cfg = OmegaConf.load(CONFIG_DIR / f"{config_name}.yaml")
    return hydra.utils.instantiate(cfg)(in_chans=in_chans, image_size=image_size)


@pytest.mark.parametrize(
    ("config_name", "family"), [("test_resnet", "cnn"), ("test_efficientnet", "cnn"), ("test_vit", "vit")]
)
def test_tiny_backbone_embeds_grayscale_and_backpropagates(config_name, family):
    torch.manual_seed(0)
    model = build(config_name, in_chans=1, image_size=32)
    embedding = model(torch.randn(2, 1, 32, 32))

    assert model.family == family
    assert embedding.shape == (2, model.num_features)
    assert torch.isfinite(embedding).all()
    embedding.square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("image_size", [32, 64])
def test_vit_patch_grid_follows_image_size(image_size):
    model = build("test_vit", in_chans=1, image_size=image_size)
    side = image_size // 16

    assert model.patch_embed.grid_size == (side, side)
    assert model.pos_embed.shape[1] == side * side + 1  # + class token
    assert model(torch.randn(2, 1, image_size, image_size)).shape == (2, model.num_features)


def test_image_size_not_divisible_by_patch_is_rejected():
    with pytest.raises(ValueError, match=r"image_size=40 .*patch size 16"):
        build("test_vit", in_chans=1, image_size=40)


def test_pretrained_mixer_at_other_image_size_is_rejected_before_download():
    with pytest.raises(ValueError, match="image_size=224"):
        timm_backbone("mixer_b16_224", "mixer", in_chans=1, image_size=64, pretrained=True)


def test_family_must_suit_the_factory():
    with pytest.raises(ValueError, match="'hybrid'"):
        timm_backbone("test_resnet", "hybrid", in_chans=1, image_size=32)


@pytest.mark.parametrize(("image_size", "feature_stage", "side"), [(64, -1, 2), (128, -1, 4), (64, 3, 4)])
def test_hybrid_token_grid_follows_image_size_and_stage(image_size, feature_stage, side):
    model = hybrid_backbone(
        "test_resnet", in_chans=1, image_size=image_size, feature_stage=feature_stage, **TINY_HYBRID
    )
    embedding = model(torch.randn(2, 1, image_size, image_size))

    assert model.family == "hybrid"
    assert model.patch_embed.patch_size == (1, 1)
    assert model.patch_embed.grid_size == (side, side)
    assert model.pos_embed.shape[1] == side * side + 1
    assert embedding.shape == (2, model.num_features) == (2, TINY_HYBRID["embed_dim"])
    assert model.patch_embed.backbone.conv1[0].in_channels == 1


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_config_follows_schema(path):
    cfg = OmegaConf.load(path)

    assert cfg._partial_ is True
    assert cfg.pretrained is False
    assert "name" not in cfg
    if cfg._target_.startswith("cellexp.models.backbones3d."):  # MONAI's 3-D networks: no timm kwargs
        assert cfg.family == "cnn3d" and cfg.spatial_dims == 3 and "model_name" in cfg
        return
    assert cfg._target_.startswith("cellexp.models.backbones.")
    assert cfg.family in FAMILIES
    assert {"model_name", "drop_rate", "kwargs"} <= set(cfg)
