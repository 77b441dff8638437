"""experiment=clanet's MIL on the batch-separated split over seeds: the acceptance test's margin over its bar, and the
MIL's gain over the per-image baseline (tests/test_mil.py::test_mil_recognises_lines_in_batches_it_never_trained_on).

    python benchmarks/bench_mil_margin.py [--seeds 0 1 ... 19] [--workdir /tmp/cellexp-mil-margin] [override ...]

Each seed is its own generated time-lapse (dataset.generate.seed) and its own split and training (seed), so the
per-seed figures are independent draws; the test runs seed 0. A run of the default settings takes about a minute
of CPU (several on a shared machine). Extra arguments are Hydra overrides added after the test's own (e.g.
dataset.generate.height=224 for smaller frames). Prints each seed's MIL and baseline top-1 at sequence and batch
level, then the MIL's sequence top-1 against the test's bar (mean, standard deviation, standard error, (mean - bar)
/ sd: one run's margin in standard deviations) and the gain over the baseline at both levels.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cellexp  # noqa: E402
from cellexp.tracking.session import RUN_ID_FILE  # noqa: E402
from tests.test_mil import ACCEPTANCE, SEQUENCE_BAR  # noqa: E402

COLUMNS = ("test/sequence/top1", "test/baseline/sequence/top1", "test/batch/top1", "test/baseline/batch/top1")
BARS = {"test/sequence/top1": SEQUENCE_BAR}


def run_once(workdir: Path, seed: int, overrides: list[str]) -> dict[str, float]:
    """One experiment=clanet run as the acceptance test makes it; its test metrics."""
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    folder = workdir / f"seed{seed}"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf")):
        cfg = compose(
            "config",
            overrides=[
                f"paths.data_dir={workdir / 'data'}",
                f"++logger.tracking_uri={uri}",
                f"++logger.artifact_location=file://{workdir / 'mlartifacts'}",
                "++logger.experiment_name=mil_margin",
                "logger.log_checkpoints=false",
                "logger.system_metrics=false",
                f"dataset.generate.seed={seed}",
                f"seed={seed}",
                *overrides,
            ],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(folder)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    cellexp.run(cfg)
    run_id = (folder / RUN_ID_FILE).read_text().strip()
    return MlflowClient(uri).get_run(run_id).data.metrics


def summarize(name: str, values: list[float], bar: float) -> None:
    """Mean, standard deviation (one run's spread: the test runs one seed) and standard error over seeds."""
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    print(
        f"{name}: mean {mean:+.4f}, sd {sd:.4f}, se {sd / len(values) ** 0.5:.4f}, "
        f"(mean - {bar:.3f}) / sd {(mean - bar) / sd:.1f}, / se {(mean - bar) / sd * len(values) ** 0.5:.1f}, "
        f"min {min(values):+.4f}  over {len(values)} seeds"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(20)))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cellexp-mil-margin"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        metrics = run_once(args.workdir, seed, [*ACCEPTANCE, *args.overrides])
        rows.append({key: metrics[key] for key in COLUMNS})
        print(f"seed {seed:2d}: " + ", ".join(f"{key} {value:.4f}" for key, value in rows[-1].items()), end="")
        print(f"  {time.perf_counter() - start:.1f} s", flush=True)
    for key, bar in BARS.items():
        summarize(f"{key} against the test's bar", [row[key] for row in rows], bar)
    for level in ("sequence", "batch"):
        gains = [row[f"test/{level}/top1"] - row[f"test/baseline/{level}/top1"] for row in rows]
        summarize(f"{level} top-1 gain of MIL over the per-image baseline", gains, 0.0)


if __name__ == "__main__":
    main()
