"""From `cfg.dataset` to DataLoaders: generate (synthetic), prepare the crop store once, wrap the splits.

Time-lapse data comes the same way: its patch store, split by sequence, as crop datasets (`load_patch_data`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from cellexp.data.dataset import CropDataset, collate_batch
from cellexp.data.intensity import channel_ranges
from cellexp.data.livecell.prepare import CropSettings, prepare_crop_store
from cellexp.data.livecell.release import CELL_LINES
from cellexp.data.livecell.sources import find_livecell_cls_sources, find_livecell_sources
from cellexp.data.sampling import BalancedSampler, SeededShuffleSampler
from cellexp.data.store import CropStore, PooledSplit, channel_batch
from cellexp.data.synthetic.livecell import generate_synthetic_livecell
from cellexp.data.transforms import InputConfig
from cellexp.data.well_splits import split_by_well
from cellexp.errors import ConfigError

FORMATS = ("livecell", "livecell_cls")
PLATE_FORMAT = "cellpainting3d"
SPLITS = ("train", "val", "test")
# source: the dataset's own train/val/test; well: drawn anew, each well in one split (a plate's only way)
SPLIT_BY = ("source", "well")
POOLED = "pooled"
# training crops the intensity ranges of 16-bit data are measured on (a seeded sample)
RANGE_SAMPLE = 4096


@dataclass
class CropData:
    store: CropStore
    splits: dict[str, CropDataset]
    class_names: list[str]
    # splits drawn by well (a plate): a row per well, its treatment and split, logged with the run
    split_table: list[dict] | None = None

    def masked(self) -> CropData:
        """The same data with each cell's mask in every batch (Grad-CAMO in training)."""
        splits = {name: split.masked() for name, split in self.splits.items()}
        return replace(self, splits=splits)

    def input_config(self, dataset_cfg: DictConfig, seed: int = 0) -> InputConfig:
        """What a model trained on this data takes: `dataset`'s size and normalisation; the data's channels (grey
        crops repeated to `dataset.in_chans`; several channels are taken as they are, so in_chans must be 1 or
        their count); for 16-bit data, each channel's intensity range on the training split's cells."""
        inputs = InputConfig.from_dataset(dataset_cfg)
        channels, in_chans = self.store.channels, inputs.in_chans
        if channels > 1 and in_chans not in (1, channels):
            raise ConfigError(
                f"dataset.in_chans={in_chans}: the images have {channels} channels, which the model takes as they "
                f"are (a grey image is what is repeated); give dataset.in_chans={channels} or 1"
            )
        intensity = self._ranges(seed) if self.store.dtype == "uint16" else None
        depth = next(iter(self.store.splits.values())).depth
        return replace(inputs, in_chans=max(in_chans, channels), channels=channels, intensity=intensity, depth=depth)

    def _ranges(self, seed: int) -> tuple[tuple[float, float], ...]:
        train = self.splits["train"]
        if not len(train):
            raise ConfigError("the training split has no crops: the 16-bit intensity ranges are measured on it")
        picked = np.sort(np.random.default_rng(seed).permutation(len(train))[:RANGE_SAMPLE])
        rows = train.indices[picked]
        return channel_ranges(channel_batch(self.store.images(train.split)[rows]), self.store.masks(train.split)[rows])


def open_crop_store(dataset_cfg: DictConfig) -> CropStore:
    """The crop store for this dataset config, generating and preparing whatever is missing."""
    root = Path(dataset_cfg.root)
    if dataset_cfg.get("generate"):
        generate_synthetic_livecell(root, **OmegaConf.to_container(dataset_cfg.generate))
    if dataset_cfg.format == "livecell":
        annotation_files = dataset_cfg.get("annotation_files")
        sources = find_livecell_sources(root, OmegaConf.to_container(annotation_files) if annotation_files else None)
    elif dataset_cfg.format == "livecell_cls":
        sources = find_livecell_cls_sources(root)
    else:
        raise ConfigError(
            f"dataset.format={dataset_cfg.format!r} is not supported; use one of {', '.join((*FORMATS, PLATE_FORMAT))}"
        )
    settings = CropSettings(
        crop_size=dataset_cfg.crop_size,
        min_area=dataset_cfg.get("min_area", 0.0),
        drop_border_cells=dataset_cfg.get("drop_border_cells", False),
        context_margin=_context_margin(dataset_cfg),
        shard_images=dataset_cfg.get("shard_images", CropSettings.shard_images),
    )
    return prepare_crop_store(sources, settings, Path(dataset_cfg.cache_dir), dataset_cfg.get("prepare_workers"))


def _context_margin(dataset_cfg: DictConfig) -> float:
    margin = dataset_cfg.get("context_margin") or 0.0
    if not isinstance(margin, (int, float)) or not 0 <= margin <= 4:
        raise ConfigError(f"dataset.context_margin is a share of the cell's box in [0, 4], got {margin!r}")
    if margin and dataset_cfg.format == "livecell_cls":
        raise ConfigError(
            "dataset.context_margin: LIVECell-CLS crops were cut with a black background and hold no surroundings; "
            "context crops need the full images (dataset=livecell or dataset=synthetic)"
        )
    return float(margin)


def load_crop_data(dataset_cfg: DictConfig, seed: int) -> CropData:
    if dataset_cfg.format == PLATE_FORMAT:
        return load_plate_data(dataset_cfg, seed)
    split_by = dataset_cfg.get("split_by", "source")
    if split_by not in SPLIT_BY:
        raise ConfigError(f"dataset.split_by={split_by}: choose {' or '.join(SPLIT_BY)}")
    if split_by == "well" and dataset_cfg.format != "livecell":
        raise ConfigError(
            f"dataset.split_by=well: the crops of dataset={dataset_cfg.name} do not say which well they come from "
            "(LIVECell's images and the synthetic data's do)"
        )
    store = open_crop_store(dataset_cfg)
    names = _chosen_lines(dataset_cfg.get("cell_lines"))
    classes = [store.class_names.index(name) for name in names] if names else None
    limit = dataset_cfg.get("limit")
    if split_by == "source":
        splits = {split: CropDataset(store, split, limit=limit, seed=seed, classes=classes) for split in SPLITS}
        return CropData(store, splits, names or list(store.class_names))
    pooled = PooledSplit(tuple(store.splits[split] for split in SPLITS))
    rows, table = split_by_well(
        pooled.manifest(),
        lambda row: (row["class_name"], row["well"]),  # a LIVECell plate holds one cell line
        lambda row: row["class_name"],
        int(dataset_cfg.get("split_seed", 0)),
        OmegaConf.to_container(dataset_cfg.split_fractions),
    )
    store = CropStore({POOLED: pooled}, store.class_names)
    splits = {
        split: CropDataset(store, POOLED, limit=limit, seed=seed, classes=classes, rows=rows[split]) for split in SPLITS
    }
    return CropData(store, splits, names or list(store.class_names), table)


def load_plate_data(dataset_cfg: DictConfig, seed: int) -> CropData:
    """A 3-D Cell Painting plate's cells, split by well: one store split (`cells`), three row sets."""
    # imported here: the plate readers bring zarr, ome-zarr and dask (about 2 s a process), which 2-D runs never use
    from cellexp.data.cellpainting.plate import open_plate
    from cellexp.data.cellpainting.prepare import SPLIT

    plate = open_plate(dataset_cfg)
    store = CropStore({SPLIT: plate.store}, plate.class_names)
    limit = dataset_cfg.get("limit")
    splits = {split: CropDataset(store, SPLIT, limit=limit, seed=seed, rows=rows) for split, rows in plate.rows.items()}
    return CropData(store, splits, plate.class_names, plate.split_table)


def load_patch_data(
    dataset_cfg: DictConfig, seed: int, transductive: bool = False, wells_per_batch: int | None = None
) -> CropData:
    """A time-lapse dataset's patches as crop data: a split's patches are its sequences', labelled by cell line.

    `transductive` trains on the patches of every sequence, test batches included (labels unused: CLANet's DINO
    does so); `wells_per_batch` keeps the training patches of the first wells of each batch only, in the natural
    order of their names (CLANet's DINO: 7). Validation stays the val split's sequences either way.
    """
    # imported here: the time-lapse readers bring scikit-image, which the crop runs never use
    from cellexp.data.timelapse.bags import bag_splits, dataset_root, load_bags

    patch_store, bags, _ = load_bags(dataset_cfg, dataset_root(dataset_cfg))
    store = CropStore({"patches": patch_store}, list(patch_store.summary["class_names"]))
    members = dict(bag_splits(dataset_cfg, bags))
    if transductive:
        members["train"] = [bag for split in ("train", "val", "test") for bag in members[split]]
    if wells_per_batch is not None:
        members["train"] = first_wells(members["train"], wells_per_batch)
    splits = {
        split: CropDataset(
            store,
            "patches",
            limit=dataset_cfg.get("limit"),
            seed=seed,
            rows=np.concatenate([np.zeros(0, np.int64), *(bag.rows for bag in chosen)]),
        )
        for split, chosen in members.items()
    }
    return CropData(store, splits, store.class_names)


def first_wells(bags: list, count: int) -> list:
    """The bags of the first `count` wells of each (line, batch), wells in the natural order of their frames'
    names (VID<exp>_<well>_<flask>: by experiment, then well, A2 before A10)."""
    by_batch: dict[tuple, list] = {}
    for bag in bags:
        by_batch.setdefault((bag.sequence.line, bag.sequence.batch), []).append(bag)
    kept = []
    for members in by_batch.values():
        members.sort(key=lambda b: _natural(f"VID{b.sequence.experiment}_{b.sequence.well}_{b.sequence.flask}"))
        wells = list(dict.fromkeys(b.sequence.well for b in members))[:count]
        kept += [b for b in members if b.sequence.well in wells]
    return kept


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _chosen_lines(lines) -> list[str] | None:
    if not lines:
        return None
    unknown = [line for line in lines if line not in CELL_LINES]
    if unknown:
        raise ConfigError(f"dataset.cell_lines: unknown {unknown}; choose from {', '.join(CELL_LINES)}")
    return list(lines)


def train_loader(dataset: CropDataset, batch_size: int, num_workers: int, seed: int, balanced: bool) -> DataLoader:
    sampler = BalancedSampler(dataset.labels, seed=seed) if balanced else SeededShuffleSampler(len(dataset), seed=seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_batch,
        drop_last=len(dataset) >= batch_size,
        persistent_workers=num_workers > 0,
    )


def eval_loader(dataset: CropDataset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_batch)
