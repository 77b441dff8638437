"""Patch embeddings of a frozen backbone, computed once per (patch store, backbone weights, settings) and cached.

The backbone is the configured one (random, or ImageNet weights where the hub is reachable) seeded by the run's
seed, or the backbone of the run `ckpt=` names (a task=ssl teacher or a classifier), with that run's input config.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cellexp.data.store import SplitStore
from cellexp.data.transforms import BatchTransform
from cellexp.errors import ConfigError
from cellexp.progress import progress
from cellexp.tracking.loading import build_backbone, pretrained_backbone

log = logging.getLogger(__name__)


def embed_store(cfg: DictConfig, store: SplitStore, device: torch.device) -> tuple[np.ndarray, str]:
    """Every stored patch's embedding (N, F) and a description of the backbone that made it."""
    spec = cfg.get("ckpt")
    if spec:
        backbone, source = pretrained_backbone(cfg, spec)
        weights = _file_identity(source.folder)
        described = f"checkpoint {source.folder}"
    else:
        set_seed(cfg.seed)
        backbone = build_backbone(cfg)
        pretrained = bool(cfg.backbone.get("pretrained"))
        weights = {"pretrained": pretrained, "seed": None if pretrained else cfg.seed}
        described = f"{cfg.backbone.model_name} ({'pretrained' if pretrained else f'random, seed {cfg.seed}'})"
    embedding = cfg.task.embedding
    standardize = patch_standardization(embedding.standardize, trained=bool(spec))
    identity = {
        "store": store.path.name,
        "backbone": OmegaConf.to_container(cfg.backbone, resolve=True) if not spec else None,
        "weights": weights,
        "image_size": backbone.input_config.image_size,
        "last_blocks": int(embedding.last_blocks),
        "standardize": standardize,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cfg.paths.cache_dir) / "embeddings" / f"{key}.npy"
    if path.exists():
        log.info("patch embeddings from cache %s", path)
        return np.load(path), described
    features = patch_embeddings(
        backbone.to(device).eval(),
        store,
        backbone.input_config.transform(),
        int(embedding.last_blocks),
        int(embedding.batch_size),
        device,
        standardize=standardize,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{np.random.default_rng().integers(1 << 30)}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, features)
    tmp.replace(path)
    return features, described


def patch_standardization(setting, trained: bool) -> bool:
    """Whether patches are standardised before the backbone. "auto": not for a trained backbone (no cellexp run
    trains on standardised patches, so it gets its patches as it saw them in training), yes for a random or
    ImageNet one (a batch's brightness and contrast then cannot be learnt)."""
    if setting == "auto":
        return not trained
    if not isinstance(setting, bool):
        raise ConfigError(f"task.embedding.standardize must be auto, true or false, got {setting!r}")
    if trained and setting:
        log.warning(
            "task.embedding.standardize=true with ckpt=: the checkpoint's backbone was trained on unstandardised "
            "patches, so it embeds standardised ones as data it never saw"
        )
    return bool(setting)


def _file_identity(folder: Path) -> list:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).iterdir() if p.is_file())


@torch.no_grad()
def patch_embeddings(
    backbone: nn.Module,
    store: SplitStore,
    transform: BatchTransform,
    last_blocks: int,
    batch_size: int,
    device,
    standardize: bool = False,
) -> np.ndarray:
    """(N, F) float32: a ViT gives the CLS tokens of its last `last_blocks` blocks side by side, others pooled."""
    images = store.images
    vit = hasattr(backbone, "get_intermediate_layers") and getattr(backbone, "num_prefix_tokens", 0) > 0
    out = []
    for start in progress(range(0, len(images), batch_size), desc="patch embeddings", unit="batch"):
        x = transform(torch.from_numpy(images[start : start + batch_size]).unsqueeze(1).to(device))
        if standardize:  # each patch to zero mean, unit variance: a batch's brightness and contrast drop out
            x = (x - x.mean((1, 2, 3), keepdim=True)) / (x.std((1, 2, 3), keepdim=True) + 1e-6)
        if vit and last_blocks > 0:
            layers = backbone.get_intermediate_layers(x, n=last_blocks, return_prefix_tokens=True, norm=True)
            out.append(torch.cat([prefix[:, 0] for _, prefix in layers], dim=1).float().cpu())
        else:
            out.append(backbone(x).float().cpu())
    return torch.cat(out).numpy()
