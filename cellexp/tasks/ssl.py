"""task=ssl: DINO self-supervised pretraining of any timm backbone on the train split's cells, labels unused.

Time-lapse data (dataset=timelapse, timelapse_synthetic) gives the patches of the training sequences instead,
and the probe labels the val sequences' patches by cell line.

Each epoch a kNN probe of the teacher's backbone on the labelled val split against the train split's other
cells (`val/knn_accuracy`, also at step 0 for the initial weights) picks the best checkpoint, or with
task.keep=last is reported only. The teacher's backbone is what later tasks
take: `task=classify backbone.init_from=<this run>` and `cellexp.tracking.loading.pretrained_backbone`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from accelerate.utils import set_seed
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Subset

from cellexp.config import build
from cellexp.data.datamodule import eval_loader, load_crop_data, load_patch_data, train_loader
from cellexp.data.multicrop import MultiCrop, ViewKind
from cellexp.data.sampling import stratified_subset
from cellexp.data.transforms import InputConfig
from cellexp.engine.accelerator import make_accelerator, sync_batchnorm
from cellexp.engine.checkpoint import BEST, CheckpointManager
from cellexp.engine.dino import CollapseRule, DinoSchedules, DinoTrainer, LastEpoch
from cellexp.engine.settings import Selection, TrainerSettings
from cellexp.errors import ConfigError
from cellexp.models.backbones import PATCH_FAMILIES
from cellexp.models.dino import Dino
from cellexp.reports.data import log_data_summary
from cellexp.reports.model import parameter_count
from cellexp.sweeps.pruning import trial_pruner
from cellexp.tasks.checks import DINO_HEAD, require_head, require_value
from cellexp.tracking.identity import backbone_source_tags, checkpoint_meta
from cellexp.tracking.loading import build_backbone, init_backbone
from cellexp.tracking.session import start_tracking

log = logging.getLogger(__name__)

# DINO's local crops are 96 px for 224 px global ones.
LOCAL_SHARE = 96 / 224


def run(cfg: DictConfig) -> float:
    ssl = cfg.task
    _check_options(cfg)
    accelerator = make_accelerator(cfg.trainer)
    run_dir = Path(cfg.paths.output_dir)
    with start_tracking(cfg, run_dir, accelerator.is_main_process) as tracker:
        with accelerator.main_process_first():
            data = _load_data(cfg)
        inputs = data.input_config(cfg.dataset, cfg.seed)  # the data's channels, 16-bit ranges and planes
        if cfg.task.augment.flip_z and inputs.depth is None:
            raise ConfigError(f"task.augment.flip_z=true flips 3-D views; dataset={cfg.dataset.name} has 2-D crops")
        set_seed(cfg.seed)
        backbone = _backbone(cfg, inputs)
        source = init_backbone(cfg, backbone)
        multicrop = _multicrop(cfg, backbone)
        model = Dino(
            backbone,
            build(cfg.head)(backbone.num_features),
            global_views=ssl.crops.global_count,
            student_temp=ssl.student_temp,
            center_momentum=ssl.teacher.center_momentum,
            centering=ssl.teacher.centering,
        )
        # DINO's recipe: batch statistics over all GPUs (PyTorch syncs batch norm on CUDA only).
        model = sync_batchnorm(model, accelerator, cfg.trainer, default=True)
        if cfg.trainer.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = build(cfg.optim.optimizer)(params=_param_groups(model.student))
        if accelerator.is_main_process:
            log_data_summary(tracker, data, run_dir, cfg.dataset.name)
            parts = {"backbone": model.student.backbone, "head": model.student.head}
            tracker.log_metrics({f"model/{k}_params": parameter_count(v) for k, v in parts.items()})
            tracker.set_tags({"ssl.views": " ".join("x".join(map(str, shape[:-1])) for shape in multicrop.shapes)})
        if source is not None:
            tracker.set_tags(backbone_source_tags(cfg.backbone.init_from, source))
        knn_cells = ssl.knn.max_cells
        batch, workers = cfg.trainer.eval_batch_size, cfg.trainer.num_workers
        trainer = DinoTrainer(
            accelerator,
            model,
            optimizer,
            scheduler=_schedules(cfg),
            selection=(LastEpoch if ssl.keep == "last" else Selection)(ssl.optimized_metric, ssl.direction),
            checkpoints=CheckpointManager(run_dir / "checkpoints", keep_last=cfg.trainer.checkpoint.keep_last),
            settings=TrainerSettings.from_config(cfg.trainer, cfg.seed),
            tracker=tracker,
            checkpoint_meta=checkpoint_meta(cfg, backbone.input_config, data.class_names),
            prune_check=trial_pruner(cfg),
            multicrop=multicrop,
            eval_transform=backbone.input_config.transform(),
            bank=eval_loader(_subset(probe_bank(data.splits), knn_cells, cfg.seed), batch, workers),
            freeze_last_layer_epochs=ssl.freeze_last_layer_epochs,
            knn_k=ssl.knn.k,
            knn_temperature=ssl.knn.temperature,
            collapse=CollapseRule(**ssl.collapse),
        )
        resume = trainer.checkpoints.resume_point(cfg.trainer.get("resume"))
        if resume is not None:
            trainer.resume_from(resume)
        state = trainer.fit(
            train_loader(data.splits["train"], cfg.trainer.batch_size, workers, cfg.seed, balanced=False),
            eval_loader(_subset(data.splits["val"], knn_cells, cfg.seed), batch, workers),
        )
        log.info("best %s = %.4f at epoch %d", ssl.optimized_metric, state.best_value, state.best_epoch)
        if accelerator.is_main_process and cfg.logger.get("log_checkpoints", True):
            tracker.log_artifacts(run_dir / "checkpoints" / BEST, f"checkpoints/{BEST}")
    return state.best_value


def _check_options(cfg: DictConfig) -> None:
    if cfg.get("ckpt"):
        raise ConfigError(
            f"task=ssl does not take ckpt={cfg.ckpt}: start from another run's backbone with "
            "backbone.init_from=<checkpoint, run folder or MLflow run id>, continue this run with trainer.resume"
        )
    if cfg.backbone.get("freeze"):
        raise ConfigError("backbone.freeze=true leaves task=ssl nothing to train")
    require_head(cfg, "task=ssl", DINO_HEAD, "DINO's projection head: head=dino")
    if not str(cfg.optim.scheduler.get("_target_", "")).endswith("DinoSchedules"):
        raise ConfigError(
            f"task=ssl follows DINO's per-step schedules (optim/scheduler=dino), not {cfg.optim.scheduler._target_}"
        )
    require_value(cfg, "trainer.early_stopping", (None,), "DINO's schedules span the whole run")
    if cfg.task.get("keep") not in ("best", "last"):
        raise ConfigError(f"task.keep={cfg.task.get('keep')} must be best (the probe's best epoch) or last")
    augment = cfg.task.augment
    for key in ("jitter_prob", "flip_prob"):
        value = augment.get(key)
        if not (value is None and key == "flip_prob") and not (isinstance(value, (int, float)) and 0 <= value <= 1):
            raise ConfigError(
                f"task.augment.{key} is a chance in [0, 1]{' or null' * (key == 'flip_prob')}, got {value!r}"
            )
    crops = cfg.task.crops
    if crops.global_count < 1 or crops.local_count < 0 or crops.global_count + crops.local_count < 2:
        raise ConfigError(
            f"task.crops: DINO needs at least one global view and two views in all; got "
            f"global_count={crops.global_count}, local_count={crops.local_count}"
        )


def _load_data(cfg: DictConfig):
    """Crops, or a time-lapse's patches with task.timelapse's choice of sequences."""
    chosen = cfg.task.get("timelapse") or {}
    if cfg.dataset.format != "timelapse":
        return load_crop_data(cfg.dataset, seed=cfg.seed)
    return load_patch_data(
        cfg.dataset,
        seed=cfg.seed,
        transductive=bool(chosen.get("transductive", False)),
        wells_per_batch=chosen.get("wells_per_batch"),
    )


def _backbone(cfg: DictConfig, inputs: InputConfig) -> nn.Module:
    """The configured backbone taking the data's crops (channels, 16-bit ranges); a ViT that will see views of
    several sizes interpolates its position embedding."""
    backbone_cfg, extra = cfg.backbone, {}
    if backbone_cfg.get("family") in ("vit", "hybrid"):
        extra["kwargs"] = {**(backbone_cfg.get("kwargs") or {}), "dynamic_img_size": True}
    return build_backbone(cfg, inputs, **extra)


def _multicrop(cfg: DictConfig, backbone: nn.Module) -> MultiCrop:
    """The configured views, each size tried on the backbone once, so that a size it cannot take fails here."""
    crops, augment = cfg.task.crops, cfg.task.augment
    patch = _patch_size(backbone)
    local_size = crops.local_size or max(patch, round(crops.global_size * LOCAL_SHARE / patch) * patch)
    for key, size in (("global_size", crops.global_size), ("local_size", local_size)):
        if size % patch:
            raise ConfigError(f"task.crops.{key}={size} is not a multiple of the backbone's patch size {patch}")
    blur, inputs = augment.blur_prob, backbone.input_config
    # 3-D views: the model's planes for global ones, as many fewer for local ones as they have fewer pixels a side
    global_depth = inputs.depth
    local_depth = None if global_depth is None else max(1, round(global_depth * local_size / crops.global_size))
    kinds = [
        ViewKind(1, crops.global_size, tuple(crops.global_scale), blur.first_global, global_depth),
        ViewKind(crops.global_count - 1, crops.global_size, tuple(crops.global_scale), blur.other_global, global_depth),
        ViewKind(crops.local_count, local_size, tuple(crops.local_scale), blur.local, local_depth),
    ]
    multicrop = MultiCrop(
        [kind for kind in kinds if kind.count],
        brightness=augment.brightness,
        contrast=augment.contrast,
        jitter_prob=augment.jitter_prob,
        flip_prob=augment.flip_prob,
        blur_sigma=tuple(augment.blur_sigma),
        mean=inputs.mean,
        std=inputs.std,
        in_chans=inputs.in_chans,
        intensity=inputs.intensity,
        jitter_per_channel=augment.per_channel,
        flip_z=augment.flip_z,
    )
    _check_shapes(backbone, cfg, sorted(set(multicrop.shapes)))
    return multicrop


def _patch_size(backbone: nn.Module) -> int:
    if backbone.family in PATCH_FAMILIES:
        return backbone.patch_embed.patch_size[0]
    return 1


def _check_shapes(backbone: nn.Module, cfg: DictConfig, shapes: list[tuple[int, ...]]) -> None:
    was_training = backbone.training
    backbone.eval()
    try:
        for shape in shapes:
            with torch.no_grad():
                try:
                    backbone(torch.zeros(1, backbone.input_config.in_chans, *shape))
                except (RuntimeError, ValueError, AssertionError) as err:
                    view = " x ".join(map(str, shape))
                    raise ConfigError(
                        f"backbone {cfg.backbone.get('model_name')} cannot take task.crops views of {view} px "
                        f"(global_size, local_size): {err}"
                    ) from None
    finally:
        backbone.train(was_training)


def _param_groups(student: nn.Module) -> list[dict]:
    """Weights decay on DINO's schedule; biases and norm parameters (1-d) never decay."""
    decay, no_decay = [], []
    for name, param in student.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "decay_scheduled": True}, {"params": no_decay, "weight_decay": 0.0}]


def _schedules(cfg: DictConfig) -> DinoSchedules:
    """optim.scheduler's learning-rate and weight-decay schedules, with the teacher's momentum and temperature."""
    teacher, optimizer = cfg.task.teacher, cfg.optim.optimizer
    return build(cfg.optim.scheduler)(
        lr=optimizer.lr,
        weight_decay=optimizer.get("weight_decay", 0.0),
        momentum=teacher.momentum,
        momentum_end=teacher.momentum_end,
        teacher_temp=teacher.temp,
        warmup_teacher_temp=teacher.warmup_temp,
        warmup_teacher_temp_epochs=teacher.warmup_temp_epochs,
    )


def probe_bank(splits: dict):
    """The kNN probe's labelled bank: the train split's cells less those of the evaluation splits. Transductive
    pretraining trains on those too, but in the bank a val cell would be its own nearest neighbour and the test
    cells' labels would vote."""
    train = splits["train"]
    return train.excluding([dataset for name, dataset in splits.items() if name != "train"])


def _subset(dataset, max_cells: int | None, seed: int):
    """At most max_cells of a split for the kNN probe, spread evenly over the classes."""
    if max_cells is None or max_cells >= len(dataset):
        return dataset
    return Subset(dataset, stratified_subset(dataset.labels, max_cells, seed).tolist())
