"""task=xai's embedding view: a 2-D UMAP of the split's embeddings (and head states), with silhouette and kNN
accuracy by class. With `xai.sphere`, the embeddings are sphered first as DeepProfiler does it (regularised ZCA
fit on the negative-control cells; without controls, on the whole split: the fallback, logged as a param). On a
plate the picture is drawn three times: coloured by treatment (the class), by well and by plate, so that a
batch effect shows as clusters by well or plate."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from cellexp.data.datamodule import CropData, eval_loader
from cellexp.profiles.cells import cell_metadata
from cellexp.profiles.columns import control_mask
from cellexp.profiles.sphering import ALL, CONTROLS
from cellexp.progress import progress
from cellexp.reports import xai as figures
from cellexp.reports.tables import write_csv
from cellexp.xai.cells import Explained
from cellexp.xai.embedding import embedding_report

log = logging.getLogger(__name__)

BATCHES = ("Metadata_Well", "Metadata_Plate")


@torch.no_grad()
def embeddings(explained: Explained, data: CropData, cfg: DictConfig, out: Path) -> dict[str, float]:
    """UMAP pictures, silhouette and kNN accuracy of the whole split's embeddings (and head states)."""
    xai = cfg.xai
    dataset = data.splits[xai.split]
    spaces = _spaces(explained, dataset, cfg)
    labels = np.asarray(dataset.labels)
    meta = cell_metadata(dataset)
    controls = control_mask(meta)
    sphering = float(xai.sphere_regularization) if xai.sphere else None
    metrics: dict[str, float] = {}
    if sphering is not None:
        metrics["xai/sphering/controls"] = float(controls.sum())
    sphered = f" (sphered on {CONTROLS if controls.any() else ALL})" if xai.sphere else ""
    for space, values in spaces.items():
        found, coords = embedding_report(
            values, labels, xai.knn_k, xai.umap_neighbors, xai.silhouette_cells, cfg.seed, sphering, controls
        )
        metrics.update({f"xai/{space}/{k}": v for k, v in found.items()})
        title = (
            f"{space} of {explained.label}, {xai.split} split{sphered}:\n"
            f"silhouette {found['silhouette']:.3f}, {xai.knn_k}-NN accuracy {found['knn_accuracy']:.3f}"
        )
        figures.umap_scatter(out / "umap" / f"{space}.png", coords, labels, data.class_names, title)
        for column in (c for c in BATCHES if c in meta.columns):
            codes, names = meta[column].astype(str).factorize(sort=True)
            name = column.removeprefix("Metadata_").lower()
            figures.umap_scatter(
                out / "umap" / f"{space}_by_{name}.png", coords, codes, list(names), f"{space} by {name}{sphered}"
            )
        extra = [c for c in BATCHES if c in meta.columns]
        write_csv(
            out / "umap" / f"{space}.csv",
            ["source_index", "class", *[c.removeprefix("Metadata_").lower() for c in extra], "umap_x", "umap_y"],
            [
                [int(i), data.class_names[c], *[meta[e].iat[k] for e in extra], float(x), float(y)]
                for k, (i, c, (x, y)) in enumerate(zip(dataset.indices, labels, coords, strict=True))
            ],
        )
    return metrics


def _spaces(explained: Explained, dataset, cfg: DictConfig) -> dict[str, np.ndarray]:
    """The embedding entering the head for every cell of the split, and with xai.head_state the input of the
    head's last Linear layer."""
    model = explained.model
    spaces: dict[str, list[torch.Tensor]] = {"embedding": []}
    linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    hooks = []
    if cfg.xai.head_state and len(linears) > 1:
        spaces["head_state"] = []
        last_input: list[torch.Tensor] = []
        hooks = [m.register_forward_pre_hook(lambda _m, args: last_input.append(args[0])) for m in linears]
    elif cfg.xai.head_state:
        log.info("xai.head_state: the head has a single Linear layer, whose input is the embedding itself")
    loader = eval_loader(dataset, cfg.trainer.eval_batch_size, cfg.trainer.num_workers)
    try:
        for crops, _ in progress(loader, desc="xai embeddings", unit="batch"):
            embedding = model.backbone(explained.transform(crops.to(explained.device)))
            spaces["embedding"].append(embedding.float().cpu())
            if hooks:
                last_input.clear()
                model.head(embedding)
                spaces["head_state"].append(last_input[-1].float().cpu())
    finally:
        for hook in hooks:
            hook.remove()
    return {space: torch.cat(chunks).numpy() for space, chunks in spaces.items()}
