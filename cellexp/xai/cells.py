"""The cells an explanation looks at and the trained models it explains, with their predictions on them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig

from cellexp.data.datamodule import CropData
from cellexp.data.images import UNKNOWN, read_crop_images
from cellexp.data.sampling import stratified_subset
from cellexp.data.store import ShardedArray, channel_batch
from cellexp.data.transforms import BatchTransform
from cellexp.engine.checkpoint import read_meta
from cellexp.errors import ConfigError
from cellexp.models.classifier import CellClassifier
from cellexp.tracking.identity import run_label
from cellexp.tracking.loading import load_trained, resolve

TARGETS: tuple[str, ...] = ("predicted", "true")


def explained_class(xai: DictConfig) -> str:
    """Which class the maps explain, predicted or true (Hydra reads `xai.target=true` as a boolean)."""
    return str(xai.target).lower()


@dataclass
class Cells:
    """The explained cells: rows of crops (any channels, 8 or 16 bits, 2-D or 3-D) and their 0/1 masks ((S, S) or
    (D, S, S)), read a slice at a time."""

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
        return torch.from_numpy(channel_batch(np.asarray(self.images[self.rows[chunk]])))

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

    @property
    def volume(self) -> bool:
        """Whether the model takes 3-D crops (C, D, S, S)."""
        return self.model.input_config.depth is not None

    def display(self, index: int) -> np.ndarray:
        """The cell as the model sees it (resized), back in [0, 1] for drawing: (H, W) for grey data (a grey crop
        repeated to the model's channels is drawn once), else each channel, (C, H, W) or (C, D, H, W)."""
        x = self.inputs(slice(index, index + 1))[0]
        x = (x * self.transform.std + self.transform.mean).clamp(0, 1)
        return (x.mean(dim=0) if self.model.input_config.channels == 1 else x).cpu().numpy()


def sample_cells(cfg: DictConfig, data: CropData) -> Cells:
    """The cells to explain: a class-balanced sample of `xai.split` (`xai.num_cells`), or the files `xai.images`."""
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
        if explained_class(xai) == "true" and not cells.known.all():
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
    stored = dataset.split  # the store's split that holds them (a plate keeps all its cells in one)
    manifest = data.store.manifest(stored)
    return Cells(
        data.store.images(stored),
        data.store.masks(stored),
        rows,
        dataset.labels[picked],  # relabelled when dataset.cell_lines keeps some lines only
        [(str(i), manifest[i]["image_file"], manifest[i]["annotation_id"]) for i in rows],
    )


def load_explained(
    cfg: DictConfig, key: str, spec: str, data: CropData, cells: Cells, device: torch.device
) -> Explained:
    """The model that option `key` (=`spec`) names, rebuilt from its run, named as that run's config groups name it."""
    source = resolve(cfg, spec, option=key)
    model = load_trained(source, num_classes=len(data.class_names)).to(device)
    labels = read_meta(source.folder).get("labels") or run_label(source.config)
    return Explained(
        backbone_name=labels["backbone"],
        head_name=labels["head"],
        model=model,
        transform=model.input_config.transform(),
        image_size=model.input_config.image_size,
        origin=f"{key}={spec}",
        device=device,
        cells=cells,
    )


@torch.no_grad()
def predict(explained: Explained, batch_size: int) -> None:
    """The model's predicted class and its probability for every cell."""
    probabilities = []
    for start in range(0, len(explained.cells), batch_size):
        probabilities.append(explained.model(explained.inputs(slice(start, start + batch_size))).softmax(dim=1).cpu())
    confidence, predicted = torch.cat(probabilities).max(dim=1)
    explained.confidence, explained.predicted = confidence.numpy(), predicted.numpy()
