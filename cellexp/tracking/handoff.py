"""The lines that open and close every run's log: where the run is recorded, and what to do with it next.

After a first run a newcomer asks "where is it, and now what?". `tracking.start_tracking`, which every task opens
around its whole run on the main rank, says it here once: at the start the MLflow run id, the run folder and the
experiment; at the end the same, the folder's size on disk, and the commands that take the run further.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from cellexp.config import project_root
from cellexp.tracking.follow_up import carried_overrides

log = logging.getLogger(__name__)

# what each task's run is good for next: (what, the train.py overrides); {ref} is the run id or folder
NEXT_STEPS = {
    "classify": (("evaluate", "task.fit=false ckpt={ref}"), ("explain", "task=xai ckpt={ref}")),
    "ssl": (("fine-tune", "task=classify backbone.init_from={ref}"), ("embed for MIL", "experiment=clanet ckpt={ref}")),
    "mil": (("evaluate", "task=mil task.fit=false ckpt={ref}"),),
}


@dataclass
class RunRecord:
    """Where a run is recorded (no run id, experiment or store with `logger=none`), and what its follow-ups need:
    the run's own command-line overrides."""

    task: str
    run_dir: Path
    run_id: str | None = None
    experiment: str | None = None
    tracking_uri: str | None = None
    default_uri: str | None = (
        None  # the store `python -m cellexp.commands.compare` and `cellexp.commands.runs` read by default
    )
    overrides: tuple[str, ...] = ()
    experiment_id: str | None = None

    def where(self) -> str:
        tracked = f"experiment {self.experiment!r} in {self.tracking_uri}" if self.run_id else "untracked (logger=none)"
        return f"run {self.run_id or '-'}  folder {self.run_dir}  {tracked}"


def announce_start(record: RunRecord) -> None:
    log.info("started %s", record.where())


def announce_end(record: RunRecord, status: str) -> None:
    lines = [f"{status.lower()} {record.where()}  ({human_size(disk_usage(record.run_dir))} on disk)"]
    if status == "FINISHED":
        lines += [f"  {what:<14} {command}" for what, command in next_steps(record)]
    elif status == "KILLED":
        resume = f"{python()} train.py hydra.run.dir={record.run_dir} trainer.resume=auto <the same overrides>"
        lines.append(f"  {'resume':<14} {resume}")
    log.info("\n".join(lines))


def next_steps(record: RunRecord) -> list[tuple[str, str]]:
    """(what, command) pairs for a finished run, as docs/getting-started.md documents them, each carrying the run's own
    overrides that it needs (its data, device and store: `follow_up.carried_overrides`). `ckpt=<run id>` finds
    the run in the default store; a run recorded elsewhere (or not at all) is named by its folder."""
    default_store = record.tracking_uri == record.default_uri
    ref = record.run_id if record.run_id and default_store else str(record.run_dir)
    steps = []
    for what, args in NEXT_STEPS.get(record.task, ()):
        carried = carried_overrides(record.overrides, what)
        steps.append((what, " ".join([python(), "train.py", args.format(ref=ref), *map(shlex.quote, carried)])))
    if record.run_id:
        store = "" if default_store else f" --tracking-uri {shlex.quote(record.tracking_uri)}"
        steps += [
            ("compare", f"{python()} -m cellexp.commands.compare {shlex.quote(record.experiment)}{store}"),
            ("list runs", f"{python()} -m cellexp.commands.runs{store}"),
            ("open the UI", ui_command(record.tracking_uri, record.experiment_id)),
        ]
    return steps


def python() -> str:
    """The interpreter this run was started with, as the user would type it: `.venv/bin/python` for the project's
    own venv (as the README writes it), its full path for another venv, else `python`."""
    executable = Path(sys.executable)
    if executable.parent.name != "bin" or not (executable.parent.parent / "pyvenv.cfg").is_file():
        return "python"
    root = Path(project_root())
    return str(executable.relative_to(root)) if executable.is_relative_to(root) else str(executable)


def ui_command(uri: str, experiment_id: str | None = None) -> str:
    """How to see the run in the MLflow UI. The page is the experiment's runs table: MLflow 3's UI opens an
    experiment on its GenAI overview (traces) unless the address says `workflowType=machine_learning` (or the
    browser remembers that choice), whatever the experiment's `mlflow.experimentKind` tag says."""
    page = f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning" if experiment_id else ""
    if uri.startswith(("http://", "https://")):
        return f"open {uri.rstrip('/')}{page}"
    mlflow = Path(python()).with_name("mlflow") if python() != "python" else Path("mlflow")
    return f"{mlflow} ui --backend-store-uri {shlex.quote(uri)}   # then open http://127.0.0.1:5000{page}"


def disk_usage(*folders: Path) -> int:
    """Bytes the folders take on disk, as du counts them: allocated blocks, a hard-linked file once."""
    seen, total = set(), 0
    for folder in folders:
        for parent, _, files in os.walk(folder):
            for name in files:
                stat = os.lstat(os.path.join(parent, name))
                if (stat.st_dev, stat.st_ino) not in seen:
                    seen.add((stat.st_dev, stat.st_ino))
                    total += getattr(stat, "st_blocks", 0) * 512 or stat.st_size
    return total


def weight_copies(*folders: Path) -> list[list[Path]]:
    """Weights files (safetensors, torch) under the folders that hold the same bytes as separate files (not links to
    one file): each group is one set of weights stored more than once."""
    by_content: dict[tuple[int, str], dict[tuple[int, int], Path]] = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.suffix in (".safetensors", ".pt") and path.is_file() and not path.is_symlink():
                stat = path.stat()
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                by_content.setdefault((stat.st_size, digest), {}).setdefault((stat.st_dev, stat.st_ino), path)
    return [sorted(files.values()) for files in by_content.values() if len(files) > 1]


def human_size(size: float) -> str:
    if size < 1000:
        return f"{size:.0f} B"
    for unit in ("KB", "MB"):
        size /= 1000
        if size < 1000:
            return f"{size:.1f} {unit}"
    return f"{size / 1000:.1f} GB"
