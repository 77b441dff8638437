"""SLURM without torchrun: ranks from SLURM's variables, one folder per job, resume after a requeue."""

from __future__ import annotations

import os
import signal
import time

import pytest

from cellexp.config import is_main_rank
from cellexp.engine.cluster import export_slurm_ranks
from cellexp.engine.preemption import Preempted, stop_on_signals

TORCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torch_ranks(monkeypatch):
    """No launcher's variables; whatever the test exports is removed afterwards (setenv records them)."""
    for name in TORCH_VARIABLES:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


@pytest.fixture
def slurm_task(monkeypatch, no_torch_ranks):
    """Task 3 of a 2-node job with 2 tasks per node, as srun starts it."""
    for name, value in {
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "4",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODEID": "1",
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
    }.items():
        monkeypatch.setenv(name, value)


def test_slurm_tasks_become_torch_ranks(slurm_task):
    assert not is_main_rank()  # known from SLURM before any process group exists
    assert export_slurm_ranks()
    exported = {name: os.environ[name] for name in TORCH_VARIABLES}
    assert exported == {
        "RANK": "3",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "4",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": exported["MASTER_PORT"],
    }
    assert 20000 <= int(exported["MASTER_PORT"]) <= 60000
    port = exported["MASTER_PORT"]
    for name in TORCH_VARIABLES:
        os.environ.pop(name)
    export_slurm_ranks()
    assert os.environ["MASTER_PORT"] == port  # every task derives the same port from the job id


def test_a_launcher_that_set_ranks_is_left_alone(slurm_task, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    assert not export_slurm_ranks() and "MASTER_ADDR" not in os.environ


def test_single_task_jobs_and_plain_machines_need_no_ranks(monkeypatch, no_torch_ranks):
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert not export_slurm_ranks() and "RANK" not in os.environ
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert not export_slurm_ranks() and "RANK" not in os.environ


def test_requeued_slurm_job_resumes_by_itself(make_cfg, monkeypatch):
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert make_cfg().trainer.resume is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert make_cfg().trainer.resume == "auto"
    assert make_cfg(["trainer.resume=null"]).trainer.resume is None


def test_accelerate_template_is_a_valid_multi_node_config():
    from accelerate.commands.config.config_args import load_config_from_file

    from tests.conftest import ROOT

    config = load_config_from_file(str(ROOT / "cluster" / "accelerate_multi_node.yaml"))
    assert str(config.distributed_type).endswith("MULTI_GPU") and config.num_machines == 2
    assert config.num_processes % config.num_machines == 0 and not config.use_cpu


def test_a_launchers_handler_gets_the_signal_once_the_run_has_stopped():
    """In a SLURM job, submitit's SIGUSR2 handler requeues the job: cellexp stops the run first (MLflow: KILLED),
    then hands the signal on, once, to the handler that was there before."""
    seen = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(signum))
    try:
        with pytest.raises(Preempted), stop_on_signals():
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(1)  # the signal arrives at the next bytecode; never reached
        assert seen == [signal.SIGUSR2]
        with pytest.raises(RuntimeError), stop_on_signals():  # Preempted wrapped on its way out (OmegaConf does)
            try:
                os.kill(os.getpid(), signal.SIGUSR2)
                time.sleep(1)
            except Preempted as stopped:
                raise RuntimeError("Preempted raised while resolving interpolation") from stopped
        assert seen == [signal.SIGUSR2] * 2
        with stop_on_signals():  # a run that ends normally hands nothing on
            pass
        assert seen == [signal.SIGUSR2] * 2
    finally:
        signal.signal(signal.SIGUSR2, previous)
