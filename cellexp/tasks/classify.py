"""task=classify: train on train, select on val, report on test; or evaluate a checkpoint (task.fit=false)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from accelerate.utils import set_seed
from omegaconf import DictConfig

from cellexp.config import build
from cellexp.data.datamodule import PLATE_FORMAT, CropData, eval_loader, load_crop_data, train_loader
from cellexp.data.transforms import BACKGROUNDS, augmentation
from cellexp.engine.accelerator import make_accelerator, sync_batchnorm
from cellexp.engine.checkpoint import BEST, CheckpointManager
from cellexp.engine.classification import ClassifierTrainer
from cellexp.engine.metrics import batch_averaged_metrics, classification_metrics, confusion_matrix
from cellexp.engine.settings import Selection, TrainerSettings
from cellexp.errors import ConfigError, NonFiniteLossError
from cellexp.models.classifier import CellClassifier
from cellexp.reports.classification import write_confusion_matrix, write_predictions
from cellexp.reports.data import log_data_summary
from cellexp.reports.model import log_model_description
from cellexp.sweeps.pruning import trial_pruner
from cellexp.tasks.checks import OTHER_TASKS_HEADS, refuse_head, require_crops
from cellexp.tasks.profiling import log_profile_quality
from cellexp.tasks.trajectory import RecordingTrainer, trajectory_cells
from cellexp.tracking.identity import backbone_source_tags, checkpoint_meta
from cellexp.tracking.loading import (
    ResolvedCheckpoint,
    build_model,
    check_backbone,
    init_backbone,
    load_weights,
    resolve,
    trained_inputs,
)
from cellexp.tracking.session import start_tracking
from cellexp.xai.camo import GradCamo
from cellexp.xai.penalties import build_penalty, check_camo

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float:
    _check_options(cfg)
    if cfg.task.fit:  # evaluation builds the checkpoint's own model
        check_backbone(cfg)
    accelerator = make_accelerator(cfg.trainer)
    run_dir = Path(cfg.paths.output_dir)
    source = resolve(cfg, cfg.ckpt) if cfg.get("ckpt") else None
    with start_tracking(cfg, run_dir, accelerator.is_main_process) as tracker:
        with accelerator.main_process_first():
            data = load_crop_data(cfg.dataset, seed=cfg.seed)
        set_seed(cfg.seed)
        model = _model(cfg, data, source)
        if source is not None:
            load_weights(model, source.folder)
        backbone_source = init_backbone(cfg, model.backbone) if source is None else None
        if cfg.task.fit and cfg.backbone.get("freeze"):
            model.freeze_backbone()
        if accelerator.is_main_process:
            log_data_summary(tracker, data, run_dir, cfg.dataset.name)
            log_model_description(tracker, model, run_dir)
        if source is not None:
            tracker.set_tags({"init_from": str(source.folder)})
        if backbone_source is not None:
            tracker.set_tags(backbone_source_tags(cfg.backbone.init_from, backbone_source))
        if _camo_on(cfg) or _background(cfg) != "keep":
            data = data.masked()
        trainer = build_trainer(cfg, accelerator, model, data, run_dir, tracker)
        if cfg.task.fit:
            objective = _fit(cfg, trainer, data)
            best = run_dir / "checkpoints" / BEST
            load_weights(trainer.unwrapped, best)
            if accelerator.is_main_process and cfg.logger.get("log_checkpoints", True):
                tracker.log_artifacts(best, f"checkpoints/{BEST}")
            if accelerator.is_main_process and cfg.task.get("mlflow_model") and tracker.run_id is not None:
                _log_mlflow_model(best, run_dir, data)
            if accelerator.is_main_process and isinstance(trainer, RecordingTrainer) and trainer.trajectory.frames:
                tracker.log_artifact(trainer.trajectory.write(run_dir, cfg.seed))
        test_metrics = _test(cfg, trainer, data, tracker, run_dir)
        if accelerator.is_main_process:
            model = trainer.unwrapped
            log_profile_quality(
                model.backbone, trainer.eval_transform, data, tracker, run_dir, cfg.trainer.eval_batch_size, cfg.seed
            )
        if not cfg.task.fit:
            objective = test_metrics[f"test/{cfg.task.optimized_metric.split('/', 1)[-1]}"]
    return objective


def _log_mlflow_model(best: Path, run_dir: Path, data: CropData) -> None:
    """The best checkpoint as the MLflow run's `model` (cellexp.tracking.mlflow_model; imports mlflow, so only when
    asked)."""
    from cellexp.tracking.mlflow_model import log_classifier

    test = data.splits["test"]
    example = data.store.images(test.split)[test.indices[:1]]
    log_classifier(best, run_dir / "config.yaml", data.class_names, example, run_dir / ".model")


def _check_options(cfg: DictConfig) -> None:
    if cfg.get("ckpt") and cfg.backbone.get("init_from"):
        raise ConfigError(
            f"ckpt={cfg.ckpt} (the whole model) and backbone.init_from={cfg.backbone.init_from} (its backbone) "
            "both name starting weights: give one"
        )
    refuse_head(cfg, "task=classify trains a classification head", OTHER_TASKS_HEADS)
    if cfg.task.fit and cfg.backbone.get("freeze") and cfg.head.get("trained") is False:
        raise ConfigError("backbone.freeze=true with head.trained=false leaves task=classify nothing to train")
    batch = cfg.task.get("batch_metrics")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ConfigError(f"task.batch_metrics must be null or a batch size of at least 1, got {batch!r}")
    camo = cfg.task.get("camo") or {}
    weight = camo.get("weight", 0.0)
    if not isinstance(weight, (int, float)) or weight < 0:
        raise ConfigError(f"task.camo.weight must be a number >= 0, got {weight!r}")
    check_camo(camo)
    if _background(cfg) not in BACKGROUNDS:
        raise ConfigError(f"dataset.background={_background(cfg)!r}; choose one of {', '.join(BACKGROUNDS)}")
    if _background(cfg) == "black" and not _has_context(cfg):
        raise ConfigError(
            "dataset.background=black on crops that are black outside the cell already (dataset.context_margin=0)"
        )
    if weight > 0 and not cfg.task.fit:
        raise ConfigError("task.camo.weight > 0 regularises training: with task.fit=false use task.camo.monitor=true")
    if weight > 0 and cfg.backbone.get("freeze"):
        raise ConfigError("task.camo.weight > 0 with backbone.freeze=true: a frozen backbone's Grad-CAM cannot move")
    if _camo_on(cfg) and not _has_context(cfg):
        log.warning(
            "task.camo on black-background crops (dataset.context_margin=0): nothing outside the cell is there to "
            "cheat on, so Grad-CAMO stays near what chance gives; set dataset.context_margin (e.g. 0.5)"
        )


def _model(cfg: DictConfig, data: CropData, source: ResolvedCheckpoint | None) -> CellClassifier:
    """Training (and fine-tuning) builds the configured model for this data's crops; evaluation rebuilds the model
    the checkpoint was trained as, which must take this data's kind of crops."""
    if cfg.task.fit:
        return build_model(cfg, len(data.class_names), data.input_config(cfg.dataset, cfg.seed))
    inputs = trained_inputs(source)
    require_crops(cfg, inputs.kind, data.store.kind)
    return build_model(source.config, len(data.class_names), inputs)


def _camo_on(cfg: DictConfig) -> bool:
    camo = cfg.task.get("camo") or {}
    return bool(camo.get("weight") or camo.get("monitor"))


def _has_context(cfg: DictConfig) -> bool:
    """Whether the crops show the cell's surroundings (context crops, or a 3-D plate's, which always do)."""
    return bool(cfg.dataset.get("context_margin")) or cfg.dataset.format == PLATE_FORMAT


def _background(cfg: DictConfig) -> str:
    return cfg.dataset.get("background") or "keep"


def _camo(cfg: DictConfig, model: CellClassifier) -> tuple[GradCamo | None, object | None]:
    """The Grad-CAMO monitor (task.camo.layer's first layer, its positive map) and the penalty that task.camo
    asks for, hooked on the model; None for what is off."""
    if not _camo_on(cfg):
        return None, None
    camo, size = cfg.task.camo, model.input_config.image_size
    layer = camo.get("layer")
    layer = layer if layer is None or isinstance(layer, str) else layer[0]
    monitor = GradCamo(model, size, layer=layer, target=camo.get("target"))
    return monitor, build_penalty(model, size, camo) if camo.get("weight") else None


def build_trainer(
    cfg: DictConfig, accelerator, model: CellClassifier, data: CropData, run_dir: Path, tracker=None
) -> ClassifierTrainer:
    """The trainer task=classify fits and tests `model` with, for this config and data; public so that the GPU suite
    and benchmarks measure the task's own trainer rather than a copy. Checkpoints go to <run_dir>/checkpoints."""
    model = sync_batchnorm(model, accelerator, cfg.trainer, default=False)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last_3d if model.input_config.depth else torch.channels_last)
    optimizer = build(cfg.optim.optimizer)(params=[p for p in model.parameters() if p.requires_grad])
    inputs = model.input_config  # a trained model sees crops as it was trained on them; augmentation is this run's
    kind, extra = ClassifierTrainer, {}
    monitor, penalty = _camo(cfg, model)
    background = {"background": _background(cfg)}
    if cfg.task.get("umap_over_training") and cfg.task.fit:
        kind, extra = RecordingTrainer, {"trajectory": trajectory_cells(data, cfg.seed, cfg.trainer.eval_batch_size)}
    return kind(
        accelerator,
        model,
        optimizer,
        scheduler=build(cfg.optim.scheduler)(optimizer=optimizer),
        selection=Selection(cfg.task.optimized_metric, cfg.task.direction),
        checkpoints=CheckpointManager(run_dir / "checkpoints", keep_last=cfg.trainer.checkpoint.keep_last),
        settings=TrainerSettings.from_config(cfg.trainer, cfg.seed),
        tracker=tracker,
        checkpoint_meta=checkpoint_meta(cfg, inputs, data.class_names),
        prune_check=trial_pruner(cfg),
        criterion=torch.nn.CrossEntropyLoss(label_smoothing=cfg.task.label_smoothing),
        train_transform=inputs.transform(augment=bool(cfg.dataset.augment), **augmentation(cfg.dataset), **background),
        eval_transform=inputs.transform(**background),
        class_names=data.class_names,
        camo=monitor,
        camo_penalty=penalty,
        camo_weight=(cfg.task.get("camo") or {}).get("weight", 0.0),
        **extra,
    )


def _fit(cfg: DictConfig, trainer: ClassifierTrainer, data: CropData) -> float:
    resume_from = trainer.checkpoints.resume_point(cfg.trainer.get("resume"))
    if resume_from is not None:
        trainer.resume_from(resume_from)
    batch, workers = cfg.trainer.batch_size, cfg.trainer.num_workers
    state = trainer.fit(
        train_loader(data.splits["train"], batch, workers, cfg.seed, balanced=cfg.task.balanced_sampling),
        eval_loader(data.splits["val"], cfg.trainer.eval_batch_size, workers),
    )
    log.info("best %s = %.4f at epoch %d", cfg.task.optimized_metric, state.best_value, state.best_epoch)
    return state.best_value


def _test(cfg: DictConfig, trainer: ClassifierTrainer, data: CropData, tracker, run_dir: Path) -> dict:
    dataset = data.splits["test"]
    loader = trainer.acc.prepare(eval_loader(dataset, cfg.trainer.eval_batch_size, cfg.trainer.num_workers))
    if trainer.camo is None:
        logits, targets = trainer.predict(loader)
    else:
        logits, targets, shares = trainer.predict_with_gradcamo(loader)
    if not torch.isfinite(logits).all():
        raise NonFiniteLossError(
            f"the model's test outputs are not finite for {int((~torch.isfinite(logits)).any(1).sum())} of "
            f"{len(logits)} cells: no test metrics are reported from them"
        )
    metrics = {f"test/{k}": v for k, v in classification_metrics(logits, targets, data.class_names).items()}
    if cfg.task.get("batch_metrics"):
        batched = batch_averaged_metrics(logits, targets, len(data.class_names), int(cfg.task.batch_metrics))
        metrics.update({f"test/{k}": v for k, v in batched.items()})
    if trainer.camo is not None:
        metrics.update({f"test/{k}": v for k, v in trainer.camo.summary(shares).items()})
    if trainer.acc.is_main_process:
        tracker.log_metrics(metrics)
        folder = run_dir / "test"
        cm = confusion_matrix(logits, targets, len(data.class_names))
        title = f"test balanced accuracy {metrics['test/balanced_accuracy']:.3f}"
        for path in write_confusion_matrix(cm, data.class_names, folder, title):
            tracker.log_artifact(path, "test")
        manifest = data.store.manifest(dataset.split)
        ids = [
            {"index": i, "image_file": manifest[i]["image_file"], "annotation_id": manifest[i]["annotation_id"]}
            for i in dataset.indices
        ]
        predictions = write_predictions(folder / "predictions.csv", ids, logits, targets, data.class_names)
        tracker.log_artifact(predictions, "test")
        shown = ("test/accuracy", "test/balanced_accuracy", "test/macro_f1", "test/auroc")
        log.info("test: %s", "  ".join(f"{k} {metrics[k]:.4f}" for k in shown))
    return metrics
