"""Preparation work cut into shards, run in worker processes, and the file identity that keys what was prepared.

Every source's crop store (LIVECell images, 3-D plate fields) is prepared this way: a job is
(out folder, shard number, [(file name, ...), ...], ...), and a finished shard stays on disk for the next attempt.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from cellexp.errors import DataError


def file_identity(path: Path) -> list:
    """What tells a file apart from its earlier versions: its resolved path, size and modification time."""
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def run_shards(jobs: list, workers: int | None, work: Callable) -> Iterator[tuple[int, int]]:
    """Shards in worker processes (spawned: no inherited threads or locks), or inline for one worker or shard.

    A worker that dies (killed, out of memory, a crash in a C library) is an error naming the shards it may have
    been preparing, never a hang; the shards finished before stay for the next attempt.
    """
    workers = min(workers or len(os.sched_getaffinity(0)), len(jobs))
    if workers <= 1:
        yield from map(work, jobs)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending = {pool.submit(work, job): job for job in jobs}
        try:
            for future in as_completed(pending):
                yield future.result()
        except BrokenProcessPool:
            unfinished = [job for future, job in pending.items() if not future.done() or future.exception()]
            named = ", ".join(
                f"shard {job[1]} ({job[2][0][0]} and {len(job[2]) - 1} more images)" for job in unfinished
            )
            raise DataError(
                f"a preparation worker died (killed, out of memory, or a crash) while preparing {named}; the "
                "finished shards are kept: rerun to continue, with dataset.prepare_workers=1 to find the image"
            ) from None
