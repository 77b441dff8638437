"""A sweep's own MLflow records: its parent run, the failed jobs that never opened a run, and its results."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cellexp.config import PARENT_RUN_ENV, default_tracking_uri
from cellexp.tracking.handoff import python, ui_command
from cellexp.tracking.identity import MAX_PARAM_LENGTH, default_run_name, run_label, short_number, sweep_tags
from cellexp.tracking.kinds import KIND_TAG, run_kind
from cellexp.tracking.session import RUN_ID_FILE, configure_mlflow, retrying, tracking_uri

# what the Optuna sweeper's result file counts, logged as the parent's sweep/<name> metrics
RESULT_COUNTS = ("trials", "pruned_trials", "failed_trials", "pruning_saved_s")


def record_failed_job(cfg: DictConfig, run_dir: Path, error: BaseException) -> None:
    """A sweep job that failed before its MLflow run opened (a bad value, missing data) still gets a
    FAILED child run that names the error, so that the sweep's record in MLflow is complete."""
    if cfg.logger.name == "none" or (run_dir / RUN_ID_FILE).exists():
        return
    import mlflow

    run = retrying(
        mlflow.start_run,
        experiment_id=configure_mlflow(cfg.logger),
        run_name=cfg.logger.get("run_name") or default_run_name(cfg),
        parent_run_id=os.environ.get(PARENT_RUN_ENV),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_ID_FILE).write_text(run.info.run_id)
    tags = {**run_label(cfg), **sweep_tags(), KIND_TAG: run_kind(cfg.task.name, cfg.task.get("fit"))}
    tags.update({"run_dir": str(run_dir), "error": str(error)[:MAX_PARAM_LENGTH]})
    retrying(mlflow.set_tags, tags)
    retrying(mlflow.end_run, status="FAILED")


def open_parent_run(config: DictConfig, sweep_id: str, keys: list[str]) -> str:
    """The MLflow parent run of a sweep's jobs; its id."""
    from mlflow.tracking import MlflowClient

    experiment_id = configure_mlflow(config.logger)
    overrides = " ".join(OmegaConf.to_container(config.hydra.overrides.task)) or "(none)"
    sweeper = str(config.hydra.sweeper.get("_target_", "?")).rsplit(".", 1)[-1]
    run = retrying(
        MlflowClient().create_run,
        experiment_id,
        run_name=f"sweep {' '.join(key.rsplit('.', 1)[-1] for key in keys) or 'of one job'} {sweep_id}",
        tags={
            KIND_TAG: "sweep",
            "sweep.dir": str(config.hydra.sweep.dir),
            "sweep.sweeper": sweeper,
            "sweep.keys": ",".join(keys),
            "sweep.overrides": overrides,
            "mlflow.note.content": f"{sweeper} over {', '.join(keys) or 'nothing'}: {overrides}",
        },
    )
    return run.info.run_id


def record_sweep_results(parent: str, sweep_dir: Path, records: tuple[str, ...]) -> None:
    """The sweep's record files as the parent's artifacts, and the Optuna result as its metric and tags."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for name in records:
        if (sweep_dir / name).is_file():
            retrying(client.log_artifact, parent, str(sweep_dir / name), "sweep")
    results = sweep_dir / "optimization_results.yaml"
    if results.is_file():
        best = OmegaConf.load(results)
        if "best_value" in best:
            retrying(client.log_metric, parent, "sweep/best_value", float(best.best_value))
            for key, value in best.best_params.items():
                retrying(client.set_tag, parent, f"sweep.best.{key}", str(value))
        for name in RESULT_COUNTS:
            if name in best:
                retrying(client.log_metric, parent, f"sweep/{name}", float(best[name]))


def close_parent_run(parent: str, status: str) -> None:
    from mlflow.tracking import MlflowClient

    retrying(MlflowClient().set_terminated, parent, status=status)


def summary(parent: str, config: DictConfig) -> str:
    """The lines a sweep ends with: its parent run and jobs, the best job by its optimized metric, and the commands
    that compare the jobs and show them."""
    from mlflow.tracking import MlflowClient

    from cellexp.commands.runs import best_value

    client = MlflowClient()
    run = retrying(client.get_run, parent)
    children = retrying(
        client.search_runs, [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    failed = sum(child.info.status == "FAILED" for child in children)
    lines = [
        f"sweep {run.info.run_name!r} ended: parent run {parent}  {len(children)} jobs ({failed} failed)  "
        f"experiment {config.logger.experiment_name!r}  folder {config.hydra.sweep.dir}"
    ]
    scored = [
        (value, child) for child in children if child.info.status == "FINISHED" and (value := best_value(client, child))
    ]
    if scored:
        pick = min if str(config.task.get("direction")) == "minimize" else max
        (key, value), best = pick(scored, key=lambda entry: entry[0][1])
        lines.append(
            f"  {'best job':<14} {best.info.run_name} (run {best.info.run_id})  {key} {short_number(str(value))}"
        )
    uri = tracking_uri(config.logger)
    store = "" if uri == default_tracking_uri() else f" --tracking-uri {shlex.quote(uri)}"
    lines.append(f"  {'compare':<14} {python()} -m cellexp.commands.compare {parent}{store}")
    lines.append(f"  {'open the UI':<14} {ui_command(uri, run.info.experiment_id)}")
    return "\n".join(lines)


def fail_lost_job(job_num: int, error: BaseException) -> None:
    """A sweep job that ended without a result (its node died, SIGKILL): its child run, left RUNNING, closed FAILED."""
    from mlflow.tracking import MlflowClient

    parent = os.environ.get(PARENT_RUN_ENV)
    if not parent:
        return
    client = MlflowClient()
    experiment_id = retrying(client.get_run, parent).info.experiment_id
    query = f"tags.`mlflow.parentRunId` = '{parent}' and tags.`sweep.job_num` = '{job_num}'"
    for run in retrying(client.search_runs, [experiment_id], f"{query} and attributes.status = 'RUNNING'"):
        message = f"the job ended without a result: {error}"[:MAX_PARAM_LENGTH]
        retrying(client.set_tag, run.info.run_id, "error", message)
        retrying(client.set_terminated, run.info.run_id, status="FAILED")
