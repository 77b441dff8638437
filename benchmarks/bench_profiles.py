"""Speed of the profile analysis: sphering and retrieval mAP over a plate-sized table, and 3-D Grad-CAM.

    python benchmarks/bench_profiles.py [--cells 100000] [--features 1280] [--wells 384] [--batch 32] [--repeats 5]

Profiles: a synthetic table of --cells single-cell profiles of --features features over --wells wells (48
treatments, DMSO among them); seconds and peak resident memory of sphering on the controls (DeepProfiler's ZCA)
and of profile_quality (copairs: well-level profiles, and single cells capped at profiles.quality.MAX_CELLS,
since pairs grow with the square of the cells). 3-D Grad-CAM: the tiny 3-D EfficientNet on a batch of (5, 12, 32,
32) crops: explained cells per second and the time of one batch's Grad-CAM over a plain forward pass of it.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import pandas as pd
import torch


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(cells: int, features: int, wells: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    treatments = ["DMSO", *(f"cmpd_{i}" for i in range(47))]
    well_treatment = np.arange(wells) % len(treatments)
    well = rng.integers(0, wells, cells)
    shift = rng.normal(size=(len(treatments), features)).astype(np.float32)
    shift[0] = 0
    x = rng.normal(size=(cells, features)).astype(np.float32) + shift[well_treatment[well]]
    meta = pd.DataFrame({
        "Metadata_Plate": "P1", "Metadata_Well": [f"W{w:03d}" for w in well],
        "Metadata_Compound": np.array(treatments)[well_treatment[well]], "Metadata_Dose": 1.0,
        "Metadata_pert_type": np.where(well_treatment[well] == 0, "control", "trt"),
    })  # fmt: skip
    return pd.concat([meta, pd.DataFrame(x, columns=[f"Feature_{i}" for i in range(features)])], axis=1)


def profiles(args) -> None:
    from cellexp.profiles.quality import profile_quality
    from cellexp.profiles.sphering import sphere_table

    data = table(args.cells, args.features, args.wells)
    print(f"table: {args.cells} cells x {args.features} features, {args.wells} wells; peak {peak_mb():.0f} MB")
    started = time.perf_counter()
    sphered, _ = sphere_table(data)
    print(f"sphering on controls: {time.perf_counter() - started:.1f} s; peak {peak_mb():.0f} MB")
    started = time.perf_counter()
    metrics = profile_quality(sphered, null_size=1000)
    print(f"profile_quality (copairs): {time.perf_counter() - started:.1f} s; peak {peak_mb():.0f} MB")
    print("  " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))


def gradcam_3d(args) -> None:
    from cellexp.data.transforms import InputConfig
    from cellexp.models.backbones3d import efficientnet3d
    from cellexp.models.classifier import CellClassifier
    from cellexp.models.heads import LinearHead
    from cellexp.xai.cams import cam_maps
    from cellexp.xai.targets import default_target_layer, find_layer

    backbone = efficientnet3d("test", in_chans=5, image_size=32)
    backbone.input_config = InputConfig(image_size=32, in_chans=5, channels=5, depth=12)
    model = CellClassifier(backbone, LinearHead(backbone.num_features, 6)).eval()
    layer = find_layer(model, default_target_layer(model, 32))
    x = torch.randn(args.batch, 5, 12, 32, 32)
    targets = np.zeros(args.batch, np.int64)
    forward, cams = [], []
    for _ in range(args.repeats + 1):  # the first round warms up
        started = time.perf_counter()
        with torch.no_grad():
            model(x)
        forward.append(time.perf_counter() - started)
        started = time.perf_counter()
        list(cam_maps("gradcam", model, layer, None, lambda c: x[c], targets, args.batch))
        cams.append(time.perf_counter() - started)
    f, c = statistics.median(forward[1:]), statistics.median(cams[1:])
    print(
        f"3-D Grad-CAM, batch {args.batch} of (5, 12, 32, 32), {torch.get_num_threads()} threads: "
        f"{args.batch / c:.1f} cells/s; {c * 1000:.0f} ms vs forward {f * 1000:.0f} ms, ratio {c / f:.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=1280)
    parser.add_argument("--wells", type=int, default=384)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    gradcam_3d(args)
    profiles(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
