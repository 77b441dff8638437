"""Process groups from SLURM: a job that runs one task per GPU (srun, or the submitit launcher)
needs no torchrun; each task learns its rank and the rendezvous address from SLURM's variables."""

from __future__ import annotations

import os
import random

MASTER_PORT_RANGE = (20000, 60000)


def export_slurm_ranks() -> bool:
    """Set RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT from SLURM for a multi-task job.

    Does nothing outside SLURM, for a single task, or where a launcher (torchrun, accelerate) already
    set RANK. The port is drawn from the job id, so that every task agrees on it without talking.
    """
    if "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return False
    from submitit.slurm.slurm import SlurmJobEnvironment

    job = SlurmJobEnvironment()
    port = os.environ.get("MASTER_PORT") or str(random.Random(job.job_id).randint(*MASTER_PORT_RANGE))
    os.environ.update(
        {
            "MASTER_ADDR": job.hostnames[0],
            "MASTER_PORT": port,
            "RANK": str(job.global_rank),
            "LOCAL_RANK": str(job.local_rank),
            "WORLD_SIZE": str(job.num_tasks),
            "LOCAL_WORLD_SIZE": str(job.num_tasks // job.num_nodes),
        }
    )
    return True


def requeued() -> bool:
    """True in a SLURM job that was requeued (time limit, preemption, node failure)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
