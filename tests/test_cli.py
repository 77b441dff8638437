"""train.py from the command line: bad input gets one clear message naming it, not a library traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, subprocess_env


def train(*overrides: str, tmp_path) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "train.py",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.data_dir={tmp_path / 'data'}",
        "logger=none",
        *overrides,
    ]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, env=subprocess_env())


def test_unknown_group_option_lists_the_valid_ones(tmp_path):
    result = train("backbone=resnet1800", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'backbone/resnet1800'" in result.stderr
    assert "resnet18" in result.stderr and "efficientnetv2_m" in result.stderr


def test_missing_dataset_folder_is_named(tmp_path):
    missing = tmp_path / "no" / "LIVECell"
    result = train("dataset=livecell", f"dataset.root={missing}", tmp_path=tmp_path)
    assert result.returncode == 1
    assert f"dataset folder {missing} does not exist" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unset_dataset_folder_is_named(tmp_path):
    result = train("dataset=livecell", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "dataset.root is not set: dataset=livecell reads your copy of the data, give dataset.root=" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_fp16_on_cpu_is_a_clear_error(tmp_path):
    result = train("trainer.precision=fp16", "trainer.cpu=true", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "trainer.precision=fp16 needs a GPU" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluation_without_a_checkpoint_says_what_to_give(tmp_path):
    result = train("task.fit=false", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "give ckpt=<checkpoint, run folder or MLflow run id>" in result.stderr


def test_unknown_checkpoint_is_named(tmp_path):
    result = train("ckpt=no_such_run", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "ckpt='no_such_run' is neither an existing file or folder nor an MLflow run id" in result.stderr


def test_image_size_that_does_not_fit_the_patch_size_is_named(tmp_path):
    result = train("backbone=vit_b32", "dataset.image_size=48", "dataset.limit=8", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "image_size=48 is not divisible by the patch size 32" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # refused before any data is generated


@pytest.mark.slow
def test_a_log_file_has_no_progress_bar_frames(tmp_path):
    """Off a terminal, progress is a line now and then, never carriage-return frames (a SLURM .out stays readable)."""
    result = train(
        "debug=default",
        "trainer.max_epochs=1",
        "head=linear",
        "dataset.image_size=32",
        "dataset.limit=64",
        "dataset.generate.images_per_line={train:2,val:1,test:1}",
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "epoch 1/1" in log and "test:" in log
    for text in (log, result.stdout, result.stderr):
        assert "\r" not in text
