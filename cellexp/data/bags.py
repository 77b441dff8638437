"""Time-lapse data as bags: the dataset's folder (generated on first use), its frames parsed and grouped into
sequences, patches selected once into a patch store, and one bag of patch-store rows per usable sequence.
Shared by task=mil (bags of embeddings) and task=ssl (the patches themselves)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from cellexp.data.patches import PatchSettings, prepare_patch_store
from cellexp.data.store import SplitStore
from cellexp.data.timelapse import Sequence, build_splits, group_sequences, scan
from cellexp.data.timelapse_synthetic import generate_timelapse
from cellexp.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bag:
    """A sequence's patches: one array of patch-store rows per usable frame, in time order."""

    sequence: Sequence
    hours: np.ndarray
    frames: list[np.ndarray]

    @property
    def rows(self) -> np.ndarray:
        return np.concatenate(self.frames)


def dataset_root(dataset: DictConfig) -> Path:
    """The folder to read: dataset.root, or for generated data its subfolder keyed by the generator's settings."""
    if not dataset.get("root"):
        raise ConfigError("dataset.root is not set: give the folder that holds <line>/batch_<k>/VID...jpg")
    root = Path(dataset.root).expanduser()
    generate = dataset.get("generate")
    if generate is None:
        if not root.is_dir():
            raise DataError(f"dataset.root={root} is not a folder")
        return root
    settings = OmegaConf.to_container(generate, resolve=True)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return generate_timelapse(root / key, **settings)


def load_bags(dataset: DictConfig, root: Path) -> tuple[SplitStore, list[Bag], dict]:
    """Frames parsed and grouped, patches selected (once), bags built; everything skipped is named in `problems`."""
    frames, bad_names = scan(root)
    sequences, short = group_sequences(frames, dataset.min_frames)
    settings = PatchSettings(**OmegaConf.to_container(dataset.patches, resolve=True))
    used = [f for s in sequences for f in s.frames]
    store = prepare_patch_store(root, used, settings, Path(dataset.cache_dir))
    rows_of: dict[str, list[int]] = defaultdict(list)
    for row in store.manifest():
        rows_of[row["image_file"]].append(int(row["index"]))
    bags = []
    for s in sequences:
        kept = [f for f in s.frames if rows_of.get(f.path)]
        if len(kept) < dataset.min_frames:
            short.append(
                {"sequence": s.key, "reason": f"{len(kept)} frames with patches, fewer than {dataset.min_frames}"}
            )
            continue
        hours = np.asarray([f.hours for f in kept])
        bags.append(Bag(s, hours, [np.asarray(rows_of[f.path], np.int64) for f in kept]))
    problems = {
        "bad_names": bad_names,
        "images_without_patches": store.summary["failed_images"],
        "skipped_sequences": short,
    }
    for kind, entries in problems.items():
        for entry in entries:
            log.warning(
                "%s: %s (%s)", kind.replace("_", " "), entry.get("image") or entry.get("sequence"), entry["reason"]
            )
    if not bags:
        raise DataError(f"no usable sequence under {root}: {sum(map(len, problems.values()))} problems, see the log")
    return store, bags, problems


def bag_splits(dataset: DictConfig, bags: list[Bag]) -> dict[str, list[Bag]]:
    """train/val/test bags by dataset.split_scheme (see `build_splits`): no batch or well on both sides."""
    splits = build_splits([b.sequence for b in bags], dataset.split_scheme, dataset.split_seed, dataset.val_fraction)
    by_key = {b.sequence.key: b for b in bags}
    return {name: [by_key[s.key] for s in seqs] for name, seqs in splits.items()}
