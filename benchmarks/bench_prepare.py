"""Crop preparation speed on LIVECell-sized images: our per-box path against whole-image annToMask.

    python benchmarks/bench_prepare.py [--images 8] [--density 3.6] [--workers 2]

Both paths cut the same cells of the same 704x520 images (about 300 cells each, as in LIVECell)
into the same masked, squared crops, one core each, in one run. The common way rasterises every
annotation over the whole image (pycocotools `annToMask`) and masks the whole image before cutting
the box out; ours rasterises each polygon inside its own box. Then the whole preparation (reading,
cutting, writing shards) runs through `prepare_crop_store` with `--workers` processes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from cellexp.data.crops import cell_box, square_fit, square_mask
from cellexp.data.livecell.coco import load_coco
from cellexp.data.livecell.prepare import CropSettings, _livecell_cells, prepare_crop_store, read_gray
from cellexp.data.livecell.sources import find_livecell_sources
from cellexp.data.pixels import read_pixels
from cellexp.data.synthetic.livecell import generate_synthetic_livecell

LIVECELL_CELLS = 1_600_000


def whole_image_crops(coco, image_id: int, pixels: np.ndarray, size: int) -> int:
    """The common way: annToMask over the whole image, mask the image, cut the box, square it."""
    made = 0
    for ann in coco.imgToAnns[image_id]:
        mask = coco.annToMask(ann)
        x0, y0, x1, y1 = cell_box(ann["bbox"], *pixels.shape)
        cell = (pixels * mask)[y0:y1, x0:x1]
        square_mask(mask[y0:y1, x0:x1], size)
        square_fit(cell, size, Image.Resampling.BILINEAR)
        made += 1
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8, help="train images per cell line")
    parser.add_argument("--density", type=float, default=3.6, help="synthetic cell density (3.6: ~300 cells/image)")
    parser.add_argument("--crop-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "livecell"
        per_line = {"train": args.images, "val": 1, "test": 1}
        generate_synthetic_livecell(root, seed=0, images_per_line=per_line, density=args.density)
        sources = find_livecell_sources(root)
        coco = load_coco(sources["train"].annotation_file)
        ids = sorted(coco.imgs)
        images = {i: read_gray(sources["train"].image_dir / coco.imgs[i]["file_name"]) for i in ids}
        cells = sum(len(coco.imgToAnns[i]) for i in ids)
        settings = CropSettings(crop_size=args.crop_size)

        started = time.perf_counter()
        for i in ids:
            _livecell_cells(
                coco.imgs[i]["file_name"],
                read_pixels(sources["train"].image_dir / coco.imgs[i]["file_name"]),
                coco.imgToAnns[i],
                settings,
                {"dropped": Counter(), "invalid_cells": []},
            )
        ours = cells / (time.perf_counter() - started)

        started = time.perf_counter()
        for i in ids:
            whole_image_crops(coco, i, images[i], args.crop_size)
        common = cells / (time.perf_counter() - started)

        started = time.perf_counter()
        store = prepare_crop_store({"train": sources["train"]}, settings, Path(tmp) / "cache", workers=args.workers)
        elapsed = time.perf_counter() - started
        total = len(store.labels("train"))

    print(f"{len(ids)} images of 704x520, {cells / len(ids):.0f} cells each, crop_size {args.crop_size}:")
    print(f"  per-box rasterising (ours, incl. reading the image): {ours:8.0f} crops/s per core")
    print(f"  whole-image annToMask (the common way):              {common:8.0f} crops/s per core")
    print(f"  ratio ours / common: {ours / common:.1f}x")
    print(
        f"whole preparation (read, cut, write shards) with {args.workers} workers: {total / elapsed:.0f} crops/s "
        f"({total / elapsed / args.workers:.0f} per core, startup included)"
    )
    print(
        f"projected for LIVECell's {LIVECELL_CELLS:,} cells: {LIVECELL_CELLS / ours / 60:.1f} min on one core, "
        f"{LIVECELL_CELLS / ours / 60 / 16:.1f} min on 16 (common way: {LIVECELL_CELLS / common / 60:.1f} min on one)"
    )


if __name__ == "__main__":
    main()
