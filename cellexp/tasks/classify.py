"""task=classify: train on train, select on val, report on test; or evaluate a checkpoint (task.fit=false)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from hydra.utils import instantiate
from omegaconf import DictConfig

from cellexp.checkpoints import resolve_checkpoint
from cellexp.data.datamodule import CropData, eval_loader, load_crop_data, train_loader
from cellexp.data.report import store_summary_figure
from cellexp.data.transforms import BatchTransform, augmentation
from cellexp.engine.accelerator import make_accelerator
from cellexp.engine.checkpoint import BEST, CheckpointManager, load_model_state
from cellexp.engine.loop import EarlyStopping, Selection, Trainer
from cellexp.engine.metrics import classification_metrics, confusion_matrix
from cellexp.engine.reports import write_confusion_matrix, write_predictions
from cellexp.errors import CheckpointError, ConfigError
from cellexp.models.classifier import CellClassifier, build_classifier
from cellexp.tracking import start_tracking

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float:
    accelerator = make_accelerator(cfg.trainer)
    run_dir = Path(cfg.paths.output_dir)
    source = _checkpoint(cfg) if cfg.get("ckpt") else None
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
        _load_weights(model, source.folder)
    with start_tracking(cfg, run_dir, accelerator.is_main_process) as tracker:
        _log_data_summary(tracker, data, accelerator, run_dir)
        _log_model_description(tracker, model, run_dir, accelerator)
        if source is not None:
            tracker.set_tags({"init_from": str(source.folder)})
        trainer = _trainer(cfg, accelerator, model, data, tracker, run_dir, model_cfg.dataset.image_size)
        if cfg.task.fit:
            objective = _fit(cfg, trainer, data)
            best = run_dir / "checkpoints" / BEST
            _load_weights(accelerator.unwrap_model(trainer.model), best)
            if accelerator.is_main_process and cfg.logger.get("log_checkpoints", True):
                tracker.log_artifacts(best, f"checkpoints/{BEST}")
        test_metrics = _test(cfg, trainer, data, tracker, run_dir)
        if not cfg.task.fit:
            objective = test_metrics[f"test/{cfg.task.optimized_metric.split('/', 1)[-1]}"]
    return objective


def build_model(cfg: DictConfig, num_classes: int) -> CellClassifier:
    return build_classifier(
        instantiate(cfg.backbone),
        instantiate(cfg.head),
        in_chans=cfg.dataset.in_chans,
        image_size=cfg.dataset.image_size,
        num_classes=num_classes,
    )


def _checkpoint(cfg: DictConfig):
    return resolve_checkpoint(cfg.ckpt, cfg.logger, Path(cfg.paths.cache_dir))


def _trainer(
    cfg, accelerator: Accelerator, model: CellClassifier, data: CropData, tracker, run_dir: Path, image_size: int
) -> Trainer:
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.optim.optimizer)(params=model.parameters())
    stopping = cfg.trainer.get("early_stopping")
    return Trainer(
        accelerator,
        model,
        optimizer,
        scheduler=instantiate(cfg.optim.scheduler)(optimizer=optimizer),
        criterion=torch.nn.CrossEntropyLoss(label_smoothing=cfg.task.label_smoothing),
        train_transform=BatchTransform(image_size, augment=cfg.dataset.augment, **augmentation(cfg.dataset)),
        eval_transform=BatchTransform(image_size),
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
    resume_from = _resume_checkpoint(cfg.trainer.get("resume"), trainer.checkpoints)
    if resume_from is not None:
        trainer.resume_from(resume_from)
    batch, workers = cfg.trainer.batch_size, cfg.trainer.num_workers
    state = trainer.fit(
        train_loader(data.splits["train"], batch, workers, cfg.seed, balanced=cfg.task.balanced_sampling),
        eval_loader(data.splits["val"], cfg.trainer.eval_batch_size, workers),
    )
    log.info("best %s = %.4f at epoch %d", cfg.task.optimized_metric, state.best_value, state.best_epoch)
    return state.best_value


def _load_weights(model: torch.nn.Module, folder: Path) -> None:
    try:
        model.load_state_dict(load_model_state(folder))
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {folder} does not fit the model built from its config: "
            f"{str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}"
        ) from None


def _resume_checkpoint(resume, checkpoints: CheckpointManager):
    if not resume:
        return None
    if str(resume) == "auto":
        latest = checkpoints.latest()
        if latest is None:
            log.info("trainer.resume=auto: no checkpoint in %s yet, starting fresh", checkpoints.folder)
        return latest
    path = Path(str(resume))
    if not path.is_dir():
        raise CheckpointError(f"trainer.resume={resume}: no such checkpoint folder")
    return path


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
    say it through `describe()` and `draw(path)`."""
    if not accelerator.is_main_process:
        return
    metrics = {
        f"model/{name}_params": _count(part)
        for name, part in (("total", model), ("backbone", model.backbone), ("head", model.head))
    }
    describe = getattr(model.head, "describe", None)
    if describe is not None:
        metrics.update({f"head/{key}": value for key, value in describe().items()})
    tracker.log_metrics(metrics)
    draw = getattr(model.head, "draw", None)
    if draw is not None:
        tracker.log_artifact(draw(run_dir / "head" / "graph.png"), "head")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _log_data_summary(tracker, data: CropData, accelerator: Accelerator, run_dir: Path) -> None:
    if not accelerator.is_main_process:
        return
    summary = data.store.summary
    counts = {f"data/{split}_crops": len(ds) for split, ds in data.splits.items()}
    tracker.log_metrics({**counts, "data/images_failed": len(summary["failed_images"])})
    tracker.log_artifact(data.store.write_summary(run_dir / "data" / "summary.json"), "data")
    tracker.log_artifact(shutil.copy(store_summary_figure(data.store), run_dir / "data" / "summary.png"), "data")
    for failure in summary["failed_images"]:
        log.warning("image skipped during preparation: %s (%s)", failure["image"], failure["reason"])
