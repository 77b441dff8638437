"""Screenshots of the MLflow UI as a newcomer first sees it, taken in a real headless browser, for the README and
docs/getting-started.md.

    python docs/take_screenshots.py [--workdir /tmp/cellexp-screens] [--data-dir data] [--chromium chromium]

Runs one quick job (`train.py debug=default trainer.max_epochs=1`) into a fresh store under --workdir, serves it with
`mlflow ui` on a free local port, and has Chromium (Debian's `chromium` package) draw, in a fresh profile, the
experiment's landing page (docs/mlflow_experiment.png, 1400x900: the runs table that the run's last lines link to)
and the run's page (docs/mlflow_run.png, 1400x2200: its metrics, then its params). Not part of the test suite: it
needs Chromium, and a browser's picture is not a test result.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parent.parent
# file: (page, window height); the run's page tall enough to show its params after its metrics
PAGES = {
    "mlflow_experiment.png": ("/#/experiments/{experiment}/runs?workflowType=machine_learning", 900),
    "mlflow_run.png": ("/#/experiments/{experiment}/runs/{run}?workflowType=machine_learning", 2200),
}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=15000",
]


def quick_run(workdir: Path, data_dir: Path) -> str:
    """One quick job in a store of its own; the store's URI."""
    command = [sys.executable, "train.py", "debug=default", "trainer.max_epochs=1", f"paths.root_dir={workdir}"]
    command.append(f"paths.data_dir={data_dir.resolve()}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CELLEXP_"))}
    subprocess.run(command, cwd=ROOT, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return f"sqlite:///{workdir / 'mlflow.db'}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(uri: str, port: int) -> subprocess.Popen:
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return server
        except OSError:
            time.sleep(1)
    server.terminate()
    raise SystemExit(f"mlflow ui did not answer on port {port} within 2 minutes")


def screenshot(chromium: str, url: str, height: int, out: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium, *CHROMIUM_FLAGS, f"--window-size=1400,{height}", f"--user-data-dir={profile}"]
        command += [f"--screenshot={out}", url]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    print(f"{out}  <- {url}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cellexp-screens"))
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data", help="the generated data (default: data/)")
    parser.add_argument("--chromium", default="chromium")
    args = parser.parse_args()
    if shutil.which(args.chromium) is None:
        print(f"error: no {args.chromium} on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    shutil.rmtree(args.workdir, ignore_errors=True)
    uri = quick_run(args.workdir, args.data_dir)
    (run,) = MlflowClient(tracking_uri=uri).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri=uri).search_experiments() if e.name == "debug"]
    )
    port = free_port()
    server = serve(uri, port)
    try:
        for name, (page, height) in PAGES.items():
            path = page.format(experiment=run.info.experiment_id, run=run.info.run_id)
            screenshot(args.chromium, f"http://127.0.0.1:{port}{path}", height, ROOT / "docs" / name)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
