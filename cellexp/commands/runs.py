"""`python -m cellexp.commands.runs`: the recent runs of a tracking store, newest first, so that a run id for `ckpt=`,
`task=xai` or `cellexp.commands.compare` is one command away, without opening the MLflow UI.

Each row: run id, experiment, name, kind (train, evaluate, explain, predict, embed, sweep), status, start time and
the run's optimized metric at its best epoch (`task.optimized_metric` in `task.direction`; a sweep's parent run
shows the sweep's best value).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cellexp.config import default_tracking_uri
from cellexp.tracking.kinds import KIND_TAG, KINDS, run_kind

COLUMNS = ("run id", "experiment", "name", "kind", "status", "started", "optimized metric")


class RunsError(Exception):
    """The store cannot be listed; the message names it and what to do."""


def recent_runs(
    uri: str, experiment: str | None = None, count: int = 20, kind: str | None = None
) -> list[dict[str, str]]:
    """The `count` newest runs of the store (of one experiment, by name; of one kind), as rows of COLUMNS."""
    _check_store(uri)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if experiment is not None:
        chosen = [key for key, name in experiments.items() if name == experiment]
        if not chosen:
            raise RunsError(f"no experiment {experiment!r} in {uri}; there are: {sorted(experiments.values())}")
        experiments = {key: experiments[key] for key in chosen}
    found = client.search_runs(list(experiments), order_by=["attributes.start_time DESC"], max_results=count)
    if kind is not None:  # runs logged before the kind tag have none to filter on in the query
        every = client.search_runs(list(experiments), order_by=["attributes.start_time DESC"])
        found = [run for run in every if kind_of(run) == kind][:count]
    if not found:
        where = f"experiment {experiment!r} of {uri}" if experiment else uri
        what = f"no {kind} runs" if kind else "no runs"
        raise RunsError(f"{what} in {where} yet: start one with `python train.py debug=default`")
    return [_row(client, run, experiments[run.info.experiment_id]) for run in found]


def kind_of(run) -> str:
    """The run's kind tag; for runs logged before it, what its task params say (a sweep parent: sweep)."""
    tags, params = run.data.tags, run.data.params
    if KIND_TAG in tags:
        return tags[KIND_TAG]
    if "sweep.sweeper" in tags:
        return "sweep"
    return run_kind(params.get("task.name", "?"), params.get("task.fit"))


def _check_store(uri: str) -> None:
    """A local store that is not there is an error, not a new empty store (MLflow would create one)."""
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
    elif uri.startswith("file://") or "://" not in uri:
        path = uri.removeprefix("file://")
    else:
        return  # a tracking server answers for itself
    if not Path(path).exists():
        raise RunsError(
            f"no tracking store at {path}: no run has been recorded there yet (start one with "
            "`python train.py debug=default`), or give --tracking-uri (or set MLFLOW_TRACKING_URI)"
        )


def _row(client, run, experiment: str) -> dict[str, str]:
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000))
    name, status = run.info.run_name or "", run.info.status
    values = (run.info.run_id, experiment, name, kind_of(run), status, started, _objective(client, run))
    return dict(zip(COLUMNS, values, strict=True))


def _objective(client, run) -> str:
    metrics = run.data.metrics
    if "sweep/best_value" in metrics:
        return f"sweep best {metrics['sweep/best_value']:.4f}"
    best = best_value(client, run)
    return "-" if best is None else f"{best[0]} {best[1]:.4f}"


def best_value(client, run) -> tuple[str, float] | None:
    """The run's optimized metric (task.optimized_metric) and its best value over the epochs, in task.direction."""
    metrics, params = run.data.metrics, run.data.params
    key = params.get("task.optimized_metric")
    if key is None or key not in metrics:
        return None
    history = [m.value for m in client.get_metric_history(run.info.run_id, key)]
    return key, (min(history) if params.get("task.direction") == "minimize" else max(history))


def format_rows(rows: list[dict[str, str]]) -> str:
    widths = {column: max(len(column), *(len(row[column]) for row in rows)) for column in COLUMNS}
    lines = ["  ".join(column.ljust(widths[column]) for column in COLUMNS)]
    lines += ["  ".join(row[column].ljust(widths[column]) for column in COLUMNS).rstrip() for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cellexp.commands.runs", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tracking-uri",
        default=default_tracking_uri(),
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else the project's mlflow.db, where train.py writes)",
    )
    parser.add_argument("--experiment", help="only this experiment's runs (by name)")
    parser.add_argument("--kind", choices=(*KINDS, "sweep"), help="only runs of this kind")
    parser.add_argument("-n", type=int, default=20, help="how many runs, newest first (default 20)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"-n {args.n}: give at least 1")
    try:
        rows = recent_runs(args.tracking_uri, args.experiment, args.n, args.kind)
    except RunsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
