"""Tables people open in a spreadsheet: CSV with a header row, floats to six significant digits."""

from __future__ import annotations

import csv
from pathlib import Path


def write_csv(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([f"{v:.6g}" if isinstance(v, float) else v for v in row] for row in rows)
    return path
