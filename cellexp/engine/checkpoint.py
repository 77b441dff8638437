"""Checkpoints that resume a run exactly and load without unpickling arbitrary objects.

A checkpoint is a folder: `model.safetensors` (weights), `training_state.pt` (optimizer,
scheduler, RNG and loop counters: tensors and plain Python values only, so it loads with
`weights_only=True`) and `meta.json` (the same counters, for people and for picking the newest).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cellexp.errors import CheckpointError

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
META_FILE = "meta.json"
BEST = "best"


class CheckpointManager:
    """Writes `<folder>/<tag>/` atomically, keeps the newest `keep_last` and a separate `best`."""

    def __init__(self, folder: Path, keep_last: int = 2):
        self.folder, self.keep_last = Path(folder), keep_last

    def save(self, tag: str, model_state: dict, training_state: dict | None, meta: dict) -> Path:
        target = self.folder / tag
        tmp = self.folder / f".{tag}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, tmp / MODEL_FILE)
        if training_state is not None:
            torch.save(training_state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        if tag != BEST:
            self._prune()
        return target

    def resumable(self) -> list[Path]:
        """Checkpoints that can resume training, oldest first."""
        found = [p for p in self.folder.glob("*/") if p.name != BEST and (p / STATE_FILE).exists()]
        return sorted(found, key=lambda p: _order(read_meta(p)))

    def latest(self) -> Path | None:
        found = self.resumable()
        return found[-1] if found else None

    def resume_point(self, resume) -> Path | None:
        """The checkpoint `trainer.resume` names: null starts fresh, `auto` the newest here (if any), else a folder."""
        if not resume:
            return None
        if str(resume) == "auto":
            latest = self.latest()
            if latest is None:
                log.info("trainer.resume=auto: no checkpoint in %s yet, starting fresh", self.folder)
            return latest
        path = Path(str(resume))
        if not path.is_dir():
            raise CheckpointError(f"trainer.resume={resume}: no such checkpoint folder")
        return path

    def _prune(self) -> None:
        for old in self.resumable()[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)


def _order(meta: dict) -> tuple[int, int]:
    return meta["epoch"], meta.get("step_in_epoch", 0)


def read_meta(checkpoint: Path) -> dict:
    return json.loads((Path(checkpoint) / META_FILE).read_text())


def load_model_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    path = Path(checkpoint) / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"no {MODEL_FILE} in checkpoint {checkpoint}")
    return load_file(path)


def load_training_state(checkpoint: Path) -> dict:
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {checkpoint} has no {STATE_FILE}: it holds weights only and cannot resume training"
        )
    return torch.load(path, map_location="cpu", weights_only=True)
