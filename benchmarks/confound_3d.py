"""The Grad-CAMO paper's claim on the generated 3-D plate: a model that can read a confound looks off the cell; and
its closing comparison of supervised with self-supervised profiles.

    python benchmarks/confound_3d.py [--seeds 0 1 2] [--epochs 20] [--confounds 0 1] [--models supervised dino]
        [--probe-epochs 10] [--backbone test_efficientnet3d] [--layers default backbone._conv_stem] [--reuse]
        [--workdir /tmp/cellexp-confound3d]

Per seed, the same model trains on dataset=cellpainting3d with each of the plate's --confounds (0: off; above 0, a
grating outside the cells whose period follows the treatment in train and val wells and is random in test wells),
as each of --models: `supervised` (task=classify, linear head, --epochs) or `dino` (task=ssl with 3-D multi-crop
for --epochs, then a linear head on its frozen backbone for --probe-epochs, whose embeddings are DINO's profiles).
Each classifier then explains every test cell with 3-D Grad-CAM (task=xai, xai.num_cells=null) at each of
--layers (`default`: the layer task=xai picks, the deepest that is still a volume, 3 x 8 x 8 on this network;
any other name is passed as xai.target_layer; the EfficientNets' stem, `backbone._conv_stem`, is a 6 x 16 x 16
map): the table gives test balanced accuracy, Grad-CAMO mean and share above 0.5 on the test cells,
and the replicate mAP and mAP against controls of the val and test wells' sphered profiles (task=classify's
profiles/quality.json). Expected: the confounded model's share is lower (it is at the stem, in every seed; at
the default layer both shares are about zero: docs/tasks/cellpainting3d.md). With --reuse, a training or explanation
whose folder under --workdir already holds its result is read rather than run again (another layer of the same
models costs only the explanations); without it, every folder is made afresh.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("test balanced acc", "Grad-CAMO mean", "share > 0.5", "replicate mAP", "mAP vs control")
# DINO at a CPU benchmark's size: a small projection head, two global and four local 3-D views, stains jittered apart
DINO = ("task=ssl", "head.out_dim=1024", "head.hidden_dim=256", "head.bottleneck_dim=64", "task.crops.local_count=4",
        "task.augment.per_channel=true")  # fmt: skip


def train_py(args, folder: Path, data_dir: Path, *overrides: str) -> str:
    command = [sys.executable, "train.py", "logger=none", "trainer.cpu=true", f"paths.data_dir={data_dir}",
               f"hydra.run.dir={folder}", *overrides]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CELLEXP_"))}
    done = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return done.stdout + done.stderr


def one(args, seed: int, confound: float, model: str) -> list[tuple[str, dict[str, float]]]:
    """(layer, figures) for each of --layers, of one model trained on one plate."""
    data = ["dataset=cellpainting3d", f"dataset.generate.confound={confound}", f"backbone={args.backbone}"]
    folder = args.workdir / f"seed{seed}-confound{confound:g}-{model}"
    # a plate per confound: the generated plate's folder is named by its seed only, and is reused once built
    data_dir = args.workdir / f"data-confound{confound:g}"
    accuracy = trained(args, folder, data_dir, seed, data, model)
    quality = json.loads((folder / "profiles" / "quality.json").read_text())
    profiles = (quality["profiles/map_replicate"], quality["profiles/map_vs_control"])
    found = []
    for layer in args.layers:
        scores = gradcamo_scores(args, folder, data_dir, seed, data, layer)
        figures = (accuracy, scores.mean(), (scores > 0.5).mean(), *profiles)
        found.append((layer, dict(zip(COLUMNS, figures, strict=True))))
    return found


def trained(args, folder: Path, data_dir: Path, seed: int, data: list[str], model: str) -> float:
    """The model's test balanced accuracy, training it unless --reuse finds its finished folder."""
    finished = folder / "train.log"
    if args.reuse and (folder / "profiles" / "quality.json").is_file() and finished.is_file():
        return balanced_accuracy_on_test(finished.read_text())
    training = [f"seed={seed}", "trainer.early_stopping=null"]
    if model == "dino":
        pretrained = folder.with_name(folder.name + "-ssl")
        train_py(args, pretrained, data_dir, *data, *DINO, *training, f"trainer.max_epochs={args.epochs}")
        training += [
            f"backbone.init_from={pretrained}",
            "backbone.freeze=true",
            f"trainer.max_epochs={args.probe_epochs}",
        ]
    else:
        training.append(f"trainer.max_epochs={args.epochs}")
    return balanced_accuracy_on_test(train_py(args, folder, data_dir, *data, "head=linear", *training))


def balanced_accuracy_on_test(log: str) -> float:
    """What a classify run's `test:` log line reports (logger=none leaves no MLflow run to read it from)."""
    return float(re.search(r"test/balanced_accuracy ([0-9.]+)", log).group(1))


def gradcamo_scores(args, folder: Path, data_dir: Path, seed: int, data: list[str], layer: str) -> np.ndarray:
    """Grad-CAMO of every test cell that has one, explained at `layer` (unless --reuse finds them)."""
    explained = folder.with_name(folder.name + ("-xai" if layer == "default" else f"-xai-{layer}"))
    table = explained / "xai" / "gradcam" / "gradcamo.csv"
    if not (args.reuse and table.is_file()):
        chosen = [] if layer == "default" else [f"xai.target_layer={layer}"]
        train_py(args, explained, data_dir, "task=xai", f"ckpt={folder}", *data, "xai.num_cells=null",
                 "xai.umap=false", f"seed={seed}", *chosen)  # fmt: skip
    with open(table, newline="") as f:
        scores = np.array([float(row["gradcamo"]) for row in csv.DictReader(f)])
    return scores[np.isfinite(scores)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--confounds", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--models", nargs="+", choices=("supervised", "dino"), default=["supervised"])
    parser.add_argument("--probe-epochs", type=int, default=10)
    parser.add_argument("--backbone", default="test_efficientnet3d")
    parser.add_argument("--layers", nargs="+", default=["default", "backbone._conv_stem"])
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cellexp-confound3d"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    keys = "| seed | confound | model | layer |"
    print(f"{keys} {' | '.join(COLUMNS)} |\n|{'---|' * (keys.count('|') - 1 + len(COLUMNS))}", flush=True)
    rows = []
    for seed in args.seeds:
        for confound in args.confounds:
            for model in args.models:
                for layer, found in one(args, seed, confound, model):
                    rows.append(((confound, model, layer), found))
                    figures = " | ".join(f"{found[c]:.3f}" for c in COLUMNS)
                    print(f"| {seed} | {confound:g} | {model} | {layer} | {figures} |", flush=True)
    for key in dict.fromkeys(k for k, _ in rows):
        means = " | ".join(f"{statistics.mean(r[c] for k, r in rows if k == key):.3f}" for c in COLUMNS)
        print(f"| mean | {key[0]:g} | {key[1]} | {key[2]} | {means} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
