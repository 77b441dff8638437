"""`cfg.dataset` of a 3-D Cell Painting plate to its crop store and its splits by well: what `data.datamodule`
wraps as crop data (generating the plate first where the dataset says so)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from cellexp.data.cellpainting.fields import find_fields
from cellexp.data.cellpainting.metadata import class_names, read_metadata, treatment_of
from cellexp.data.cellpainting.prepare import StackSettings, prepare_plate_store
from cellexp.data.cellpainting.segment import Segmentation
from cellexp.data.cellpainting.synthetic import generate_cellpainting_plate
from cellexp.data.store import SplitStore
from cellexp.data.well_splits import split_by_well
from cellexp.errors import ConfigError


@dataclass(frozen=True)
class PlateCells:
    store: SplitStore  # every cell of the plate, in one split
    class_names: list[str]
    rows: dict[str, np.ndarray]  # the store rows of each of train, val and test
    split_table: list[dict]  # one row per well: plate, well, stratum (compound@dose), split, cells


def open_plate(dataset_cfg: DictConfig) -> PlateCells:
    if dataset_cfg.get("generate"):
        generate = OmegaConf.to_container(dataset_cfg.generate, resolve=True)
        generate_cellpainting_plate(
            Path(dataset_cfg.generate_root),
            **generate,
            split_seed=dataset_cfg.split_seed,
            split_fractions=OmegaConf.to_container(dataset_cfg.split_fractions),
        )
    if dataset_cfg.get("split_by") != "well":
        raise ConfigError(
            f"dataset.split_by={dataset_cfg.get('split_by')}: a plate's cells are split by well "
            "(dataset.split_by=well); cells of one well in two splits would test the model on wells it was trained on"
        )
    fields = find_fields(Path(dataset_cfg.root), dataset_cfg.layout, dataset_cfg.get("field_pattern"))
    table = Path(dataset_cfg.metadata)
    columns = OmegaConf.to_container(dataset_cfg.metadata_columns) if dataset_cfg.get("metadata_columns") else None
    treatments = read_metadata(table, columns)
    wells = {(f.plate, f.well): treatment_of(treatments, f.plate, f.well, table) for f in fields}
    names = class_names(wells, dataset_cfg.label)
    store = prepare_plate_store(
        fields,
        wells,
        table,
        names,
        stack_settings(dataset_cfg),
        Segmentation(**OmegaConf.to_container(dataset_cfg.segmentation, resolve=True)),
        Path(dataset_cfg.cache_dir),
        dataset_cfg.get("prepare_workers"),
    )
    return _split(store, names, dataset_cfg)


def stack_settings(dataset_cfg: DictConfig) -> StackSettings:
    return StackSettings(
        crop_size=int(dataset_cfg.crop_size),
        depth=int(dataset_cfg.depth),
        channels=int(dataset_cfg.channels),
        min_volume=int(dataset_cfg.min_volume),
        label=str(dataset_cfg.label),
        voxel_size=tuple(float(v) for v in dataset_cfg.voxel_size),
        fields_per_shard=int(dataset_cfg.fields_per_shard),
    )


def _split(store: SplitStore, names: list[str], dataset_cfg: DictConfig) -> PlateCells:
    """Every well to one split, stratified by treatment (compound and dose), seeded by `dataset.split_seed`."""
    rows, table = split_by_well(
        store.manifest(),
        lambda row: (row["plate"], row["well"]),
        lambda row: f"{row['compound']}@{float(row['dose']):g}",
        int(dataset_cfg.split_seed),
        OmegaConf.to_container(dataset_cfg.split_fractions),
    )
    return PlateCells(store, names, rows, table)
