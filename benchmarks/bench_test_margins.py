"""How far each acceptance test that trains and compares clears its bar, in standard deviations over seeds.

    python benchmarks/bench_test_margins.py [--seeds 0 1 2 3 4] [--only classify heads/ws ...] [--workdir DIR]
        [override ...]

A test runs one seed (seed=0 on generated data seed 0); this reruns the same runs, composed as the test composes them
(tests/conftest.py's compose_cfg, the test module's own overrides), with seed and dataset.generate.seed set to each
of --seeds, and prints per check: the metric's mean, its standard deviation over seeds, and (mean - bar) / sd, the
margin of one run in seed-to-seed standard deviations. A check under 3 is a coin flip waiting to happen: fix the
data or the test, not the bar. Extra arguments are Hydra overrides added to every run (to try a fix before the test
takes it).

Not covered: tests/test_predict.py's accuracy of a trained model on a newly segmented plate (its matching of cells
lives in the test), and tests/test_mil.py's acceptance test, which benchmarks/bench_mil_margin.py measures. No test
asserts the Grad-CAMO regulariser's gain over a plain run (within its noise: docs/tasks/camo.md); bench_camo.py
measures the penalties at scale.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cellexp  # noqa: E402
from cellexp.tracking.session import RUN_ID_FILE  # noqa: E402
from tests.conftest import compose_cfg  # noqa: E402
from tests.test_classify import BACKBONE_RUN, CHANCE, embed_splits, head_score, split_balanced_accuracy  # noqa: E402

HEADS = ("elegans", "ba", "er", "ws", "mlp", "linear", "elegans_published", "mlp_published")


@dataclass(frozen=True)
class Check:
    """One assertion of a test: `metric` of the run made by `overrides` must reach `bar`."""

    test: str
    overrides: tuple[str, ...]
    metric: str
    bar: float
    # every head's test: this head trained on the embeddings of a BACKBONE_RUN trained once per seed (not a run of
    # `overrides`); "backbone": that run's own test balanced accuracy
    head: str | None = None


CHECKS = {
    "classify": Check(
        "test_classify.py::test_trains_above_chance_and_records_everything_in_mlflow",
        ("trainer.max_epochs=4", "task.batch_metrics=16"),
        "test/balanced_accuracy",
        CHANCE,
    ),
    "classify/trained": Check(
        "test_classify.py::test_a_classifier_trained_longer_learns_well_above_chance",
        BACKBONE_RUN,
        "test balanced accuracy",
        0.4,
        head="backbone",
    ),
    **{
        f"heads/{head}": Check(
            f"test_classify.py::test_every_head_learns_above_the_bar_from_trained_features[{head}]",
            BACKBONE_RUN,
            "test balanced accuracy",
            0.4,
            head=head,
        )
        for head in HEADS
    },
}


def run_metric(workdir: Path, name: str, overrides: list[str], metric: str) -> float:
    """One run composed as the tests compose it (tiny settings, a sqlite store under workdir); its metric."""
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    logger = [
        f"++logger.tracking_uri={uri}",
        f"++logger.artifact_location=file://{workdir / 'mlartifacts'}",
        "++logger.experiment_name=test_margins",
        "logger.log_checkpoints=false",
        "logger.system_metrics=false",
    ]
    folder = workdir / "runs" / name
    shutil.rmtree(folder, ignore_errors=True)  # measured afresh (an earlier invocation's run is not continued)
    cfg = compose_cfg([*logger, *overrides], folder, workdir / "data")
    cellexp.run(cfg)
    run_id = (Path(cfg.paths.output_dir) / RUN_ID_FILE).read_text().strip()
    return MlflowClient(uri).get_run(run_id).data.metrics[metric]


HEADS_DATA_DIR = "heads-data"  # BACKBONE_RUN's data have more images per line than the other checks' (same seeds)


def backbone(workdir: Path, overrides: tuple[str, ...]) -> Path:
    """The folder of the run `overrides` make, trained once per workdir (every check of the seed that reads it
    reuses it)."""
    folder = workdir / "runs" / f"backbone-{hashlib.sha1(' '.join(overrides).encode()).hexdigest()[:12]}" / "run"
    if not (folder / "checkpoints" / "best").is_dir():
        cellexp.run(compose_cfg([*overrides, "logger=none"], folder, workdir / HEADS_DATA_DIR))
    return folder


@functools.cache
def embeddings(workdir: Path, overrides: tuple[str, ...]) -> dict:
    """The training and test embeddings of the backbone run `overrides` make."""
    folder = backbone(workdir, overrides)
    return embed_splits(folder, workdir / HEADS_DATA_DIR, [o for o in overrides if o.startswith("dataset.")])


def measure(workdir: Path, key: str, check: Check, seed: int, extra: list[str]) -> float:
    seeded = [f"seed={seed}", f"dataset.generate.seed={seed}", *extra]
    if check.head == "backbone":
        return split_balanced_accuracy(backbone(workdir, (*check.overrides, *seeded)))
    if check.head is not None:
        return head_score(check.head, embeddings(workdir, (*check.overrides, *seeded)))
    slug = key.replace("/", "-")
    return run_metric(workdir, f"{slug}-seed{seed}", [*check.overrides, *seeded], check.metric)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(5)))
    parser.add_argument("--only", nargs="+", choices=sorted(CHECKS), default=sorted(CHECKS))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cellexp-test-margins"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for key in args.only:
        check = CHECKS[key]
        start = time.perf_counter()
        values = [measure(args.workdir, key, check, seed, args.overrides) for seed in args.seeds]
        mean, sd = statistics.fmean(values), statistics.stdev(values)
        margin = (mean - check.bar) / sd if sd > 0 else float("inf")
        rows.append((key, mean, sd, check.bar, margin))
        print(
            f"{key}: {check.metric} per seed "
            + " ".join(f"{v:.3f}" for v in values)
            + f"; mean {mean:.3f}, sd {sd:.3f}, bar {check.bar:g}, margin {margin:.1f} sd"
            + f"  ({time.perf_counter() - start:.0f} s; {check.test})",
            flush=True,
        )
    print("\ncheck | mean | sd | bar | (mean - bar) / sd")
    for key, mean, sd, bar, margin in rows:
        print(f"{key} | {mean:.3f} | {sd:.3f} | {bar:g} | {margin:.1f}{'' if margin >= 3 else '  <- under 3'}")


if __name__ == "__main__":
    main()
