"""Disk taken by a 5-job `debug=default` head sweep, with the old checkpoint policy and with the new one.

    python benchmarks/bench_disk.py [--heads linear mlp elegans ba er] [--workdir /tmp/cellexp-disk]

Each policy runs `python train.py -m debug=default head=<heads>` under its own root (run folders, mlflow.db, the
artifact store), on the project's data. What is measured is the bytes on disk of the sweep's run folders and of
the artifact store together:

    before  trainer.checkpoint.keep_last=2 trainer.checkpoint.keep_training_state=true, every file counted as its
            own copy: the old code kept the optimizer state and copied the best checkpoint into the artifact store
    after   the defaults (keep_last=1, finished runs sealed, the artifact store hard-linked to the run folders),
            a file with several links counted once, as du counts it
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cellexp.config import project_root
from cellexp.handoff import disk_usage, human_size

OLD_POLICY = ["trainer.checkpoint.keep_last=2", "trainer.checkpoint.keep_training_state=true"]


def sweep(root: Path, heads: list[str], overrides: list[str]) -> None:
    command = [
        sys.executable,
        "train.py",
        "-m",
        "debug=default",
        f"head={','.join(heads)}",
        f"paths.root_dir={root}",
        f"paths.data_dir={Path(project_root()) / 'data'}",
        *overrides,
    ]
    print("$", " ".join(command[1:]), flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CELLEXP_"))}
    subprocess.run(command, cwd=project_root(), check=True, env=env, stdout=subprocess.DEVNULL)


def apparent_blocks(folder: Path) -> int:
    """Bytes on disk with every path counted, hard links too: what separate copies would take."""
    return sum(p.lstat().st_blocks * 512 for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def measured(root: Path, links_once: bool) -> int:
    parts = [root / "multirun", root / "mlartifacts"]
    return disk_usage(*parts) if links_once else sum(apparent_blocks(part) for part in parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", nargs="+", default=["linear", "mlp", "elegans", "ba", "er"])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cellexp-disk"))
    args = parser.parse_args()
    sizes = {}
    for name, overrides, links_once in (("before", OLD_POLICY, False), ("after", [], True)):
        root = args.workdir / name
        shutil.rmtree(root, ignore_errors=True)
        sweep(root, args.heads, overrides)
        sizes[name] = measured(root, links_once)
        print(f"{name}: {human_size(sizes[name])} ({sizes[name]:,} bytes) for {len(args.heads)} jobs", flush=True)
    print(f"ratio before/after: {sizes['before'] / sizes['after']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
