"""Time-lapse data as bags: the dataset's folder (generated on first use), its frames parsed and grouped into
sequences, patches selected once into a patch store, and one bag of patch-store rows per usable sequence.
Shared by task=mil (bags of embeddings) and task=ssl (the patches themselves).

`dataset.bags` chooses a bag's patches: frames with fewer than `min_patches` stored patches are left out (the
published MIL needs 10), and each frame gives its first `patches_per_frame` (the store keeps them most confluent
first; the published MIL takes the top 10; null: all)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from cellexp.data.store import SplitStore
from cellexp.data.synthetic.timelapse import generate_timelapse
from cellexp.data.timelapse.folders import Sequence, Splits, build_splits, group_sequences, scan, unread_batches
from cellexp.data.timelapse.patches import PatchSettings, prepare_patch_store
from cellexp.data.timelapse.split_files import file_splits, read_split_file
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
    """Frames parsed and grouped, patches selected (once), bags built; everything skipped is named in `problems`.
    The split and bag settings are checked first, so that a bad one stops the run before any patch is cut."""
    read_split_file(dataset)
    min_patches, per_frame = bag_settings(dataset)
    frames, bad_names = scan(root, dataset.get("name_patterns"))
    sequences, short = group_sequences(frames, dataset.min_frames)
    settings = PatchSettings(**OmegaConf.to_container(dataset.patches, resolve=True))
    used = [f for s in sequences for f in s.frames]
    store = prepare_patch_store(root, used, settings, Path(dataset.cache_dir))
    rows_of: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for row in store.manifest():
        rows_of[row["image_file"]].append((int(row["annotation_id"]), int(row["index"])))
    bags, few = [], []
    for s in sequences:
        kept = []
        for f in s.frames:
            ranked = [index for _, index in sorted(rows_of.get(f.path, []))]  # most confluent first
            if ranked and len(ranked) < min_patches:
                few.append({"image": f.path, "reason": f"{len(ranked)} patches, fewer than {min_patches}"})
            elif ranked:
                kept.append((f, np.asarray(ranked[:per_frame], np.int64)))
        if len(kept) < dataset.min_frames:
            short.append(
                {"sequence": s.key, "reason": f"{len(kept)} frames with patches, fewer than {dataset.min_frames}"}
            )
            continue
        hours = np.asarray([f.hours for f, _ in kept])
        bags.append(Bag(s, hours, [rows for _, rows in kept]))
    problems = {
        "bad_names": bad_names,
        "unread_batches": unread_batches(frames, bad_names),
        "images_without_patches": store.summary["failed_images"],
        "frames_with_few_patches": few,
        "skipped_sequences": short,
    }
    for kind, entries in problems.items():
        for entry in entries:
            name = entry.get("image") or entry.get("sequence") or entry.get("batch")
            log.warning("%s: %s (%s)", kind.replace("_", " "), name, entry["reason"])
    if not bags:
        raise DataError(f"no usable sequence under {root}: {sum(map(len, problems.values()))} problems, see the log")
    return store, bags, problems


def bag_settings(dataset: DictConfig) -> tuple[int, int | None]:
    """dataset.bags as (min_patches, patches_per_frame), checked by name."""
    settings = dataset.get("bags") or {}
    unknown = sorted(set(settings) - {"min_patches", "patches_per_frame"})
    if unknown:
        raise ConfigError(
            f"dataset.bags.{unknown[0]} is not a setting: dataset.bags has min_patches, patches_per_frame"
        )
    least, per_frame = settings.get("min_patches", 1), settings.get("patches_per_frame")
    if not _whole(least):
        raise ConfigError(f"dataset.bags.min_patches must be a whole number of at least 1, got {least!r}")
    if per_frame is not None and not _whole(per_frame):
        raise ConfigError(
            f"dataset.bags.patches_per_frame must be null (every stored patch) or a whole number of at least 1, "
            f"got {per_frame!r}"
        )
    top_k = dataset.patches.top_k
    if least > top_k:
        raise ConfigError(
            f"dataset.bags.min_patches={least} is more than dataset.patches.top_k={top_k}, the most patches a frame "
            "keeps: no frame could be used"
        )
    return least, per_frame


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def bag_splits(dataset: DictConfig, bags: list[Bag]) -> Splits:
    """train/val/test bags by dataset.split_file, or else dataset.split_scheme (see `build_splits`): no batch or well
    on both sides; `.unsplit` names the batches that could not give a well to every side."""
    sequences = [b.sequence for b in bags]
    split_file = read_split_file(dataset)
    if split_file is None:
        splits = build_splits(sequences, dataset.split_scheme, dataset.split_seed, dataset.val_fraction)
    else:
        splits = file_splits(sequences, split_file, dataset.split_seed, dataset.val_fraction)
    if dataset.val_fraction > 0 and not splits["val"]:
        raise DataError(
            f"dataset.val_fraction={dataset.val_fraction} found no validation wells: no training batch has two "
            f"({', '.join(u['batch'] for u in splits.unsplit)}); validation is never drawn from test"
        )
    by_key = {b.sequence.key: b for b in bags}
    return Splits({name: [by_key[s.key] for s in seqs] for name, seqs in splits.items()}, splits.unsplit)
