"""Seconds until a bad input's error appears, for a few common slips: this checkout against another one.

    python benchmarks/bench_error_latency.py [--before /tmp/head] [--repeats 3]

`--before` is a checkout of the old code (e.g. `git archive HEAD | tar -x -C /tmp/head`), run with this
project's interpreter; its `train.py` imports its own `cellexp`. The two run in turn, case by case, so that
the machine's load falls on both alike. Each figure is the median wall time of `python train.py <case>`, from
start to exit (the error is its last line), MLflow on as by default (a store under a temporary root).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cellexp.config import project_root

CASES = {
    "unknown option": ["head=nope"],
    "bad value": ["trainer.max_epochs=-1"],
    "missing dataset folder": ["dataset=livecell", "dataset.root=/nonexistent/LIVECell"],
    "evaluate without ckpt": ["task.fit=false"],
}


def seconds(checkout: Path, overrides: list[str], workdir: Path) -> float:
    command = [sys.executable, "train.py", *overrides, f"paths.root_dir={workdir}"]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=checkout, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode == 0:
        raise SystemExit(f"{' '.join(overrides)} did not fail in {checkout}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the old code")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    checkouts = {"before": args.before, "after": Path(project_root())}
    with tempfile.TemporaryDirectory() as workdir:
        print(f"{'case':<24} {'before s':>9} {'after s':>9}")
        for case, overrides in CASES.items():
            times = {name: [] for name in checkouts}
            for _ in range(args.repeats):
                for name, checkout in checkouts.items():
                    times[name].append(seconds(checkout, overrides, Path(workdir)))
            medians = [statistics.median(times[name]) for name in checkouts]
            print(f"{case:<24} {medians[0]:>9.2f} {medians[1]:>9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
