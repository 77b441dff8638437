"""How far each acceptance test that trains and compares clears its bar, in standard deviations over seeds.

    python benchmarks/bench_test_margins.py [--seeds 0 1 2 3 4] [--only classify heads/ws ...] [--workdir DIR]
        [override ...]

A test runs one seed (seed=0 on generated data seed 0); this reruns the same runs, composed as the test composes them
(tests/conftest.py's compose_cfg, the test module's own overrides), with seed and dataset.generate.seed set to each
of --seeds, and prints per check: the metric's mean, its standard deviation over seeds, and (mean - bar) / sd, the
margin of one run in seed-to-seed standard deviations. A check under 3 is a coin flip waiting to happen: fix the
data or the test, not the bar. Paired checks (a regularised run against the plain one of the same seed) take the
difference per seed. Extra arguments are Hydra overrides added to every run (to try a fix before the test takes it).

Not covered: tests/test_predict.py's accuracy of a trained model on a newly segmented plate (its matching of cells
lives in the test), and tests/test_mil.py's acceptance test, which benchmarks/bench_mil_margin.py measures.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cellexp  # noqa: E402
from cellexp.tracking.session import RUN_ID_FILE  # noqa: E402
from tests.conftest import compose_cfg  # noqa: E402
from tests.test_camo import CAMO_RUN  # noqa: E402
from tests.test_classify import BACKBONE_RUN, embed_splits, head_score  # noqa: E402

HEADS = ("elegans", "ba", "er", "ws", "mlp", "linear", "elegans_published", "mlp_published")


@dataclass(frozen=True)
class Check:
    """One assertion of a test: `metric` of the run made by `overrides` (minus that of `baseline`'s run, when
    given) must reach `bar`."""

    test: str
    overrides: tuple[str, ...]
    metric: str
    bar: float
    baseline: tuple[str, ...] | None = None
    per_seed: tuple[str, ...] = field(default=())  # overrides with {seed} filled in
    # every head's test: this head trained on the embeddings of a BACKBONE_RUN trained once per seed (not a run of
    # `overrides`)
    head: str | None = None


CHECKS = {
    "classify": Check(
        "test_classify.py::test_trains_above_chance_and_records_everything_in_mlflow",
        ("trainer.max_epochs=4", "task.batch_metrics=16"),
        "test/balanced_accuracy",
        0.4,
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
    "camo": Check(
        "test_camo.py::test_a_regularised_run_looks_more_at_the_cells_than_the_plain_run_of_the_same_seed",
        (*CAMO_RUN, "task.camo.weight=5.0"),
        "val/gradcamo_mean",
        0.03,
        baseline=(*CAMO_RUN, "task.camo.weight=0.0"),
        per_seed=("dataset.root=${{paths.data_dir}}/synthetic_confounded/seed{seed}",),
    ),
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


@functools.cache
def embeddings(workdir: Path, overrides: tuple[str, ...]) -> dict:
    """The training and test embeddings of the run `overrides` make, trained once per workdir (the other heads'
    checks of the seed reuse it)."""
    folder = workdir / "runs" / f"backbone-{hashlib.sha1(' '.join(overrides).encode()).hexdigest()[:12]}" / "run"
    data = workdir / "heads-data"  # BACKBONE_RUN's data have more images per line than the other checks' (same seeds)
    if not (folder / "checkpoints" / "best").is_dir():
        cellexp.run(compose_cfg([*overrides, "logger=none"], folder, data))
    return embed_splits(folder, data, [o for o in overrides if o.startswith("dataset.")])


def measure(workdir: Path, key: str, check: Check, seed: int, extra: list[str]) -> float:
    seeded = [f"seed={seed}", f"dataset.generate.seed={seed}", *(o.format(seed=seed) for o in check.per_seed), *extra]
    if check.head is not None:
        return head_score(check.head, embeddings(workdir, (*check.overrides, *seeded)))
    slug = key.replace("/", "-")
    value = run_metric(workdir, f"{slug}-seed{seed}", [*check.overrides, *seeded], check.metric)
    if check.baseline is not None:
        value -= run_metric(workdir, f"{slug}-baseline-seed{seed}", [*check.baseline, *seeded], check.metric)
    return value


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
            f"{key}: {check.metric}{' gain' if check.baseline else ''} per seed "
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
