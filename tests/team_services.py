"""The real services that tests/test_team_scale.py runs against: PostgreSQL and `mlflow server` (through
cellexp.commands.team, as a head node starts them), and a one-node SLURM cluster on 127.0.0.1 (munged, slurmctld,
slurmd)
in a temporary folder. Everything binds to 127.0.0.1 and is stopped by the process that started it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from cellexp.commands.team import (
    POSTGRES_BINARIES,
    Postgres,
    free_port,
    postgres_bin,
    start_mlflow_server,
    stop_process,
)

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol")
SLURM_CPUS = 2
# SIGTERM to SIGKILL: a cancelled run stops at its next training step, saves a checkpoint and closes its MLflow run;
# SLURM's default, 30 s, is less than one step took on this 2-core machine under other work (up to 37 s), and a run
# SIGKILLed first is closed FAILED by the sweeper instead of KILLED by itself
SLURM_KILL_WAIT_S = 120


def missing_binaries() -> list[str]:
    """The programs these services need that this machine lacks (Debian: postgresql, slurm-wlm, munge)."""
    missing = []
    for name in POSTGRES_BINARIES:
        try:
            postgres_bin(name)
        except FileNotFoundError:
            missing.append(name)
    return missing + [name for name in SLURM_BINARIES if shutil.which(name) is None]


@contextmanager
def team_server():
    """PostgreSQL on a free loopback port and an MLflow server over it: (server URL, Postgres, artifact folder).
    In a folder of its own under /tmp that the `postgres` user can reach (pytest's are the owner's only)."""
    folder = Path(tempfile.mkdtemp(prefix="cellexp-team-"))
    folder.chmod(0o755)
    postgres = Postgres(folder / "postgres", "127.0.0.1", free_port()).start()
    artifacts = folder / "artifacts"
    server = None
    try:
        port = free_port()
        server = start_mlflow_server(
            postgres.url("mlflow"), str(artifacts), "127.0.0.1", port, workers=2, log=folder / "mlflow.log"
        )
        yield f"http://127.0.0.1:{port}", postgres, artifacts
    finally:
        if server is not None:
            stop_process(server)
        postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)


SLURM_CONF = """\
ClusterName=cellexp-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={folder}/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait={kill_wait}
SchedulerParameters=sched_interval=1,bf_interval=1
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@contextmanager
def slurm_cluster(folder: Path):
    """A one-node cluster (this machine, `SLURM_CPUS` CPUs, partition `debug`) with its own munge key and socket;
    SLURM_CONF points the client commands (sbatch, squeue, scancel) at it while it runs."""
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    values = {"host": host, "folder": folder, "cpus": SLURM_CPUS, "kill_wait": SLURM_KILL_WAIT_S}
    values |= {"ctld_port": free_port(), "d_port": free_port()}
    conf.write_text(SLURM_CONF.format(**values))
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge = [f"--key-file={key}", f"--socket={folder}/munge.socket", f"--pid-file={folder}/munged.pid"]
    munge += [f"--log-file={folder}/munged.log", f"--seed-file={folder}/munged.seed", "--force", "--foreground"]
    daemons = []
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        daemons.append(_daemon(["munged", *munge], folder / "munged.out"))
        _wait_for(lambda: (folder / "munge.socket").exists(), "munged's socket", folder)
        daemons.append(_daemon(["slurmctld", "-D", "-c", "-f", str(conf)], folder / "slurmctld.out"))
        daemons.append(_daemon(["slurmd", "-D", "-f", str(conf), "-N", host], folder / "slurmd.out"))
        _wait_for(lambda: _node_state(host) in ("idle", "mixed", "allocated"), "an idle node", folder)
        yield {"host": host, "conf": conf, "partition": "debug"}
    finally:
        _cancel_all(daemons)
        for daemon in reversed(daemons):
            stop_process(daemon)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


def _cancel_all(daemons: list) -> None:
    """Every job gone before the daemons stop, so that no job step outlives its slurmd: SIGKILL at once, the batch
    script included (a job past its run ignores SIGTERM, as submitit does, and would last KillWait)."""
    if len(daemons) < 3:
        return
    subprocess.run(["scancel", "--full", "--signal=KILL", "--partition=debug"], capture_output=True, timeout=30)
    subprocess.run(["scancel", "--partition=debug"], capture_output=True, timeout=30)  # and the pending ones
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h"], capture_output=True, text=True, timeout=10)
        if out.returncode != 0 or not out.stdout.strip():
            return
        time.sleep(1)


def _daemon(command: list[str], out: Path) -> subprocess.Popen:
    with out.open("w") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _node_state(host: str) -> str:
    out = subprocess.run(["sinfo", "-h", "-n", host, "-o", "%t"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip().rstrip("*~#")


def _wait_for(ready, what: str, folder: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            logs = {p.name: p.read_text()[-1500:] for p in folder.glob("*.out")}
            logs |= {p.name: p.read_text()[-1500:] for p in folder.glob("*.log")}
            raise RuntimeError(f"no {what} after {seconds:.0f} s: {logs}")
        time.sleep(0.5)
