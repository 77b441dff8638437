"""The crop store: per split, fixed-size crops and bit-packed masks in shards, plus a manifest.

Each split is its own folder, keyed by its own inputs, so that a bad file in one split costs no
work in the others. Layout of a split folder:
    shards/images_00000.npy   (n, S, S) for grey images, (n, C, S, S) for C channels; uint8, or uint16 for 16-bit
                              images (as imaged; see intensity.py); background black
    shards/masks_00000.npy    (n, ceil(S*S/8)) uint8: the cell's own mask, bit-packed
    shards/rows_00000.csv     the shard's manifest rows
    shards/stats_00000.json   the shard's counts; written last, it marks the shard as done
    manifest.csv              all rows, in shard order (row i describes crop i)
    labels.npy                (N,) int64
    shard_sizes.npy           crops per shard: crop i is found in O(1) from it
    summary.json              crops per class, channels and dtype, cells dropped and why, images that failed and why
    .complete                 written last: a folder without it is unfinished
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from cellexp.data.build_once import COMPLETE_MARKER
from cellexp.data.pixels import pixel_kind
from cellexp.errors import DataError

MANIFEST_FIELDS = (
    "index",
    "label",
    "class_name",
    "image_file",
    "annotation_id",
    "well",
    "elapsed_hours",
    "bbox_x",
    "bbox_y",
    "bbox_w",
    "bbox_h",
    "area",
)


def channel_batch(crops: np.ndarray) -> np.ndarray:
    """Crops as a model batch (n, C, S, S): grey (n, S, S) ones get their channel axis."""
    return crops[:, None] if crops.ndim == 3 else crops


def shard_file(folder: Path, kind: str, shard: int, suffix: str = "npy") -> Path:
    return folder / "shards" / f"{kind}_{shard:05d}.{suffix}"


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """(n, S, S) or (n, D, S, S) 0/1 masks to (n, ceil(voxels/8)) bytes: an eighth of the disk, unpacked per read."""
    return np.packbits(masks.reshape(len(masks), int(np.prod(masks.shape[1:]))).astype(bool), axis=1)


def write_shard(
    folder: Path,
    shard: int,
    crops: np.ndarray,
    masks: np.ndarray,
    rows: list[dict],
    stats: dict,
    fields: tuple[str, ...] = MANIFEST_FIELDS,
) -> None:
    """Write one shard's files, each to a temporary name first; the stats file, written last, marks it done."""
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    for kind, array in (("images", crops), ("masks", pack_masks(masks))):
        path = shard_file(folder, kind, shard)
        with open(path.with_suffix(".tmp"), "wb") as f:
            np.save(f, array)
        path.with_suffix(".tmp").replace(path)
    rows_path = shard_file(folder, "rows", shard, "csv")
    with open(rows_path.with_suffix(".tmp"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    rows_path.with_suffix(".tmp").replace(rows_path)
    stats_path = shard_file(folder, "stats", shard, "json")
    stats_path.with_suffix(".tmp").write_text(json.dumps(stats))
    stats_path.with_suffix(".tmp").replace(stats_path)


def shard_done(folder: Path, shard: int) -> bool:
    return shard_file(folder, "stats", shard, "json").is_file()


def finish_split(folder: Path, num_shards: int, summary: dict, fields: tuple[str, ...] = MANIFEST_FIELDS) -> dict:
    """Join the shards' rows, labels and counts into the split's manifest and summary (`build_once` then marks the
    folder complete)."""
    listed = {"failed_images": [], "invalid_cells": list(summary.get("invalid_cells", []))}
    sizes, labels, per_class = [], [], Counter()
    dropped = Counter(cell["reason"] for cell in listed["invalid_cells"])
    with open(folder / "manifest.csv", "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        for shard in range(num_shards):
            with open(shard_file(folder, "rows", shard, "csv"), newline="") as f:
                rows = list(csv.DictReader(f))
            start = sum(sizes)
            for row in rows:
                row["index"] = start + int(row["index"])
            writer.writerows(rows)
            sizes.append(len(rows))
            labels += [int(row["label"]) for row in rows]
            stats = json.loads(shard_file(folder, "stats", shard, "json").read_text())
            per_class.update(stats["per_class"])
            dropped.update(stats["dropped"])
            for key, entries in listed.items():
                entries += stats[key]
    np.save(folder / "labels.npy", np.asarray(labels, dtype=np.int64))
    np.save(folder / "shard_sizes.npy", np.asarray(sizes, dtype=np.int64))
    summary = {**summary, "crops": sum(sizes), "per_class": dict(sorted(per_class.items())), "dropped": dict(dropped)}
    summary.update(listed)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


class ShardedArray:
    """Rows of a split spread over shard files, read as one array: `a[i]`, `a[i:j]`, `a[[i, j, ...]]`.

    Shards are memory-mapped on first use (per process, so DataLoader workers map their own), and a
    row is located in O(1) from two index arrays; a fancy index reads each shard's rows in one go.
    """

    def __init__(
        self,
        files: list[Path],
        sizes: np.ndarray,
        row_shape: tuple[int, ...],
        unpack_to: tuple[int, ...] | None = None,
        dtype: str = "uint8",
    ):
        self.files, self.sizes, self.unpack_to = files, sizes, unpack_to
        self.shape = (int(sizes.sum()), *row_shape)
        self.dtype = np.dtype(dtype)
        self.shard_of = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
        self.offset = np.arange(self.shape[0], dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        return self[:] if dtype is None else self[:].astype(dtype)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self._read(np.asarray([key]))[0]
        indices = np.arange(self.shape[0])[key] if isinstance(key, slice) else np.asarray(key, dtype=np.int64)
        return self._read(indices)

    def _read(self, indices: np.ndarray) -> np.ndarray:
        if not len(indices):
            return np.zeros((0, *self.shape[1:]), dtype=self.dtype)
        if indices.min() < -self.shape[0] or indices.max() >= self.shape[0]:
            raise IndexError(f"index out of range for {self.shape[0]} rows")
        indices = indices % self.shape[0]
        shards, offsets = self.shard_of[indices], self.offset[indices]
        first = self._shard(int(shards[0]))
        out = np.empty((len(indices), *first.shape[1:]), dtype=first.dtype)
        for shard in np.unique(shards):
            chosen = shards == shard
            out[chosen] = self._shard(int(shard))[offsets[chosen]]
        if self.unpack_to is None:
            return out
        return np.unpackbits(out, axis=1, count=int(np.prod(self.unpack_to))).reshape(len(indices), *self.unpack_to)

    def _shard(self, shard: int) -> np.ndarray:
        if shard not in self._maps:
            self._maps[shard] = np.load(self.files[shard], mmap_mode="r")
        return self._maps[shard]

    def __getstate__(self):
        return {**self.__dict__, "_maps": {}}  # memory maps are reopened by whoever unpickles


class SplitView:
    """What reads a split's crops: its summary, shard files and sizes make its images, masks and kind."""

    summary: dict
    sizes: np.ndarray

    def shard_files(self, kind: str) -> list[Path]:
        raise NotImplementedError

    @property
    def channels(self) -> int:
        return int(self.summary.get("channels", 1))  # patch stores hold grey 8-bit patches

    @property
    def dtype(self) -> str:
        return str(self.summary.get("dtype", "uint8"))

    @property
    def depth(self) -> int | None:
        """Planes of a 3-D crop store's (C, D, S, S) crops; None for 2-D crops."""
        return self.summary["settings"].get("depth")

    @property
    def kind(self) -> str:
        return pixel_kind(self.channels, self.dtype, self.depth)

    @cached_property
    def images(self) -> ShardedArray:
        size = self.summary["settings"]["crop_size"]
        if self.depth is not None:
            rows = (self.channels, self.depth, size, size)  # 3-D crops keep their channel axis
        else:
            rows = (size, size) if self.channels == 1 else (self.channels, size, size)
        return ShardedArray(self.shard_files("images"), self.sizes, rows, dtype=self.dtype)

    @cached_property
    def masks(self) -> ShardedArray:
        size = self.summary["settings"]["crop_size"]
        shape = (size, size) if self.depth is None else (self.depth, size, size)
        return ShardedArray(self.shard_files("masks"), self.sizes, shape, unpack_to=shape)


@dataclass(frozen=True)
class SplitStore(SplitView):
    """Read access to one finished split."""

    path: Path

    def __post_init__(self):
        if not (self.path / COMPLETE_MARKER).exists():
            raise DataError(f"crop store {self.path} is incomplete (no {COMPLETE_MARKER}); delete it to rebuild")

    @cached_property
    def summary(self) -> dict:
        return json.loads((self.path / "summary.json").read_text())

    @cached_property
    def sizes(self) -> np.ndarray:
        return np.load(self.path / "shard_sizes.npy")

    @property
    def folder(self) -> Path:
        """Where what is drawn from the split (a summary figure) is kept."""
        return self.path

    def shard_files(self, kind: str) -> list[Path]:
        return [shard_file(self.path, kind, s) for s in range(len(self.sizes))]

    @cached_property
    def labels(self) -> np.ndarray:
        return np.load(self.path / "labels.npy")

    def manifest(self) -> list[dict]:
        with open(self.path / "manifest.csv", newline="") as f:
            return list(csv.DictReader(f))


@dataclass(frozen=True)
class PooledSplit(SplitView):
    """A dataset's own splits read as one, in order (their splits drawn anew, by well): crop i of the second part
    is crop len(first) + i here."""

    parts: tuple[SplitStore, ...]

    @property
    def path(self) -> Path:
        """A name for the pool (its parts' folders), as the identity of what it holds; not a folder on disk."""
        return self.parts[0].path.with_name("+".join(part.path.name for part in self.parts))

    @property
    def folder(self) -> Path:
        return self.parts[0].path

    @cached_property
    def summary(self) -> dict:
        per_class: Counter = Counter()
        for part in self.parts:
            per_class.update(part.summary["per_class"])
        failed = [failure for part in self.parts for failure in part.summary["failed_images"]]
        crops = sum(part.summary["crops"] for part in self.parts)
        return {
            **self.parts[0].summary,
            "split": "pooled",
            "crops": crops,
            "per_class": dict(per_class),
            "failed_images": failed,
        }

    @cached_property
    def sizes(self) -> np.ndarray:
        return np.concatenate([part.sizes for part in self.parts])

    def shard_files(self, kind: str) -> list[Path]:
        return [path for part in self.parts for path in part.shard_files(kind)]

    @cached_property
    def labels(self) -> np.ndarray:
        return np.concatenate([part.labels for part in self.parts])

    def manifest(self) -> list[dict]:
        return [row for part in self.parts for row in part.manifest()]


@dataclass(frozen=True)
class CropStore:
    """A dataset's splits, each a finished SplitStore, and the class names their labels index."""

    splits: dict[str, SplitView]
    class_names: list[str]

    @property
    def channels(self) -> int:
        """The images' channels (every split's: `prepare_crop_store` checks that they agree)."""
        return next(iter(self.splits.values())).channels

    @property
    def dtype(self) -> str:
        return next(iter(self.splits.values())).dtype

    @property
    def kind(self) -> str:
        return next(iter(self.splits.values())).kind

    def images(self, split: str) -> ShardedArray:
        return self._split(split).images

    def masks(self, split: str) -> ShardedArray:
        return self._split(split).masks

    def labels(self, split: str) -> np.ndarray:
        return self._split(split).labels

    def manifest(self, split: str) -> list[dict]:
        return self._split(split).manifest()

    @property
    def summary(self) -> dict:
        """All splits' summaries in one: what `data/summary.json` holds in every run."""
        splits = {name: store.summary for name, store in self.splits.items()}
        failed = [failure for summary in splits.values() for failure in summary["failed_images"]]
        return {"class_names": self.class_names, "splits": splits, "failed_images": failed}

    def write_summary(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary, indent=2))
        return path

    def _split(self, split: str) -> SplitView:
        if split not in self.splits:
            raise DataError(f"the dataset has no {split!r} split; it has {', '.join(self.splits)}")
        return self.splits[split]
