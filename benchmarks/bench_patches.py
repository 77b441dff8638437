"""Seconds per frame of patch selection on CLANet-sized brightfield frames, on one CPU core.

    python benchmarks/bench_patches.py [--frames 8] [--repeats 3] [--downsample 2] [--size 112] [--top-k 16]

Frames come from the synthetic time-lapse generator (cells at CLANet's scale). Two comparisons, each timed on the
same frames in each repeat, so machine noise hits both sides alike; medians over the repeats:
- 1408x890 frames (CLANet's working frame): our mask at full resolution (downsample 1) and at --downsample;
- 1408x1040 frames (CLANet's raw frame): our selection (at --downsample) and the published one
  (method=published: CLANet's preprocessing, mask and selection, the bottom 150 rows cut, 40 components, top 20).
The target is under 0.25 s per frame for each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from cellexp.data.synthetic.timelapse import MORPHOLOGIES, draw_batch_look, render_frame  # noqa: E402
from cellexp.data.timelapse.patches import PatchSettings, select_patches  # noqa: E402


def frames_of(rng: np.random.Generator, count: int, height: int, width: int) -> list[np.ndarray]:
    return [
        render_frame(rng, height, width, MORPHOLOGIES[i % len(MORPHOLOGIES)], draw_batch_look(rng), 250, 0.35, 4.0)
        for i in range(count)
    ]


def timed(frames: list[np.ndarray], cases: dict[str, PatchSettings], repeats: int) -> dict[str, tuple[float, float]]:
    """Median seconds per frame and mean patches kept per frame of each case."""
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    kept: dict[str, list[int]] = {}
    for _ in range(repeats):
        for name, settings in cases.items():
            start = time.perf_counter()
            kept[name] = [len(select_patches(frame, settings).corners) for frame in frames]
            seconds[name].append((time.perf_counter() - start) / len(frames))
    return {name: (statistics.median(seconds[name]), float(np.mean(kept[name]))) for name in cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--downsample", type=int, default=2)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--top-k", type=int, default=16)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    rng = np.random.default_rng(0)
    ours = PatchSettings(size=args.size, top_k=args.top_k, downsample=args.downsample)
    working = timed(
        frames_of(rng, args.frames, 890, 1408),
        {"full": PatchSettings(size=args.size, top_k=args.top_k, downsample=1), "fast": ours},
        args.repeats,
    )
    for name, downsample in (("full", 1), ("fast", args.downsample)):
        seconds, kept = working[name]
        print(
            f"downsample {downsample}: {seconds:.3f} s per 1408x890 frame (median of {args.repeats}), "
            f"{kept:.1f} patches kept per frame"
        )
    print(f"downsample {args.downsample} is {working['full'][0] / working['fast'][0]:.1f}x faster than full resolution")
    published = PatchSettings(size=args.size, top_k=20, method="published", crop_bottom=150, components=40)
    raw = timed(frames_of(rng, args.frames, 1040, 1408), {"ours": ours, "published": published}, args.repeats)
    for name, (seconds, kept) in raw.items():
        print(f"{name:9s}: {seconds:.3f} s per 1408x1040 frame (median of {args.repeats}), {kept:.1f} patches kept")
    print(f"published / ours: {raw['published'][0] / raw['ours'][0]:.2f}x the time; target < 0.25 s per frame each")


if __name__ == "__main__":
    main()
