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

import difflib
import logging
from collections.abc import Callable, Collection, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed
from omegaconf import DictConfig

from cellexp.data.datamodule import CropData, load_crop_data
from cellexp.engine.accelerator import make_accelerator
from cellexp.errors import ConfigError
from cellexp.reports import xai as figures
from cellexp.reports.xai import truth, write_cells, write_comparison, write_scores
from cellexp.reports.xai_volume import volume_cell
from cellexp.tasks.checks import refuse_training_keys, require_grey
from cellexp.tasks.xai_embeddings import embeddings
from cellexp.tracking.session import start_tracking
from cellexp.xai.cams import CAM_METHODS, cam_maps, map_kind
from cellexp.xai.cells import TARGETS, Cells, Explained, explained_class, load_explained, predict, sample_cells
from cellexp.xai.gradcamo import Scored, per_class, resize_masks, score_batches, summarize
from cellexp.xai.lime_maps import lime_maps
from cellexp.xai.rollout import check_rollout, rollout_maps
from cellexp.xai.targets import default_target_layer, find_layer, reshape_transform

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = (*CAM_METHODS, "lime", "rollout")
# methods that work on 2-D crops only, and why (pytorch-grad-cam 1.5's 3-D support covers the others)
FLAT_ONLY: dict[str, str] = {
    "fullgrad": "pytorch-grad-cam's FullGrad reads Conv2d biases and resizes in 2-D",
    "scorecam": "pytorch-grad-cam's ScoreCAM upsamples its masks in 2-D",
    "ablationcam": "pytorch-grad-cam's ablation layer handles 2-D activations only",
    "lime": "its superpixels and hidden regions are 2-D",
    "rollout": "attention rollout needs a ViT, and the 3-D backbones are CNNs",
}
SPLITS: tuple[str, ...] = ("train", "val", "test")


def run(cfg: DictConfig) -> float:
    _check_options(cfg.xai)
    refuse_training_keys(cfg, "task=xai")
    accelerator = make_accelerator(cfg.trainer)
    if accelerator.num_processes > 1:
        raise ConfigError("task=xai runs in one process: start it with python train.py, not accelerate launch")
    set_seed(cfg.seed)
    run_dir, xai = Path(cfg.paths.output_dir), cfg.xai
    with start_tracking(cfg, run_dir, accelerator.is_main_process) as tracker:
        data = load_crop_data(cfg.dataset, seed=cfg.seed)
        if xai.images:  # image files are read as grey 8-bit crops
            require_grey(data.store.kind, "xai.images", f"dataset={cfg.dataset.name}")
        cells = sample_cells(cfg, data)
        runs = [load_explained(cfg, "ckpt", cfg.ckpt, data, cells, accelerator.device)]
        if xai.compare_ckpt:
            runs.append(load_explained(cfg, "xai.compare_ckpt", xai.compare_ckpt, data, cells, accelerator.device))
        for explained in runs:
            _check_kind(explained, data, cfg.dataset.name)
            _check_applies(explained, xai)
        folder = run_dir / "xai"
        metrics: dict[str, float] = {}
        main = runs[0]
        # the explained model's backbone and head, not this config's defaults, so that runs compare by model
        tracker.set_tags(
            {
                "explained": main.label,
                "explained_ckpt": str(cfg.ckpt),
                "xai.cam_map": str(xai.cam_map),
                "backbone": main.backbone_name,
                "head": main.head_name,
                "mlflow.runName": f"{main.backbone_name} {main.head_name} xai",
            }
        )
        for explained in runs:
            predict(explained, xai.batch_size)
        tracker.log_artifact(write_cells(folder / "cells.csv", cells, runs[0], data.class_names), "xai")
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
            parts.append(("umap", partial(embeddings, runs[0], data, cfg, folder)))
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
    if explained_class(xai) not in TARGETS:
        raise ConfigError(f"xai.target={xai.target!r} is not one of {', '.join(TARGETS)}")
    if xai.num_cells is not None and int(xai.num_cells) < 1:
        raise ConfigError(f"xai.num_cells={xai.num_cells} must be at least 1 (or null for the whole split)")
    for method in methods:
        if method in CAM_METHODS and map_kind(method, xai.cam_map, xai.aug_smooth) != xai.cam_map:
            log.warning("xai: %s has no unscaled map; its Grad-CAMO is on its min-max scaled map", method)


def _check_kind(explained: Explained, data: CropData, dataset: str) -> None:
    """Any channels, bit depth and dimension are explained, as long as the model takes the data's crops."""
    if explained.model.input_config.kind != data.store.kind:
        raise ConfigError(
            f"{explained.origin} was trained on crops of {explained.model.input_config.kind}; "
            f"dataset={dataset} has crops of {data.store.kind}"
        )


def _check_applies(explained: Explained, xai: DictConfig) -> None:
    """Method/backbone mismatches and bad layer names stop the run before any map is computed."""
    if explained.volume:
        flat = [m for m in xai.methods if m in FLAT_ONLY]
        if flat:
            allowed = ", ".join(m for m in METHODS if m not in FLAT_ONLY)
            raise ConfigError(
                f"xai.methods={flat[0]} cannot explain the 3-D model of {explained.origin} ({FLAT_ONLY[flat[0]]}); "
                f"on 3-D crops use {allowed}"
            )
    if any(m in CAM_METHODS and m != "fullgrad" for m in xai.methods):  # FullGrad reads every bias itself
        explained.layer_name = xai.target_layer or default_target_layer(explained.model, explained.image_size)
        find_layer(explained.model, explained.layer_name)
        log.info("xai on %s: CAM target layer %s", explained.label, explained.layer_name)
    if "rollout" in xai.methods:
        check_rollout(explained.model.backbone, explained.origin, xai.rollout.mode, xai.rollout.head_fusion)


def _maps(method: str, explained: Explained, targets: np.ndarray, xai: DictConfig, seed: int) -> Iterator[np.ndarray]:
    """Batches of (B, H, W) non-negative maps at the model's input size, cells in order (CAMs: raw or min-max
    scaled, as xai.cam_map says; rollout and LIME: their own scales)."""
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
        cam_map=xai.cam_map,
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
    write_scores(folder, cells, main, class_names, scored.scores, xai.threshold)
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
    _draw(folder, [_view(main, scored, class_names, i, group) for i, group in shown], shown, main, method, xai)
    if len(runs) > 1:
        other = runs[1]
        other_scored = _score(method, other, xai, seed, keep={i for i, _ in shown}, lowest=0, save=None)
        metrics.update(
            _method_metrics(f"xai/compare/{key}", other_scored, cells, other.predicted, class_names, xai.threshold)
        )
        write_comparison(folder / "compare.csv", cells, runs, class_names, [scored.scores, other_scored.scores])
    if len(runs) > 1 and not main.volume:
        figures.comparison_grid(
            folder / "compare.png",
            [run.label for run in runs],
            [f"{group}\ntrue {truth(cells, class_names, i)}" for i, group in shown],
            [
                [_view(main, scored, class_names, i) for i, _ in shown],
                [_view(other, other_scored, class_names, i) for i, _ in shown],
            ],
            f"{method}: {runs[0].label} vs {runs[1].label} on the same cells",
            xai.image_weight,
        )
    return metrics


def _draw(folder: Path, views: list, shown: list, explained: Explained, method: str, xai: DictConfig) -> None:
    """The shown cells: a grid of 2-D crops (and, with several channels, each channel apart); in 3-D a figure per
    cell, `cells/<n>_<group>.png`, of maximum projections along z, y and x."""
    title = f"{method} on {explained.label} ({explained_class(xai)} class); cyan: the cell's mask"
    if explained.volume:
        for view, (i, group) in zip(views, shown, strict=True):
            name = f"{i:05d}_{group.replace(' ', '_')}.png"
            volume_cell(folder / "cells" / name, view, f"{title}\ncell {i}", xai.image_weight)
        return
    figures.cell_grid(folder / "grid.png", views, title, xai.image_weight)
    if explained.model.input_config.channels > 1 and views:
        figures.channel_grid(folder / "channels.png", views, title, xai.image_weight)


def _score(
    method: str, explained: Explained, xai: DictConfig, seed: int, keep: Collection[int], lowest: int, save: Path | None
) -> Scored:
    """Grad-CAMO of every cell for one run, keeping the maps of `keep` and of the `lowest` scores."""
    cells = explained.cells
    targets = cells.labels if explained_class(xai) == "true" else explained.predicted
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
        caption = f"{group}\ntrue {truth(cells, class_names, index)} / {caption}"
    return figures.CellView(
        image=explained.display(index),
        mask=resize_masks(cells.mask(slice(index, index + 1)), cam.shape)[0],
        cam=cam,
        caption=caption,
        correct=bool(explained.predicted[index] == cells.labels[index]) if cells.known[index] else None,
    )


def _metric_key(name: str) -> str:
    """MLflow keys (and our folders) allow no '+': gradcam++ is logged as gradcampp."""
    return name.replace("+", "p")


def _objective(name: str, metrics: dict[str, float]) -> float:
    if _metric_key(name) not in metrics:
        available = ", ".join(sorted(k for k in metrics if k.count("/") == 2))
        raise ConfigError(f"task.optimized_metric={name!r} was not computed; available: {available}")
    return float(metrics[_metric_key(name)])
