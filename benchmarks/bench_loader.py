"""Training input speed: our crop store + whole-batch transforms against one PNG per sample.

    python benchmarks/bench_loader.py [--crops 4096] [--batch 64] [--workers 2] [--image-size 224] [--device cpu]

The baseline is the published approach: a Dataset that opens one PNG per sample with PIL and
applies torchvision transforms per sample (resize, flips, a small affine, brightness/contrast,
to tensor, normalise). Ours reads uint8 crops from the memory-mapped store a batch at a time and
applies the same kinds of augmentation to the whole batch on `--device`. Same crops, batch size
and loader workers, one run; images/s over whole epochs. On a machine without a GPU the batch
transforms run on the CPU too; the loader-only figure is what stays on the CPU when they run on a GPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from cellexp.data.datamodule import train_loader
from cellexp.data.dataset import CropDataset
from cellexp.data.livecell.prepare import CropSettings, prepare_crop_store
from cellexp.data.livecell.sources import find_livecell_cls_sources
from cellexp.data.transforms import BatchTransform

STRENGTHS = {"degrees": 10, "scale": (0.9, 1.1), "translate": 0.05, "brightness": 0.1, "contrast": 0.1}


class PngPerSample(Dataset):
    """The published way: one file read and one torchvision pipeline per sample."""

    def __init__(self, files: list[Path], image_size: int):
        self.files = files
        self.transform = transforms.Compose(
            [
                transforms.Resize((image_size, image_size)),
                transforms.RandomHorizontalFlip(),
                transforms.RandomVerticalFlip(),
                transforms.RandomAffine(STRENGTHS["degrees"], (STRENGTHS["translate"],) * 2, STRENGTHS["scale"]),
                transforms.ColorJitter(STRENGTHS["brightness"], STRENGTHS["contrast"]),
                transforms.ToTensor(),
                transforms.Normalize([0.5], [0.25]),
            ]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with Image.open(self.files[i]) as img:
            return self.transform(img.convert("L")), 0


def write_crops(folder: Path, count: int, size: int) -> list[Path]:
    """Cell-like crops in LIVECell-CLS layout: a textured blob on black, one PNG each."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    files = []
    for i in range(count):
        radius = rng.uniform(0.2, 0.45) * size
        cell = (yy - size / 2) ** 2 / rng.uniform(0.5, 1.5) + (xx - size / 2) ** 2 < radius**2
        pixels = (rng.integers(60, 200, (size, size)) * cell).astype(np.uint8)
        path = folder / "train" / ("A172", "BV2", "MCF7", "SKOV3")[i % 4] / f"cell_{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        files.append(path)
    return files


def images_per_second(loader: DataLoader, transform, device: torch.device, epochs: int) -> float:
    seen, started = 0, time.perf_counter()
    for _ in range(epochs):
        for crops, _ in loader:
            batch = transform(crops.to(device)) if transform is not None else crops.to(device)
            seen += batch.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", type=int, default=4096)
    parser.add_argument("--crop-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cls"
        files = write_crops(root, args.crops, args.crop_size)
        for split in ("val", "test"):
            (root / split).mkdir()
        store = prepare_crop_store(
            {"train": find_livecell_cls_sources(root)["train"]}, CropSettings(crop_size=args.crop_size), Path(tmp) / "c"
        )
        ours = train_loader(CropDataset(store, "train"), args.batch, args.workers, seed=0, balanced=True)
        augment = BatchTransform(args.image_size, augment=True, **STRENGTHS).to(device).train()
        baseline = DataLoader(
            PngPerSample(files, args.image_size),
            batch_size=args.batch,
            shuffle=True,
            num_workers=args.workers,
            drop_last=True,
            persistent_workers=args.workers > 0,
        )
        images_per_second(baseline, None, device, 1)  # warm-up: page cache, worker start
        images_per_second(ours, augment, device, 1)
        png = images_per_second(baseline, None, device, args.epochs)
        full = images_per_second(ours, augment, device, args.epochs)
        loader_only = images_per_second(ours, None, device, args.epochs)

    print(
        f"{args.crops} crops of {args.crop_size}px -> {args.image_size}px, batch {args.batch}, "
        f"{args.workers} workers, transforms on {device}:"
    )
    print(f"  PNG per sample + torchvision per sample (published): {png:9.0f} images/s")
    print(f"  crop store + batch transforms on {device.type} (ours):   {full:9.0f} images/s  {full / png:5.1f}x")
    print(f"  crop store loader alone (transforms on a GPU): {loader_only:9.0f} images/s  {loader_only / png:5.1f}x")


if __name__ == "__main__":
    main()
