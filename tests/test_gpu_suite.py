"""benchmarks/gpu_suite.py --quick: every row of the table is there, with finite numbers (no speed is asserted)."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, subprocess_env

# What a cell may say instead of a number on a CPU (the compile row is skipped, memory has no CPU figure).
NOT_MEASURED = re.compile(r"^(skipped: .+|n/a \(cpu\))$")
NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?(e[-+]?\d+)?")


def table_rows(output: str) -> list[list[str]]:
    rows = [line.strip().strip("|").split(" | ") for line in output.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]  # without the header


def number(cell: str) -> float:
    found = NUMBER.match(cell)
    assert found, f"no number in {cell!r}"
    return float(found.group(0).replace(",", ""))


@pytest.mark.slow
def test_quick_suite_prints_all_seven_rows_with_finite_numbers():
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_suite.py", "--quick"],
        cwd=ROOT,
        env={**subprocess_env(), "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=3600,  # a hang guard only
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table_rows(done.stdout)
    assert {row[0] for row in rows} == {"1", "2", "3", "4", "5", "6", "7"}, done.stdout
    for key, what, ours, reference, ratio, *_ in rows:
        for cell in (ours, reference, ratio):
            if cell and not NOT_MEASURED.match(cell):
                assert math.isfinite(number(cell)), (key, what, cell)
        if key in {"1", "2", "4", "5"}:  # measured on any device
            assert not NOT_MEASURED.match(ratio), (key, what, ratio)
        if key == "3":  # eager is measured even where compiling is skipped
            assert math.isfinite(number(reference)), (key, what, reference)
    assert "device: CPU" in done.stdout and "torch " in done.stdout
