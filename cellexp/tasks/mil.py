"""task=mil: cell-line identity of brightfield time-lapse sequences, CLANet's pipeline.

Frames -> patches (selected once, kept in a patch store) -> embeddings of a frozen backbone (cached) -> the
gated-attention aggregator (head=gated_attention), trained on the engine on Time-series Segment Samples with
coverage-weighted loss, selected on val, and reported on test at sequence and batch level, beside a per-image
baseline on the same embeddings. With task.fit=false, a trained MIL run (`ckpt=`) predicts every sequence of a
folder instead.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed
from omegaconf import DictConfig, open_dict

from cellexp.config import build
from cellexp.data.timelapse.bags import Bag, bag_splits, dataset_root, load_bags
from cellexp.data.timelapse.folders import describe, split_counts
from cellexp.engine.accelerator import make_accelerator
from cellexp.engine.checkpoint import BEST, CheckpointManager, read_meta
from cellexp.engine.settings import Selection, TrainerSettings
from cellexp.errors import ConfigError
from cellexp.mil import training
from cellexp.mil.baseline import baseline_metrics
from cellexp.mil.embeddings import embed_store
from cellexp.mil.metrics import level_metrics, prefixed
from cellexp.mil.tss import check_tss
from cellexp.reports.mil import attention_figure, write_attention
from cellexp.reports.model import parameter_count
from cellexp.sweeps.pruning import trial_pruner
from cellexp.tasks.checks import MIL_HEAD, require_head, require_value
from cellexp.tracking.identity import run_label
from cellexp.tracking.loading import ResolvedCheckpoint, load_weights, resolve
from cellexp.tracking.session import start_tracking

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float:
    _check_options(cfg)
    source = None if cfg.task.fit else _trained_mil(cfg)
    model_cfg = cfg if source is None else _as_trained(cfg, source.config)
    accelerator = make_accelerator(cfg.trainer)
    run_dir = Path(cfg.paths.output_dir)
    with start_tracking(model_cfg, run_dir, accelerator.is_main_process) as tracker:
        with accelerator.main_process_first():
            store, bags, problems = load_bags(model_cfg.dataset, dataset_root(model_cfg.dataset))
        if source is None:
            class_names = sorted({b.sequence.line for b in bags})
            split_bags = bag_splits(cfg.dataset, bags)
        else:  # every sequence of the folder is predicted
            class_names = read_meta(source.folder)["classes"]
            split_bags = {"test": bags}
        labels = {b.sequence.key: class_names.index(b.sequence.line) for b in bags if b.sequence.line in class_names}
        if accelerator.is_main_process:
            _log_data(tracker, run_dir, bags, split_bags, problems)
        embeddings, described = embed_store(model_cfg, store, accelerator.device)
        tracker.set_tags({"mil.embedding": described})
        features = torch.from_numpy(embeddings).float().to(accelerator.device)
        set_seed(cfg.seed)
        model = build(model_cfg.head)(features.shape[1], len(class_names)).to(accelerator.device)
        # what cellexp.commands.compare lists as a run's size: the aggregator's (the embedding backbone is frozen)
        tracker.log_metrics({"model/total_params": parameter_count(model)})
        if source is None:
            model.fit_standardization(features[np.concatenate([b.rows for b in split_bags["train"]])])
        else:
            load_weights(model, source.folder)
            tracker.set_tags(_prediction_tags(source, model_cfg))
        trainer = _trainer(cfg, accelerator, model, class_names, labels, tracker, run_dir)
        if source is None:
            objective = _fit(cfg, trainer, split_bags, features, labels)
            load_weights(trainer.unwrapped, run_dir / "checkpoints" / BEST)
            if accelerator.is_main_process and cfg.logger.get("log_checkpoints", True):
                tracker.log_artifacts(run_dir / "checkpoints" / BEST, f"checkpoints/{BEST}")
        test_bags = split_bags["test"]
        test_dl = trainer.acc.prepare(training.eval_loader(test_bags, features, labels, cfg.trainer.eval_batch_size))
        logits, attention, order = trainer.predict(test_dl)
        test_bags = [test_bags[i] for i in order]
        test = _known_line_metrics(logits, test_bags, labels, class_names)
        if source is None and cfg.task.baseline:
            standardized = trainer.unwrapped.standardize(features)
            test.update(baseline_metrics(standardized, split_bags, labels, len(class_names), cfg.task.baseline_c))
        tracker.log_metrics(test)
        log.info("test: %s", "  ".join(f"{k} {v:.4f}" for k, v in test.items() if k.endswith(("top1", "macro_f1"))))
        if source is not None:
            objective = test.get(f"test/{cfg.task.optimized_metric.split('/', 1)[-1]}", float("nan"))
        if accelerator.is_main_process:
            folder = run_dir / "test"
            for path in write_attention(folder, store, test_bags, attention, logits, class_names):
                tracker.log_artifact(path, "test")
            figure = attention_figure(folder / "attention.png", store, test_bags, attention, cfg.task.figure)
            tracker.log_artifact(figure, "test")
    return objective


def _check_options(cfg: DictConfig) -> None:
    """Settings that would train on nothing, or that the aggregator cannot take, stop the run before any work."""
    if cfg.dataset.get("format") != "timelapse":
        raise ConfigError(
            f"task=mil needs time-lapse data: dataset=timelapse or timelapse_synthetic, not {cfg.dataset.name}"
        )
    require_head(cfg, "task=mil", MIL_HEAD, "a gated-attention aggregator: head=gated_attention")
    tss = cfg.task.tss
    check_tss(tss)
    samples, keep, window = tss.samples_per_sequence, tss.keep, list(tss.window)
    if not (isinstance(samples, int) and samples >= 1):
        raise ConfigError(f"task.tss.samples_per_sequence must be a whole number of at least 1, got {samples!r}")
    if not 0 < keep <= 1:
        raise ConfigError(f"task.tss.keep is the chance that a frame is kept: in (0, 1], got {keep!r}")
    if len(window) != 2 or not 0 < window[0] <= window[1]:
        raise ConfigError(f"task.tss.window must be [low, high] with 0 < low <= high (intervals), got {window!r}")
    require_value(cfg, "trainer.num_workers", (0,), "task=mil draws bags from embeddings held on the device")
    require_value(cfg, "trainer.channels_last", (False,), "task=mil trains on embeddings, not images")
    require_value(cfg, "trainer.sync_batchnorm", (None, False), "the aggregator has no batch norm")
    if cfg.backbone.get("init_from"):
        raise ConfigError(
            f"backbone.init_from={cfg.backbone.init_from}: task=mil embeds with a frozen backbone; give the run "
            "whose backbone it should embed with as ckpt=<run>"
        )


def _trainer(cfg, accelerator, model, class_names, labels, tracker, run_dir: Path) -> training.MILTrainer:
    optimizer = build(cfg.optim.optimizer)(params=model.parameters())
    return training.MILTrainer(
        accelerator,
        model,
        optimizer,
        scheduler=build(cfg.optim.scheduler)(optimizer=optimizer),
        # On a tie the later epoch wins: val sequences share the training batches, so val saturates early
        # while training on more samples still helps across batches.
        selection=Selection(cfg.task.optimized_metric, cfg.task.direction, later_wins_ties=True),
        checkpoints=CheckpointManager(run_dir / "checkpoints", keep_last=cfg.trainer.checkpoint.keep_last),
        settings=TrainerSettings.from_config(cfg.trainer, cfg.seed, sample_unit="bags"),
        tracker=tracker,
        checkpoint_meta={"labels": run_label(cfg), "classes": class_names},
        prune_check=trial_pruner(cfg),
        labels=labels,
        num_classes=len(class_names),
    )


def _fit(cfg: DictConfig, trainer: training.MILTrainer, split_bags: dict, features, labels: dict) -> float:
    resume_from = trainer.checkpoints.resume_point(cfg.trainer.get("resume"))
    if resume_from is not None:
        trainer.resume_from(resume_from)
    batch = int(cfg.trainer.batch_size)
    state = trainer.fit(
        training.train_loader(
            split_bags["train"], features, labels, cfg.task.tss, batch, cfg.seed, cfg.task.get("drop_last", True)
        ),
        training.eval_loader(split_bags["val"], features, labels, cfg.trainer.eval_batch_size),
    )
    log.info("best %s = %.4f at epoch %d", cfg.task.optimized_metric, state.best_value, state.best_epoch)
    return state.best_value


def _prediction_tags(source: ResolvedCheckpoint, trained: DictConfig) -> dict[str, str]:
    """The run is named by the trained model's backbone, not this config's default, so that runs compare by model."""
    backbone = trained.backbone.get("model_name", trained.backbone.get("family"))
    name = f"{backbone} gated_attention predict"
    return {"mil.model": str(source.folder), "backbone": backbone, "mlflow.runName": name}


def _trained_mil(cfg: DictConfig) -> ResolvedCheckpoint:
    """task.fit=false: the task=mil run that `ckpt=` names."""
    source = resolve(cfg, cfg.ckpt)
    trained_task = source.config.get("task", {}).get("name")
    if trained_task != "mil":
        raise ConfigError(f"ckpt={cfg.ckpt} is a task={trained_task} run: task.fit=false needs a task=mil run")
    return source


def _as_trained(cfg: DictConfig, trained: DictConfig) -> DictConfig:
    """This run's config with the trained run's patches, embedding backbone (and its seed and ckpt) and aggregator,
    so that new frames become patches and embeddings exactly as the training frames did."""
    out = cfg.copy()
    with open_dict(out):
        out.backbone = trained.backbone
        out.head = trained.head
        out.ckpt = trained.get("ckpt")
        out.seed = trained.seed
        out.task.embedding = trained.task.embedding
        out.dataset.patches = trained.dataset.patches
        for key in ("bags", "name_patterns"):  # which patches of which frames make a bag, as in training
            if key in trained.dataset:
                out.dataset[key] = trained.dataset[key]
        for key in ("image_size", "in_chans", "normalize"):
            if key in trained.dataset:
                out.dataset[key] = trained.dataset[key]
    return out


def _known_line_metrics(logits: torch.Tensor, bags: list[Bag], labels: dict, class_names: list[str]) -> dict:
    """Test metrics over the sequences of lines the model knows; the others are predicted but named and left out."""
    known = [i for i, bag in enumerate(bags) if bag.sequence.key in labels]
    unknown = sorted({bag.sequence.line for bag in bags if bag.sequence.key not in labels})
    if unknown:
        log.warning("lines the model was not trained on, predicted but left out of the metrics: %s", unknown)
    if not known:
        return {}
    return prefixed("test", level_metrics(logits[known], [bags[i] for i in known], labels, len(class_names)))


def _log_data(tracker, run_dir: Path, bags: list[Bag], split_bags: dict, problems: dict) -> None:
    splits = {name: [b.sequence for b in members] for name, members in split_bags.items()}
    found = describe([b.sequence for b in bags])
    for line, counts in found.items():
        log.info(
            "%s: %d sequences, %d batches, %d images", line, counts["sequences"], counts["batches"], counts["images"]
        )
    unsplit = list(getattr(split_bags, "unsplit", []))
    summary = {"lines": found, "splits": split_counts(splits), "unsplit_batches": unsplit, **problems}
    path = run_dir / "data" / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    tracker.log_artifact(path, "data")
    metrics = {f"data/{name}_sequences": len(seqs) for name, seqs in splits.items()}
    metrics.update({f"data/{kind}": len(entries) for kind, entries in problems.items()})
    tracker.log_metrics(metrics)
