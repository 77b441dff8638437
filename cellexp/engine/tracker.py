"""What the engine and the tasks record a run through; this one records nothing (logging off, other ranks)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


class NullTracker:
    run_id: str | None = None
    record = None  # on the main rank, the run's cellexp.tracking.handoff.RunRecord, which its last lines are made from

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None: ...
    def log_dataset(self, name: str, digest: str, source: Path, split: str, size: int) -> None: ...
