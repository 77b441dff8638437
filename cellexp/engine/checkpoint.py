"""Checkpoints that resume a run exactly, survive a kill at any moment, and load without unpickling objects.

A checkpoint is a folder: `model.safetensors` (weights), `training_state.pt` (optimizer, scheduler, RNG and loop
counters: tensors and plain Python values only, so it loads with `weights_only=True`) and `meta.json` (the same
counters, for people and for picking the newest). A folder is written under a hidden temporary name, `meta.json`
last, and renamed into place; a folder replaced or pruned is first renamed out of the way. Only visible folders
with all their files count, so whatever a kill leaves behind (a half-written temporary folder, a half-deleted old
one) never blocks `resume=auto`, which takes the newest complete checkpoint.
"""

from __future__ import annotations

import filecmp
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cellexp.errors import CheckpointError

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
META_FILE = "meta.json"
BEST = "best"


class CheckpointManager:
    """Writes `<folder>/<tag>/` atomically, keeps the newest `keep_last` resumable ones and a separate `best`."""

    def __init__(self, folder: Path, keep_last: int = 2):
        if int(keep_last) < 1:
            raise CheckpointError(f"trainer.checkpoint.keep_last={keep_last} must be at least 1: resume needs one")
        self.folder, self.keep_last = Path(folder), int(keep_last)

    def save(self, tag: str, model_state: dict, training_state: dict | None, meta: dict) -> Path:
        target = self.folder / tag
        tmp = self.folder / f".{tag}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, tmp / MODEL_FILE)
        if training_state is not None:
            torch.save(training_state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        if target.exists():
            _discard(target)
        os.replace(tmp, target)
        if tag != BEST:
            self._prune()
        self._sweep()
        return target

    def resumable(self) -> list[Path]:
        """Complete checkpoints that can resume training, oldest first."""
        found = []
        for path in self.folder.glob("*"):
            if path.name.startswith(".") or path.name == BEST or not path.is_dir():
                continue
            meta = _complete_meta(path, needs_state=True)
            if meta is not None:
                found.append((meta["epoch"], meta.get("step_in_epoch", 0), path))
        return [path for *_, path in sorted(found)]

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
        if _complete_meta(path, needs_state=True) is None:
            needed = f"{MODEL_FILE}, {STATE_FILE}, {META_FILE}"
            raise CheckpointError(f"trainer.resume={resume}: not a complete resumable checkpoint ({needed})")
        return path

    def seal(self) -> None:
        """Once the whole run has finished (tested too), nothing resumes it: drop the optimizer, scheduler and RNG
        state, the bulk of a checkpoint, and let an epoch checkpoint whose weights are best's share best's file
        (a hard link, where the filesystem has them) instead of holding a second copy."""
        best = self.folder / BEST / MODEL_FILE
        for path in self.resumable():
            (path / STATE_FILE).unlink()
            if best.is_file() and filecmp.cmp(best, path / MODEL_FILE, shallow=False):
                _share_weights(best, path / MODEL_FILE)

    def _prune(self) -> None:
        for old in self.resumable()[: -self.keep_last]:
            _discard(old)

    def _sweep(self) -> None:
        """Remove what earlier kills left: temporary and discarded folders."""
        for path in self.folder.glob(".*"):
            if path.is_dir() and (".tmp-" in path.name or path.name.startswith(".discarded-")):
                shutil.rmtree(path, ignore_errors=True)


def _discard(path: Path) -> None:
    """Rename out of the way first (atomic), then delete: a kill in between leaves only a hidden folder."""
    trash = path.with_name(f".discarded-{path.name}-{uuid.uuid4().hex[:8]}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _share_weights(source: Path, target: Path) -> None:
    """`target` becomes a hard link to `source` (same bytes), replaced atomically; left as it is where links fail."""
    link = target.with_name(f".{target.name}.link-{uuid.uuid4().hex[:8]}")
    try:
        os.link(source, link)
    except OSError:
        return
    os.replace(link, target)


def _complete_meta(path: Path, needs_state: bool) -> dict | None:
    """The checkpoint's meta if all its files are there and the meta parses, else None (logged)."""
    needed = [MODEL_FILE, META_FILE, *([STATE_FILE] if needs_state else [])]
    if not all((path / name).is_file() for name in needed):
        return None
    try:
        meta = json.loads((path / META_FILE).read_text())
        int(meta["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("checkpoint %s skipped: its %s is unreadable (%s)", path, META_FILE, err)
        return None
    return meta


def read_meta(checkpoint: Path) -> dict:
    path = Path(checkpoint) / META_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} cannot be read: {err}") from None


def load_model_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    path = Path(checkpoint) / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"no {MODEL_FILE} in checkpoint {checkpoint}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); the checkpoint is damaged") from None


def check_model_file(checkpoint: Path, option: str) -> None:
    """The checkpoint's weights are safetensors whose header parses, read without loading a tensor: a damaged or
    foreign file is named before anything is built or created."""
    from safetensors import safe_open

    path = Path(checkpoint) / MODEL_FILE
    try:
        with safe_open(str(path), framework="pt") as weights:
            weights.keys()
    except Exception as err:  # safetensors raises its own error, OSError or ValueError for a bad file
        reason = " ".join(str(err).split())
        raise CheckpointError(f"{option}: {path} is not a readable safetensors file ({reason})") from None


def load_training_state(checkpoint: Path) -> dict:
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {checkpoint} has no {STATE_FILE}: it holds weights only and cannot resume training"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for a bad file
        raise CheckpointError(
            f"{path} is damaged or holds something other than tensors and plain values ({type(err).__name__}); "
            "it is not loaded, since unpickling it could run code: resume from another checkpoint"
        ) from None
