"""How far experiment=clanet's MIL beats the per-image baseline, over seeds: the acceptance test's effect and its
standard error (tests/test_mil.py::test_mil_beats_the_per_image_baseline_across_batches).

    python benchmarks/bench_mil_margin.py [--seeds 0 1 ... 19] [--workdir /tmp/cellexp-mil-margin] [override ...]

Each seed is its own generated time-lapse (dataset.generate.seed) and its own split and training (seed), so the
per-seed gains are independent draws (the test itself crosses generator seeds 0-2 with split seeds 0-4). A run of
the default settings takes minutes of CPU: on a shared machine, sweep few seeds at a time (--seeds).
Extra arguments are Hydra overrides added after the test's own (e.g. dataset.generate.height=224 for smaller frames).
Prints each seed's sequence and batch top-1 gain over the baseline, then for each level the mean, its standard
error and mean / se, and the margin over the test's bars.
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
from tests.test_mil import ACCEPTANCE, MARGIN  # noqa: E402


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
                *ACCEPTANCE,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(20)))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cellexp-mil-margin"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    gains = {"sequence": [], "batch": []}
    for seed in args.seeds:
        start = time.perf_counter()
        metrics = run_once(args.workdir, seed, args.overrides)
        row = {level: metrics[f"test/{level}/top1"] - metrics[f"test/baseline/{level}/top1"] for level in gains}
        for level, value in row.items():
            gains[level].append(value)
        print(
            f"seed {seed:2d}: sequence gain {row['sequence']:+.4f} (MIL {metrics['test/sequence/top1']:.4f}), "
            f"batch gain {row['batch']:+.4f}  {time.perf_counter() - start:.1f} s",
            flush=True,
        )
    for level, bar in (("sequence", MARGIN), ("batch", 0.0)):
        values = gains[level]
        mean = statistics.fmean(values)
        se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
        print(
            f"{level}: mean gain {mean:+.4f}, se {se:.4f}, effect/se {mean / se:.1f}, "
            f"(mean - bar {bar}) / se {(mean - bar) / se:.1f}  over {len(values)} seeds"
        )


if __name__ == "__main__":
    main()
