"""A fresh process's first UMAP fit: umap-learn as it ships (numba compiles its functions afresh in every process)
against cellexp's `umap_learn()` (numba's on-disk cache turned on), side by side in one run.

    python benchmarks/bench_umap_cache.py [--repeats 2] [--cells 300] [--features 20]

Each figure is the median over --repeats fresh processes of the seconds the fit takes (imports excluded), on one
thread. Each kind has a temporary NUMBA_CACHE_DIR that an untimed process of its kind fills first, as the first
`task=xai` run on a machine does; the coordinates of the two kinds must be equal.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FIT = """
import json, sys, time
import numpy as np
sys.path.insert(0, {root!r})
if {cached}:
    from cellexp.xai.embedding import umap_learn
    umap = umap_learn()
else:
    import umap
x = np.random.default_rng(0).normal(size=({cells}, {features})).astype(np.float32)
start = time.perf_counter()
y = umap.UMAP(n_neighbors=15, random_state=0, n_jobs=1).fit_transform(x)
print(json.dumps({{"seconds": time.perf_counter() - start, "first": y[0].tolist()}}))
"""


def fit_in_fresh_process(cached: bool, cache_dir: str, args) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    code = FIT.format(root=str(ROOT), cached=cached, cells=args.cells, features=args.features)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cells", type=int, default=300)
    parser.add_argument("--features", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as uncached_dir, tempfile.TemporaryDirectory() as cache_dir:
        # untimed: fill each cache (umap-learn and pynndescent cache some of their functions themselves)
        fit_in_fresh_process(False, uncached_dir, args)
        fit_in_fresh_process(True, cache_dir, args)
        runs = {"as shipped": [], "cached": []}
        for _ in range(args.repeats):  # alternated, so that the machine's load falls on both alike
            runs["as shipped"].append(fit_in_fresh_process(False, uncached_dir, args))
            runs["cached"].append(fit_in_fresh_process(True, cache_dir, args))
    medians = {kind: statistics.median(r["seconds"] for r in results) for kind, results in runs.items()}
    same = runs["as shipped"][0]["first"] == runs["cached"][0]["first"]
    print(f"first UMAP fit in a fresh process ({args.cells} x {args.features}, 1 thread, median of {args.repeats}):")
    for kind, seconds in medians.items():
        print(f"  {kind:>10}: {seconds:.2f} s")
    print(f"  as shipped / cached: {medians['as shipped'] / medians['cached']:.1f}x; same coordinates: {same}")


if __name__ == "__main__":
    main()
