"""Wall time of one Optuna sweep without pruning and with the median pruner, side by side.

    python benchmarks/bench_pruning.py [--trials 8] [--epochs 6] [--workdir /tmp/cellexp-pruning]

Both sweeps run `python train.py -m hparams_search=optuna` on the same small synthetic data (generated once,
before either is timed), with the same seeded sampler over two learning rates: one that trains (1e-2) and one that
cannot lower the objective, the training loss (1e-9). The only difference is `tuning.pruner` (none, median). The
sweep's own estimate of the time pruning saved (optimization_results.yaml) is printed beside the measured one.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from cellexp.config import project_root

TINY = [
    "backbone=test_resnet",
    "dataset.crop_size=48",
    "dataset.image_size=32",
    "trainer.batch_size=32",
    "trainer.cpu=true",
    "dataset.generate.images_per_line={train:3,val:1,test:1}",
    "dataset.limit=64",
]


def train(root: Path, data: Path, *overrides: str) -> None:
    command = [sys.executable, "train.py", *TINY, f"paths.root_dir={root}", f"paths.data_dir={data}", *overrides]
    result = subprocess.run(command, cwd=project_root(), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")


def timed_sweep(root: Path, data: Path, pruner: str, trials: int, epochs: int) -> tuple[float, dict]:
    search = "{optim.optimizer.lr:'choice(1e-2,1e-9)',trainer.batch_size:'32',optim.optimizer.weight_decay:'0.05'}"
    started = time.perf_counter()
    train(
        root,
        data,
        "-m",
        "hparams_search=optuna",
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.custom_search_space=null",
        f"hydra.sweeper.params={search}",
        "task.optimized_metric=train/loss",
        "task.direction=minimize",
        f"trainer.max_epochs={epochs}",
        f"tuning.pruner={pruner}",
        "tuning.pruners.median.n_startup_trials=2",
        "tuning.pruners.median.n_warmup_steps=2",
    )
    elapsed = time.perf_counter() - started
    (sweep_dir,) = (root / "multirun").iterdir()
    return elapsed, OmegaConf.to_container(OmegaConf.load(sweep_dir / "optimization_results.yaml"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cellexp-pruning"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    data = args.workdir / "data"
    train(args.workdir / "warmup", data, "trainer.max_epochs=1", "logger=none")  # data and crop store, untimed
    rows = {
        pruner: timed_sweep(args.workdir / pruner, data, pruner, args.trials, args.epochs)
        for pruner in ("none", "median")
    }
    print(f"{args.trials} trials x up to {args.epochs} epochs, one at a time")
    print(f"{'pruner':8} {'wall s':>8} {'pruned':>7} {'best':>8} {'saved s (sweep estimate)':>25}")
    for pruner, (wall, results) in rows.items():
        print(
            f"{pruner:8} {wall:8.1f} {results['pruned_trials']:7d} {results['best_value']:8.4f} "
            f"{results['pruning_saved_s']:25.1f}"
        )
    (plain, _), (pruned, _) = rows["none"], rows["median"]
    print(f"sweep wall time with pruning / without: {pruned / plain:.2f}  (saved {plain - pruned:.1f} s)")


if __name__ == "__main__":
    main()
