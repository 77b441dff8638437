"""How many runs can log at once before a metric batch takes over a second: `mlflow server` over PostgreSQL (the
team setup, `python -m cellexp.commands.team`) against a SQLite file on local disk, under the same load.

    python benchmarks/bench_tracking_load.py [--writers 1 4 16 32] [--batches 20] [--metrics 10] [--interval 0.25]

Each level starts that many writer processes at once (forked, released together by a barrier); each opens a run and
logs `--batches` batches of `--metrics` metrics (a training step's or an epoch's worth), one every `--interval`
seconds, timing every call; SQLite's locked-database errors are retried as cellexp's runs retry them. Afterwards
every run's metric histories are read back and counted: a metric sent but not stored is lost. The table gives the
latency percentiles per batch and the lost metrics; the last line, the most writers each store held at p95 < 1 s.
PostgreSQL and the server run in a temporary folder on loopback ports (needs postgresql installed, and psycopg).
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from cellexp.commands.team import Postgres, free_port, start_mlflow_server, stop_process
from cellexp.tracking.session import retrying

LIMIT_S = 1.0


def writer(uri: str, experiment_id: str, index: int, args, barrier, results) -> None:
    client = MlflowClient(uri)
    run_id = retrying(client.create_run, experiment_id, run_name=f"writer {index}").info.run_id
    barrier.wait()
    latencies, failed = [], 0
    for step in range(args.batches):
        metrics = [Metric(f"m{k}", float(step * k), int(time.time() * 1000), step) for k in range(args.metrics)]
        started = time.perf_counter()
        try:
            retrying(client.log_batch, run_id, metrics=metrics)
        except Exception:  # retries exhausted: counted as lost below
            failed += 1
        latencies.append(time.perf_counter() - started)
        time.sleep(max(args.interval - latencies[-1], 0))
    retrying(client.set_terminated, run_id)
    results.put((run_id, latencies, failed))


def level(uri: str, writers: int, args) -> dict:
    """One load level against one store: latency percentiles per batch, and metrics sent vs stored."""
    client = MlflowClient(uri)
    experiment_id = retrying(client.create_experiment, f"load-{writers}-{time.time_ns()}")
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(writers), context.Queue()
    processes = [
        context.Process(target=writer, args=(uri, experiment_id, i, args, barrier, results)) for i in range(writers)
    ]
    for process in processes:
        process.start()
    finished = [results.get(timeout=args.timeout) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    latencies = sorted(s for _, run_latencies, _ in finished for s in run_latencies)
    stored = sum(
        len(retrying(client.get_metric_history, run_id, f"m{k}"))
        for run_id, _, _ in finished
        for k in range(args.metrics)
    )
    return {
        "p50": statistics.median(latencies),
        "p95": latencies[int(0.95 * (len(latencies) - 1))],
        "max": latencies[-1],
        "sent": writers * args.batches * args.metrics,
        "stored": stored,
        "failed_batches": sum(failed for _, _, failed in finished),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--server-workers", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600, help="seconds a level may take")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cellexp-load-"))
    folder.chmod(0o755)  # the postgres user's cluster lives inside
    postgres = Postgres(folder / "postgres", "127.0.0.1", free_port()).start()
    server = None
    try:
        port = free_port()
        server = start_mlflow_server(
            postgres.url("mlflow"),
            str(folder / "artifacts"),
            "127.0.0.1",
            port,
            args.server_workers,
            None,
            folder / "mlflow.log",
        )
        stores = {"postgres+server": f"http://127.0.0.1:{port}", "sqlite file": f"sqlite:///{folder / 'mlflow.db'}"}
        MlflowClient(stores["sqlite file"]).search_experiments()  # tables made once, before the writers race
        held, broken = dict.fromkeys(stores, 0), set()
        print(f"{'writers':>7} {'store':<16} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'sent':>7} {'stored':>7} lost")
        for writers in args.writers:
            for name, uri in stores.items():
                figures = level(uri, writers, args)
                lost = figures["sent"] - figures["stored"]
                print(
                    f"{writers:>7} {name:<16} {figures['p50']:>7.3f} {figures['p95']:>7.3f} {figures['max']:>7.3f}"
                    f" {figures['sent']:>7} {figures['stored']:>7} {lost}",
                    flush=True,
                )
                if figures["p95"] < LIMIT_S and lost == 0 and name not in broken:
                    held[name] = writers
                else:
                    broken.add(name)
        print("most writers held at p95 < 1 s with nothing lost: " + ", ".join(f"{k} {v}" for k, v in held.items()))
    finally:
        if server is not None:
            stop_process(server)
        postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
