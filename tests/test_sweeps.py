"""Multiruns end to end: MLflow parent and child runs, failed jobs, Optuna studies that resume,
the submitit launchers, `cellexp.commands.compare`, and the same runs read back through `mlflow server`."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from PIL import Image

from cellexp.commands import compare
from cellexp.sweeps.callback import suggest_head_params
from tests.conftest import CONF, ROOT, TINY, subprocess_env

pytestmark = pytest.mark.slow

SWEEP_TINY = [*TINY, "trainer.max_epochs=1", "dataset.limit=64"]


def sweep(root: Path, data_dir: Path, tracking: str, experiment: str, *overrides: str) -> subprocess.CompletedProcess:
    """`python train.py -m ...` with run folders and the Optuna store under `root`, runs in `tracking`."""
    command = [
        sys.executable,
        "train.py",
        "-m",
        *SWEEP_TINY,
        f"paths.root_dir={root}",
        f"paths.data_dir={data_dir}",
        f"logger.tracking_uri={tracking}",
        f"logger.artifact_location=file://{root / 'mlartifacts'}",
        f"logger.experiment_name={experiment}",
        *overrides,
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=subprocess_env())


def sweep_runs(tracking: str, experiment: str):
    """(the one parent run, its children) of the sweeps recorded in `experiment`."""
    mlflow.set_tracking_uri(tracking)
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if "sweep.sweeper" in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1
    return parents[0], children


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> str:
    """One MLflow store for the module's sweeps (an experiment each): its tables are created once."""
    return f"sqlite:///{tmp_path_factory.mktemp('tracking') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def grid(tmp_path_factory, data_dir, tracking):
    """A 2x2 grid, run once for the tests below: two heads, two seeds."""
    root = tmp_path_factory.mktemp("grid")
    result = sweep(root, data_dir, tracking, "grid", "head=linear,mlp", "seed=0,1")
    assert result.returncode == 0, result.stderr[-3000:]
    (root / "sweep.out").write_text(result.stdout + result.stderr)
    return root


def test_grid_multirun_makes_one_parent_run_with_a_child_per_job(grid, tracking):
    parent, children = sweep_runs(tracking, "grid")
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.keys"] == "head,seed"
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    jobs = {(c.data.tags["override.head"], c.data.tags["override.seed"]) for c in children}
    assert jobs == {("linear", "0"), ("linear", "1"), ("mlp", "0"), ("mlp", "1")}
    assert {c.info.run_name for c in children} == {f"head={h} seed={s}" for h, s in jobs}
    # one folder for the sweep, one per job inside it, each with its resolved config
    (sweep_dir,) = (grid / "multirun").iterdir()
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    assert all((sweep_dir / str(i) / "config.yaml").is_file() for i in range(4))
    artifacts = [a.path for a in MlflowClient().list_artifacts(parent.info.run_id, "sweep")]
    assert artifacts == ["sweep/multirun.yaml"]


def test_a_sweep_ends_with_its_parent_run_its_best_job_and_the_compare_command(grid, tracking):
    parent, children = sweep_runs(tracking, "grid")
    out = (grid / "sweep.out").read_text()
    assert parent.info.run_name.startswith("sweep head seed "), "named by what it varies"
    ended = out[out.index(f"sweep {parent.info.run_name!r} ended: parent run {parent.info.run_id}") :]
    assert "4 jobs (0 failed)" in ended.splitlines()[0]
    best = max(children, key=lambda c: c.data.metrics["val/balanced_accuracy"])  # one epoch: last = best
    assert f"best job       {best.info.run_name} (run {best.info.run_id})  val/balanced_accuracy" in ended
    assert f"-m cellexp.commands.compare {parent.info.run_id} --tracking-uri {tracking}" in ended


def test_swept_keys_are_params_of_an_experiment_the_ui_opens_on_runs(grid, tracking):
    _, children = sweep_runs(tracking, "grid")
    # `head` is a config group, so only the swept-value param names its choice; `seed` is the config's own
    assert {(c.data.params["head"], c.data.params["seed"]) for c in children} == {
        ("linear", "0"),
        ("linear", "1"),
        ("mlp", "0"),
        ("mlp", "1"),
    }
    experiment = MlflowClient().get_experiment_by_name("grid")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_compare_prints_the_table_of_a_sweep_and_attaches_it_to_the_parent(grid, tracking, tmp_path, capsys):
    parent, children = sweep_runs(tracking, "grid")
    code = compare.main([parent.info.run_id, "--tracking-uri", tracking, "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "4 train runs" in out and "by head" in out
    with open(tmp_path / "compare.csv") as f:
        rows = {row["head"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"linear", "mlp"} and {row["runs"] for row in rows.values()} == {"2"}
    for head, row in rows.items():
        accuracies = [c.data.metrics["test/accuracy"] for c in children if c.data.tags["override.head"] == head]
        assert float(row["test/accuracy mean"]) == pytest.approx(sum(accuracies) / 2)
        assert row["head"] in out
    assert float(rows["mlp"]["params"]) > float(rows["linear"]["params"])
    with Image.open(tmp_path / "compare.png") as figure:
        assert figure.format == "PNG" and figure.width > 300
    attached = {a.path for a in MlflowClient().list_artifacts(parent.info.run_id, "compare")}
    assert attached == {"compare/compare.csv", "compare/compare.png"}


def test_compare_names_what_it_cannot_find(grid, tracking, tmp_path, capsys):
    args = ["--tracking-uri", tracking, "--out", str(tmp_path)]
    assert compare.main(["no-such-experiment", *args]) == 2
    assert "no experiment 'no-such-experiment'" in capsys.readouterr().err
    assert compare.main(["grid", "--metrics", "test/nope", *args]) == 2
    assert "metrics ['test/nope'] were not logged" in capsys.readouterr().err


def test_mlflow_server_on_localhost_shows_the_sweep(grid, tracking):
    parent, children = sweep_runs(tracking, "grid")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{base}/health", server)
        experiment = _api(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=grid")["experiment"]
        found = _api(
            f"{base}/api/2.0/mlflow/runs/search",
            {
                "experiment_ids": [experiment["experiment_id"]],
                "filter": f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
            },
        )["runs"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    served = {r["info"]["run_id"]: {m["key"]: m["value"] for m in r["data"]["metrics"]} for r in found}
    assert set(served) == {c.info.run_id for c in children}
    for child in children:
        assert served[child.info.run_id]["test/accuracy"] == pytest.approx(child.data.metrics["test/accuracy"])


def _wait_until_up(url: str, server: subprocess.Popen, attempts: int = 120) -> None:
    for _ in range(attempts):
        assert server.poll() is None, "mlflow server exited"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer")


def _api(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path, data_dir, tracking):
    # job 0 fails before training starts; jobs 1 and 2 are the same config, run after it in one process
    result = sweep(tmp_path, data_dir, tracking, "failing", "trainer.precision=fp16,no,no")
    assert result.returncode != 0 and "trainer.precision=fp16 needs a GPU" in result.stderr
    parent, children = sweep_runs(tracking, "failing")
    by_job = {c.data.tags["sweep.job_num"]: c for c in children}
    assert sorted(by_job) == ["0", "1", "2"] and parent.info.status == "FAILED"
    assert by_job["0"].info.status == "FAILED" and "trainer.precision=fp16" in by_job["0"].data.tags["error"]
    assert by_job["1"].info.status == by_job["2"].info.status == "FINISHED"
    # nothing leaks from one job into the next (RNG, Accelerate state, MLflow run)
    for key in ("val/loss", "test/accuracy", "test/auroc"):
        assert by_job["1"].data.metrics[key] == by_job["2"].data.metrics[key]


def test_optuna_sweep_returns_the_best_value_and_continues_its_study(tmp_path, data_dir, tracking):
    result = sweep(tmp_path, data_dir, tracking, "tuning", "hparams_search=optuna", "hydra.sweeper.n_trials=3")
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="tuning", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    values = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == len(values) == 3
    assert {"optim.optimizer.lr", "head.dropout", "head.dim"} <= set(study.trials[0].params)  # batch: fixed
    (sweep_dir,) = (tmp_path / "multirun").iterdir()
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.best_value == max(values) == study.best_value
    parent, children = sweep_runs(tracking, "tuning")
    assert len(children) == 3 and parent.data.metrics["sweep/best_value"] == pytest.approx(max(values))
    # the trials' objective is what each child run reports as its best val/balanced_accuracy
    assert sorted(values) == pytest.approx(
        sorted(
            max(h.value for h in MlflowClient().get_metric_history(c.info.run_id, "val/balanced_accuracy"))
            for c in children
        )
    )

    again = sweep(tmp_path, data_dir, tracking, "tuning", "hparams_search=optuna", "hydra.sweeper.n_trials=1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(optuna.load_study(study_name="tuning", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials) == 4


def test_two_job_sweep_through_the_submitit_local_launcher(tmp_path, data_dir, tracking):
    result = sweep(tmp_path, data_dir, tracking, "submitit", "hydra/launcher=local", "seed=0,1")
    assert result.returncode == 0, result.stderr[-3000:]
    # the jobs ran in their own processes, yet found one sweep folder and one parent run
    (sweep_dir,) = (tmp_path / "multirun").iterdir()
    assert all((sweep_dir / job / "checkpoints" / "best" / "model.safetensors").is_file() for job in ("0", "1"))
    parent, children = sweep_runs(tracking, "submitit")
    assert parent.info.status == "FINISHED"
    assert sorted(c.data.tags["override.seed"] for c in children) == ["0", "1"]
    assert {c.info.status for c in children} == {"FINISHED"}


def test_slurm_launcher_config_composes_one_task_per_gpu():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose(
            "config",
            overrides=["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4
    assert launcher.max_num_timeout > 0 and launcher.submitit_folder.startswith(str(cfg.hydra.sweep.dir))


@pytest.mark.parametrize(
    ("head", "tuned"),
    [
        ("elegans", {"head.dim", "head.dropout"}),
        ("ws", {"head.dim", "head.dropout"}),
        ("linear", {"head.dropout"}),
        ("elegans_published", {"head.dim"}),
    ],
)
def test_optuna_tunes_what_the_head_has(make_cfg, head, tuned):
    trial = optuna.create_study().ask()
    suggest_head_params(make_cfg([f"head={head}"]), trial)
    assert set(trial.params) == tuned
