"""task=xai: where a trained model looks, per cell, per class and per model, and how its embeddings cluster.

The model is rebuilt from its checkpoint's run config, with its weights, in eval mode; the cells come
from `xai.split` of this run's dataset (a class-balanced sample of `xai.num_cells`) or from the files in
`xai.images`. Maps stream through batch by batch: only Grad-CAMO and the few maps that figures show
are kept, so a whole split can be explained. Written under <run>/xai/ and logged to MLflow under xai/:

    cells.csv                      the explained cells: where they come from, true and predicted class
    <method>/gradcamo.csv          Grad-CAMO per cell (NaN: the map had no positive mass)
    <method>/per_class.csv         cells, mean, median and share above xai.threshold per true class
    <method>/right_but_outside.csv correct cells whose Grad-CAMO is below xai.threshold, lowest first
    <method>/gradcamo_hist.png     the distribution, correct and wrong cells stacked
    <method>/grid.png              correct, wrong and lowest-Grad-CAMO cells: input, overlay, mask outline
    <method>/compare.png, compare.csv   with xai.compare_ckpt: the second model on the same cells
    <method>/maps.npy              with xai.save_maps: every map (float16, cells.csv order)
    umap/<space>.png, <space>.csv  with xai.umap: 2-D UMAP of the split's embeddings (and head states)

Metrics: xai/<method>/{gradcamo_mean, gradcamo_median, gradcamo_frac_above_<t>, zero_maps,
right_outside_frac, cells_per_s}, xai/<method>/gradcamo_mean/<class>, xai/accuracy,
xai/compare/<method>/..., xai/<space>/{silhouette, knn_accuracy}.
"""

from __future__ import annotations

import csv
import difflib
import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm

from cellexp.data.datamodule import CropData, eval_loader, load_crop_data
from cellexp.data.images import UNKNOWN, read_crop_images
from cellexp.data.sampling import stratified_subset
from cellexp.data.store import ShardedArray
from cellexp.data.transforms import BatchTransform, input_transform
from cellexp.engine.accelerator import make_accelerator
from cellexp.errors import ConfigError
from cellexp.models.classifier import CellClassifier
from cellexp.tasks.trained import load_trained, resolve
from cellexp.tracking import start_tracking
from cellexp.xai import figures
from cellexp.xai.cams import CAM_METHODS, cam_maps
from cellexp.xai.embedding import embedding_report
from cellexp.xai.gradcamo import Scored, per_class, resize_masks, score_batches, summarize
from cellexp.xai.lime_maps import lime_maps
from cellexp.xai.rollout import check_rollout, rollout_maps
from cellexp.xai.targets import default_target_layer, find_layer, reshape_transform

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = (*CAM_METHODS, "lime", "rollout")
SPLITS: tuple[str, ...] = ("train", "val", "test")
TARGETS: tuple[str, ...] = ("predicted", "true")
ID_FIELDS: tuple[str, ...] = ("cell", "source_index", "image_file", "annotation_id", "true", "predicted", "confidence")


@dataclass
class Cells:
    """The explained cells: rows of uint8 crops and 0/1 masks (S, S), read a slice at a time."""

    images: np.ndarray | ShardedArray  # indexable by an array of rows
    masks: np.ndarray | ShardedArray
    rows: np.ndarray  # which rows of images and masks, in the order cells are explained
    labels: np.ndarray  # true class, UNKNOWN where not known
    sources: list[tuple[str, str, str]]  # (index in the split or "", image file, annotation id or "")

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def known(self) -> np.ndarray:
        return self.labels != UNKNOWN

    def crops(self, chunk: slice) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.images[self.rows[chunk]]))[:, None]

    def mask(self, chunk: slice) -> np.ndarray:
        return np.asarray(self.masks[self.rows[chunk]])


@dataclass
class Explained:
    """One trained model, ready to explain the cells, with its predictions on them."""

    backbone_name: str  # the explained run's backbone and head, as its config groups name them
    head_name: str
    model: CellClassifier
    transform: BatchTransform
    image_size: int
    origin: str  # the option that named it, for messages
    device: torch.device
    cells: Cells
    layer_name: str | None = None  # the CAM methods' target layer
    predicted: np.ndarray | None = None
    confidence: np.ndarray | None = None

    @property
    def label(self) -> str:
        """How figures and logs name the run: backbone/head, e.g. resnet18/elegans or resnet18/linear."""
        return f"{self.backbone_name}/{self.head_name}"

    def inputs(self, chunk: slice) -> torch.Tensor:
        """Model inputs for a slice of the cells, made on the device as training makes them."""
        return self.transform(self.cells.crops(chunk).to(self.device))

    def display(self, index: int) -> np.ndarray:
        """The cell as the model sees it (resized), back in [0, 1] for drawing."""
        x = self.inputs(slice(index, index + 1))[0].mean(dim=0)
        return (x * self.transform.std + self.transform.mean).clamp(0, 1).cpu().numpy()


def run(cfg: DictConfig) -> float:
    _check_options(cfg.xai)
    accelerator = make_accelerator(cfg.trainer)
    if accelerator.num_processes > 1:
        raise ConfigError("task=xai runs in one process: start it with python train.py, not accelerate launch")
    if not cfg.get("ckpt"):
        raise ConfigError("task=xai explains a trained model: give ckpt=<checkpoint, run folder or MLflow run id>")
    set_seed(cfg.seed)
    run_dir, xai = Path(cfg.paths.output_dir), cfg.xai
    data = load_crop_data(cfg.dataset, seed=cfg.seed)
    cells = _cells(cfg, data)
    runs = [_explained(cfg, "ckpt", cfg.ckpt, data, cells, accelerator.device)]
    if xai.compare_ckpt:
        runs.append(_explained(cfg, "xai.compare_ckpt", xai.compare_ckpt, data, cells, accelerator.device))
    for explained in runs:
        _check_applies(explained, xai)
    folder = run_dir / "xai"
    metrics: dict[str, float] = {}
    with start_tracking(cfg, run_dir, accelerator.is_main_process) as tracker:
        main = runs[0]
        # the explained model's backbone and head, not this config's defaults, so that runs compare by model
        tracker.set_tags(
            {
                "explained": main.label,
                "explained_ckpt": str(cfg.ckpt),
                "backbone": main.backbone_name,
                "head": main.head_name,
                "mlflow.runName": f"{main.backbone_name} {main.head_name} xai",
            }
        )
        for explained in runs:
            _predict(explained, xai.batch_size)
        tracker.log_artifact(_write_cells(folder / "cells.csv", cells, runs[0], data.class_names), "xai")
        if cells.known.any():
            metrics["xai/accuracy"] = float((runs[0].predicted == cells.labels)[cells.known].mean())
            tracker.log_metrics(metrics)
        # Logged as each part finishes: a long run that fails late keeps what it has done.
        parts = [
            (
                _metric_key(method),
                partial(_explain_method, method, runs, cells, data.class_names, xai, folder, cfg.seed),
            )
            for method in xai.methods
        ]
        if xai.umap:
            parts.append(("umap", partial(_embeddings, runs[0], data, cfg, folder)))
        for name, part in parts:
            found = part()
            tracker.log_metrics(found)
            tracker.log_artifacts(folder / name, f"xai/{name}")
            metrics.update(found)
    headline = ("gradcamo_mean", "gradcamo_frac_above", "silhouette", "knn_accuracy")
    log.info("xai: %s", "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.split("/")[-1].startswith(headline)))
    return _objective(cfg.task.optimized_metric, metrics)


def _check_options(xai: DictConfig) -> None:
    """Bad method names, splits and targets stop the run before any data or model is loaded."""
    if isinstance(xai.methods, str):
        raise ConfigError(f"xai.methods={xai.methods} must be a list: xai.methods=[{xai.methods}]")
    methods = list(xai.methods or [])
    if not methods:
        raise ConfigError(f"xai.methods is empty; choose from: {', '.join(METHODS)}")
    for method in methods:
        if method not in METHODS:
            close = difflib.get_close_matches(str(method), METHODS, n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ConfigError(f"xai.methods: unknown method {method!r}; {hint}valid: {', '.join(METHODS)}")
    if xai.split not in SPLITS:
        raise ConfigError(f"xai.split={xai.split!r} is not one of {', '.join(SPLITS)}")
    if _target(xai) not in TARGETS:
        raise ConfigError(f"xai.target={xai.target!r} is not one of {', '.join(TARGETS)}")
    if xai.num_cells is not None and int(xai.num_cells) < 1:
        raise ConfigError(f"xai.num_cells={xai.num_cells} must be at least 1 (or null for the whole split)")


def _target(xai: DictConfig) -> str:
    """Which class the maps explain, predicted or true (Hydra reads `xai.target=true` as a boolean)."""
    return str(xai.target).lower()


def _cells(cfg: DictConfig, data: CropData) -> Cells:
    xai = cfg.xai
    if xai.images:
        found = read_crop_images(list(xai.images), cfg.dataset.crop_size, data.class_names)
        cells = Cells(
            found.images,
            found.masks,
            np.arange(len(found.paths)),
            found.labels,
            [("", str(path), "") for path in found.paths],
        )
        if _target(xai) == "true" and not cells.known.all():
            unknown = [str(p) for p, known in zip(found.paths, cells.known, strict=True) if not known]
            raise ConfigError(
                f"xai.target=true needs the true class of every image, but no parent folder names a class "
                f"({', '.join(data.class_names)}) for: {', '.join(unknown)}; use xai.target=predicted"
            )
        return cells
    dataset = data.splits[xai.split]
    if not len(dataset):
        raise ConfigError(f"xai.split={xai.split} has no cells in this dataset")
    picked = stratified_subset(dataset.labels, xai.num_cells, cfg.seed)
    rows = dataset.indices[picked]
    manifest = data.store.manifest(xai.split)
    return Cells(
        data.store.images(xai.split),
        data.store.masks(xai.split),
        rows,
        dataset.labels[picked],  # relabelled when dataset.cell_lines keeps some lines only
        [(str(i), manifest[i]["image_file"], manifest[i]["annotation_id"]) for i in rows],
    )


def _explained(cfg: DictConfig, key: str, spec: str, data: CropData, cells: Cells, device: torch.device) -> Explained:
    source = resolve(cfg, spec, option=key)
    model = load_trained(source, num_classes=len(data.class_names)).to(device)
    image_size = int(source.config.dataset.image_size)
    backbone, head = source.config.backbone, source.config.head
    return Explained(
        backbone_name=backbone.get("model_name", backbone.family),
        head_name=head.get("graph") or head._target_.rsplit(".", 1)[-1].removesuffix("Head").lower(),
        model=model,
        transform=input_transform(source.config.dataset),
        image_size=image_size,
        origin=f"{key}={spec}",
        device=device,
        cells=cells,
    )


def _check_applies(explained: Explained, xai: DictConfig) -> None:
    """Method/backbone mismatches and bad layer names stop the run before any map is computed."""
    if any(m in CAM_METHODS and m != "fullgrad" for m in xai.methods):  # FullGrad reads every bias itself
        explained.layer_name = xai.target_layer or default_target_layer(explained.model, explained.image_size)
        find_layer(explained.model, explained.layer_name)
        log.info("xai on %s: CAM target layer %s", explained.label, explained.layer_name)
    if "rollout" in xai.methods:
        check_rollout(explained.model.backbone, explained.origin, xai.rollout.mode, xai.rollout.head_fusion)


@torch.no_grad()
def _predict(explained: Explained, batch_size: int) -> None:
    probabilities = []
    for start in range(0, len(explained.cells), batch_size):
        probabilities.append(explained.model(explained.inputs(slice(start, start + batch_size))).softmax(dim=1).cpu())
    confidence, predicted = torch.cat(probabilities).max(dim=1)
    explained.confidence, explained.predicted = confidence.numpy(), predicted.numpy()


def _maps(method: str, explained: Explained, targets: np.ndarray, xai: DictConfig, seed: int) -> Iterator[np.ndarray]:
    """Batches of (B, H, W) maps in [0, 1] at the model's input size, cells in order."""
    if method == "rollout":
        return rollout_maps(
            explained.model.backbone,
            explained.inputs,
            len(targets),
            explained.image_size,
            xai.batch_size,
            xai.rollout.mode,
            xai.rollout.head_fusion,
        )
    if method == "lime":
        return lime_maps(
            explained.inputs,
            targets,
            _probabilities(explained),
            background=-explained.transform.mean / explained.transform.std,  # black, as outside every crop
            num_samples=xai.lime.num_samples,
            segments=xai.lime.segments,
            batch_size=xai.batch_size,
            seed=seed,
        )
    return cam_maps(
        method,
        explained.model,
        find_layer(explained.model, explained.layer_name) if explained.layer_name else None,
        reshape_transform(explained.model.backbone, explained.image_size),
        explained.inputs,
        targets,
        xai.batch_size,
        eigen_smooth=xai.eigen_smooth,
        aug_smooth=xai.aug_smooth,
    )


def _probabilities(explained: Explained) -> Callable[[np.ndarray], np.ndarray]:
    @torch.no_grad()
    def predict(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(images).float().permute(0, 3, 1, 2).to(explained.device)
        return explained.model(x).softmax(dim=1).cpu().numpy()

    return predict


def _explain_method(
    method: str, runs: list[Explained], cells: Cells, class_names: list[str], xai: DictConfig, out: Path, seed: int
) -> dict[str, float]:
    key = _metric_key(method)
    folder = out / key
    folder.mkdir(parents=True, exist_ok=True)
    main = runs[0]
    groups = _groups(cells, main.predicted, xai.grid_cells)
    saved = folder / "maps.npy" if xai.save_maps else None
    scored = _score(method, main, xai, seed, keep=groups, lowest=xai.grid_cells, save=saved)
    metrics = _method_metrics(f"xai/{key}", scored, cells, main.predicted, class_names, xai.threshold)
    _write_scores(folder, cells, main, class_names, scored.scores, xai.threshold)
    correct = (main.predicted == cells.labels) if cells.known.all() else None
    figures.histogram(
        folder / "gradcamo_hist.png",
        scored.scores,
        correct,
        xai.threshold,
        f"{method} on {main.label}\nmean {metrics[f'xai/{key}/gradcamo_mean']:.3f}, "
        f"{metrics[f'xai/{key}/gradcamo_frac_above_{xai.threshold:g}']:.0%} above {xai.threshold:g}, "
        f"{int(metrics[f'xai/{key}/zero_maps'])} empty maps left out",
    )
    lowest = sorted((i for i in scored.maps if i not in groups), key=lambda i: scored.scores[i])
    shown = [*groups.items(), *((i, "low Grad-CAMO") for i in lowest)]
    figures.cell_grid(
        folder / "grid.png",
        [_view(main, scored, class_names, i, group) for i, group in shown],
        f"{method} on {main.label} ({_target(xai)} class); cyan: the cell's mask",
        xai.image_weight,
    )
    if len(runs) > 1:
        other = runs[1]
        other_scored = _score(method, other, xai, seed, keep={i for i, _ in shown}, lowest=0, save=None)
        metrics.update(
            _method_metrics(f"xai/compare/{key}", other_scored, cells, other.predicted, class_names, xai.threshold)
        )
        _write_comparison(folder / "compare.csv", cells, runs, class_names, [scored.scores, other_scored.scores])
        figures.comparison_grid(
            folder / "compare.png",
            [run.label for run in runs],
            [f"{group}\ntrue {_truth(cells, class_names, i)}" for i, group in shown],
            [
                [_view(main, scored, class_names, i) for i, _ in shown],
                [_view(other, other_scored, class_names, i) for i, _ in shown],
            ],
            f"{method}: {runs[0].label} vs {runs[1].label} on the same cells",
            xai.image_weight,
        )
    return metrics


def _score(
    method: str, explained: Explained, xai: DictConfig, seed: int, keep: Collection[int], lowest: int, save: Path | None
) -> Scored:
    """Grad-CAMO of every cell for one run, keeping the maps of `keep` and of the `lowest` scores."""
    cells = explained.cells
    targets = cells.labels if _target(xai) == "true" else explained.predicted
    return score_batches(
        _maps(method, explained, targets, xai, seed),
        cells.mask,
        len(cells),
        keep=keep,
        lowest=lowest,
        save=save,
    )


def _method_metrics(
    prefix: str, scored: Scored, cells: Cells, predicted: np.ndarray, class_names: list[str], threshold: float
) -> dict[str, float]:
    scores = scored.scores
    metrics = {f"{prefix}/{k}": v for k, v in summarize(scores, threshold).items()}
    metrics[f"{prefix}/cells_per_s"] = len(scores) / max(scored.seconds, 1e-9)
    for row in per_class(scores, cells.labels, class_names, threshold):
        metrics[f"{prefix}/gradcamo_mean/{row['class']}"] = row["gradcamo_mean"]
    right = cells.known & (predicted == cells.labels) & np.isfinite(scores)
    if right.any():
        metrics[f"{prefix}/right_outside_frac"] = float((scores[right] < threshold).mean())
    return metrics


def _groups(cells: Cells, predicted: np.ndarray, per_group: int) -> dict[int, str]:
    """The cells figures show whatever their maps: per_group correct and per_group wrong ones, evenly spaced
    through the cells (which come sorted by class), or with no truth known per_group of all; the per_group
    lowest Grad-CAMO among the rest join them once the scores are known."""
    if not cells.known.any():
        return {int(i): "cell" for i in _spread(np.arange(len(cells)), per_group)}
    correct = cells.known & (predicted == cells.labels)
    wrong = cells.known & ~correct
    return {
        **{int(i): "correct" for i in _spread(np.flatnonzero(correct), per_group)},
        **{int(i): "wrong" for i in _spread(np.flatnonzero(wrong), per_group)},
    }


def _spread(indices: np.ndarray, count: int) -> np.ndarray:
    """At most `count` of `indices`, evenly spaced from first to last."""
    if len(indices) <= count:
        return indices
    return indices[np.linspace(0, len(indices) - 1, count).round().astype(int)]


def _view(
    explained: Explained, scored: Scored, class_names: list[str], index: int, group: str | None = None
) -> figures.CellView:
    """A cell as one run sees it; the caption names the group and the truth unless a comparison shows them apart."""
    cells, cam = explained.cells, scored.maps[index]
    score = f"{scored.scores[index]:.2f}" if np.isfinite(scored.scores[index]) else "n/a (empty map)"
    caption = f"pred {class_names[explained.predicted[index]]}\nGrad-CAMO {score}"
    if group is not None:
        caption = f"{group}\ntrue {_truth(cells, class_names, index)} / {caption}"
    return figures.CellView(
        image=explained.display(index),
        mask=resize_masks(cells.mask(slice(index, index + 1)), cam.shape)[0],
        cam=cam,
        caption=caption,
        correct=bool(explained.predicted[index] == cells.labels[index]) if cells.known[index] else None,
    )


def _truth(cells: Cells, class_names: list[str], index: int, unknown: str = "?") -> str:
    return class_names[cells.labels[index]] if cells.known[index] else unknown


def _id_row(cells: Cells, explained: Explained, class_names: list[str], i: int) -> list:
    return [
        i,
        *cells.sources[i],
        _truth(cells, class_names, i, unknown=""),
        class_names[explained.predicted[i]],
        float(explained.confidence[i]),
    ]


def _write_cells(path: Path, cells: Cells, explained: Explained, class_names: list[str]) -> Path:
    return _write_csv(path, ID_FIELDS, [_id_row(cells, explained, class_names, i) for i in range(len(cells))])


def _write_scores(
    folder: Path, cells: Cells, explained: Explained, class_names: list[str], scores: np.ndarray, threshold: float
) -> None:
    rows = [[*_id_row(cells, explained, class_names, i), scores[i]] for i in range(len(scores))]
    _write_csv(folder / "gradcamo.csv", [*ID_FIELDS, "gradcamo"], rows)
    table = per_class(scores, cells.labels, class_names, threshold)
    _write_csv(folder / "per_class.csv", list(table[0]), [list(row.values()) for row in table])
    right = cells.known & (explained.predicted == cells.labels) & (scores < threshold)
    order = [i for i in np.argsort(scores) if right[i]]
    _write_csv(folder / "right_but_outside.csv", [*ID_FIELDS, "gradcamo"], [rows[i] for i in order])


def _write_comparison(
    path: Path, cells: Cells, runs: list[Explained], class_names: list[str], scores: list[np.ndarray]
) -> None:
    header = ["cell", "source_index", "image_file", "annotation_id", "true"]
    header += [f"{field} {run.label}" for run in runs for field in ("predicted", "gradcamo")]
    rows = [
        [i, *cells.sources[i], _truth(cells, class_names, i, unknown="")]
        + [value for run, s in zip(runs, scores, strict=True) for value in (class_names[run.predicted[i]], s[i])]
        for i in range(len(cells))
    ]
    _write_csv(path, header, rows)


def _write_csv(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([f"{v:.6g}" if isinstance(v, float) else v for v in row] for row in rows)
    return path


@torch.no_grad()
def _embeddings(explained: Explained, data: CropData, cfg: DictConfig, out: Path) -> dict[str, float]:
    """UMAP picture, silhouette and kNN accuracy of the whole split's embeddings (and head states)."""
    xai = cfg.xai
    dataset = data.splits[xai.split]
    model = explained.model
    spaces: dict[str, list[torch.Tensor]] = {"embedding": []}
    linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    hooks = []
    if xai.head_state and len(linears) > 1:
        spaces["head_state"] = []
        last_input: list[torch.Tensor] = []
        hooks = [m.register_forward_pre_hook(lambda _m, args: last_input.append(args[0])) for m in linears]
    elif xai.head_state:
        log.info("xai.head_state: the head has a single Linear layer, whose input is the embedding itself")
    loader = eval_loader(dataset, cfg.trainer.eval_batch_size, cfg.trainer.num_workers)
    try:
        for crops, _ in tqdm(loader, desc="xai embeddings", unit="batch", leave=False):
            embedding = model.backbone(explained.transform(crops.to(explained.device)))
            spaces["embedding"].append(embedding.float().cpu())
            if hooks:
                last_input.clear()
                model.head(embedding)
                spaces["head_state"].append(last_input[-1].float().cpu())
    finally:
        for hook in hooks:
            hook.remove()
    labels = np.asarray(dataset.labels)
    metrics = {}
    for space, chunks in spaces.items():
        values, coords = embedding_report(
            torch.cat(chunks).numpy(), labels, xai.knn_k, xai.umap_neighbors, xai.silhouette_cells, cfg.seed, xai.sphere
        )
        metrics.update({f"xai/{space}/{k}": v for k, v in values.items()})
        title = (
            f"{space} of {explained.label}, {xai.split} split{' (sphered)' if xai.sphere else ''}: "
            f"silhouette {values['silhouette']:.3f}, {xai.knn_k}-NN accuracy {values['knn_accuracy']:.3f}"
        )
        figures.umap_scatter(out / "umap" / f"{space}.png", coords, labels, data.class_names, title)
        _write_csv(
            out / "umap" / f"{space}.csv",
            ["source_index", "class", "umap_x", "umap_y"],
            [
                [int(i), data.class_names[c], float(x), float(y)]
                for i, c, (x, y) in zip(dataset.indices, labels, coords, strict=True)
            ],
        )
    return metrics


def _metric_key(name: str) -> str:
    """MLflow keys (and our folders) allow no '+': gradcam++ is logged as gradcampp."""
    return name.replace("+", "p")


def _objective(name: str, metrics: dict[str, float]) -> float:
    if _metric_key(name) not in metrics:
        available = ", ".join(sorted(k for k in metrics if k.count("/") == 2))
        raise ConfigError(f"task.optimized_metric={name!r} was not computed; available: {available}")
    return float(metrics[_metric_key(name)])
