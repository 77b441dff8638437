"""Disk taken by a 5-job head sweep of one-epoch ResNet-18 runs, per run, with this checkout and (--before) another.

    python benchmarks/bench_disk.py [--before /tmp/main] [--heads linear mlp elegans ba er] [--workdir DIR]

`--before` is a checkout of the old code (e.g. `git archive main | tar -x -C /tmp/main`), run with this
interpreter. Each checkout runs `python train.py -m debug=default backbone=resnet18 trainer.max_epochs=1
dataset.limit=256 head=<heads>` under its own root (run folders, mlflow.db, the artifact store: its MLflow models
included), on the data in --data-dir. Measured: the bytes on disk of the sweep's run folders and the artifact store
together, as du counts them (a file with several hard links once), and per run. This checkout must store each
run's weights once: the script fails if two separate files under those folders hold the same weights.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cellexp.config import project_root
from cellexp.tracking.handoff import disk_usage, human_size, weight_copies

SWEEP = ["debug=default", "backbone=resnet18", "trainer.max_epochs=1", "dataset.limit=256"]


def sweep(checkout: Path, root: Path, heads: list[str], data: Path) -> None:
    command = [sys.executable, "train.py", "-m", *SWEEP, f"head={','.join(heads)}"]
    command += [f"paths.root_dir={root}", f"paths.data_dir={data}"]
    print("$", " ".join(command[1:]), f"  (in {checkout})", flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CELLEXP_"))}
    env["PYTHONPATH"] = str(checkout)  # the checkout's own cellexp, not the installed one
    subprocess.run(command, cwd=checkout, check=True, env=env, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="a checkout of the old code, measured the same way")
    parser.add_argument("--data-dir", type=Path, default=Path(project_root()) / "data", help="default: data/")
    parser.add_argument("--heads", nargs="+", default=["linear", "mlp", "elegans", "ba", "er"])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cellexp-disk"), help="default /tmp/cellexp-disk")
    args = parser.parse_args()
    checkouts = {"before": args.before, "now": Path(project_root())} if args.before else {"now": Path(project_root())}
    sizes = {}
    for name, checkout in checkouts.items():
        root = args.workdir / name
        shutil.rmtree(root, ignore_errors=True)
        sweep(checkout, root, args.heads, args.data_dir.resolve())
        folders = [root / "multirun", root / "mlartifacts"]
        sizes[name] = disk_usage(*folders)
        copies = weight_copies(*folders)
        per_run = sizes[name] / len(args.heads)
        print(
            f"{name}: {human_size(sizes[name])} ({sizes[name]:,} bytes) for {len(args.heads)} runs, "
            f"{human_size(per_run)} a run; weights stored more than once: {len(copies)}",
            flush=True,
        )
        if name == "now" and copies:
            print("the same weights in separate files:\n" + "\n".join(" = ".join(map(str, c)) for c in copies))
            return 1
    if "before" in sizes:
        print(f"ratio before/now: {sizes['before'] / sizes['now']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
