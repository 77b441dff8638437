"""Compare runs side by side: `python -m cellexp.commands.compare <experiment name | sweep parent run id>`.

Only runs of one kind are compared (training runs by default: not the evaluations, explanations or predictions
made from them, nor failed runs). They are grouped into configurations by the keys their sweep varied (seed
aside), so that seeds become a mean and a spread; each configuration also shows its model's parameter count. The table
goes to stdout and a CSV, the picture to a PNG; for a sweep's parent run both are also attached to
that run, where the MLflow UI shows them.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import pandas as pd

from cellexp.config import default_tracking_uri
from cellexp.reports.compare import plot_comparison
from cellexp.tracking.identity import short_number
from cellexp.tracking.kinds import KIND_TAG, KINDS, run_kind

DEFAULT_METRICS = ("test/accuracy", "test/balanced_accuracy", "test/macro_f1")
PARAMS_METRIC = "model/total_params"
REPLICATE_KEYS = ("seed",)
FALLBACK_KEYS = ("backbone", "head")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class CompareError(Exception):
    """The runs asked for cannot be compared; the message says why and what exists."""


def load_runs(target: str, kind: str = "train") -> tuple[pd.DataFrame, str | None, str]:
    """Finished runs of one `kind` of an experiment (by name) or of a sweep's parent run's children (by id).

    Returns the runs, the parent run id (or None) and a short name for output files.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    if _RUN_ID.match(target):
        try:
            parent = mlflow.get_run(target)
        except MlflowException as err:
            raise CompareError(f"no MLflow run {target} in {mlflow.get_tracking_uri()}") from err
        runs = mlflow.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{target}'")
        name, parent_id = f"sweep-{target[:8]}", target
    else:
        experiment = mlflow.get_experiment_by_name(target)
        if experiment is None:
            names = sorted(e.name for e in mlflow.search_experiments())
            raise CompareError(f"no experiment {target!r} in {mlflow.get_tracking_uri()}; there are: {names}")
        runs = mlflow.search_runs([experiment.experiment_id])
        name, parent_id = re.sub(r"[^\w.-]", "_", target), None
    if runs.empty:
        raise CompareError(f"{target}: no runs to compare")
    if "tags.sweep.sweeper" in runs:
        runs = runs[runs["tags.sweep.sweeper"].isna()]  # a sweep's parent run
    kinds = run_kinds(runs)
    finished = runs[(runs["status"] == "FINISHED") & (kinds == kind)]
    if finished.empty:
        counts = ", ".join(
            f"{n} {k} ({s.lower()})" for (k, s), n in pd.crosstab(kinds, runs["status"]).stack().items() if n
        )
        raise CompareError(f"{target}: no finished {kind} runs to compare; it has {counts or 'none'} (see --kind)")
    return finished, parent_id, name


def run_kinds(runs: pd.DataFrame) -> pd.Series:
    """Each run's kind: its `kind` tag, else (runs logged before the tag) what its task.name and task.fit params say."""
    tagged = runs.get(f"tags.{KIND_TAG}", pd.Series(None, index=runs.index, dtype=object))
    tasks = runs.get("params.task.name", pd.Series("?", index=runs.index)).fillna("?")
    fits = runs.get("params.task.fit", pd.Series("True", index=runs.index)).fillna("True")
    inferred = pd.Series([run_kind(t, f) for t, f in zip(tasks, fits, strict=True)], index=runs.index)
    return tagged.fillna(inferred)


def grouping_keys(runs: pd.DataFrame) -> list[str]:
    """What the sweep varied (from the runs' `sweep.keys` tags) minus replicate keys; else backbone and head."""
    swept: list[str] = []
    for keys in runs.get("tags.sweep.keys", pd.Series(dtype=str)).dropna():
        swept += [key for key in keys.split(",") if key]
    keys = [key for key in dict.fromkeys(swept) if key not in REPLICATE_KEYS]
    return keys or list(FALLBACK_KEYS)


def run_value(runs: pd.DataFrame, key: str) -> pd.Series:
    """A key's value per run: the sweep override, else the config-group choice tag, else the logged param (run by
    run: a sweep's runs and single runs side by side each give what they recorded)."""
    columns = [runs[c] for c in (f"tags.override.{key}", f"tags.{key}", f"params.{key}") if c in runs]
    if not columns:
        raise CompareError(f"no run records {key!r} (as a sweep override, a tag or a param)")
    value = columns[0]
    for column in columns[1:]:
        value = value.fillna(column)
    return value.fillna("?")


def comparison_table(runs: pd.DataFrame, metrics: list[str], keys: list[str]) -> pd.DataFrame:
    """One row per configuration: its key values, run count, parameter count, and mean/std per metric."""
    missing = [m for m in metrics if f"metrics.{m}" not in runs]
    if missing:
        available = sorted(c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics."))
        raise CompareError(f"metrics {missing} were not logged; available: {available}")
    frame = pd.DataFrame({key: run_value(runs, key) for key in keys})
    frame["params"] = runs.get(f"metrics.{PARAMS_METRIC}", pd.Series(math.nan, index=runs.index))
    for metric in metrics:
        frame[metric] = runs[f"metrics.{metric}"]
    grouped = frame.groupby(keys, sort=False, dropna=False)
    table = grouped.size().rename("runs").to_frame()
    table["params"] = grouped["params"].mean()
    for metric in metrics:
        table[f"{metric} mean"] = grouped[metric].mean()
        table[f"{metric} std"] = grouped[metric].std(ddof=1).fillna(0.0)
    return table.sort_values(f"{metrics[0]} mean", ascending=False).reset_index()


def format_table(table: pd.DataFrame, metrics: list[str], keys: list[str]) -> str:
    """The table as people read it: swept numbers to 3 significant digits, `mean ± std` per metric (a configuration
    of one run: its value, no spread), parameters in millions."""
    shown = table[keys + ["runs"]].copy()
    for key in keys:
        shown[key] = shown[key].map(lambda value: short_number(str(value)))
    shown["params"] = table["params"].map(lambda n: "?" if math.isnan(n) else f"{n / 1e6:.2f}M")
    for metric in metrics:
        columns = (table[f"{metric} mean"], table[f"{metric} std"], table["runs"])
        shown[metric] = [f"{m:.4f}" if n == 1 else f"{m:.4f} ± {s:.4f}" for m, s, n in zip(*columns, strict=True)]
    return shown.to_string(index=False)


def compare(
    target: str, metrics: list[str], keys: list[str] | None, out_dir: Path | None, kind: str = "train"
) -> pd.DataFrame:
    runs, parent_id, name = load_runs(target, kind)
    keys = keys or grouping_keys(runs)
    table = comparison_table(runs, metrics, keys)
    out_dir = out_dir or Path("outputs") / "compare" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "compare.csv", index=False)
    figure = plot_comparison(table, metrics, keys, out_dir / "compare.png")
    print(f"{len(runs)} {kind} runs of {target}, by {', '.join(keys)}\n")
    print(format_table(table, metrics, keys))
    print(f"\nwritten: {out_dir / 'compare.csv'}, {figure}")
    if parent_id is not None:
        from mlflow.tracking import MlflowClient

        for path in (out_dir / "compare.csv", figure):
            MlflowClient().log_artifact(parent_id, str(path), "compare")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cellexp.commands.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="an MLflow experiment name, or the run id of a sweep's parent run")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="metric keys to compare")
    parser.add_argument(
        "--by", nargs="+", help="config keys that define a configuration (default: what the sweep varied)"
    )
    parser.add_argument("--out", type=Path, help="folder for compare.csv and compare.png")
    parser.add_argument(
        "--kind",
        default="train",
        choices=KINDS,
        help="which runs: train (default), evaluate, explain, predict or embed (`cellexp.commands.runs` shows each)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=default_tracking_uri(),
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else the project's mlflow.db)",
    )
    args = parser.parse_args(argv)
    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    try:
        compare(args.target, args.metrics, args.by, args.out, args.kind)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
