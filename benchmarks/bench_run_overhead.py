"""Seconds a `train.py` process takes, start to exit, for the quick job and for evaluating it: this checkout against
another one, and where the time goes on imports.

    python benchmarks/bench_run_overhead.py [--before /tmp/head] [--repeats 3] [--set logger.system_metrics=false]
        [--no-importtime]

The two kinds of run are the README's quick job, `python train.py debug=default` (it trains timm's tiny ResNet for
4 epochs on 512 crops of each split, then tests it and logs it as an MLflow model), and `python train.py
task.fit=false ckpt=<that run's folder> debug=default` (it evaluates the trained run on the test split). Both track
to a SQLite MLflow store under a temporary root (`paths.root_dir`), as a run does by default; the data are generated
once there, by an untimed first run of each checkout, whose folder the evaluations name.

`--before` is a checkout of the old code (e.g. `git archive main | tar -x -C /tmp/head`), run with this project's
interpreter; its `train.py` imports its own `cellexp`. The checkouts run in turn, run by run, so that the machine's
load falls on both alike; each figure is the median wall time over `--repeats` processes. With importtime on, one
more process of each kind and checkout runs under `python -X importtime`: the seconds spent importing (the sum of
every module's own time) and the packages that took longest (a package's modules summed, whoever imported them).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICK_JOB = ["debug=default"]
TOP_PACKAGES = 8
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)")


def environment() -> dict[str, str]:
    """This environment without an MLflow store or sweep of its own (they would win over the config's)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CELLEXP_"))}


def train(checkout: Path, overrides: list[str], workdir: Path, run_dir: Path, importtime: bool = False):
    """`python train.py <overrides>` in `checkout`, all its files under `workdir`: (wall seconds, CPU seconds, stderr).
    CPU seconds (user + system, the process and its children) move less than wall time on a machine shared with
    other jobs."""
    flags = ["-X", "importtime"] if importtime else []
    command = [sys.executable, *flags, "train.py", *overrides, f"paths.root_dir={workdir}", f"hydra.run.dir={run_dir}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=checkout, capture_output=True, text=True, env=environment())
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {checkout}:\n{result.stderr[-3000:]}")
    return elapsed, cpu, result.stderr


def import_seconds(stderr: str) -> tuple[float, list[tuple[str, float]]]:
    """`-X importtime`'s report: total seconds importing, and the packages that took longest (own times summed)."""
    packages, total = Counter(), 0
    for line in stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match:
            own = int(match[1])
            packages[match[2].split(".")[0]] += own
            total += own
    return total / 1e6, [(name, us / 1e6) for name, us in packages.most_common(TOP_PACKAGES)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="a checkout of the old code, timed beside this one")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], help="overrides given to every run (e.g. logger.x=y)")
    parser.add_argument("--no-importtime", dest="importtime", action="store_false")
    args = parser.parse_args()
    checkouts = {"after": ROOT} if args.before is None else {"before": args.before, "after": ROOT}
    with tempfile.TemporaryDirectory(prefix="run_overhead_") as tmp:
        workdir = Path(tmp)
        trained = {}
        for name, checkout in checkouts.items():  # untimed: generates the data, gives each checkout a run to evaluate
            trained[name] = workdir / f"trained_{name}"
            train(checkout, [*QUICK_JOB, *args.set], workdir, trained[name])
        kinds = {
            "quick job": lambda name: [*QUICK_JOB, *args.set],
            "evaluate": lambda name: ["task.fit=false", f"ckpt={trained[name]}", *QUICK_JOB, *args.set],
        }
        times = {(kind, name): [] for kind in kinds for name in checkouts}
        cpus = {(kind, name): [] for kind in kinds for name in checkouts}
        count = 0
        for _ in range(args.repeats):
            for kind, overrides in kinds.items():
                for name, checkout in checkouts.items():
                    count += 1
                    seconds, cpu, _ = train(checkout, overrides(name), workdir, workdir / f"run_{count}")
                    times[kind, name].append(seconds)
                    cpus[kind, name].append(cpu)
        print(f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at the end")
        print(f"{'run':<10} {'code':<7} {'wall s':>7} {'min':>7} {'max':>7} {'CPU s':>7}  (medians of {args.repeats})")
        for (kind, name), values in times.items():
            cpu = statistics.median(cpus[kind, name])
            print(
                f"{kind:<10} {name:<7} {statistics.median(values):>7.2f} {min(values):>7.2f} {max(values):>7.2f} "
                f"{cpu:>7.2f}"
            )
        if args.importtime:
            print(f"\nimports, one `python -X importtime` process each: total s, the {TOP_PACKAGES} slowest packages")
            for kind, overrides in kinds.items():
                for name, checkout in checkouts.items():
                    count += 1
                    _, _, stderr = train(checkout, overrides(name), workdir, workdir / f"run_{count}", importtime=True)
                    total, top = import_seconds(stderr)
                    shown = "  ".join(f"{package} {seconds:.2f}" for package, seconds in top)
                    print(f"{kind:<10} {name:<7} {total:>6.2f}   {shown}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
