"""Team scale against the real things: PostgreSQL, `mlflow server` over it (started as `python -m cellexp.commands.team`
starts them), and a one-node SLURM cluster on 127.0.0.1. Sweeps whose trials are SLURM jobs, jobs cancelled or
requeued mid-run, and runs that start at the same instant: nothing lost, nothing doubled, every artifact in the
server's store. Skipped, naming what is missing, where PostgreSQL, SLURM or munge are not installed."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from mlflow.tracking import MlflowClient

from cellexp.config import PARENT_RUN_ENV
from cellexp.sweeps.optuna_sweeper import _TrialRun
from tests.conftest import ROOT, subprocess_env
from tests.team_services import missing_binaries, slurm_cluster, team_server

log = logging.getLogger(__name__)
MISSING = missing_binaries()
try:
    import psycopg  # noqa: F401
except ImportError:
    MISSING.append("psycopg (pip install '.[team]')")
if os.geteuid() != 0:
    MISSING.append("root (the test cluster's slurmd runs jobs as root)")
needs_services = pytest.mark.skipif(
    bool(MISSING), reason=f"needs {', '.join(MISSING)} (Debian: postgresql slurm-wlm munge)"
)
# the training runs on the server and the SLURM cluster (40 s to 2.5 minutes each on 2 shared cores) are kept out of the
# README's `pytest`, whose time has a bar of its own: .ci/run runs them in a step of their own after it, as
# CELLEXP_CLUSTER_TESTS=1 pytest -n 0 -m integration tests/test_team_scale.py
cluster_runs = pytest.mark.skipif(
    os.environ.get("CELLEXP_CLUSTER_TESTS") != "1",
    reason="long runs on the test server and SLURM cluster: set CELLEXP_CLUSTER_TESTS=1",
)
SWEEP = [
    "backbone=test_resnet",
    "dataset.crop_size=48",
    "dataset.image_size=32",
    "dataset.generate.images_per_line={train:3,val:1,test:1}",
    "dataset.limit=64",
    "trainer.batch_size=32",
    "trainer.cpu=true",
    "hparams_search=optuna",
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.tasks_per_node=1",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=null",
    "hydra.launcher.timeout_min=20",
    "hydra.sweeper.n_trials=4",
    "hydra.sweeper.n_jobs=2",
    "hydra.sweeper.custom_search_space=null",
    "hydra.sweeper.params={optim.optimizer.lr:'interval(1e-3,1e-2)',trainer.batch_size:'32'}",
    "tuning.pruner=none",
]


# ------------------------------------------------------------------------------- a job that ends without a result


class _LostSecondJob:
    """A launcher whose job 1 ends without a result, as submitit reports a job whose node died."""

    def launch(self, job_overrides, initial_job_idx):
        if initial_job_idx == 1:
            raise RuntimeError("job 1 has not produced any output (state: NODE_FAIL)")
        return [JobReturn(status=JobStatus.COMPLETED, _return_value=0.5)]


def test_a_job_lost_with_its_node_fails_its_trial_and_run_and_the_sweep_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # restored afterwards
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    experiment = client.create_experiment("lost")
    parent = client.create_run(experiment, run_name="sweep").info.run_id
    child = client.create_run(experiment, tags={"mlflow.parentRunId": parent, "sweep.job_num": "1"}).info.run_id
    other = client.create_run(experiment, tags={"mlflow.parentRunId": parent, "sweep.job_num": "2"}).info.run_id
    monkeypatch.setenv(PARENT_RUN_ENV, parent)
    sweeper = SimpleNamespace(
        launcher=_LostSecondJob(),
        n_trials=3,
        n_jobs=1,
        job_idx=0,
        max_failure_rate=0.5,
        _configure_trials=lambda trials, *space: [("x=1",)],
    )
    study = optuna.create_study()
    run = _TrialRun(sweeper, study, ())
    run.work()
    run.raise_if_too_many_failed()  # 1 of 3 failed: under the sweep's max_failure_rate
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]
    lost = client.get_run(child)
    assert lost.info.status == "FAILED" and "NODE_FAIL" in lost.data.tags["error"]
    assert client.get_run(other).info.status == "RUNNING"  # another job's run is not touched


# ---------------------------------------------------------------------------------------------- the services


@pytest.fixture(scope="session")
def team():
    """PostgreSQL + `mlflow server` for the session: (server URL, Postgres, the server's artifact folder)."""
    with team_server() as services:
        yield services


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


def one_thread_env() -> dict[str, str]:
    """train.py's environment, one torch thread per process (SLURM jobs inherit it through sbatch): 8 runs, or 2
    jobs and the sweep, on 2 cores; with a thread per core each, they spend most of their time waiting on each
    other (32 s a batch of 32 images where one process alone takes well under 1 s)."""
    return {**subprocess_env(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _runs(server: str, experiment: str):
    client = MlflowClient(server)
    found = client.get_experiment_by_name(experiment)
    return client, found, client.search_runs([found.experiment_id]) if found else []


# --------------------------------------------------------------------------- runs that start at the same instant

# one process: cellexp's get-or-create, a run, a metric and an artifact, released with the others by a go file
TOGETHER = """
import sys, time
from pathlib import Path
import mlflow
from omegaconf import OmegaConf
from cellexp.tracking.session import configure_mlflow
folder, uri, name, index = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
logger = OmegaConf.create({"tracking_uri": uri, "experiment_name": name,
                           "artifact_location": f"file://{folder}/mlartifacts"})
(folder / f"ready{index}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
experiment_id = configure_mlflow(logger)
with mlflow.start_run(experiment_id=experiment_id, run_name=f"together {index}"):
    mlflow.log_metric("index", float(index))
    (folder / f"note{index}.txt").write_text(index)
    mlflow.log_artifact(str(folder / f"note{index}.txt"))
"""


@pytest.mark.integration
@needs_services
@pytest.mark.slow
def test_eight_processes_create_one_new_experiment_at_the_same_instant(tmp_path, team):
    """Half name the server in the config (logger.tracking_uri), half through MLFLOW_TRACKING_URI, with a local
    sqlite store in the config that must stay unused: one experiment, 8 runs, 8 artifacts in the server's store."""
    server, _postgres, artifacts = team
    processes = []
    for index in range(8):
        env = subprocess_env()
        if index % 2:
            env["MLFLOW_TRACKING_URI"] = server
        uri = f"sqlite:///{tmp_path / 'unused.db'}" if index % 2 else server
        command = [sys.executable, "-c", TOGETHER, str(tmp_path), uri, "together", str(index)]
        processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 240
    while len(list(tmp_path.glob("ready*"))) < 8 and time.monotonic() < deadline:
        time.sleep(0.1)
    (tmp_path / "go").touch()
    errors = [p.communicate(timeout=240)[1][-2000:] for p in processes]
    assert [p.returncode for p in processes] == [0] * 8, errors

    client, experiment, runs = _runs(server, "together")
    assert len(client.search_experiments(filter_string="name = 'together'")) == 1
    assert sorted(r.info.run_name for r in runs) == [f"together {i}" for i in range(8)]
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        index = run.info.run_name.split()[-1]
        stored = artifacts / experiment.experiment_id / run.info.run_id / "artifacts" / f"note{index}.txt"
        assert stored.read_text() == index
    assert not (tmp_path / "mlartifacts").exists() and not (tmp_path / "unused.db").exists()


@pytest.mark.slow
@pytest.mark.integration
@needs_services
@cluster_runs
def test_eight_training_runs_started_together_are_all_recorded_once(tmp_path, data_dir, team):
    """8 `debug=default` runs of train.py (1 epoch each) started at once on a new experiment: 8 FINISHED runs, one
    per run folder, each with its checkpoint and model in the server's artifact store, none on the client's disk."""
    server, _postgres, artifacts = team
    processes = []
    for index in range(8):
        env = one_thread_env()
        named = []
        if index % 2:
            env["MLFLOW_TRACKING_URI"] = server
        else:
            named = [f"logger.tracking_uri={server}"]
        command = [sys.executable, "train.py", "debug=default", *SWEEP[:7], f"paths.data_dir={data_dir}"]
        command += [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run{index}"]
        command += ["trainer.max_epochs=1", "logger.experiment_name=eight", "logger.system_metrics=false", *named]
        processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True))
    errors = [p.communicate(timeout=600)[1][-2000:] for p in processes]
    assert [p.returncode for p in processes] == [0] * 8, errors

    _client, experiment, runs = _runs(server, "eight")
    assert sorted(r.data.tags["run_dir"] for r in runs) == sorted(str(tmp_path / f"run{i}") for i in range(8))
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        stored = artifacts / experiment.experiment_id / run.info.run_id / "artifacts"
        assert (stored / "config.yaml").is_file() and any(stored.glob("checkpoints/**/*.safetensors")), run.info
    # MLflow 3 keeps each run's logged model beside the runs, in the experiment's models/ folder
    assert len(list(artifacts.glob(f"{experiment.experiment_id}/models/*/artifacts/MLmodel"))) == 8
    assert not (tmp_path / "mlartifacts").exists()


# -------------------------------------------------------------------------------------------- sweeps on SLURM


def sweep(root: Path, data_dir: Path, server: str, storage: str, name: str, *overrides: str):
    """`train.py -m` with every trial a SLURM job on the test cluster, runs on the server, the study in PostgreSQL."""
    command = [sys.executable, "train.py", "-m", *SWEEP, f"paths.root_dir={root}", f"paths.data_dir={data_dir}"]
    command += [f"logger.tracking_uri={server}", f"logger.experiment_name={name}", f"hydra.sweeper.study_name={name}"]
    command += [f"hydra.sweeper.storage={storage}", *overrides]
    return subprocess.Popen(command, cwd=ROOT, env=one_thread_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def sweep_record(server: str, storage: str, name: str):
    """(the study's trials by number, the parent run, the child runs by trial number)."""
    trials = {t.number: t for t in optuna.load_study(study_name=name, storage=storage).trials}
    _client, _experiment, runs = _runs(server, name)
    (parent,) = [r for r in runs if "sweep.sweeper" in r.data.tags]
    children = {int(r.data.params["tuning.trial"]): r for r in runs if r is not parent}
    assert len(children) == len(runs) - 1  # one run per trial: none doubled by a requeue
    return trials, parent, children


@pytest.mark.slow
@pytest.mark.integration
@needs_services
@cluster_runs
def test_a_sweep_of_slurm_jobs_records_every_trial_in_optuna_and_mlflow(tmp_path, data_dir, team, slurm):
    server, postgres, _artifacts = team
    storage = postgres.url("optuna")
    process = sweep(tmp_path, data_dir, server, storage, "slurm_sweep", "trainer.max_epochs=2")
    output = process.communicate(timeout=900)[0].decode()
    assert process.returncode == 0, output[-4000:]

    trials, parent, children = sweep_record(server, storage, "slurm_sweep")
    assert sorted(trials) == sorted(children) == [0, 1, 2, 3]
    assert {t.state for t in trials.values()} == {optuna.trial.TrialState.COMPLETE}
    first, second = sorted(trials.values(), key=lambda t: t.datetime_start)[:2]
    assert second.datetime_start < first.datetime_complete  # two SLURM jobs in flight at once
    assert {c.info.status for c in children.values()} == {"FINISHED"}
    for number, child in children.items():  # each trial's value is its own run's
        history = MlflowClient(server).get_metric_history(child.info.run_id, "val/balanced_accuracy")
        assert max(h.value for h in history) == pytest.approx(trials[number].value)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/trials"] == 4 and parent.data.metrics["sweep/failed_trials"] == 0
    assert parent.data.metrics["sweep/best_value"] == pytest.approx(max(t.value for t in trials.values()))
    (sweep_dir,) = (tmp_path / "multirun").iterdir()
    assert len([p for p in (sweep_dir / ".submitit").iterdir() if p.name.isdigit()]) == 4  # four SLURM jobs


def _cancel_running_jobs(sweep_root: Path, actions: list[list[str]], done: list) -> None:
    """Each action (a scancel option list) on the next SLURM job whose MLflow run has saved its first epoch and not
    finished. A job that ended before the action reached it (a fast machine, or this thread kept waiting by a loaded
    one) is passed over and the action goes to the next job, instead of this thread dying on scancel's error."""
    handled = set()
    deadline = time.monotonic() + 600
    while actions and time.monotonic() < deadline:
        for job_folder in sorted(sweep_root.glob("multirun/*/.submitit/[0-9]*")):
            job, runs = job_folder.name, list(sweep_root.glob("multirun/*/*/mlflow_run_id"))
            logs = "".join(log.read_text() for log in job_folder.glob(f"{job}_0_log.*"))
            opened = [r for r in runs if f"folder {r.parent} " in logs]  # the run's first log line names its folder
            opened = [r for r in opened if any((r.parent / "checkpoints").glob("epoch_*"))]  # and it is training
            if job in handled or not opened:
                continue
            handled.add(job)
            if "finished run " in logs or (job_folder / f"{job}_0_result.pkl").exists():
                continue  # its run closed: a signal now would land after it
            sent = subprocess.run(["scancel", *actions[0], job], capture_output=True, text=True, timeout=30)
            if sent.returncode == 0:
                done.append((job, opened[0].read_text().strip()))
                actions.pop(0)
            else:
                log.warning("scancel %s %s: %s", " ".join(actions[0]), job, sent.stderr.strip())
            break
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.integration
@needs_services
@cluster_runs
def test_a_preempted_trial_is_requeued_and_a_cancelled_one_failed_and_the_sweep_goes_on(
    tmp_path, data_dir, team, slurm
):
    """SIGUSR2 (what SLURM sends before a time limit or a preemption): the job checkpoints, is requeued and resumes
    the same MLflow run and Optuna trial. A plain scancel: the trial fails, its run is closed, the sweep goes on."""
    server, postgres, _artifacts = team
    storage = postgres.url("optuna")
    # 4 epochs: the signals go out once a run has saved its first epoch, and land while it trains or tests
    process = sweep(tmp_path, data_dir, server, storage, "slurm_cancel", "trainer.max_epochs=4")
    done = []
    watcher = threading.Thread(target=_cancel_running_jobs, args=(tmp_path, [["--signal=USR2"], []], done))
    watcher.start()
    output = process.communicate(timeout=900)[0].decode()
    watcher.join()
    assert process.returncode == 0, output[-4000:]
    assert len(done) == 2, output[-4000:]
    (requeued_job, requeued_run), (cancelled_job, cancelled_run) = done

    trials, parent, children = sweep_record(server, storage, "slurm_cancel")
    assert sorted(trials) == sorted(children) == [0, 1, 2, 3]
    by_run = {c.info.run_id: number for number, c in children.items()}
    states = {number: t.state for number, t in trials.items()}
    assert states[by_run[cancelled_run]] is optuna.trial.TrialState.FAIL
    assert children[by_run[cancelled_run]].info.status == "KILLED"
    assert [s for s in states.values() if s is optuna.trial.TrialState.FAIL] == [optuna.trial.TrialState.FAIL]
    # the requeued job ran again as the same SLURM job, in the same MLflow run, and completed the same trial
    requeued = children[by_run[requeued_run]]
    assert states[by_run[requeued_run]] is optuna.trial.TrialState.COMPLETE and requeued.info.status == "FINISHED"
    job_logs = tmp_path.glob(f"multirun/*/.submitit/{requeued_job}/{requeued_job}_0_log.*")
    assert "Requeued job" in "".join(log.read_text() for log in job_logs)
    history = MlflowClient(server).get_metric_history(requeued_run, "val/balanced_accuracy")
    assert len({h.step for h in history}) == 4  # its 4 epochs, before and after the requeue
    assert "RUNNING" not in {c.info.status for c in children.values()} and parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/trials"] == 4 and parent.data.metrics["sweep/failed_trials"] == 1
