"""task=predict: a trained classifier on new microscopy. Cells are found (built-in segmenter) or taken from the
user's masks, cut as the checkpoint's training cut them, classified and embedded. Written under <run>/predict/
and logged to MLflow under predict/, tagged with the checkpoint's run id:

    cells.parquet            one row per cell: Metadata_* (plate, image, well, site, time, object, bbox, centroid,
                             area), predicted_class, prob_<class>, Feature_0.. (the embedding entering the head)
    cells.h5ad               the same as AnnData: Feature_* in X, the other columns in obs (scanpy reads it)
    images.parquet/.csv      per image: cells, count_<class>, mean_prob_<class>, median Feature_*
    wells.parquet/.csv       the same per (plate, well)
    class_shares.png         the predicted classes' shares per well
    outlines.png             the first image with its cells' outlines, coloured by predicted class
    summary.json             images, cells, the settings used, and every skipped input with its reason
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cellexp.data.livecell.release import CELL_LINES
from cellexp.engine.accelerator import make_accelerator
from cellexp.errors import ConfigError, DataError
from cellexp.plates.cells import crop_settings
from cellexp.plates.files import find_images, missing_inputs
from cellexp.plates.inference import classify_crops
from cellexp.plates.outlines import CocoMasks, LabelFolder
from cellexp.plates.plate import predict_plate
from cellexp.plates.profiles import cell_table, joined
from cellexp.plates.segment import Segmenter, SegmenterSettings
from cellexp.plates.tables import write_summary, write_tables
from cellexp.reports.plates import class_shares_figure, outlines_figure
from cellexp.tasks.checks import refuse_training_keys
from cellexp.tracking.loading import load_trained, resolve, trained_classes
from cellexp.tracking.session import RUN_ID_FILE, retrying, start_tracking, tracking_uri

log = logging.getLogger(__name__)

SEGMENTERS = ("builtin", "cellpose")


def run(cfg: DictConfig) -> float:
    task = cfg.task
    _check_options(cfg)
    accelerator = make_accelerator(cfg.trainer)
    source = resolve(cfg, cfg.ckpt)
    trained = source.config
    if trained.task.name != "classify":
        raise ConfigError(f"ckpt={cfg.ckpt} is a task={trained.task.name} run; task=predict needs a classifier's")
    if trained.dataset.get("spatial_dims", 2) == 3:
        raise ConfigError(
            f"ckpt={cfg.ckpt} takes 3-D crops; task=predict reads 2-D images: tabulate a plate of z-stacks with "
            "task=embed dataset=cellpainting3d dataset.generate=null dataset.root=<plate> dataset.metadata=<table>"
        )
    class_names = trained_classes(source, CELL_LINES)
    model = load_trained(source, len(class_names)).to(accelerator.device)
    inputs = model.input_config
    transform = inputs.transform()
    images, skipped = find_images(_specs(task.images), task.name_pattern, task.get("channel_pattern"))
    outlines = _outline_source(task)
    settings = crop_settings(trained.dataset)
    classify = partial(classify_crops, model, transform, batch_size=task.batch_size, device=accelerator.device)
    run_dir = Path(cfg.paths.output_dir)
    try:
        with start_tracking(cfg, run_dir, accelerator.is_main_process) as tracker:
            tracker.set_tags({"ckpt": str(cfg.ckpt), "ckpt_run_id": _run_id(cfg.ckpt, source.folder)})
            result = predict_plate(images, outlines, classify, settings, inputs, task.batch_size, task.max_pixels)
            skipped += result.skipped + getattr(outlines, "skipped", [])
            cells = cell_table(result.rows, joined(result.probabilities), joined(result.embeddings), class_names)
            folder = run_dir / "predict"
            tables = write_tables(folder, cells, class_names)
            class_shares_figure(folder / "class_shares.png", tables["wells"], class_names)
            if result.preview is not None:
                _draw_outlines(folder / "outlines.png", result.preview, cells, class_names)
            summary = {
                "ckpt": str(cfg.ckpt),
                "checkpoint": str(source.folder),
                "classes": class_names,
                "crop": {"size": settings.crop_size, "context_margin": settings.context_margin},
                "input": {"kind": inputs.kind, "intensity": inputs.intensity},
                "outlines": task.masks or task.segment,
            }
            write_summary(folder, result, len(images), len(cells), skipped, summary)
            cells_per_s = len(cells) / max(sum(result.seconds.values()), 1e-9)
            tracker.log_metrics(
                {
                    "predict/cells": len(cells),
                    "predict/images": result.images,
                    "predict/skipped": len(skipped),
                    "predict/cells_per_s": cells_per_s,
                }
            )
            tracker.log_artifacts(folder, "predict")
    except (ConfigError, DataError):
        if not (run_dir / "predict").exists():
            _discard(cfg, run_dir)
        raise
    log.info(
        "predict: %d cells from %d images (%d inputs skipped) -> %s", len(cells), result.images, len(skipped), folder
    )
    return float(len(cells))


def _check_options(cfg: DictConfig) -> None:
    """Missing or impossible settings stop the run before the model or any image is loaded."""
    refuse_training_keys(cfg, "task=predict")
    if not cfg.get("ckpt"):
        raise ConfigError("task=predict uses a trained model: give ckpt=<checkpoint, run folder or MLflow run id>")
    if not cfg.task.images:
        raise ConfigError("task=predict needs images: give task.images=<folder or glob>")
    missing = missing_inputs(_specs(cfg.task.images))
    if missing:
        raise DataError(f"task.images: {', '.join(missing)} does not exist (give a folder, a file or a glob)")
    if cfg.task.segment not in SEGMENTERS:
        raise ConfigError(f"task.segment={cfg.task.segment!r} is not one of {', '.join(SEGMENTERS)}")
    if cfg.task.segment == "cellpose" and not cfg.task.masks:
        raise ConfigError(
            "task.segment=cellpose is not run by cellexp: install it (pip install -e .[cellpose]; its model weights "
            "are downloaded on first use, which needs network access), run it on the images and give the label "
            "images it writes as task.masks=<folder> (X.tif -> X_masks.tif); or use task.segment=builtin"
        )
    if int(cfg.task.batch_size) < 1:
        raise ConfigError(f"task.batch_size={cfg.task.batch_size} must be at least 1")
    if not isinstance(cfg.task.max_pixels, int) or cfg.task.max_pixels < 1:
        raise ConfigError(f"task.max_pixels={cfg.task.max_pixels!r} must be a positive number of pixels")


def _specs(images) -> list[str]:
    return [str(images)] if isinstance(images, str) else [str(spec) for spec in OmegaConf.to_container(images)]


def _outline_source(task: DictConfig):
    """The user's masks (a COCO .json or a folder of label images), else the built-in segmenter."""
    if task.masks:
        path = Path(str(task.masks)).expanduser()
        return CocoMasks(path) if path.suffix.lower() == ".json" else LabelFolder(path, task.max_pixels)
    return Segmenter(SegmenterSettings(**OmegaConf.to_container(task.segmenter)))


def _draw_outlines(path: Path, preview: tuple, cells, class_names: list[str]) -> None:
    name, pixels, outlines = preview
    mine = cells[cells["Metadata_Image"] == name]
    predicted = dict(zip(mine["Metadata_ObjectNumber"], mine["predicted_class"], strict=True))
    outlines_figure(path, name, pixels, outlines, predicted, class_names)


def _discard(cfg: DictConfig, run_dir: Path) -> None:
    """A plate refused for its inputs before any result was written leaves nothing, as a refusal before the run
    opened does: its MLflow run is deleted and the run id file goes, so that train.py removes the folder."""
    id_file = run_dir / RUN_ID_FILE
    if not id_file.is_file():
        return
    if cfg.logger.name != "none":
        from mlflow.tracking import MlflowClient

        retrying(MlflowClient(tracking_uri=tracking_uri(cfg.logger)).delete_run, id_file.read_text().strip())
    id_file.unlink()


def _run_id(spec: str, folder: Path) -> str:
    """The MLflow run that trained the checkpoint: as given, or as its own run folder recorded it ('' if unknown)."""
    for parent in (folder, folder.parent.parent):
        if (parent / RUN_ID_FILE).is_file():
            return (parent / RUN_ID_FILE).read_text().strip()
    return str(spec) if len(str(spec)) == 32 else ""
