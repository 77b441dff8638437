"""3-D Cell Painting data and model on the CPU, measured side by side in one run.

    python benchmarks/bench_cellpainting3d.py [--workdir /tmp/cellexp-3d] [--batches 20]

1 preparation: the generated plate (dataset=cellpainting3d's defaults) read, segmented (classical) and cut into the
  crop store by one worker process: crops per second per core; against reading one cell's window from its field's
  OME-TIFF (what a loader without a store does per sample): how many such reads one prepared crop costs.
2 loader: batches of 16 3-D crops from the store (DataLoader over CropDataset, one read per shard) against a
  dataset that reads each sample's field TIFF and cuts the cell's window: batches per second, ratio (goal >= 5).
3 a training step of efficientnet3d_b0 (5 channels, 12 planes of 32 px, batch 16, fp32) on the CPU, in a fresh
  process: seconds per step and the peak resident memory the steps add over the built model.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader, Dataset

import cellexp  # noqa: F401  (registers the config resolvers)
from cellexp.data.cellpainting.crops import window
from cellexp.data.cellpainting.fields import find_fields, read_field
from cellexp.data.cellpainting.plate import open_plate
from cellexp.data.dataset import CropDataset, collate_batch
from cellexp.data.store import CropStore
from cellexp.data.transforms import InputConfig
from cellexp.tracking.loading import build_model

CONF = Path(__file__).resolve().parents[1] / "conf"
BATCH = 16


def dataset_cfg(workdir: Path, cache: str):
    overrides = [f"paths.data_dir={workdir / 'data'}", f"dataset.cache_dir={workdir / cache}"]
    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose("config", overrides=["dataset=cellpainting3d", "dataset.prepare_workers=1", *overrides])
    return cfg.dataset


class TiffCells(Dataset):
    """Each sample read from its field's OME-TIFF and cut around the cell's centroid, as a store-less loader would."""

    def __init__(self, root: Path, manifest: list[dict], depth: int, size: int):
        self.fields = {field.name: field for field in find_fields(root, "ome-tiff")}
        self.manifest, self.shape = manifest, (depth, size, size)

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, i: int):
        row = self.manifest[i]
        pixels = read_field(self.fields[row["image_file"]]).pixels
        centre = [float(row[f"centroid_{axis}"]) for axis in "zyx"]
        origin = [int(round(c)) - n // 2 for c, n in zip(centre, self.shape, strict=True)]
        return torch.from_numpy(window(pixels, origin, self.shape)), int(row["label"])


def rate(loader: DataLoader, batches: int) -> float:
    start, seen = time.perf_counter(), 0
    for _ in loader:
        seen += 1
        if seen == batches:
            break
    return seen / (time.perf_counter() - start)


def training_step(queue) -> None:
    """In a fresh process: build efficientnet3d_b0, then time 3 steps; peak RSS added by the steps."""
    torch.set_num_threads(torch.get_num_threads())
    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose("config", overrides=["dataset=cellpainting3d", "backbone=efficientnet3d_b0", "head=linear"])
    model = build_model(cfg, 4, InputConfig(image_size=32, in_chans=5, channels=5, depth=12))
    optimizer = torch.optim.AdamW(model.parameters())
    x, y = torch.randn(BATCH, 5, 12, 32, 32), torch.randint(0, 4, (BATCH,))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(3):
        start = time.perf_counter()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    added = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    queue.put((float(np.median(times[1:])), added / 2**10, sum(p.numel() for p in model.parameters())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cellexp-3d"))
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    shutil.rmtree(args.workdir / "cache", ignore_errors=True)
    open_plate(dataset_cfg(args.workdir, "warm"))  # generates the plate: not what row 1 measures
    start = time.perf_counter()
    plate = open_plate(dataset_cfg(args.workdir, "cache"))
    prepared = time.perf_counter() - start
    crops = plate.store.summary["crops"]
    manifest = plate.store.manifest()
    root = args.workdir / "data" / "cellpainting3d" / "seed0" / "images"
    per_sample = TiffCells(root, manifest, 12, 32)
    start = time.perf_counter()
    for i in range(0, len(manifest), max(1, len(manifest) // 50)):
        per_sample[i]
    read_one = (time.perf_counter() - start) / len(range(0, len(manifest), max(1, len(manifest) // 50)))
    print(f"1 preparation: {crops} crops in {prepared:.1f} s on one worker = {crops / prepared:.1f} crops/s/core; "
          f"one per-sample TIFF window read {read_one * 1e3:.1f} ms: a prepared crop costs "
          f"{prepared / crops / read_one:.1f} reads")  # fmt: skip
    store = CropStore({"cells": plate.store}, plate.class_names)
    stored = DataLoader(
        CropDataset(store, "cells", rows=plate.rows["train"]), batch_size=BATCH, shuffle=True, collate_fn=collate_batch
    )
    tiff = DataLoader(torch.utils.data.Subset(per_sample, plate.rows["train"]), batch_size=BATCH, shuffle=True)
    fast, slow = rate(stored, args.batches), rate(tiff, args.batches)
    print(f"2 loader, batches of {BATCH}: store {fast:.1f} batch/s, per-sample TIFF {slow:.1f} batch/s, "
          f"ratio {fast / slow:.1f} (goal >= 5)")  # fmt: skip
    queue = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(target=training_step, args=(queue,))
    process.start()
    seconds, added_mib, params = queue.get()
    process.join()
    print(f"3 efficientnet3d_b0 ({params / 1e6:.1f} M parameters) training step, batch {BATCH} of 5x12x32x32, "
          f"fp32, {torch.get_num_threads()} threads: {seconds:.2f} s/step, peak memory +{added_mib:.0f} MiB over the "
          "built model")  # fmt: skip


if __name__ == "__main__":
    main()
