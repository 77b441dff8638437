"""Grad-CAMO as a regulariser on the confounded synthetic benchmark: plain against regularised, over seeds.

    python benchmarks/bench_camo.py [--seeds 0 1 2] [--epochs 10] [--weight 5] [--workdir /tmp/cellexp-camo]
        [--backbone test_resnet] [--layer backbone.layer2] [--batch 64] [--steps 10]

The data (experiment=camo_regularised) hide a background grating outside the cells whose orientation names the
cell line in train and val and is drawn at random in test. Per seed, the same backbone, data and epochs train
twice, with task.camo.weight 0 (plain; Grad-CAMO still measured) and --weight; the table gives val balanced
accuracy (cue intact), test balanced accuracy (cue shuffled) and test Grad-CAMO (mean, share above 0.5).
Then the cost: one training step (forward, loss, backward) of each kind on the same batch, alternated, medians
of --steps, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("val/balanced_accuracy", "test/balanced_accuracy", "test/gradcamo_mean", "test/gradcamo_frac_above_0.5")


def train(args, seed: int, weight: float) -> dict[str, float]:
    """One run of train.py; its MLflow metrics."""
    folder = args.workdir / f"seed{seed}-w{weight:g}"
    uri = f"sqlite:///{args.workdir / 'mlflow.db'}"
    command = [
        sys.executable,
        "train.py",
        "experiment=camo_regularised",
        f"backbone={args.backbone}",
        "head=linear",
        "trainer.cpu=true",
        f"seed={seed}",
        f"trainer.max_epochs={args.epochs}",
        f"task.camo.weight={weight}",
        f"task.camo.layer={args.layer}",
        f"paths.data_dir={args.workdir / 'data'}",
        f"hydra.run.dir={folder}",
        f"logger.tracking_uri={uri}",
        f"logger.artifact_location=file://{args.workdir / 'mlartifacts'}",
        "logger.log_checkpoints=false",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CELLEXP_"))}
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    run_id = (folder / "mlflow_run_id").read_text().strip()
    return MlflowClient(uri).get_run(run_id).data.metrics


def step_times(args) -> tuple[float, float]:
    """Median seconds of a plain and of a regularised training step on the same batch, alternated."""
    from hydra import compose, initialize_config_dir

    from cellexp.tracking.loading import build_model
    from cellexp.xai.camo import GradCamo

    with initialize_config_dir(config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=["experiment=camo_regularised", f"backbone={args.backbone}", "head=linear"])
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=8).train()
    size = cfg.dataset.image_size
    x, labels = torch.randn(args.batch, 1, size, size), torch.randint(0, 8, (args.batch,))
    masks = torch.zeros(args.batch, 1, size, size)
    masks[:, :, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    camo = GradCamo(model, size, layer=args.layer)

    def plain() -> None:
        torch.nn.functional.cross_entropy(model(x), labels).backward()

    def regularised() -> None:
        with camo.capture():
            logits = model(x)
        share, _ = camo.inside_share(logits, labels, masks, create_graph=True)
        (torch.nn.functional.cross_entropy(logits, labels) + args.weight * (1 - share.mean())).backward()

    times = {plain: [], regularised: []}
    for _ in range(args.steps + 1):  # the first round warms up
        for step in times:
            model.zero_grad(set_to_none=True)
            started = time.perf_counter()
            step()
            times[step].append(time.perf_counter() - started)
    return statistics.median(times[plain][1:]), statistics.median(times[regularised][1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--weight", type=float, default=5.0)
    parser.add_argument("--backbone", default="test_resnet")
    parser.add_argument("--layer", default="backbone.layer2", help="task.camo.layer: test_resnet's 8x8 map at 64 px")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cellexp-camo"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    rows = []
    print(f"| seed | model | {' | '.join(COLUMNS)} |")
    print(f"|---|---|{'---|' * len(COLUMNS)}")
    for seed in args.seeds:
        for name, weight in (("plain", 0.0), (f"camo {args.weight:g}", args.weight)):
            metrics = train(args, seed, weight)
            rows.append((name, metrics))
            print(f"| {seed} | {name} | {' | '.join(f'{metrics[c]:.3f}' for c in COLUMNS)} |", flush=True)
    for name in dict.fromkeys(n for n, _ in rows):
        mine = [m for n, m in rows if n == name]
        means = [statistics.mean(m[c] for m in mine) for c in COLUMNS]
        print(f"| mean | {name} | {' | '.join(f'{v:.3f}' for v in means)} |")
    plain, regularised = step_times(args)
    print(
        f"\nstep on CPU, batch {args.batch}: plain {plain * 1000:.1f} ms, regularised {regularised * 1000:.1f} ms, "
        f"ratio {regularised / plain:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
