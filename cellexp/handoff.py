"""The lines that open and close every run's log: where the run is recorded, and what to do with it next.

After a first run a newcomer asks "where is it, and now what?". `tracking.start_tracking`, which every task opens
around its whole run on the main rank, says it here once: at the start the MLflow run id, the run folder and the
experiment; at the end the same, the folder's size on disk, and the commands that take the run further.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# what each task's run is good for next: (what, the train.py overrides); {ref} is the run id or folder
NEXT_STEPS = {
    "classify": (("evaluate", "task.fit=false ckpt={ref}"), ("explain", "task=xai ckpt={ref}")),
    "ssl": (("fine-tune", "task=classify backbone.init_from={ref}"), ("embed for MIL", "experiment=clanet ckpt={ref}")),
    "mil": (("evaluate", "task=mil task.fit=false ckpt={ref}"),),
}


@dataclass(frozen=True)
class RunRecord:
    """Where a run is recorded: no run id, experiment or store with `logger=none`."""

    task: str
    run_dir: Path
    run_id: str | None = None
    experiment: str | None = None
    tracking_uri: str | None = None
    default_uri: str | None = None  # the store `python -m cellexp.compare` and `cellexp.runs` read by default

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
        resume = f"python train.py hydra.run.dir={record.run_dir} trainer.resume=auto <the same overrides>"
        lines.append(f"  {'resume':<14} {resume}")
    log.info("\n".join(lines))


def next_steps(record: RunRecord) -> list[tuple[str, str]]:
    """(what, command) pairs for a finished run, as the README documents them. `ckpt=<run id>` finds the run in
    the default store; a run recorded elsewhere (or not at all) is named by its folder."""
    default_store = record.tracking_uri == record.default_uri
    ref = record.run_id if record.run_id and default_store else str(record.run_dir)
    steps = [(what, f"python train.py {args.format(ref=ref)}") for what, args in NEXT_STEPS.get(record.task, ())]
    if record.run_id:
        store = "" if default_store else f" --tracking-uri {record.tracking_uri}"
        steps += [
            ("compare", f"python -m cellexp.compare {_quoted(record.experiment)}{store}"),
            ("list runs", f"python -m cellexp.runs{store}"),
            ("open the UI", ui_command(record.tracking_uri)),
        ]
    return steps


def ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri}   # then http://127.0.0.1:5000"


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


def human_size(size: float) -> str:
    if size < 1000:
        return f"{size:.0f} B"
    for unit in ("KB", "MB"):
        size /= 1000
        if size < 1000:
            return f"{size:.1f} {unit}"
    return f"{size / 1000:.1f} GB"


def _quoted(text: str) -> str:
    return text if text.replace("_", "").replace("-", "").replace(".", "").isalnum() else f"'{text}'"
