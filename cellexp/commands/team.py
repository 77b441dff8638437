"""A lab's head node: PostgreSQL for MLflow and Optuna, and `mlflow server` in front of it, started by one command.

    python -m cellexp.commands.team --data /shared/cellexp-team --host 10.0.0.5 [--artifacts /shared/mlartifacts | s3://b/p]

Many jobs writing one SQLite file on a shared file system lose runs; a database server does not. The command keeps
its PostgreSQL cluster in `<data>/postgres` (made on the first start, with a generated password in `<data>/password`),
serves MLflow (artifacts proxied by the server, so jobs never need the store's path) and prints the two settings that
runs and sweeps take. PostgreSQL refuses to run as root: started by root, it runs as the `postgres` user.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

USER, DATABASES = "cellexp", ("mlflow", "optuna")
POSTGRES_BINARIES = ("initdb", "pg_ctl")


def postgres_bin(name: str) -> str:
    """A PostgreSQL server program: on PATH, or where Debian installs it (/usr/lib/postgresql/<version>/bin)."""
    debian = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    found = shutil.which(name) or next(iter(debian), None)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install PostgreSQL (Debian: apt-get install postgresql)")
    return str(found)


def _as_owner(command: list[str]) -> list[str]:
    """PostgreSQL's programs as the `postgres` user when this is root (they refuse to run as root)."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str]) -> None:
    """A PostgreSQL program as its owner; a failure says what it printed (e.g. a folder `postgres` cannot reach)."""
    done = subprocess.run(_as_owner(command), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {(done.stderr or done.stdout).strip()[-1500:]}")


@dataclass
class Postgres:
    """A PostgreSQL cluster in `folder`, listening on host:port, with the `cellexp` role and its databases."""

    folder: Path
    host: str
    port: int

    @property
    def password(self) -> str:
        return (self.folder.parent / "password").read_text().strip()

    def url(self, database: str, host: str | None = None) -> str:
        """The SQLAlchemy URL of one database (postgresql:// is psycopg 3 under SQLAlchemy 2)."""
        return f"postgresql://{USER}:{self.password}@{host or self.host}:{self.port}/{database}"

    def start(self) -> Postgres:
        """Make the cluster (first start only), start it, and make the role and databases that are missing."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        sockets = self.folder.parent / "sockets"
        sockets.mkdir(exist_ok=True)
        if not (self.folder / "PG_VERSION").exists():
            self._init()
        if os.geteuid() == 0:
            shutil.chown(sockets, "postgres")
        options = f"-p {self.port} -k {sockets} -c listen_addresses={self.host}"
        log = self.folder.parent / "postgres.log"
        if os.geteuid() == 0:
            log.touch()
            shutil.chown(log, "postgres")
        _run([postgres_bin("pg_ctl"), "-D", str(self.folder), "-l", str(log), "-o", options, "-w", "start"])
        self._create_role_and_databases(sockets)
        return self

    def stop(self) -> None:
        command = [postgres_bin("pg_ctl"), "-D", str(self.folder), "-m", "fast", "-w", "stop"]
        subprocess.run(_as_owner(command), check=False, capture_output=True)

    def _init(self) -> None:
        password = self.folder.parent / "password"
        if not password.exists():
            password.write_text(secrets.token_urlsafe(18) + "\n")
            password.chmod(0o600)
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        # the owner over the local socket only; the cellexp role from anywhere, with its password
        _run(
            [
                postgres_bin("initdb"),
                "-D",
                str(self.folder),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ]
        )
        with (self.folder / "pg_hba.conf").open("a") as hba:
            hba.write("host all cellexp 0.0.0.0/0 scram-sha-256\nhost all cellexp ::/0 scram-sha-256\n")

    def _create_role_and_databases(self, sockets: Path) -> None:
        import psycopg

        with psycopg.connect(host=str(sockets), port=self.port, user="postgres", dbname="postgres") as db:
            db.autocommit = True
            if db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (USER,)).fetchone() is None:
                db.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{self.password}'")
            for name in DATABASES:
                if db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                    db.execute(f"CREATE DATABASE {name} OWNER {USER}")


def start_mlflow_server(
    backend: str, artifacts: str, host: str, port: int, workers: int = 4, allowed_hosts=None, log: Path | None = None
):
    """`mlflow server` over `backend`, serving (proxying) the artifact store `artifacts`, its output to `log` (else
    this console); returns once /health says so. Its process, which the caller ends."""
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", backend]
    command += ["--artifacts-destination", artifacts, "--serve-artifacts", "--host", host, "--port", str(port)]
    command += ["--workers", str(workers)] + (["--allowed-hosts", allowed_hosts] if allowed_hosts else [])
    output = log.open("a") if log else None
    server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT if log else None, start_new_session=True)
    if output:
        output.close()  # the server holds its own
    url = f"http://{host}:{port}/health"
    for _ in range(240):
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {server.returncode}: {' '.join(command)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    stop_process(server)
    raise RuntimeError(f"mlflow server did not answer {url} within 120 s")


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_process(process: subprocess.Popen) -> None:
    """A server and the workers it started (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cellexp.commands.team", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of the PostgreSQL cluster and its password")
    parser.add_argument("--host", required=True, help="address to bind (the head node's, reachable from the nodes)")
    parser.add_argument("--port", type=int, default=5000, help="MLflow server port")
    parser.add_argument("--db-port", type=int, default=5432, help="PostgreSQL port")
    parser.add_argument("--artifacts", help="artifact store: a shared folder or s3://... (default <data>/artifacts)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--allowed-hosts", help="Host headers the server accepts besides localhost and private IPs")
    args = parser.parse_args(argv)
    postgres = Postgres(args.data.resolve() / "postgres", args.host, args.db_port).start()
    artifacts, server = args.artifacts or str(args.data.resolve() / "artifacts"), None
    try:
        server = start_mlflow_server(
            postgres.url("mlflow", host="127.0.0.1" if args.host in ("0.0.0.0", "::") else None),
            artifacts,
            args.host,
            args.port,
            args.workers,
            args.allowed_hosts,
        )
        print(f"runs:   python train.py logger.tracking_uri=http://{args.host}:{args.port} ...")
        print(f"sweeps: python train.py -m hparams_search=optuna hydra.sweeper.storage={postgres.url('optuna')} ...")
        print("Ctrl-C stops the server and PostgreSQL", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            stop_process(server)
        postgres.stop()


if __name__ == "__main__":
    main()
