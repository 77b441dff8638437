"""task=classify: train on train, select on val, report on test; or evaluate a checkpoint (task.fit=false)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from cellexp.checkpoints import ResolvedCheckpoint
from cellexp.data.datamodule import CropData, eval_loader, load_crop_data, train_loader
from cellexp.data.report import store_summary_figure
from cellexp.data.transforms import input_transform
from cellexp.engine.accelerator import make_accelerator, sync_batchnorm
from cellexp.engine.checkpoint import BEST, CheckpointManager
from cellexp.engine.loop import EarlyStopping, Selection, Trainer
from cellexp.engine.metrics import classification_metrics, confusion_matrix
from cellexp.engine.reports import write_confusion_matrix, write_predictions
from cellexp.errors import ConfigError
from cellexp.graphs.figure import draw_graph
from cellexp.models.classifier import CellClassifier
from cellexp.tasks.pretrained import init_backbone
from cellexp.tasks.trained import build_model, load_weights, resolve
from cellexp.tracking import start_tracking

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float:
    accelerator = make_accelerator(cfg.trainer)
    run_dir = Path(cfg.paths.output_dir)
    if cfg.get("ckpt") and cfg.backbone.get("init_from"):
        raise ConfigError(
            f"ckpt={cfg.ckpt} (the whole model) and backbone.init_from={cfg.backbone.init_from} (its backbone) "
            "both name starting weights: give one"
        )
    source = resolve(cfg, cfg.ckpt) if cfg.get("ckpt") else None
    if source is None and not cfg.task.fit:
        raise ConfigError(
            "task.fit=false evaluates a trained model: give ckpt=<checkpoint, run folder or MLflow run id>"
        )
    with accelerator.main_process_first():
        data = load_crop_data(cfg.dataset, seed=cfg.seed)
    # Evaluation rebuilds the model the checkpoint was trained as; fine-tuning builds the configured one.
    model_cfg = cfg if cfg.task.fit else source.config
    set_seed(cfg.seed)
    model = build_model(model_cfg, num_classes=len(data.class_names))
    if source is not None:
        load_weights(model, source.folder)
    backbone_source = init_backbone(cfg, model.backbone) if source is None else None
    if cfg.task.fit and model.backbone.freeze:
        model.freeze_backbone()
    with start_tracking(cfg, run_dir, accelerator.is_main_process) as tracker:
        log_data_summary(tracker, data, accelerator, run_dir)
        _log_model_description(tracker, model, run_dir, accelerator)
        if source is not None:
            tracker.set_tags({"init_from": str(source.folder)})
        if backbone_source is not None:
            tag_backbone_source(tracker, model.backbone.init_from, backbone_source, accelerator)
        trainer = _trainer(cfg, accelerator, model, data, tracker, run_dir, _input_dataset(cfg, model_cfg))
        if cfg.task.fit:
            objective = _fit(cfg, trainer, data)
            best = run_dir / "checkpoints" / BEST
            load_weights(accelerator.unwrap_model(trainer.model), best)
            if accelerator.is_main_process and cfg.logger.get("log_checkpoints", True):
                tracker.log_artifacts(best, f"checkpoints/{BEST}")
        test_metrics = _test(cfg, trainer, data, tracker, run_dir)
        if not cfg.task.fit:
            objective = test_metrics[f"test/{cfg.task.optimized_metric.split('/', 1)[-1]}"]
    return objective


def _input_dataset(cfg: DictConfig, model_cfg: DictConfig) -> DictConfig:
    """This run's dataset settings with the model's input (size, channels, normalisation) where a trained model
    is evaluated: it sees crops as it was trained on them; augmentation stays this run's."""
    if model_cfg is cfg:
        return cfg.dataset
    merged = cfg.dataset.copy()
    with open_dict(merged):
        for key in ("image_size", "in_chans", "normalize"):
            if key in model_cfg.dataset:
                merged[key] = model_cfg.dataset[key]
    return merged


def _trainer(
    cfg, accelerator: Accelerator, model: CellClassifier, data: CropData, tracker, run_dir: Path, dataset: DictConfig
) -> Trainer:
    model = sync_batchnorm(model, accelerator, cfg.trainer, default=False)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.optim.optimizer)(params=[p for p in model.parameters() if p.requires_grad])
    stopping = cfg.trainer.get("early_stopping")
    return Trainer(
        accelerator,
        model,
        optimizer,
        scheduler=instantiate(cfg.optim.scheduler)(optimizer=optimizer),
        criterion=torch.nn.CrossEntropyLoss(label_smoothing=cfg.task.label_smoothing),
        train_transform=input_transform(dataset, augment=True),
        eval_transform=input_transform(dataset),
        class_names=data.class_names,
        selection=Selection(cfg.task.optimized_metric, cfg.task.direction),
        checkpoints=CheckpointManager(run_dir / "checkpoints", keep_last=cfg.trainer.checkpoint.keep_last),
        seed=cfg.seed,
        max_epochs=cfg.trainer.max_epochs,
        grad_clip=cfg.trainer.grad_clip,
        early_stopping=EarlyStopping(**stopping) if stopping else None,
        channels_last=cfg.trainer.channels_last,
        log_metrics=tracker.log_metrics,
    )


def _fit(cfg: DictConfig, trainer: Trainer, data: CropData) -> float:
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


def _test(cfg: DictConfig, trainer: Trainer, data: CropData, tracker, run_dir: Path) -> dict:
    dataset = data.splits["test"]
    loader = trainer.acc.prepare(eval_loader(dataset, cfg.trainer.eval_batch_size, cfg.trainer.num_workers))
    logits, targets = trainer.predict(loader)
    metrics = {f"test/{k}": v for k, v in classification_metrics(logits, targets, data.class_names).items()}
    if trainer.acc.is_main_process:
        tracker.log_metrics(metrics)
        folder = run_dir / "test"
        cm = confusion_matrix(logits, targets, len(data.class_names))
        title = f"test balanced accuracy {metrics['test/balanced_accuracy']:.3f}"
        for path in write_confusion_matrix(cm, data.class_names, folder, title):
            tracker.log_artifact(path, "test")
        manifest = data.store.manifest("test")
        ids = [
            {"index": i, "image_file": manifest[i]["image_file"], "annotation_id": manifest[i]["annotation_id"]}
            for i in dataset.indices
        ]
        tracker.log_artifact(
            write_predictions(folder / "predictions.csv", ids, logits, targets, data.class_names), "test"
        )
        log.info(
            "test: %s",
            "  ".join(
                f"{k} {metrics[k]:.4f}"
                for k in ("test/accuracy", "test/balanced_accuracy", "test/macro_f1", "test/auroc")
            ),
        )
    return metrics


def _log_model_description(tracker, model: CellClassifier, run_dir: Path, accelerator: Accelerator) -> None:
    """Parameter counts for every run; heads that have more to say (a graph's statistics, a picture of it)
    say it through `describe()`, and graph-shaped ones are drawn with the nodes that hold a unit filled in."""
    if not accelerator.is_main_process:
        return
    metrics = {
        f"model/{name}_params": _count(part)
        for name, part in (("total", model), ("backbone", model.backbone), ("head", model.head))
    }
    metrics["model/trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    describe = getattr(model.head, "describe", None)
    if describe is not None:
        metrics.update({f"head/{key}": value for key, value in describe().items()})
    tracker.log_metrics(metrics)
    if hasattr(model.head, "graph") and hasattr(model.head, "unit_nodes"):
        head = model.head
        title = f"{head.num_units} units, {head.reached_motors} motors reached"
        tracker.log_artifact(draw_graph(head.graph, head.unit_nodes, run_dir / "head" / "graph.png", title), "head")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tag_backbone_source(tracker, spec: str, source: ResolvedCheckpoint, accelerator: Accelerator) -> None:
    """Where the backbone's starting weights came from: as given, the checkpoint, and the task that made it."""
    tags = {
        "backbone.init_from": str(spec),
        "backbone.init_checkpoint": str(source.folder),
        "backbone.init_task": str(source.config.get("task", {}).get("name", "?")),
    }
    log.info("backbone starts from %s", "  ".join(f"{k}={v}" for k, v in tags.items()))
    if accelerator.is_main_process:
        tracker.set_tags(tags)


def log_data_summary(tracker, data: CropData, accelerator: Accelerator, run_dir: Path) -> None:
    if not accelerator.is_main_process:
        return
    summary = data.store.summary
    counts = {f"data/{split}_crops": len(ds) for split, ds in data.splits.items()}
    tracker.log_metrics({**counts, "data/images_failed": len(summary["failed_images"])})
    tracker.log_artifact(data.store.write_summary(run_dir / "data" / "summary.json"), "data")
    shown = next(iter(data.store.splits))  # train, or a patch store's one split
    tracker.log_artifact(shutil.copy(store_summary_figure(data.store, shown), run_dir / "data" / "summary.png"), "data")
    for failure in summary["failed_images"]:
        log.warning("image skipped during preparation: %s (%s)", failure["image"], failure["reason"])
