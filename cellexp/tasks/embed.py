"""task=embed: a trained classifier's per-cell table for a split of an annotated dataset (LIVECell, LIVECell-CLS,
the synthetic data, a 3-D Cell Painting plate: the paper's profiles, with each cell's plate, well, site, compound,
dose, pert_type and centroid as Metadata_* columns; `task.layer` takes an intermediate layer's activations), so
that the profiles of its training data can be analysed beside a new plate's. The table is task=predict's (the
same code writes it), plus each cell's true class; written under <run>/embed/ and logged to MLflow under embed/:

    cells.parquet            one row per crop of the split: Metadata_* (the dataset and split as the plate, image,
                             well, site, time, annotation, bbox, area), true_class, predicted_class, prob_<class>,
                             Feature_0.. (the embedding entering the head)
    images.parquet/.csv      per image: cells, count_<class>, mean_prob_<class>, median Feature_*
    wells.parquet/.csv       the same per (plate, well)
    cells.h5ad               the cells as AnnData (Feature_* in X, Metadata_* in obs)
    ../profiles/quality.json on a plate split with replicate wells (task.split=train): retrieval mAP of the sphered
                             profiles (profiles/* metrics)
    summary.json             the split, cells, accuracy on them, the model's input and crop settings
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from cellexp.data.datamodule import load_crop_data
from cellexp.data.livecell.release import CELL_LINES
from cellexp.engine.accelerator import make_accelerator
from cellexp.errors import ConfigError
from cellexp.plates.annotated import TRUE_CLASS, split_rows
from cellexp.plates.inference import backbone_layer, classify_crops
from cellexp.plates.profiles import cell_table, joined
from cellexp.plates.tables import write_tables
from cellexp.profiles.columns import has_treatments
from cellexp.tasks.checks import plain, refuse_training_keys, require_crops
from cellexp.tasks.profiling import score_profiles
from cellexp.tracking.loading import load_trained, resolve, trained_classes
from cellexp.tracking.session import start_tracking

log = logging.getLogger(__name__)

# dataset keys that decide what the model sees: they must be the checkpoint's own
AS_TRAINED = (
    "crop_size",
    "context_margin",
    "min_area",
    "drop_border_cells",
    "image_size",
    "normalize",
    "spatial_dims",
    "depth",
    "min_volume",
    "segmentation",
    "label",
)
# crops read from the store at a time
CHUNK = 4096


def run(cfg: DictConfig) -> float:
    task = cfg.task
    refuse_training_keys(cfg, "task=embed")
    if int(task.batch_size) < 1:
        raise ConfigError(f"task.batch_size={task.batch_size} must be at least 1")
    accelerator = make_accelerator(cfg.trainer)
    source = resolve(cfg, cfg.ckpt)
    if source.config.task.name != "classify":
        raise ConfigError(f"ckpt={cfg.ckpt} is a task={source.config.task.name} run; task=embed needs a classifier's")
    _check_as_trained(cfg, source.config.dataset)
    class_names = trained_classes(source, CELL_LINES)
    model = load_trained(source, len(class_names)).to(accelerator.device)
    inputs = model.input_config
    if task.get("layer"):
        backbone_layer(model.backbone, task.layer)  # an unknown layer is named before any data is read
    run_dir = Path(cfg.paths.output_dir)
    with start_tracking(cfg, run_dir, accelerator.is_main_process) as tracker:
        with accelerator.main_process_first():
            data = load_crop_data(cfg.dataset, seed=cfg.seed)
        require_crops(cfg, inputs.kind, data.store.kind)
        if task.split not in data.splits:
            raise ConfigError(f"task.split={task.split!r} is not one of {', '.join(data.splits)}")
        dataset = data.splits[task.split]
        images, transform = data.store.images(dataset.split), inputs.transform()
        passes = [
            classify_crops(
                model,
                transform,
                images[dataset.indices[start : start + CHUNK]],
                task.batch_size,
                accelerator.device,
                task.get("layer"),
            )
            for start in range(0, len(dataset), CHUNK)
        ]
        rows = split_rows(dataset, data.class_names, f"{cfg.dataset.name}/{task.split}", task.name_pattern)
        cells = cell_table(rows, joined([p for p, _ in passes]), joined([e for _, e in passes]), class_names)
        folder = run_dir / "embed"
        write_tables(folder, cells, class_names)
        accuracy = float((cells["predicted_class"] == cells[TRUE_CLASS]).mean()) if len(cells) else float("nan")
        summary = {
            "ckpt": str(cfg.ckpt),
            "checkpoint": str(source.folder),
            "dataset": cfg.dataset.name,
            "split": task.split,
            "cells": len(cells),
            "accuracy": accuracy,
            "classes": class_names,
            "input": {"kind": inputs.kind, "intensity": inputs.intensity},
        }
        (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        tracker.log_metrics({"embed/cells": len(cells), "embed/accuracy": accuracy})
        if has_treatments(cells):  # a plate's split with replicate wells: how good the profiles are
            score_profiles(cells, tracker, run_dir / "profiles", cfg.seed, {"split": task.split})
        tracker.log_artifacts(folder, "embed")
    log.info(
        "embed: %d cells of %s/%s -> %s (accuracy %.3f)", len(cells), cfg.dataset.name, task.split, folder, accuracy
    )
    return float(len(cells))


def _check_as_trained(cfg: DictConfig, trained: DictConfig) -> None:
    """The cells are cut and fed as the model's training did them, or the run stops naming what differs."""
    differ = [
        f"dataset.{key}={plain(cfg.dataset.get(key))} (the checkpoint's: {plain(trained.get(key))})"
        for key in AS_TRAINED
        if plain(cfg.dataset.get(key)) != plain(trained.get(key))
    ]
    if differ:
        raise ConfigError(
            f"task=embed feeds ckpt={cfg.ckpt} cells as it was trained on them; give its settings: {', '.join(differ)}"
        )
