"""From `cfg.dataset` to DataLoaders: generate (synthetic), prepare the crop store once, wrap the splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from cellexp.data.dataset import CropDataset
from cellexp.data.prepare import CropSettings, prepare_crop_store
from cellexp.data.sampling import BalancedSampler, SeededShuffleSampler
from cellexp.data.sources import find_livecell_sources
from cellexp.data.store import CropStore
from cellexp.data.synthetic import generate_synthetic_livecell
from cellexp.errors import ConfigError


@dataclass
class CropData:
    store: CropStore
    splits: dict[str, CropDataset]

    @property
    def class_names(self) -> list[str]:
        return self.store.class_names


def open_crop_store(dataset_cfg: DictConfig) -> CropStore:
    """The crop store for this dataset config, generating and preparing whatever is missing."""
    root = Path(dataset_cfg.root)
    if dataset_cfg.get("generate"):
        generate_synthetic_livecell(root, **OmegaConf.to_container(dataset_cfg.generate))
    if dataset_cfg.format != "livecell":
        raise ConfigError(f"dataset.format={dataset_cfg.format!r} is not supported; use 'livecell'")
    annotation_files = dataset_cfg.get("annotation_files")
    sources = find_livecell_sources(root, OmegaConf.to_container(annotation_files) if annotation_files else None)
    settings = CropSettings(
        crop_size=dataset_cfg.crop_size,
        min_area=dataset_cfg.get("min_area", 0.0),
        drop_border_cells=dataset_cfg.get("drop_border_cells", False),
    )
    return prepare_crop_store(sources, settings, Path(dataset_cfg.cache_dir))


def load_crop_data(dataset_cfg: DictConfig, seed: int) -> CropData:
    store = open_crop_store(dataset_cfg)
    limit = dataset_cfg.get("limit")
    splits = {split: CropDataset(store, split, limit=limit, seed=seed) for split in ("train", "val", "test")}
    return CropData(store, splits)


def train_loader(dataset: CropDataset, batch_size: int, num_workers: int, seed: int, balanced: bool) -> DataLoader:
    sampler = BalancedSampler(dataset.labels, seed=seed) if balanced else SeededShuffleSampler(len(dataset), seed=seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=len(dataset) >= batch_size,
        persistent_workers=num_workers > 0,
    )


def eval_loader(dataset: CropDataset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
