"""A run imports what it uses: the libraries of other tasks and of other kinds of data (seconds a process, and every
test starts many) wait until a run needs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY, subprocess_env

# what no 2-D crop run of task=classify uses: the 3-D plate readers and networks (zarr, ome-zarr, dask, MONAI), the
# time-lapse patch readers (scikit-image), the UMAP drawing of task.umap_over_training (pytorch_grad_cam,
# scikit-learn, UMAP, numba) and the profile scoring of data with treatments (copairs, duckdb)
NOT_FOR_2D = set("zarr ome_zarr dask monai skimage sklearn umap numba pytorch_grad_cam copairs duckdb".split())


def imported(code: str, watched: set[str] = NOT_FOR_2D) -> set[str]:
    """The packages of `watched` that a fresh interpreter has imported once `code` has run."""
    report = f"import json, sys; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {watched})))"
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(),
        check=True,
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_importing_task_classify_imports_no_other_tasks_libraries():
    """torch, timm, torchmetrics and MLflow: a few seconds, hence slow."""
    assert imported("import cellexp.tasks.classify") == set()


@pytest.mark.slow
def test_importing_task_ssl_leaves_torchmetrics_to_the_classification_metrics():
    """DINO's own evaluation (kNN accuracy, spread) is plain torch."""
    assert imported("import cellexp.tasks.ssl", {"torchmetrics"}) == set()


def test_importing_the_run_dispatch_imports_no_task():
    """A bad config is refused before any task module (torch and the rest) is imported."""
    assert imported("import sys\nimport cellexp.run\nassert 'torch' not in sys.modules, 'torch'") == set()


@pytest.mark.slow
def test_a_2d_training_and_its_evaluation_import_no_other_tasks_libraries(tmp_path):
    """Whole train.py processes, tracked to MLflow: a quick training (which logs the MLflow model) and an
    evaluation of it."""
    common = [
        *TINY,
        "trainer.max_epochs=1",
        "dataset.limit=64",
        f"paths.data_dir={tmp_path / 'data'}",
        f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"logger.artifact_location=file://{tmp_path / 'mlartifacts'}",
        "logger.system_metrics=false",
    ]
    runs = {
        "train": [f"hydra.run.dir={tmp_path / 'trained'}", *common],
        "evaluate": ["task.fit=false", f"ckpt={tmp_path / 'trained'}", f"hydra.run.dir={tmp_path / 'eval'}", *common],
    }
    for name, overrides in runs.items():
        code = f"import runpy\nsys.argv = ['train.py', *{overrides!r}]\nrunpy.run_path('train.py', run_name='__main__')"
        assert imported(f"import sys\n{code}") == set(), name
