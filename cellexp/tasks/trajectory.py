"""task.umap_over_training: the embeddings of a fixed, class-balanced subset of test cells after every epoch,
drawn at the end as <run>/umap_over_training.gif (one UMAP fit on all epochs together, a frame per epoch, the
epoch in each; logged to MLflow beside the run). Only the epochs this process trains are drawn: a resumed run's
GIF starts where it resumed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Subset

from cellexp.data.datamodule import CropData
from cellexp.data.sampling import stratified_subset
from cellexp.engine.classification import ClassifierTrainer
from cellexp.tasks.profiling import embeddings

CELLS = 500
NEIGHBOURS = 15
FILE = "umap_over_training.gif"


@dataclass
class Trajectory:
    cells: Subset
    labels: np.ndarray
    class_names: list[str]
    batch_size: int
    frames: list[np.ndarray] = field(default_factory=list)

    def write(self, run_dir: Path, seed: int) -> Path:
        # imported here: the drawing brings pytorch_grad_cam, scikit-learn and UMAP, which task=classify's other runs
        # never use (task=classify imports this module for RecordingTrainer)
        from cellexp.reports.animation import umap_gif
        from cellexp.xai.trajectory import joint_umap

        coords = joint_umap(self.frames, NEIGHBOURS, seed)
        title = f"{len(self.labels)} test cells, one UMAP over all epochs"
        return umap_gif(run_dir / FILE, coords, self.labels, self.class_names, title)


def trajectory_cells(data: CropData, seed: int, batch_size: int) -> Trajectory:
    """At most CELLS test cells, spread evenly over the classes (seeded)."""
    test = data.splits["test"]
    picked = stratified_subset(test.labels, CELLS, seed)
    return Trajectory(Subset(test, picked.tolist()), np.asarray(test.labels)[picked], data.class_names, batch_size)


class RecordingTrainer(ClassifierTrainer):
    """The classifier's trainer, embedding the trajectory's cells after every epoch (main process only)."""

    def __init__(self, *args, trajectory: Trajectory, **kwargs):
        super().__init__(*args, **kwargs)
        self.trajectory = trajectory

    def end_of_epoch(self, metrics: dict) -> dict:
        if self.acc.is_main_process:
            backbone, cells = self.unwrapped.backbone, self.trajectory
            device = next(backbone.parameters()).device
            cells.frames.append(embeddings(backbone, self.eval_transform, cells.cells, cells.batch_size, device))
        return super().end_of_epoch(metrics)
