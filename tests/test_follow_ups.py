"""The commands a finished run prints run as printed, on the run's own data: evaluate reproduces the run's test
metric, explain and compare finish (issue 33, item 2)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from cellexp.tracking.follow_up import carried_overrides
from tests.conftest import ROOT, subprocess_env

TINY_RUN = ["backbone=test_resnet", "dataset.image_size=32", "trainer.max_epochs=1", "trainer.cpu=true"]
SMALL_DATA = "dataset.generate.images_per_line={train:3,val:1,test:1}"
RUNS = {
    "default": [*TINY_RUN, SMALL_DATA, "dataset.limit=96"],
    "debug": ["debug=default", "trainer.max_epochs=1", SMALL_DATA, "dataset.limit=96"],
    "16bit": ["dataset=synthetic_16bit", *TINY_RUN, SMALL_DATA, "dataset.limit=96"],
}
FINISHED = re.compile(r"finished run ([0-9a-f]{32}) ")


def train_py(args: list[str], **env: str) -> str:
    """Runs the command; its output, which has no MLflow warnings or download bars in it."""
    environment = {**subprocess_env(), **env}
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=environment, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{shlex.join(args)}\n{output[-3000:]}"
    assert "UserWarning" not in output and "Downloading artifacts" not in output, output[-3000:]
    return output


def printed_steps(output: str) -> dict[str, str]:
    """The (what -> command) lines under a run's `finished run` line."""
    lines = output[output.index("finished run") :].splitlines()[1:]
    steps = {}
    for line in lines:
        if not line.startswith("  "):
            break
        what, command = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        steps[what] = command.split("   #")[0]
    return steps


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory) -> dict[str, tuple[str, str, dict[str, str]]]:
    """Three small runs in one store: name -> (run id, tracking uri, the commands it printed). Their data is their
    own: their 16-bit dataset's settings differ from test_predict's, and a generated folder is never reused."""
    root = tmp_path_factory.mktemp("follow_ups")
    data_dir = tmp_path_factory.mktemp("follow_ups_data")
    done = {}
    for name, overrides in RUNS.items():
        output = train_py(
            [sys.executable, "train.py", f"paths.root_dir={root}", f"paths.data_dir={data_dir}", *overrides]
        )
        done[name] = (FINISHED.search(output).group(1), f"sqlite:///{root}/mlflow.db", printed_steps(output))
    return done


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_every_printed_command_runs_and_evaluate_reproduces_the_test_metric(finished_runs, name, tmp_path):
    run_id, uri, steps = finished_runs[name]
    assert {"evaluate", "explain", "compare", "list runs", "open the UI"} <= set(steps)
    client = MlflowClient(tracking_uri=uri)
    trained = client.get_run(run_id).data.metrics["test/balanced_accuracy"]

    evaluated = FINISHED.search(train_py(shlex.split(steps["evaluate"]))).group(1)
    evaluation = client.get_run(evaluated)
    assert evaluation.data.metrics["test/balanced_accuracy"] == pytest.approx(trained, abs=1e-6)
    assert evaluation.info.experiment_id == client.get_run(run_id).info.experiment_id
    if name == "default":  # the same by run id, from the store in MLFLOW_TRACKING_URI (a download, quietly)
        by_id = re.sub(r"ckpt=\S+", f"ckpt={run_id}", steps["evaluate"])
        again = FINISHED.search(train_py(shlex.split(by_id), MLFLOW_TRACKING_URI=uri)).group(1)
        assert client.get_run(again).data.metrics["test/balanced_accuracy"] == pytest.approx(trained, abs=1e-6)
    train_py(shlex.split(steps["explain"]))
    # the runs share a store: a command that the default run printed too is run there only
    fresh = {
        key for key in ("compare", "list runs") if name == "default" or steps[key] != finished_runs["default"][2][key]
    }
    if "compare" in fresh:
        out = train_py([*shlex.split(steps["compare"]), "--out", str(tmp_path)])
        assert (tmp_path / "compare.csv").is_file() and "runs of" in out
    if "list runs" in fresh:
        listed = train_py(shlex.split(steps["list runs"]))
        assert all(finished_runs[other][0] in listed for other in RUNS) and evaluated in listed


def test_a_preset_is_carried_as_given_where_the_follow_up_accepts_it_else_as_the_keys_it_reads():
    overrides = ["debug=default", "head=mlp", "seed=3", "paths.data_dir=/d", "trainer.max_epochs=2", "task.fit=true"]
    assert carried_overrides(overrides, "evaluate") == ["debug=default", "seed=3", "paths.data_dir=/d"]
    # task=xai refuses trainer.max_epochs and batch_size that differ from the defaults: the preset's other keys
    assert carried_overrides(overrides, "explain") == [
        "trainer.cpu=true",
        "dataset.limit=512",
        "dataset.image_size=32",
        "logger.experiment_name=debug",
        "seed=3",
        "paths.data_dir=/d",
    ]
    given = ["dataset=synthetic_16bit", "dataset.limit=64", "+experiment=quick_demo", "logger.run_name=x"]
    assert carried_overrides(given, "evaluate") == given[:3]


def test_the_printed_interpreter_is_the_one_that_ran(monkeypatch, tmp_path):
    from cellexp.tracking import handoff

    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    monkeypatch.setattr(handoff, "project_root", lambda: str(tmp_path))
    monkeypatch.setattr(handoff.sys, "executable", str(venv / "bin" / "python"))
    assert handoff.python() == ".venv/bin/python"
    assert handoff.ui_command("sqlite:///x.db").startswith(".venv/bin/mlflow ui --backend-store-uri sqlite:///x.db")
    # MLflow 3's UI lands on the runs table only when the address asks for the classic-ML workflow
    landing = "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert handoff.ui_command("sqlite:///x.db", "7").endswith(f"# then open {landing}")
    assert (
        handoff.ui_command("http://server:5000/", "7")
        == "open http://server:5000/#/experiments/7/runs?workflowType=machine_learning"
    )
    monkeypatch.setattr(handoff, "project_root", lambda: "/elsewhere")
    assert handoff.python() == str(venv / "bin" / "python")
    monkeypatch.setattr(handoff.sys, "executable", "/usr/bin/python3")
    assert handoff.python() == "python"
