"""Brightfield time-lapse folders in CLANet's layout: file names, sequences, and the splits that keep batches apart.

Layout: `<root>/<line>/batch_<k>/VID<exp>_<well>_<flask>_<DD>d<HH>h<MM>m.<ext>`. One sequence (a bag) is
every timepoint of one well of one batch of one line. Names are parsed into fields and matched by field,
never by substring: well D1 is not D11, and experiment VID1709 holds no well D1 (the published split did).
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellexp.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
NAME = re.compile(
    r"^VID(?P<exp>[A-Za-z0-9]+)_(?P<well>[A-Z]\d{1,2})_(?P<flask>[A-Za-z0-9]+)_(?P<d>\d+)d(?P<h>\d{2})h(?P<m>\d{2})m$"
)
BATCH = re.compile(r"^batch_(?P<k>\w+)$")
SPLIT_SCHEMES = ("batch_separated", "batch_stratified")


@dataclass(frozen=True, order=True)
class Frame:
    """One image of a sequence, with the fields of its path."""

    line: str
    batch: str
    well: str
    hours: float
    experiment: str
    flask: str
    path: str = field(compare=False)

    @property
    def sequence(self) -> tuple[str, str, str]:
        return (self.line, self.batch, self.well)


@dataclass(frozen=True)
class Sequence:
    """All timepoints of one well in one batch of one line, sorted by time."""

    line: str
    batch: str
    well: str
    frames: tuple[Frame, ...]

    @property
    def key(self) -> str:
        return f"{self.line}/batch_{self.batch}/{self.well}"

    @property
    def hours(self) -> np.ndarray:
        return np.asarray([f.hours for f in self.frames], dtype=np.float64)


def parse_name(relative: str | Path) -> Frame:
    """`<line>/batch_<k>/VID<exp>_<well>_<flask>_<DD>d<HH>h<MM>m.<ext>` into its fields; DataError on any other."""
    parts = Path(relative).parts
    if len(parts) < 3:
        raise DataError(f"{relative}: expected <line>/batch_<k>/<file>")
    line, batch, name = parts[-3], parts[-2], Path(parts[-1])
    batch_match, name_match = BATCH.match(batch), NAME.match(name.stem)
    if batch_match is None or name_match is None or name.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{relative}: not <line>/batch_<k>/VID<exp>_<well>_<flask>_<DD>d<HH>h<MM>m.<jpg|png|tif>")
    g = name_match.groupdict()
    minutes = int(g["m"])
    if int(g["h"]) > 23 or minutes > 59:
        raise DataError(f"{relative}: time {g['h']}h{g['m']}m is out of range")
    hours = int(g["d"]) * 24 + int(g["h"]) + minutes / 60
    return Frame(line, batch_match["k"], g["well"], hours, g["exp"], g["flask"], Path(relative).as_posix())


def scan(root: Path) -> tuple[list[Frame], list[dict]]:
    """Every image under root parsed; files whose name does not fit the layout come back as failures, by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"time-lapse root {root} is not a folder")
    frames, failed = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        relative = path.relative_to(root)
        try:
            frames.append(parse_name(relative))
        except DataError as err:
            failed.append({"image": relative.as_posix(), "reason": str(err).split(": ", 1)[-1]})
    if not frames:
        raise DataError(
            f"no image under {root} is named <line>/batch_<k>/VID<exp>_<well>_<flask>_<DD>d<HH>h<MM>m.<ext>"
        )
    return frames, failed


def group_sequences(frames: list[Frame], min_frames: int = 1) -> tuple[list[Sequence], list[dict]]:
    """Frames grouped by (line, batch, well), sorted by time; sequences shorter than min_frames are skipped, by name."""
    groups: dict[tuple, list[Frame]] = defaultdict(list)
    for frame in frames:
        groups[frame.sequence].append(frame)
    sequences, skipped = [], []
    for (line, batch, well), members in sorted(groups.items()):
        members.sort(key=lambda f: (f.hours, f.path))
        sequence = Sequence(line, batch, well, tuple(members))
        if len(members) < min_frames:
            skipped.append({"sequence": sequence.key, "reason": f"{len(members)} images, fewer than {min_frames}"})
        else:
            sequences.append(sequence)
    return sequences, skipped


def describe(sequences: list[Sequence]) -> dict[str, dict[str, int]]:
    """Per line: sequences, batches and images; what a run logs about the data it found."""
    out = {}
    for line in sorted({s.line for s in sequences}):
        mine = [s for s in sequences if s.line == line]
        out[line] = {
            "sequences": len(mine),
            "batches": len({s.batch for s in mine}),
            "images": sum(len(s.frames) for s in mine),
        }
    return out


def build_splits(
    sequences: list[Sequence], scheme: str, seed: int, val_fraction: float = 0.2
) -> dict[str, list[Sequence]]:
    """train / val / test sequences.

    batch_separated: per line, one batch (chosen by the seed) trains, every other batch tests.
    batch_stratified: within every batch, wells are split so that each line's test share matches the separated
    split's. Either way val is a share of the training wells (never test data), and no well is on two sides.
    """
    if scheme not in SPLIT_SCHEMES:
        raise ConfigError(f"dataset.split_scheme={scheme!r}; choose one of {', '.join(SPLIT_SCHEMES)}")
    rng = np.random.default_rng(seed)
    by_line: dict[str, dict[str, list[Sequence]]] = defaultdict(lambda: defaultdict(list))
    for s in sequences:
        by_line[s.line][s.batch].append(s)
    train, test = [], []
    for line, batches in sorted(by_line.items()):
        names = sorted(batches)
        if len(names) < 2:
            raise DataError(f"line {line} has one batch ({names[0]}); a batch split needs at least two per line")
        if scheme == "batch_separated":
            kept = names[rng.integers(len(names))]
            train += batches[kept]
            test += [s for b in names if b != kept for s in batches[b]]
        else:
            share = 1 - 1 / len(names)
            for b in names:
                wells = _shuffled(batches[b], rng)
                cut = min(max(1, round(len(wells) * share)), len(wells) - 1) if len(wells) > 1 else len(wells)
                test += wells[:cut]
                train += wells[cut:]
    val = []
    for line in sorted(by_line):
        mine = _shuffled([s for s in train if s.line == line], rng)
        n_val = min(max(1, round(len(mine) * val_fraction)), len(mine) - 1) if val_fraction > 0 else 0
        val += mine[:n_val]
    val_keys = {s.key for s in val}
    train = [s for s in train if s.key not in val_keys]
    return {"train": sorted(train, key=_order), "val": sorted(val, key=_order), "test": sorted(test, key=_order)}


def _shuffled(items: list[Sequence], rng: np.random.Generator) -> list[Sequence]:
    items = sorted(items, key=_order)
    return [items[i] for i in rng.permutation(len(items))]


def _order(s: Sequence) -> tuple:
    return (s.line, s.batch, s.well)


def split_counts(splits: dict[str, list[Sequence]]) -> dict[str, dict]:
    return {
        name: {"sequences": len(seqs), "per_line": dict(sorted(Counter(s.line for s in seqs).items()))}
        for name, seqs in splits.items()
    }


def segment_sample(
    hours: np.ndarray, rng: np.random.Generator, window: tuple[float, float] = (2.0, 4.0), keep: float = 0.5
) -> tuple[np.ndarray, float]:
    """Time-series Segment Sampling: one training view of a sequence, as frame indices in time order and a weight.

    The sequence's time is cut into windows of t hours, t drawn as `window` times the mean sampling interval
    (with a random phase); each frame of a window is kept with probability `keep`, and every window keeps at
    least one. The weight is the share of the sequence's frames kept, in (0, 1]: a sparse view counts less.
    """
    n = len(hours)
    if n == 1:
        return np.zeros(1, np.int64), 1.0
    interval = max(float(np.mean(np.diff(hours))), 1e-6)
    width = interval * rng.uniform(*window)
    segment = np.floor((hours - hours[0] + rng.uniform(0, width)) / width).astype(np.int64)
    kept = rng.random(n) < keep
    # one forced frame per window, drawn uniformly among the window's frames
    order = np.lexsort((rng.random(n), segment))
    first = np.concatenate([[True], segment[order[1:]] != segment[order[:-1]]])
    kept[order[first]] = True
    indices = np.flatnonzero(kept)
    return indices, len(indices) / n
