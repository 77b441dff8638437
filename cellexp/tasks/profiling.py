"""Profile quality at the end of a training run on data with treatments (a plate): the backbone's embeddings of the
val and test wells' cells (wells training never saw; a plate's test split alone holds one well per treatment, too
few for replicates), sphered on their negative controls, scored by retrieval mAP (cellexp.profiles.quality).
Logged as `profiles/*` metrics and written to <run>/profiles/quality.json with the sphering's reference."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cellexp.data.datamodule import CropData, eval_loader
from cellexp.data.transforms import model_inputs
from cellexp.profiles.cells import cell_metadata, profile_table
from cellexp.profiles.columns import has_treatments
from cellexp.profiles.quality import profile_quality
from cellexp.profiles.sphering import sphere_table

SPLITS = ("val", "test")
NULL_SIZE = 2000  # copairs' permutations per p-value: enough for p < 0.05 at the end of a run


@torch.no_grad()
def embeddings(backbone: nn.Module, transform: nn.Module, dataset, batch_size: int, device) -> np.ndarray:
    """The backbone's pooled embedding of every cell of `dataset`, in its order."""
    was_training = backbone.training
    backbone.eval()
    try:
        chunks = [
            backbone(model_inputs(transform, [t.to(device) for t in batch])[0]).float().cpu()
            for batch in eval_loader(dataset, batch_size, num_workers=0)
        ]
    finally:
        backbone.train(was_training)
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)


def log_profile_quality(
    backbone: nn.Module, transform: nn.Module, data: CropData, tracker, run_dir: Path, batch_size: int, seed: int
) -> dict[str, float]:
    """profiles/* metrics of the val and test cells' embeddings; nothing where the data has no treatments."""
    splits = [data.splits[name] for name in SPLITS if name in data.splits and len(data.splits[name])]
    meta = pd.concat([cell_metadata(dataset) for dataset in splits], ignore_index=True) if splits else pd.DataFrame()
    if not len(meta) or not has_treatments(meta):  # known before any embedding is computed
        logging.getLogger(__name__).debug("profile quality: the data has no treatments replicated across wells")
        return {}
    device = next(backbone.parameters()).device
    x = np.concatenate([embeddings(backbone, transform, dataset, batch_size, device) for dataset in splits])
    return score_profiles(profile_table(meta, x), tracker, run_dir / "profiles", seed, {"splits": list(SPLITS)})


def score_profiles(table: pd.DataFrame, tracker, folder: Path, seed: int, about: dict) -> dict[str, float]:
    """A per-cell table's profiles sphered on its controls and scored: profiles/* metrics, and quality.json (with
    `about` and the sphering's reference) in `folder`, logged under profiles/."""
    sphered, sphering = sphere_table(table)
    metrics = profile_quality(sphered, null_size=NULL_SIZE, seed=seed)
    tracker.log_metrics(metrics)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "quality.json"
    path.write_text(json.dumps({**about, **sphering.params(), **metrics}, indent=2))
    tracker.log_artifact(path, "profiles")
    return metrics
