"""Brightfield time-lapse folders in CLANet's layout: file names, sequences, and the splits that keep batches apart.

Layout: `<root>/<line>/batch_<k>/VID<exp>_<well>_<flask>_<DD>d<HH>h<MM>m.<ext>`. One sequence (a bag) is every
timepoint of one (experiment, well, flask) of one batch of one line: two experiments or flasks that reuse a well
name are two sequences, not one with duplicate timepoints. Names are parsed into fields (`dataset.name_patterns`)
and matched by field, never by substring: well D1 is not D11, and experiment VID1709 holds no well D1 (the
published split did). Splits keep a well (its token, in its batch) on one side, whatever its experiments or flasks.
"""

from __future__ import annotations

import collections.abc
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellexp.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
# dataset.name_patterns' default: the layout of the published data's file names
DEFAULT_NAME_PATTERN = (
    r"^VID(?P<exp>[A-Za-z0-9]+)_(?P<well>[A-Z]\d{1,2})_(?P<flask>[A-Za-z0-9]+)_(?P<d>\d+)d(?P<h>\d{2})h(?P<m>\d{2})m$"
)
# The layout the published loader special-cases (HS-5 batch_2): the well is the third `_` token (its split files
# call that batch's one well 83015). Not a default: add it after the default to read such names.
WELL_THIRD_PATTERN = (
    r"^VID(?P<exp>[A-Za-z0-9]+)_(?P<flask>[A-Za-z0-9]+)_(?P<well>[A-Za-z0-9]+)_(?P<d>\d+)d(?P<h>\d{2})h(?P<m>\d{2})m$"
)
NAME_GROUPS = ("exp", "well", "flask", "d", "h", "m")
NAME = re.compile(DEFAULT_NAME_PATTERN)
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
    def sequence(self) -> tuple[str, str, str, str, str]:
        """Every field that tells sequences apart: (line, batch, experiment, well, flask)."""
        return (self.line, self.batch, self.experiment, self.well, self.flask)


@dataclass(frozen=True)
class Sequence:
    """All timepoints of one (experiment, well, flask) in one batch of one line, sorted by time."""

    line: str
    batch: str
    experiment: str
    well: str
    flask: str
    frames: tuple[Frame, ...]

    @property
    def key(self) -> str:
        return f"{self.line}/batch_{self.batch}/VID{self.experiment}_{self.well}_{self.flask}"

    @property
    def hours(self) -> np.ndarray:
        return np.asarray([f.hours for f in self.frames], dtype=np.float64)


def name_patterns(patterns=None) -> tuple[re.Pattern, ...]:
    """`dataset.name_patterns` compiled (None: the default only); one ConfigError naming a bad entry."""
    if patterns is None:
        return (NAME,)
    if isinstance(patterns, str) or not isinstance(patterns, collections.abc.Sequence) or not len(patterns):
        raise ConfigError(f"dataset.name_patterns must be a non-empty list of regular expressions, got {patterns!r}")
    compiled = []
    for i, text in enumerate(patterns):
        where = f"dataset.name_patterns[{i}]={text!r}"
        if not isinstance(text, str):
            raise ConfigError(f"{where}: not a string")
        try:
            pattern = re.compile(text)
        except re.error as err:
            raise ConfigError(f"{where}: not a regular expression ({err})") from None
        missing = [g for g in NAME_GROUPS if g not in pattern.groupindex]
        if missing:
            raise ConfigError(f"{where}: lacks the named groups {', '.join(missing)} (needs {', '.join(NAME_GROUPS)})")
        compiled.append(pattern)
    return tuple(compiled)


def parse_name(relative: str | Path, patterns: tuple[re.Pattern, ...] = (NAME,)) -> Frame:
    """`<line>/batch_<k>/<name>.<ext>` into its fields, the name read by the first of `patterns` that matches it
    whole; DataError on any other."""
    parts = Path(relative).parts
    if len(parts) < 3:
        raise DataError(f"{relative}: expected <line>/batch_<k>/<file>")
    line, batch, name = parts[-3], parts[-2], Path(parts[-1])
    batch_match = BATCH.match(batch)
    name_match = next((m for m in (p.fullmatch(name.stem) for p in patterns) if m), None)
    if batch_match is None or name_match is None or name.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(
            f"{relative}: not <line>/batch_<k>/<name>.<jpg|png|tif> with a name that dataset.name_patterns reads "
            "(by default VID<exp>_<well>_<flask>_<DD>d<HH>h<MM>m)"
        )
    g = name_match.groupdict()
    minutes = int(g["m"])
    if int(g["h"]) > 23 or minutes > 59:
        raise DataError(f"{relative}: time {g['h']}h{g['m']}m is out of range")
    hours = int(g["d"]) * 24 + int(g["h"]) + minutes / 60
    return Frame(line, batch_match["k"], g["well"], hours, g["exp"], g["flask"], Path(relative).as_posix())


def scan(root: Path, patterns=None) -> tuple[list[Frame], list[dict]]:
    """Every image under root parsed (`patterns`: dataset.name_patterns); files whose name does not fit the layout
    come back as failures, by name."""
    root = Path(root)
    compiled = name_patterns(patterns)
    if not root.is_dir():
        raise DataError(f"time-lapse root {root} is not a folder")
    frames, failed = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        relative = path.relative_to(root)
        try:
            frames.append(parse_name(relative, compiled))
        except DataError as err:
            failed.append({"image": relative.as_posix(), "reason": str(err).split(": ", 1)[-1]})
    if not frames:
        raise DataError(f"no image under {root} is named <line>/batch_<k>/<name> as dataset.name_patterns reads it")
    return frames, failed


def unread_batches(frames: list[Frame], failed: list[dict]) -> list[dict]:
    """Batch folders none of whose images could be read: a layout that dataset.name_patterns lacks, named once."""
    read = {(f.line, f.batch) for f in frames}
    counts: Counter = Counter()
    for entry in failed:
        parts = Path(entry["image"]).parts
        batch = BATCH.match(parts[-2]) if len(parts) >= 3 else None
        if batch is not None and (parts[-3], batch["k"]) not in read:
            counts[f"{parts[-3]}/{parts[-2]}"] += 1
    return [
        {"batch": name, "reason": f"none of its {n} images has a name that dataset.name_patterns reads; skipped"}
        for name, n in sorted(counts.items())
    ]


def group_sequences(frames: list[Frame], min_frames: int = 1) -> tuple[list[Sequence], list[dict]]:
    """Frames grouped by `Frame.sequence`, sorted by time; sequences shorter than min_frames are skipped, by name."""
    groups: dict[tuple, list[Frame]] = defaultdict(list)
    for frame in frames:
        groups[frame.sequence].append(frame)
    sequences, skipped = [], []
    for fields, members in sorted(groups.items()):
        members.sort(key=lambda f: (f.hours, f.path))
        sequence = Sequence(*fields, tuple(members))
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


class Splits(dict):
    """train / val / test by name, as a dict; `unsplit` names the batches that could not give a well to every
    side (one entry per batch: {"batch": "<line>/batch_<k>", "reason": ...}), for the caller to log."""

    def __init__(self, splits: dict, unsplit: list[dict]):
        super().__init__(splits)
        self.unsplit = unsplit


def build_splits(sequences: list[Sequence], scheme: str, seed: int, val_fraction: float = 0.2) -> Splits:
    """train / val / test sequences.

    batch_separated: per line, one batch (chosen by the seed) trains, every other batch tests.
    batch_stratified: within every batch, wells are split so that each line's test share matches the separated
    split's; a batch of one well trains only. Either way val is carved from each batch's training wells
    (`carve_validation`), never from test data, and no well is on two sides.
    """
    if scheme not in SPLIT_SCHEMES:
        raise ConfigError(f"dataset.split_scheme={scheme!r}; choose one of {', '.join(SPLIT_SCHEMES)}")
    rng = np.random.default_rng(seed)
    by_line: dict[str, dict[str, list[Sequence]]] = defaultdict(lambda: defaultdict(list))
    for s in sequences:
        by_line[s.line][s.batch].append(s)
    train, test, unsplit = [], [], []
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
                wells = _shuffled_wells(batches[b], rng)
                cut = min(max(1, round(len(wells) * share)), len(wells) - 1)
                if len(wells) == 1:
                    unsplit.append({"batch": f"{line}/batch_{b}", "reason": "one well: training only, none tests"})
                test += [s for well in wells[:cut] for s in well]
                train += [s for well in wells[cut:] for s in well]
    train, val, no_val = carve_validation(train, val_fraction, rng)
    return Splits({"train": train, "val": val, "test": sorted(test, key=sequence_order)}, _merged(unsplit, no_val))


def carve_validation(
    train: list[Sequence], val_fraction: float, rng: np.random.Generator
) -> tuple[list[Sequence], list[Sequence], list[dict]]:
    """(train, val, unsplit): per line and batch, a share val_fraction (at least one) of that batch's training
    wells for validation, always leaving it one training well; a batch with a single training well gives none
    and is named in unsplit (and in a warning)."""
    by_batch: dict[tuple[str, str], list[Sequence]] = defaultdict(list)
    for s in train:
        by_batch[(s.line, s.batch)].append(s)
    kept, val, unsplit = [], [], []
    for (line, batch), members in sorted(by_batch.items()):
        wells = _shuffled_wells(members, rng)
        n_val = min(max(1, round(len(wells) * val_fraction)), len(wells) - 1) if val_fraction > 0 else 0
        if val_fraction > 0 and n_val == 0:
            unsplit.append({"batch": f"{line}/batch_{batch}", "reason": "one training well: none for validation"})
        val += [s for well in wells[:n_val] for s in well]
        kept += [s for well in wells[n_val:] for s in well]
    if unsplit:
        log.warning("batches that give no validation well: %s", ", ".join(u["batch"] for u in unsplit))
    return sorted(kept, key=sequence_order), sorted(val, key=sequence_order), unsplit


def _merged(*lists: list[dict]) -> list[dict]:
    """One entry per batch, its reasons joined."""
    reasons: dict[str, list[str]] = defaultdict(list)
    for entry in (e for entries in lists for e in entries):
        reasons[entry["batch"]].append(entry["reason"])
    return [{"batch": batch, "reason": "; ".join(r)} for batch, r in sorted(reasons.items())]


def _shuffled_wells(items: list[Sequence], rng: np.random.Generator) -> list[list[Sequence]]:
    """The sequences of one batch as wells (each well's sequences together), in an order drawn from rng."""
    wells: dict[str, list[Sequence]] = defaultdict(list)
    for s in sorted(items, key=sequence_order):
        wells[s.well].append(s)
    names = sorted(wells)
    return [wells[names[i]] for i in rng.permutation(len(names))]


def sequence_order(s: Sequence) -> tuple:
    """Sequences in a split: by line, batch and well (a well's sequences together)."""
    return (s.line, s.batch, s.well, s.experiment, s.flask)


def split_counts(splits: dict[str, list[Sequence]]) -> dict[str, dict]:
    return {
        name: {"sequences": len(seqs), "per_line": dict(sorted(Counter(s.line for s in seqs).items()))}
        for name, seqs in splits.items()
    }
