"""Kill a small run with SIGKILL at random moments, resume it, and check it ends with the uninterrupted run's metrics.

    python benchmarks/fault_injection.py [--trials 20] [--seed 0] [--workdir /tmp/cellexp-faults]

A reference run gives the test metrics and its wall time T. Each trial starts the same run in its own folder,
kills its whole process group with SIGKILL after a uniform random delay in [0, T] (during generation, preparation,
training, a checkpoint write, testing, MLflow writes: wherever it is), then reruns it with `trainer.resume=auto`
until it exits 0 (at most 3 times) and compares its test metrics with the reference's. Data and the MLflow store
are shared by all trials, so a kill during preparation also leaves the shared crop store to the next run.
Prints one line per trial and the count of trials that ended with identical metrics.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parent.parent
RUN = [
    "backbone=test_resnet",
    "head=linear",
    "trainer.cpu=true",
    "dataset.crop_size=48",
    "dataset.image_size=32",
    "trainer.batch_size=32",
    "trainer.max_epochs=3",
    "dataset.limit=192",
    "trainer.early_stopping=null",
    "dataset.generate.images_per_line={train:3,val:1,test:1}",
    "logger.experiment_name=faults",
]


def command(workdir: Path, folder: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "train.py",
        *RUN,
        f"hydra.run.dir={folder}",
        f"paths.data_dir={workdir / 'data'}",
        f"logger.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
        f"logger.artifact_location=file://{workdir / 'mlartifacts'}",
        *extra,
    ]


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CELLEXP_"))}


def test_metrics(workdir: Path, folder: Path) -> dict[str, float]:
    run_id = (folder / "mlflow_run_id").read_text().strip()
    run = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}").get_run(run_id)
    return {k: v for k, v in run.data.metrics.items() if k.startswith("test/")}


def last_log_line(folder: Path) -> str:
    log = folder / "train.log"
    lines = log.read_text().strip().splitlines() if log.is_file() else []
    return lines[-1].split("] ", 1)[-1][:70] if lines else "(no log yet)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cellexp-faults"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)

    started = time.perf_counter()
    reference = args.workdir / "reference"
    subprocess.run(command(args.workdir, reference), cwd=ROOT, env=environment(), check=True, capture_output=True)
    wall = time.perf_counter() - started
    expected = test_metrics(args.workdir, reference)
    print(f"reference: {wall:.1f} s, {len(expected)} test metrics")

    identical = 0
    for trial in range(args.trials):
        folder = args.workdir / f"trial_{trial:02d}"
        delay = rng.uniform(0, wall)
        process = subprocess.Popen(
            command(args.workdir, folder),
            cwd=ROOT,
            env=environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(delay)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        where = last_log_line(folder)
        attempts, code = 0, None
        while attempts < 3 and code != 0:
            attempts += 1
            done = subprocess.run(
                command(args.workdir, folder, "trainer.resume=auto"), cwd=ROOT, env=environment(), capture_output=True
            )
            code = done.returncode
        same = code == 0 and test_metrics(args.workdir, folder) == expected
        identical += same
        outcome = "identical metrics" if same else f"DIFFERENT (exit {code}): {done.stderr.strip()[-200:]}"
        print(f"trial {trial:2d}: killed after {delay:5.1f} s at '{where}'; {attempts} resume(s): {outcome}")
    print(f"{identical} of {args.trials} killed runs resumed to the uninterrupted run's test metrics")
    return 0 if identical == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
