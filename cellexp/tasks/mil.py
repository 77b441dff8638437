"""task=mil: cell-line identity of brightfield time-lapse sequences, CLANet's pipeline.

Frames -> patches (selected once, kept in a patch store) -> embeddings of a frozen backbone (random or
ImageNet timm weights, or `ckpt=` a classify/ssl run's backbone; cached) -> a gated-attention MIL model
per sequence, trained on Time-series Segment Samples with coverage-weighted loss, selected on val, and
reported on test at sequence and batch level. A per-image baseline on the same embeddings (a linear
classifier on each frame, its softmax averaged over the sequence) is trained and reported beside it.
With task.fit=false, a trained MIL run (`ckpt=`) predicts every sequence of a folder instead.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_auroc, multiclass_f1_score
from tqdm import tqdm

from cellexp.checkpoints import ResolvedCheckpoint
from cellexp.data.bags import Bag, bag_splits, dataset_root, load_bags
from cellexp.data.store import SplitStore
from cellexp.data.timelapse import describe, segment_sample, split_counts
from cellexp.data.transforms import BatchTransform
from cellexp.engine.accelerator import make_accelerator
from cellexp.engine.checkpoint import BEST, CheckpointManager, read_meta
from cellexp.engine.schedulers import step_scheduler
from cellexp.errors import ConfigError
from cellexp.models.mil import GatedAttentionMIL, pad_bags
from cellexp.tasks.trained import load_weights, resolve
from cellexp.tracking import start_tracking

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float:
    if cfg.dataset.get("format") != "timelapse":
        raise ConfigError(
            f"task=mil needs time-lapse data: dataset=timelapse or timelapse_synthetic, not {cfg.dataset.name}"
        )
    _check_tss(cfg.task.tss)
    source = None if cfg.task.fit else _trained_mil(cfg)
    model_cfg = cfg if source is None else _as_trained(cfg, source.config)
    accelerator = make_accelerator(cfg.trainer)
    run_dir = Path(cfg.paths.output_dir)
    with accelerator.main_process_first():
        store, bags, problems = load_bags(model_cfg.dataset, dataset_root(model_cfg.dataset))
    if source is None:
        class_names = sorted({b.sequence.line for b in bags})
        split_bags = bag_splits(cfg.dataset, bags)
    else:  # every sequence of the folder is predicted
        class_names = read_meta(source.folder)["classes"]
        split_bags = {"test": bags}
    labels = {b.sequence.key: class_names.index(b.sequence.line) for b in bags if b.sequence.line in class_names}
    with start_tracking(model_cfg, run_dir, accelerator.is_main_process) as tracker:
        _log_data(tracker, run_dir, bags, split_bags, problems, accelerator.is_main_process)
        embeddings, described = embed_store(model_cfg, store, accelerator.device)
        tracker.set_tags({"mil.embedding": described})
        features = torch.from_numpy(embeddings).float().to(accelerator.device)
        set_seed(cfg.seed)
        model = GatedAttentionMIL(features.shape[1], len(class_names), **model_cfg.task.mil).to(accelerator.device)
        # what cellexp.compare lists as a run's size: the aggregator's (the embedding backbone is frozen)
        tracker.log_metrics({"model/total_params": sum(p.numel() for p in model.parameters())})
        if source is None:
            model.fit_standardization(features[np.concatenate([b.rows for b in split_bags["train"]])])
            objective = _train_best(cfg, model, features, split_bags, labels, class_names, tracker, accelerator)
        else:
            _load_trained(model, source, model_cfg.backbone, tracker)
        test_bags = split_bags["test"]
        logits, attention = predict_mil(model, features, test_bags)
        test = _known_line_metrics(logits, test_bags, labels, class_names)
        if source is None and cfg.task.baseline:
            test.update(_baseline(cfg, model.standardize(features), split_bags, labels, len(class_names)))
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


def _train_best(cfg, model, features, split_bags, labels, class_names, tracker, accelerator) -> float:
    """Fit, keep the best val epoch's weights in `model` (and in checkpoints/best, logged), return its value."""
    run_dir = Path(cfg.paths.output_dir)
    checkpoints = CheckpointManager(run_dir / "checkpoints", keep_last=cfg.trainer.checkpoint.keep_last)
    checkpoints = checkpoints if accelerator.is_main_process else None
    best, objective = fit_mil(cfg, model, features, split_bags, labels, class_names, tracker, checkpoints)
    model.load_state_dict(best)
    if accelerator.is_main_process and cfg.logger.get("log_checkpoints", True):
        tracker.log_artifacts(run_dir / "checkpoints" / BEST, f"checkpoints/{BEST}")
    return objective


def _load_trained(model: GatedAttentionMIL, source: ResolvedCheckpoint, backbone_cfg: DictConfig, tracker) -> None:
    """The trained weights; the run is named by the trained model's backbone, not this config's default, so that
    runs compare by model."""
    load_weights(model, source.folder)
    backbone = backbone_cfg.get("model_name", backbone_cfg.family)
    tracker.set_tags(
        {"mil.model": str(source.folder), "backbone": backbone, "mlflow.runName": f"{backbone} gated_attention predict"}
    )


def _trained_mil(cfg: DictConfig) -> ResolvedCheckpoint:
    """task.fit=false: the task=mil run that `ckpt=` names."""
    if not cfg.get("ckpt"):
        raise ConfigError("task.fit=false predicts with a trained MIL model: give ckpt=<a task=mil run or checkpoint>")
    source = resolve(cfg, cfg.ckpt)
    trained_task = source.config.get("task", {}).get("name")
    if trained_task != "mil":
        raise ConfigError(f"ckpt={cfg.ckpt} is a task={trained_task} run: task.fit=false needs a task=mil run")
    return source


def _as_trained(cfg: DictConfig, trained: DictConfig) -> DictConfig:
    """This run's config with the trained run's patches, embedding backbone (and its seed and ckpt) and MIL
    model, so that new frames become patches and embeddings exactly as the training frames did."""
    out = cfg.copy()
    with open_dict(out):
        out.backbone = trained.backbone
        out.ckpt = trained.get("ckpt")
        out.seed = trained.seed
        out.task.mil = trained.task.mil
        out.task.embedding = trained.task.embedding
        out.dataset.patches = trained.dataset.patches
        out.dataset.image_size = trained.dataset.image_size
    return out


def _known_line_metrics(logits: torch.Tensor, bags: list[Bag], labels: dict, class_names: list[str]) -> dict:
    """Test metrics over the sequences of lines the model knows; the others are predicted but named and left out."""
    known = [i for i, bag in enumerate(bags) if bag.sequence.key in labels]
    unknown = sorted({bag.sequence.line for bag in bags if bag.sequence.key not in labels})
    if unknown:
        log.warning("lines the model was not trained on, predicted but left out of the metrics: %s", unknown)
    if not known:
        return {}
    return level_metrics("test", logits[known], [bags[i] for i in known], labels, len(class_names))


def _check_tss(tss: DictConfig) -> None:
    """Settings that would train on nothing, or on views no sequence can give, stop the run before any work."""
    samples, keep, window = tss.samples_per_sequence, tss.keep, list(tss.window)
    if not (isinstance(samples, int) and samples >= 1):
        raise ConfigError(f"task.tss.samples_per_sequence must be a whole number of at least 1, got {samples!r}")
    if not 0 < keep <= 1:
        raise ConfigError(f"task.tss.keep is the chance that a frame is kept: in (0, 1], got {keep!r}")
    if len(window) != 2 or not 0 < window[0] <= window[1]:
        raise ConfigError(f"task.tss.window must be [low, high] with 0 < low <= high (intervals), got {window!r}")


def _log_data(tracker, run_dir: Path, bags: list[Bag], split_bags: dict, problems: dict, main: bool) -> None:
    splits = {name: [b.sequence for b in members] for name, members in split_bags.items()}
    found = describe([b.sequence for b in bags])
    for line, counts in found.items():
        log.info(
            "%s: %d sequences, %d batches, %d images", line, counts["sequences"], counts["batches"], counts["images"]
        )
    if not main:
        return
    summary = {"lines": found, "splits": split_counts(splits), **problems}
    path = run_dir / "data" / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    tracker.log_artifact(path, "data")
    metrics = {f"data/{name}_sequences": len(seqs) for name, seqs in splits.items()}
    metrics.update({f"data/{kind}": len(entries) for kind, entries in problems.items()})
    tracker.log_metrics(metrics)


def embed_store(cfg: DictConfig, store: SplitStore, device: torch.device) -> tuple[np.ndarray, str]:
    """Every stored patch's embedding, computed once per (store, backbone weights, settings) and cached as .npy."""
    spec = cfg.get("ckpt")
    if spec:
        from cellexp.tasks.pretrained import pretrained_backbone

        backbone, source = pretrained_backbone(cfg, spec)
        image_size, weights = source.config.dataset.image_size, _file_identity(source.folder)
        described = f"checkpoint {source.folder}"
    else:
        set_seed(cfg.seed)
        backbone = instantiate(cfg.backbone)(in_chans=cfg.dataset.in_chans, image_size=cfg.dataset.image_size)
        image_size = cfg.dataset.image_size
        pretrained = bool(cfg.backbone.get("pretrained"))
        weights = {"pretrained": pretrained, "seed": None if pretrained else cfg.seed}
        described = f"{cfg.backbone.model_name} ({'pretrained' if pretrained else f'random, seed {cfg.seed}'})"
    last = int(cfg.task.embedding.last_blocks)
    identity = {
        "store": store.path.name,
        "backbone": OmegaConf.to_container(cfg.backbone, resolve=True) if not spec else None,
        "weights": weights,
        "image_size": image_size,
        "last_blocks": last,
        "standardize": bool(cfg.task.embedding.standardize),
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cfg.paths.cache_dir) / "embeddings" / f"{key}.npy"
    if path.exists():
        log.info("patch embeddings from cache %s", path)
        return np.load(path), described
    features = patch_embeddings(
        backbone.to(device).eval(),
        store,
        image_size,
        last,
        cfg.task.embedding.batch_size,
        device,
        standardize=bool(cfg.task.embedding.standardize),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{np.random.default_rng().integers(1 << 30)}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, features)
    tmp.replace(path)
    return features, described


def _file_identity(folder: Path) -> list:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).iterdir() if p.is_file())


@torch.no_grad()
def patch_embeddings(
    backbone: nn.Module,
    store: SplitStore,
    image_size: int,
    last_blocks: int,
    batch_size: int,
    device,
    standardize: bool = False,
) -> np.ndarray:
    """(N, F) float32: a ViT gives the CLS tokens of its last `last_blocks` blocks side by side, others pooled."""
    transform = BatchTransform(image_size)
    images = store.images
    vit = hasattr(backbone, "get_intermediate_layers") and getattr(backbone, "num_prefix_tokens", 0) > 0
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc="patch embeddings", unit="batch", disable=None):
        x = transform(torch.from_numpy(images[start : start + batch_size]).unsqueeze(1).to(device))
        if standardize:  # each patch to zero mean, unit variance: a batch's brightness and contrast drop out
            x = (x - x.mean((1, 2, 3), keepdim=True)) / (x.std((1, 2, 3), keepdim=True) + 1e-6)
        if vit and last_blocks > 0:
            layers = backbone.get_intermediate_layers(x, n=last_blocks, return_prefix_tokens=True, norm=True)
            out.append(torch.cat([prefix[:, 0] for _, prefix in layers], dim=1).float().cpu())
        else:
            out.append(backbone(x).float().cpu())
    return torch.cat(out).numpy()


def fit_mil(cfg, model, features, split_bags, labels, class_names, tracker, checkpoints) -> tuple[dict, float]:
    """Train on TSS samples with coverage-weighted cross-entropy; the state and value of the best val epoch
    (also saved as the `best` checkpoint, when `checkpoints` is given)."""
    optimizer = instantiate(cfg.optim.optimizer)(params=model.parameters())
    scheduler = instantiate(cfg.optim.scheduler)(optimizer=optimizer)
    rng = np.random.default_rng(cfg.seed)
    window, keep = tuple(cfg.task.tss.window), float(cfg.task.tss.keep)
    train, per_step = split_bags["train"], int(cfg.task.bags_per_step)
    draws = np.repeat(np.arange(len(train)), cfg.task.tss.samples_per_sequence)
    sign = 1 if cfg.task.direction == "maximize" else -1
    best_value, best_state = None, None
    for epoch in range(1, cfg.trainer.max_epochs + 1):
        model.train()
        order = rng.permutation(draws)
        losses = []
        for start in range(0, len(order), per_step):
            chosen = [train[i] for i in order[start : start + per_step]]
            bags, weights = [], []
            for bag in chosen:
                kept, weight = segment_sample(bag.hours, rng, window, keep)
                bags.append(features[np.concatenate([bag.frames[i] for i in kept])])
                weights.append(weight)
            x, mask = pad_bags(bags)
            logits, _ = model(x, mask)
            target = torch.tensor([labels[b.sequence.key] for b in chosen], device=x.device)
            w = torch.tensor(weights, device=x.device)
            loss = (F.cross_entropy(logits, target, reduction="none") * w).sum() / w.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.trainer.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.grad_clip)
            optimizer.step()
            losses.append(loss.item())
        logits, _ = predict_mil(model, features, split_bags["val"])
        metrics = level_metrics("val", logits, split_bags["val"], labels, len(class_names))
        val_targets = torch.tensor([labels[b.sequence.key] for b in split_bags["val"]])
        metrics["val/loss"] = F.cross_entropy(logits, val_targets).item()
        metrics.update({"train/loss": float(np.mean(losses)), "train/lr": optimizer.param_groups[0]["lr"]})
        step_scheduler(scheduler, metrics)
        tracker.log_metrics(metrics, step=epoch)
        value = metrics[cfg.task.optimized_metric]
        log.info("epoch %d  train/loss %.4f  %s %.4f", epoch, metrics["train/loss"], cfg.task.optimized_metric, value)
        # On a tie the later epoch wins: val sequences share the training batches, so val saturates early
        # while training on more samples still helps across batches.
        if best_value is None or sign * value >= sign * best_value:
            best_value = value
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            meta = {"epoch": epoch, "metric": cfg.task.optimized_metric, "value": value, "classes": class_names}
            if checkpoints is not None:
                checkpoints.save(BEST, best_state, None, meta)
    return best_state, best_value


@torch.no_grad()
def predict_mil(
    model: GatedAttentionMIL, features: torch.Tensor, bags: list[Bag]
) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Whole-sequence logits (n, C) and each sequence's attention over its patches (rows in `bag.rows` order)."""
    model.eval()
    logits, attention = [], []
    for bag in bags:
        out, weights = model(features[bag.rows].unsqueeze(0))
        logits.append(out[0].cpu())
        attention.append(weights[0].cpu().numpy())
    return torch.stack(logits), attention


def ranking_metrics(probs: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Top-1/3/5 accuracy (k below the class count only), macro F1 and one-vs-rest macro AUC of class scores."""
    probs, targets = probs.float().cpu(), targets.long().cpu()
    out = {
        f"top{k}": multiclass_accuracy(probs, targets, num_classes, average="micro", top_k=k).item()
        for k in (1, 3, 5)
        if k == 1 or k < num_classes
    }
    out["macro_f1"] = multiclass_f1_score(probs.argmax(1), targets, num_classes, average="macro").item()
    out["auc"] = multiclass_auroc(probs, targets, num_classes, average="macro").item()
    return out


def level_metrics(
    split: str, logits: torch.Tensor, bags: list[Bag], labels: dict, num_classes: int, probs=None
) -> dict:
    """`<split>/sequence/<metric>` over sequences and `<split>/batch/<metric>` over batches, a batch's score being
    the mean softmax of its sequences."""
    probs = logits.softmax(dim=1) if probs is None else probs
    targets = torch.tensor([labels[b.sequence.key] for b in bags])
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, bag in enumerate(bags):
        groups[(bag.sequence.line, bag.sequence.batch)].append(i)
    batch_probs = torch.stack([probs[idx].mean(0) for idx in groups.values()])
    batch_targets = torch.stack([targets[idx[0]] for idx in groups.values()])
    out = {f"{split}/sequence/{k}": v for k, v in ranking_metrics(probs, targets, num_classes).items()}
    out.update({f"{split}/batch/{k}": v for k, v in ranking_metrics(batch_probs, batch_targets, num_classes).items()})
    return out


def _baseline(cfg, features: torch.Tensor, split_bags: dict, labels: dict, num_classes: int) -> dict:
    """The per-image baseline on the same embeddings, as `test/baseline/<level>/<metric>`."""
    probs = per_image_baseline(cfg, features, split_bags, labels, num_classes)
    metrics = level_metrics("test", None, split_bags["test"], labels, num_classes, probs=probs)
    return {k.replace("test/", "test/baseline/", 1): v for k, v in metrics.items()}


def per_image_baseline(cfg, features: torch.Tensor, split_bags: dict, labels: dict, num_classes: int) -> torch.Tensor:
    """Test sequences' scores from a per-image model: multinomial logistic regression of each frame's mean patch
    embedding, fitted to convergence (L-BFGS), its regularisation picked on val sequence top-1 from a small grid;
    a sequence's score is the mean of its frames' softmax. A strong, separately tuned baseline, not a straw man."""
    from sklearn.linear_model import LogisticRegression

    def frames_of(bags):
        x = np.stack([features[rows].mean(0).cpu().numpy() for bag in bags for rows in bag.frames])
        owner = np.asarray([i for i, bag in enumerate(bags) for _ in bag.frames])
        return x, owner

    def sequence_probs(model, bags):
        x, owner = frames_of(bags)
        p = np.zeros((len(x), num_classes))
        p[:, model.classes_] = model.predict_proba(x)
        return torch.from_numpy(np.stack([p[owner == i].mean(0) for i in range(len(bags))])).float()

    x, owner = frames_of(split_bags["train"])
    y = np.asarray([labels[split_bags["train"][i].sequence.key] for i in owner])
    val_targets = torch.tensor([labels[b.sequence.key] for b in split_bags["val"]])
    best, best_model = -1.0, None
    for c in cfg.task.baseline_c:
        model = LogisticRegression(C=float(c), max_iter=2000).fit(x, y)
        value = (sequence_probs(model, split_bags["val"]).argmax(1) == val_targets).float().mean().item()
        if value > best:
            best, best_model = value, model
    return sequence_probs(best_model, split_bags["test"])


def write_attention(folder: Path, store: SplitStore, bags, attention, logits, class_names) -> list[Path]:
    """attention.csv: one row per test patch (sequence, frame, window, weight); predictions.csv: one per sequence."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = store.manifest()
    att_path, pred_path = folder / "attention.csv", folder / "predictions.csv"
    with open(att_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sequence", "image_file", "elapsed_hours", "patch_rank", "x", "y", "attention"])
        for bag, weights in zip(bags, attention, strict=True):
            for row, w in zip(bag.rows, weights, strict=True):
                m = manifest[row]
                writer.writerow(
                    [
                        bag.sequence.key,
                        m["image_file"],
                        m["elapsed_hours"],
                        m["annotation_id"],
                        m["bbox_x"],
                        m["bbox_y"],
                        f"{w:.6f}",
                    ]
                )
    probs = logits.softmax(1)
    with open(pred_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["sequence", "line", "batch", "well", "frames", "true", "predicted", *[f"p_{c}" for c in class_names]]
        )
        for bag, p in zip(bags, probs, strict=True):
            s = bag.sequence
            predicted = class_names[int(p.argmax())]
            writer.writerow(
                [s.key, s.line, s.batch, s.well, len(bag.frames), s.line, predicted, *[f"{v:.4f}" for v in p.tolist()]]
            )
    return [att_path, pred_path]


def attention_figure(path: Path, store: SplitStore, bags, attention, figure: DictConfig) -> Path:
    """The most-attended patches of a few test sequences (one per line first), each titled with its weight."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picked, seen = [], set()
    for i, bag in enumerate(bags):
        if bag.sequence.line not in seen:
            picked.append(i)
            seen.add(bag.sequence.line)
    picked = picked[: figure.sequences]
    cols = figure.patches
    fig, axes = plt.subplots(len(picked), cols, figsize=(1.4 * cols, 1.6 * len(picked)), squeeze=False)
    for r, i in enumerate(picked):
        top = np.argsort(-attention[i])[:cols]
        rows = bags[i].rows[top]
        images = store.images[rows]
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(top):
                ax.imshow(images[c], cmap="gray", vmin=0, vmax=255)
                ax.set_title(f"{attention[i][top[c]]:.3f}", fontsize=7)
        axes[r, 0].text(
            -0.1, 0.5, bags[i].sequence.key, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=7
        )
    fig.suptitle("most-attended patches per sequence (attention weight)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
