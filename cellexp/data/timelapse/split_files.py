"""The published CLANet splits (its `experiment_setup/` files), read from the file `dataset.split_file` names.

- batch_separated `randomN.txt`: line k holds the 1-based batch that trains the k-th line of
  `dataset.split_classes`; every other batch of that line tests.
- batch_stratified `randomN.csv`, with `randomN_test.csv` beside it: a CSV with an index column (the line's
  position in `dataset.split_classes`) and one column per batch; a cell is a Python-literal list of the wells that
  train (or, in the _test file, test). As the published loader reads them, the j-th non-empty cell of a row is
  batch_j, and rows beyond the class list are ignored (with a warning).

Two deliberate differences from the published code:
- Wells are matched exactly, by the parsed well token. The published loader kept a frame when a listed well was
  a substring of its whole file name, so D1 also took D11 (putting D11 on both sides) and even every frame of an
  experiment named VID1..., test wells included. We do not reproduce that leak.
- Validation is carved from each batch's training wells (`carve_validation`), never from test. The published
  code selected its model on the test set; we deliberately do not. `dataset.split_seed` then only draws val.
"""

from __future__ import annotations

import ast
import csv
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellexp.data.timelapse.folders import Sequence, Splits, carve_validation, sequence_order
from cellexp.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SCHEME_OF_SUFFIX = {".txt": "batch_separated", ".csv": "batch_stratified"}


@dataclass(frozen=True)
class SplitFile:
    """A parsed split file: per line, its training batch (separated), or per (line, batch) the wells of each side
    (stratified)."""

    path: Path
    scheme: str
    classes: tuple[str, ...]
    training_batch: dict[str, str] = field(default_factory=dict)
    wells: dict[str, dict[tuple[str, str], tuple[str, ...]]] = field(default_factory=dict)


def read_split_file(dataset) -> SplitFile | None:
    """dataset.split_file and dataset.split_classes parsed (None when no split file is given); cheap, so that a bad
    file stops the run before any patch is cut."""
    path, classes = dataset.get("split_file"), dataset.get("split_classes")
    if not path:
        if classes:
            raise ConfigError("dataset.split_classes applies with dataset.split_file only; set both or neither")
        return None
    path = Path(path).expanduser()
    scheme = SCHEME_OF_SUFFIX.get(path.suffix.lower())
    if scheme is None:
        raise ConfigError(
            f"dataset.split_file={path}: a batch_separated randomN.txt or a batch_stratified randomN.csv, "
            f"not {path.suffix or 'a file without a suffix'}"
        )
    if dataset.get("split_scheme") != scheme:
        raise ConfigError(
            f"dataset.split_file={path} is a {scheme} split; set dataset.split_scheme={scheme} "
            f"(it is {dataset.get('split_scheme')})"
        )
    if not path.is_file():
        raise DataError(f"dataset.split_file={path}: no such file")
    names = read_split_classes(classes)
    if scheme == "batch_separated":
        return SplitFile(path, scheme, names, training_batch=_read_batch_indices(path, names))
    if path.stem.endswith("_test"):
        raise ConfigError(f"dataset.split_file={path}: give the training file; its _test.csv is read beside it")
    test = path.with_name(f"{path.stem}_test.csv")
    if not test.is_file():
        raise DataError(f"dataset.split_file={path}: its test wells, {test.name}, are not beside it")
    return SplitFile(path, scheme, names, wells={"train": _read_wells(path, names), "test": _read_wells(test, names)})


def read_split_classes(classes) -> tuple[str, ...]:
    """dataset.split_classes: a file of line names, one a line (as the published train_32class_batch_idx.txt), or
    a list of them; the order a split file's lines and rows follow."""
    if not classes:
        raise ConfigError(
            "dataset.split_file needs dataset.split_classes: the line names in the file's order (a file with one "
            "name a line, or a list)"
        )
    if isinstance(classes, str):
        source = Path(classes).expanduser()
        if not source.is_file():
            raise DataError(f"dataset.split_classes={classes}: no such file")
        names = [line.strip() for line in source.read_text().splitlines()]
        while names and not names[-1]:
            names.pop()
    else:
        source, names = "dataset.split_classes", [str(name).strip() for name in classes]
    empty = [i + 1 for i, name in enumerate(names) if not name]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if not names or empty or duplicated:
        problem = f"empty entries {empty}" if empty else f"repeated {duplicated}" if duplicated else "no names"
        raise DataError(f"dataset.split_classes ({source}): {problem}")
    return tuple(names)


def file_splits(sequences: list[Sequence], split: SplitFile, seed: int, val_fraction: float) -> Splits:
    """train / val / test sequences as the split file gives them, val carved from each batch's training wells."""
    lines = sorted({s.line for s in sequences})
    unknown = [line for line in lines if line not in split.classes]
    if unknown:
        raise DataError(f"lines {unknown} of the data are not in dataset.split_classes (needed by {split.path.name})")
    absent = [name for name in split.classes if name not in lines]
    if absent:
        log.warning("lines of dataset.split_classes without sequences, left out: %s", ", ".join(absent))
    batches: dict[str, set[str]] = defaultdict(set)
    for s in sequences:
        batches[s.line].add(s.batch)
    if split.scheme == "batch_separated":
        for line in lines:
            _check_batch(split, line, split.training_batch[line], batches[line])
        train = [s for s in sequences if s.batch == split.training_batch[s.line]]
        test = [s for s in sequences if s.batch != split.training_batch[s.line]]
    else:
        train, test = _stratified(sequences, split, batches)
    train, val, unsplit = carve_validation(train, val_fraction, np.random.default_rng(seed))
    return Splits({"train": train, "val": val, "test": sorted(test, key=sequence_order)}, unsplit)


def _stratified(sequences, split: SplitFile, batches) -> tuple[list[Sequence], list[Sequence]]:
    train_wells, test_wells = split.wells["train"], split.wells["test"]
    for table in (train_wells, test_wells):
        for (line, batch), wells in table.items():
            if wells and line in batches:
                _check_batch(split, line, batch, batches[line])
    for place in sorted(set(train_wells) & set(test_wells)):
        both = sorted(set(train_wells[place]) & set(test_wells[place]))
        if both:
            raise DataError(f"{split.path.name}: {place[0]}/batch_{place[1]} lists wells {both} on both sides")
    train, test, unlisted = [], [], []
    for s in sequences:
        place = (s.line, s.batch)
        if s.well in train_wells.get(place, ()):
            train.append(s)
        elif s.well in test_wells.get(place, ()):
            test.append(s)
        else:
            unlisted.append(s.key)
    if unlisted:
        log.warning(
            "%d sequences whose well neither list of %s names, left out: %s",
            len(unlisted),
            split.path.name,
            ", ".join(unlisted[:20]) + (" ..." if len(unlisted) > 20 else ""),
        )
    found = {(s.line, s.batch, s.well) for s in sequences}
    missing = sorted(
        f"{line}/batch_{batch}/{well}"
        for table in (train_wells, test_wells)
        for (line, batch), wells in table.items()
        if line in batches
        for well in wells
        if (line, batch, well) not in found
    )
    if missing:
        log.warning("%d wells of %s have no sequence: %s", len(missing), split.path.name, ", ".join(missing[:20]))
    return train, test


def _check_batch(split: SplitFile, line: str, batch: str, present: set[str]) -> None:
    if batch not in present:
        raise DataError(
            f"{split.path.name}: batch {batch} for {line} (line {split.classes.index(line) + 1} of "
            f"dataset.split_classes), which has batches {', '.join(sorted(present, key=_natural))}"
        )


def _read_batch_indices(path: Path, classes: tuple[str, ...]) -> dict[str, str]:
    values = path.read_text().splitlines()
    while values and not values[-1].strip():
        values.pop()
    if len(values) < len(classes):
        raise DataError(f"{path}: {len(values)} batch indices for the {len(classes)} lines of dataset.split_classes")
    if len(values) > len(classes):
        log.warning(
            "%s: lines after line %d are ignored (dataset.split_classes has %d)", path, len(classes), len(classes)
        )
    out = {}
    for number, (line, text) in enumerate(zip(classes, values, strict=False), start=1):
        if not text.strip().isdigit() or int(text) < 1:
            raise DataError(f"{path} line {number} ({line}): {text!r} is not a 1-based batch index")
        out[line] = str(int(text))
    return out


def _read_wells(path: Path, classes: tuple[str, ...]) -> dict[tuple[str, str], tuple[str, ...]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{path}: empty")
    header, by_index = rows[0], {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if not row[0].strip().isdigit() or int(row[0]) in by_index:
            raise DataError(f"{path} row {number}: {row[0]!r} is not a new class index")
        by_index[int(row[0])] = (number, row[1:])
    ignored = sorted(i for i in by_index if i >= len(classes))
    if ignored:
        log.warning("%s: rows %s are ignored (dataset.split_classes has %d lines)", path, ignored, len(classes))
    out = {}
    for index, line in enumerate(classes):
        if index not in by_index:
            raise DataError(f"{path}: no row {index} for {line} (line {index + 1} of dataset.split_classes)")
        number, cells = by_index[index]
        present = [(column, cell) for column, cell in zip(header[1:], cells, strict=False) if cell.strip()]
        for j, (column, cell) in enumerate(present, start=1):
            if column.strip() != f"batch_{j}":
                log.warning(
                    "%s row %d: the cell under %s is read as batch_%d (the %d-th non-empty cell)",
                    path,
                    number,
                    column,
                    j,
                    j,
                )
            out[(line, str(j))] = _well_list(path, number, column, cell)
    return out


def _well_list(path: Path, number: int, column: str, cell: str) -> tuple[str, ...]:
    try:
        wells = ast.literal_eval(cell.strip())
    except (ValueError, SyntaxError):
        wells = None
    if not isinstance(wells, list | tuple) or not all(isinstance(w, str) for w in wells):
        raise DataError(f"{path} row {number}, {column}: {cell!r} is not a list of well names like ['D1', 'D11']")
    return tuple(wells)


def _natural(batch: str) -> tuple:
    return (0, int(batch), "") if batch.isdigit() else (1, 0, batch)
