"""Seconds per frame of patch selection on CLANet-sized (1408x890) brightfield frames, on one CPU core.

    python benchmarks/bench_patches.py [--frames 8] [--repeats 3] [--downsample 2] [--size 112] [--top-k 16]

Frames come from the synthetic time-lapse generator (cells at CLANet's scale); the mask at full resolution
(downsample 1) and at the configured downsample are timed on the same frames in each repeat, so machine
noise hits both alike; medians over the repeats. The target is under 0.25 s per frame.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from cellexp.data.patches import PatchSettings, select_patches  # noqa: E402
from cellexp.data.timelapse_synthetic import MORPHOLOGIES, draw_batch_look, render_frame  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--downsample", type=int, default=2)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--top-k", type=int, default=16)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frames = [
        render_frame(rng, 890, 1408, MORPHOLOGIES[i % len(MORPHOLOGIES)], draw_batch_look(rng), 250, 0.35, 4.0)
        for i in range(args.frames)
    ]
    timings: dict[int, list[float]] = {1: [], args.downsample: []}
    kept = {}
    for _ in range(args.repeats):
        for downsample in timings:
            settings = PatchSettings(size=args.size, top_k=args.top_k, downsample=downsample)
            start = time.perf_counter()
            kept[downsample] = [len(select_patches(frame, settings).corners) for frame in frames]
            timings[downsample].append((time.perf_counter() - start) / len(frames))
    for downsample, seconds in timings.items():
        print(
            f"downsample {downsample}: {statistics.median(seconds):.3f} s per 1408x890 frame "
            f"(median of {args.repeats}), {np.mean(kept[downsample]):.1f} patches kept per frame"
        )
    full, fast = (statistics.median(timings[d]) for d in (1, args.downsample))
    print(f"downsample {args.downsample} is {full / fast:.1f}x faster than full resolution; target < 0.25 s")


if __name__ == "__main__":
    main()
