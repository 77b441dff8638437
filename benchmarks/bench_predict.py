"""task=predict's speed on CPU against the test loop's evaluation of the same cells, side by side in one run.

    python benchmarks/bench_predict.py [--images-per-line 1] [--backbone test_resnet] [--batch 256] [--repeats 5]

The same generated images (704x520) go three ways through the same model (random weights: speed only):
  eval     the crop store's test split through a DataLoader and the model, as the test loop evaluates
  predict  task=predict's path with the images' COCO outlines: read, rasterise, cut, classify (no segmentation)
  segment  the same with the built-in segmenter finding the cells
each --repeats times, interleaved; printed: the best rate of each, their ratio, and the median ratio of the runs
made back to back (other jobs on a shared machine slow single runs; target: predict/eval >= 0.8).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

import cellexp  # noqa: F401  (registers resolvers)
from cellexp.data.datamodule import eval_loader, load_crop_data
from cellexp.plates.cells import crop_settings
from cellexp.plates.files import find_images
from cellexp.plates.inference import classify_crops
from cellexp.plates.outlines import CocoMasks
from cellexp.plates.plate import predict_plate
from cellexp.plates.segment import Segmenter, SegmenterSettings
from cellexp.tracking.loading import build_model

CONF = Path(__file__).resolve().parent.parent / "conf"
PATTERN = r"_(?P<well>[A-Za-z]{1,2}\d{1,3})_(?P<site>\d+)_(?P<time>\d+d\d+h\d+m)"


@torch.no_grad()
def eval_rate(model, transform, dataset, batch: int) -> float:
    start, cells = time.perf_counter(), 0
    for crops, _labels in eval_loader(dataset, batch, 0):
        model(transform(crops))
        cells += len(crops)
    return cells / (time.perf_counter() - start)


def predict_rate(images, source, classify, settings, inputs, batch: int) -> tuple[float, int]:
    result = predict_plate(images, source, classify, settings, inputs, batch)
    return len(result.rows) / sum(result.seconds.values()), len(result.rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-line", type=int, default=1)
    parser.add_argument("--backbone", default="test_resnet")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(config_dir=str(CONF)):
        cfg = compose(
            "config",
            overrides=[
                f"paths.data_dir={tmp}",
                f"paths.cache_dir={tmp}/cache",
                f"backbone={args.backbone}",
                f"dataset.generate.images_per_line={{train:0,val:0,test:{args.images_per_line}}}",
            ],
        )
        data = load_crop_data(cfg.dataset, seed=0)
        model = build_model(cfg, num_classes=8).eval()
        inputs = model.input_config
        transform = inputs.transform()
        root = Path(cfg.dataset.root)
        images, _ = find_images([str(root / "images" / "livecell_test_images")], PATTERN)
        settings = crop_settings(cfg.dataset)
        classify = partial(classify_crops, model, transform, batch_size=args.batch, device=torch.device("cpu"))
        coco = root / "annotations" / "LIVECell" / "livecell_coco_test.json"
        eval_rate(model, transform, data.splits["test"], args.batch)  # warm-up
        rates: dict[str, list] = {"eval": [], "predict": [], "segment": []}
        for _ in range(args.repeats):  # interleaved: other jobs on a shared machine slow single runs
            rates["eval"].append(eval_rate(model, transform, data.splits["test"], args.batch))
            rates["predict"].append(predict_rate(images, CocoMasks(coco), classify, settings, inputs, args.batch))
            segmenter = Segmenter(SegmenterSettings(seed_depth=3.0))
            rates["segment"].append(predict_rate(images, segmenter, classify, settings, inputs, args.batch))
    threads = torch.get_num_threads()
    print(f"{len(images)} images 704x520, backbone {args.backbone}, batch {args.batch}, {threads} threads")
    evaluated = max(rates["eval"])
    print(f"eval loop (crop store):       best {evaluated:7.1f} cells/s  ({len(data.splits['test'])} cells)")
    for key, name in (("predict", "COCO outlines"), ("segment", "built-in segmenter")):
        rate, count = max(rates[key])
        pairs = sorted(p[0] / e for p, e in zip(rates[key], rates["eval"], strict=True))
        print(
            f"predict, {name + ':':20} best {rate:7.1f} cells/s  ({count} cells)  ratio of bests "
            f"{rate / evaluated:.2f}; of each pair: median {pairs[len(pairs) // 2]:.2f} "
            f"({pairs[0]:.2f}-{pairs[-1]:.2f})"
        )


if __name__ == "__main__":
    main()
