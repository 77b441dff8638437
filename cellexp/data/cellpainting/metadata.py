"""The plate's metadata table: which treatment (compound, dose) each well got, and which wells are negative controls.

A CSV or parquet file with one row per (plate, well). Its column names default to the `Metadata_*` names that
pycytominer and the JUMP Cell Painting metadata use (`dataset.metadata_columns` renames them). A well that has
fields but no row stops the preparation naming the well and the table: a cell without a treatment has no label.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cellexp.data.cellpainting.fields import normal_well
from cellexp.errors import DataError

COLUMNS = {
    "plate": "Metadata_Plate",
    "well": "Metadata_Well",
    "compound": "Metadata_Compound",
    "dose": "Metadata_Dose",
    "pert_type": "Metadata_pert_type",
}
# the value of the pert_type column that marks a negative control well (JUMP: trt for treatments)
CONTROL = "control"
LABELS = ("compound", "compound_dose")


@dataclass(frozen=True)
class Treatment:
    compound: str
    dose: float
    control: bool

    def label(self, label: str) -> str:
        """The class a cell of this well is: its compound, or compound and dose ('cmpd_A@10'); a control's
        dose is not part of its class."""
        if label == "compound" or self.control:
            return self.compound
        return f"{self.compound}@{self.dose:g}"


def read_metadata(path: Path, columns: Mapping[str, str] | None = None) -> dict[tuple[str, str], Treatment]:
    """(plate, well) -> Treatment, from the table at `path`."""
    path = Path(path)
    names = {**COLUMNS, **(columns or {})}
    if not path.is_file():
        raise DataError(f"metadata table {path} does not exist (set dataset.metadata)")
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={names["well"]: str})
    except (OSError, ValueError) as err:
        raise DataError(f"metadata table {path} cannot be read: {err}") from None
    missing = [column for column in names.values() if column not in table.columns]
    if missing:
        raise DataError(
            f"metadata table {path} has no column {', '.join(missing)} (it has {', '.join(map(str, table.columns))}; "
            "dataset.metadata_columns maps other names)"
        )
    treatments = {}
    for row in table.to_dict("records"):
        record = {key: row[column] for key, column in names.items()}
        key = (str(record["plate"]), normal_well(record["well"]))
        treatments[key] = Treatment(
            str(record["compound"]), float(record["dose"]), str(record["pert_type"]).lower() == CONTROL
        )
    return treatments


def treatment_of(treatments: Mapping[tuple[str, str], Treatment], plate: str, well: str, table: Path) -> Treatment:
    if (plate, well) not in treatments:
        raise DataError(f"well {well} of plate {plate} has fields but no row in the metadata table {table}")
    return treatments[(plate, well)]


def class_names(treatments: Mapping[tuple[str, str], Treatment], label: str) -> list[str]:
    """The classes `label` makes of these treatments: controls first, then the others in sorted order."""
    if label not in LABELS:
        raise DataError(f"dataset.label={label!r} is not one of {', '.join(LABELS)}")
    controls = sorted({t.label(label) for t in treatments.values() if t.control})
    others = sorted({t.label(label) for t in treatments.values() if not t.control} - set(controls))
    return controls + others


def write_metadata(path: Path, treatments: Mapping[tuple[str, str], Treatment]) -> Path:
    """The table as `read_metadata` reads it, with the default column names (the generated plate's)."""
    rows = [
        {
            COLUMNS["plate"]: plate,
            COLUMNS["well"]: well,
            COLUMNS["compound"]: t.compound,
            COLUMNS["dose"]: t.dose,
            COLUMNS["pert_type"]: CONTROL if t.control else "trt",
        }
        for (plate, well), t in sorted(treatments.items())
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
