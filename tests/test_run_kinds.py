"""Every run says what it did: `cellexp.commands.runs` shows it, `cellexp.commands.compare` compares training runs
only, grouped run by run by what each recorded (issue 33, item 5)."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from cellexp.commands import compare, runs
from cellexp.tracking.identity import run_label
from cellexp.tracking.kinds import run_kind


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A store with an experiment of two training runs (two backbones, one a sweep job), an evaluation and an
    explanation of them, a failed run, and a run logged before the kind tag (params only)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("exp", artifact_location=f"file://{tmp_path / 'art'}")
    made = {}
    for name, tags, params, accuracy, status in (
        ("a", {"kind": "train", "backbone": "resnet18", "head": "mlp"}, {}, 0.5, "FINISHED"),
        ("b", {"kind": "train", "override.backbone": "densenet121", "head": "mlp"}, {}, 0.7, "FINISHED"),
        ("eval", {"kind": "evaluate", "backbone": "resnet18", "head": "mlp"}, {}, 0.5, "FINISHED"),
        ("xai", {"kind": "explain", "backbone": "resnet18", "head": "mlp"}, {}, 0.5, "FINISHED"),
        ("broken", {"kind": "train", "backbone": "resnet18", "head": "mlp"}, {}, 0.1, "FAILED"),
        ("old eval", {"backbone": "resnet18"}, {"task.name": "classify", "task.fit": "False"}, 0.5, "FINISHED"),
    ):  # fmt: skip
        run = client.create_run(experiment, run_name=name, tags=tags)
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        for metric in compare.DEFAULT_METRICS:
            client.log_metric(run.info.run_id, metric, accuracy)
        client.set_terminated(run.info.run_id, status)
        made[name] = run.info.run_id
    mlflow.set_tracking_uri(uri)
    return uri, made


def test_compare_takes_the_finished_training_runs_and_groups_each_by_what_it_recorded(store):
    finished, _, _ = compare.load_runs("exp")
    assert sorted(finished["tags.mlflow.runName"]) == ["a", "b"]
    table = compare.comparison_table(finished, list(compare.DEFAULT_METRICS), ["backbone", "head"])
    assert table[["backbone", "runs"]].values.tolist() == [["densenet121", 1], ["resnet18", 1]]
    evaluations, _, _ = compare.load_runs("exp", kind="evaluate")
    assert sorted(evaluations["tags.mlflow.runName"]) == ["eval", "old eval"]
    with pytest.raises(compare.CompareError, match=r"no finished predict runs to compare; it has .*1 train \(failed\)"):
        compare.load_runs("exp", kind="predict")


def test_runs_shows_each_runs_kind_and_filters_by_it(store, capsys):
    uri, made = store
    kinds = {row["name"]: (row["kind"], row["status"]) for row in runs.recent_runs(uri)}
    assert kinds == {
        "a": ("train", "FINISHED"),
        "b": ("train", "FINISHED"),
        "eval": ("evaluate", "FINISHED"),
        "xai": ("explain", "FINISHED"),
        "broken": ("train", "FAILED"),
        "old eval": ("evaluate", "FINISHED"),
    }
    assert runs.main(["--tracking-uri", uri, "--kind", "explain"]) == 0
    out = capsys.readouterr().out
    assert made["xai"] in out and made["a"] not in out and out.splitlines()[0].split()[:6] == [
        "run", "id", "experiment", "name", "kind", "status"
    ]  # fmt: skip


def test_each_task_names_its_kind_and_predict_names_no_dataset(make_cfg):
    assert [run_kind(t, f) for t, f in (("classify", True), ("classify", "False"), ("mil", False))] == [
        "train",
        "evaluate",
        "evaluate",
    ]
    assert [run_kind(t, None) for t in ("ssl", "xai", "predict", "embed")] == ["train", "explain", "predict", "embed"]
    cfg = make_cfg(["task=predict", "ckpt=x", "task.images=/plate"])
    assert run_label(cfg)["dataset"] == "task.images", "predict reads task.images, not the default dataset"
    assert run_label(make_cfg([]))["dataset"] == "synthetic"
    assert OmegaConf.select(cfg, "dataset.name") == "synthetic"  # the config still composes one


def test_the_run_page_lists_swept_values_and_the_model_first_and_unset_keys_last():
    from cellexp.tracking.param_order import ordered_params

    config = {"seed": "0", "ckpt": "None", "tuning.trial": "None", "backbone.model_name": "resnet18", "x.y": "1"}
    ordered = ordered_params(config, {"lr": "0.001"})
    assert list(ordered) == ["lr", "backbone.model_name", "seed", "x.y", "ckpt", "tuning.trial"]
    assert ordered == {**config, "lr": "0.001"}
