"""The house: `ls cellexp/` shows packages named by job beside a few foundations, no module outgrows one job, and
module paths from before the package was grouped still import (a logged MLflow model's code names them), saying
the new path."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import cellexp
from cellexp.moved import MOVED

PACKAGE = Path(cellexp.__file__).parent
FOUNDATIONS = {"config.py", "errors.py", "progress.py", "run.py", "moved.py"}


def test_the_package_root_holds_packages_and_the_foundations_only():
    loose = {path.name for path in PACKAGE.glob("*.py")} - {"__init__.py"}
    assert loose == FOUNDATIONS


def test_no_module_is_over_400_lines():
    long = {
        str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_imports_the_module_at_its_new_one(old):
    sys.modules.pop(old, None)
    new = importlib.import_module(MOVED[old])
    with pytest.warns(FutureWarning, match=f"{old} moved to {MOVED[old]}"):
        assert importlib.import_module(old) is new
    assert not (Path(cellexp.__file__).parent.parent / (old.replace(".", "/") + ".py")).exists()


def test_python_dash_m_of_an_old_command_runs_the_new_one():
    done = subprocess.run(
        [sys.executable, "-m", "cellexp.runs", "--help"], capture_output=True, text=True, timeout=120, check=True
    )
    assert "usage: python -m cellexp.commands.runs" in done.stdout
    assert "cellexp.runs moved to cellexp.commands.runs" in done.stderr


def test_the_cellexp_command_refuses_an_unknown_tool_and_runs_a_known_one():
    from cellexp.commands.__main__ import main

    assert main([]) == 2 and main(["nonsense"]) == 2
    with pytest.raises(SystemExit) as shown:
        main(["runs", "--help"])
    assert shown.value.code == 0
