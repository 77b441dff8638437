"""Cells per second of Grad-CAM and Grad-CAMO, a batch at a time (as task=xai runs them) against one cell at a time.

    python benchmarks/bench_xai.py [--device cpu|cuda] [--backbone resnet18] [--family cnn] [--head linear]
        [--image-size 128] [--cells 64] [--batch 32] [--threads 2] [--repeats 3]

One model (random weights: speed does not depend on training) explains the same cells both ways in
each repeat, batched then single, so that machine noise hits both alike; medians over the repeats.
Grad-CAM goes through `cellexp.xai.cams.cam_maps` (pytorch-grad-cam, target layer and reshape as
task=xai picks them); Grad-CAMO through `cellexp.xai.gradcamo.gradcamo` on the maps just made, in
batches of the same size.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import numpy as np
import torch

from cellexp.data.transforms import BatchTransform
from cellexp.models.backbones import timm_backbone
from cellexp.models.classifier import CellClassifier
from cellexp.models.heads import LinearHead
from cellexp.models.tensor_network import graph_head
from cellexp.xai.cams import cam_maps
from cellexp.xai.gradcamo import gradcamo
from cellexp.xai.targets import default_target_layer, find_layer, reshape_transform

HEADS = {"linear": LinearHead, "elegans": partial(graph_head, graph="elegans", dim=64, num_heads=4)}


def cells(count: int, size: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 crops (N, 1, S, S) of bright discs on black, and their masks: the shape of real crops."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.stack(
        [
            (yy - rng.uniform(0.3, 0.7) * size) ** 2 + (xx - rng.uniform(0.3, 0.7) * size) ** 2 < (size / 4) ** 2
            for _ in range(count)
        ]
    ).astype(np.uint8)
    images = rng.integers(60, 200, size=masks.shape, dtype=np.uint8) * masks
    return torch.from_numpy(images)[:, None], masks


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--family", default="cnn")
    parser.add_argument("--head", default="linear", choices=sorted(HEADS))
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--cells", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    size = args.image_size
    backbone = timm_backbone(args.backbone, args.family, in_chans=1, image_size=size)
    head = HEADS[args.head](in_features=backbone.num_features, num_classes=8)
    model = CellClassifier(backbone, head).to(device).eval()
    crops, masks = cells(args.cells, size)
    transform = BatchTransform(size)
    inputs = lambda chunk: transform(crops[chunk].to(device))  # noqa: E731
    layer_name = default_target_layer(model, size)
    layer, reshape = find_layer(model, layer_name), reshape_transform(model.backbone, size)
    targets = np.arange(args.cells) % 8

    def gradcam(batch: int) -> np.ndarray:
        return np.concatenate(list(cam_maps("gradcam", model, layer, reshape, inputs, targets, batch)))

    def camo(maps: np.ndarray, batch: int) -> np.ndarray:
        """Grad-CAMO a batch at a time, as task=xai scores each batch of maps it gets."""
        return np.concatenate([gradcamo(maps[i : i + batch], masks[i : i + batch]) for i in range(0, len(maps), batch)])

    gradcam(args.batch)  # warm-up: allocator, thread pools, lazy imports
    runs: dict[str, list[float]] = {k: [] for k in ("cam_batched", "cam_single", "camo_batched", "camo_single")}
    for _ in range(args.repeats):
        seconds, maps = timed(gradcam, args.batch)
        runs["cam_batched"].append(seconds)
        seconds, single_maps = timed(gradcam, 1)
        runs["cam_single"].append(seconds)
        np.testing.assert_allclose(maps, single_maps, atol=1e-4)  # same maps either way
        seconds, scores = timed(camo, maps, args.batch)
        runs["camo_batched"].append(seconds)
        seconds, single_scores = timed(camo, maps, 1)
        runs["camo_single"].append(seconds)
        np.testing.assert_allclose(scores, single_scores)
    rate = {k: args.cells / statistics.median(v) for k, v in runs.items()}
    print(
        f"{args.backbone} ({args.family}) + {args.head} head, {size} px, {args.cells} cells, batch {args.batch}, "
        f"{device}, {args.threads} threads, target layer {layer_name}, median of {args.repeats}"
    )
    print(f"{'':12s} {'batched':>12s} {'one at a time':>14s} {'ratio':>7s}")
    for name, key in (("Grad-CAM", "cam"), ("Grad-CAMO", "camo")):
        batched, single = rate[f"{key}_batched"], rate[f"{key}_single"]
        print(f"{name:12s} {batched:9.1f} c/s {single:11.1f} c/s {batched / single:6.2f}x")
    both = [args.cells / (c + o) for c, o in zip(runs["cam_batched"], runs["camo_batched"], strict=True)]
    print(f"Grad-CAM + Grad-CAMO batched: {statistics.median(both):.1f} cells/s")


if __name__ == "__main__":
    main()
