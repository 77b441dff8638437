"""A run folder belongs to one run: a second run is refused by name, a second process too, and a run's id always
loads that run's own weights."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import cellexp
from cellexp.config import RUN_LOCK
from cellexp.engine.checkpoint import load_model_state
from cellexp.errors import CellexpError, ConfigError
from cellexp.tracking.session import RUN_ID_FILE
from tests.conftest import tracked_run

SMALL = ["trainer.max_epochs=1", "dataset.limit=64", "trainer.early_stopping=null"]


def _test_metric(cfg) -> tuple[float, float]:
    """Test balanced accuracy and loss (the loss tells apart two near-chance models)."""
    metrics = tracked_run(cfg).data.metrics
    return metrics["test/balanced_accuracy"], metrics["test/loss"]


@pytest.mark.slow
def test_a_second_run_in_a_runs_folder_is_refused_and_the_first_id_evaluates_its_own_weights(make_cfg, tmp_path):
    first = make_cfg(SMALL, run_name="shared")
    cellexp.run(first)
    first_id, expected = tracked_run(first).info.run_id, _test_metric(first)
    best = tmp_path / "shared" / "checkpoints" / "best"
    weights = (best / "model.safetensors").read_bytes()

    with pytest.raises(ConfigError, match=f"holds MLflow run {first_id}'s results .*: give a new folder, or") as err:
        cellexp.run(make_cfg([*SMALL, "seed=1"], run_name="shared"))
    assert "\n" not in str(err.value) and (best / "model.safetensors").read_bytes() == weights

    evaluated = make_cfg(["task.fit=false", "dataset.limit=64", f"ckpt={first_id}"], run_name="evaluated")
    cellexp.run(evaluated)
    assert _test_metric(evaluated) == expected

    # a folder taken over by another run (as before this was refused) is not read for the first run's id: its
    # artifacts are
    (tmp_path / "shared" / RUN_ID_FILE).write_text("0" * 32)
    save_file({k: torch.zeros_like(v) for k, v in load_model_state(best).items()}, best / "model.safetensors")
    again = make_cfg(["task.fit=false", "dataset.limit=64", f"ckpt={first_id}"], run_name="again")
    cellexp.run(again)
    assert _test_metric(again) == expected


def test_a_second_process_in_a_folder_in_use_is_refused_by_name(make_cfg, tmp_path):
    folder = tmp_path / "busy"
    folder.mkdir()
    hold = (
        "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); "
        "print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(folder / RUN_LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=r"hydra.run.dir=.*busy is in use by another process") as err:
            cellexp.run(make_cfg(["trainer.resume=auto", "logger=none"], run_name="busy"))
        assert "\n" not in str(err.value) and sorted(p.name for p in folder.iterdir()) == [RUN_LOCK]
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs under tmp_path (where the machine lets this process mount one)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk, leave: int) -> Path:
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(shutil.disk_usage(disk).free - leave, 0))
    return filler


@pytest.mark.slow
def test_a_full_disk_at_the_first_checkpoint_is_one_line_and_the_run_resumes(make_cfg, small_disk):
    (small_disk / "run").mkdir()
    filler = _fill(small_disk, leave=256 * 1024)  # the config and the run id fit, a checkpoint does not
    cfg = make_cfg([*SMALL, "head=linear"], run_name="disk/run")  # no head figure: the checkpoint is what fills it
    with pytest.raises(CellexpError, match=r"^no space left on the device writing .*: free some space, then") as err:
        cellexp.run(cfg)
    assert "\n" not in str(err.value), str(err.value)
    assert tracked_run(cfg).info.status == "FAILED"
    checkpoints = small_disk / "run" / "checkpoints"
    assert any(".tmp-" in p.name for p in checkpoints.iterdir())  # it was the checkpoint's write that failed
    assert not [p for p in checkpoints.iterdir() if not p.name.startswith(".")]  # nothing half-written counts
    filler.unlink()
    resumed = make_cfg([*SMALL, "head=linear", "trainer.resume=auto"], run_name="disk/run")
    cellexp.run(resumed)
    assert tracked_run(resumed).info.status == "FINISHED"


def test_a_full_disk_at_the_start_is_one_line(make_cfg, small_disk):
    (small_disk / "run").mkdir()
    _fill(small_disk, leave=0)
    with pytest.raises(CellexpError, match=r"^no space left on the device writing ") as err:
        cellexp.run(make_cfg([*SMALL, "logger=none"], run_name="disk/run"))
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_a_full_disk_while_generating_data_is_one_line_and_leaves_no_dataset(make_cfg, small_disk):
    _fill(small_disk, leave=512 * 1024)
    cfg = make_cfg([*SMALL, f"paths.data_dir={small_disk / 'data'}", "logger=none"], run_name="run")
    with pytest.raises(CellexpError, match=r"^no space left on the device writing ") as err:
        cellexp.run(cfg)
    assert "\n" not in str(err.value)
    assert not (small_disk / "data" / "synthetic_livecell" / "seed0").exists()  # only its .partial staging
