"""The docs: the configuration reference holds every key and comment of conf/, and the README stays two screens whose
every command runs."""

from __future__ import annotations

import functools
import re
import subprocess
import sys

import pytest
import yaml

from cellexp.commands import configs
from tests.conftest import CONF, ROOT, subprocess_env

OPTIONS = sorted(CONF.rglob("*.yaml"))
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"
# The README's commands, as a newcomer types them: install and run the quick job, then the tests.
INSTALL = 'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]"'
QUICK_JOB = ".venv/bin/python train.py debug=default"
TESTS = ".venv/bin/python -m pytest"
VENV_PYTHON = ".venv/bin/python"
COMMENT = re.compile(r"(?:^|\s)#(.*)$")  # a whole-line or a trailing comment


@functools.cache
def reference() -> str:
    return configs.markdown()


def section(path) -> str:
    """The reference's entry for one YAML file of conf/."""
    group, name = configs.group_of(path)
    heading = f"### `{group}={name}`" if group else f"### `{name}.yaml`"
    assert reference().count(heading + "\n") == 1, f"{heading} is not in the reference once"
    return re.split(r"\n##+ ", reference().split(heading + "\n", 1)[1], maxsplit=1)[0]


def keys(data: dict, prefix: str = ""):
    for key, value in data.items():
        yield f"{prefix}{key}"
        if isinstance(value, dict):
            yield from keys(value, f"{prefix}{key}.")


def test_every_yaml_file_is_an_option_of_its_group():
    assert len(configs.options()) == len(OPTIONS)
    assert configs.group_of(CONF / "optim" / "scheduler" / "cosine.yaml") == ("optim/scheduler", "cosine")
    assert configs.group_of(CONF / "experiment" / "paper" / "resnet18.yaml") == ("experiment", "paper/resnet18")


@pytest.mark.parametrize("path", OPTIONS, ids=lambda p: str(p.relative_to(CONF)))
def test_the_configuration_reference_lists_every_key_and_comment_of_the_option(path):
    text = section(path)
    missing = [key for key in keys(yaml.safe_load(path.read_text()) or {}) if f"- `{key}`" not in text]
    assert not missing, f"keys of {path} missing from the reference: {missing}"
    comments = [found.group(1).strip() for line in path.read_text().splitlines() if (found := COMMENT.search(line))]
    comments = [c for c in comments if c and not c.startswith("@package")]
    lost = [c for c in comments if configs.escape(c) not in text]
    assert not lost, f"comments of {path} missing from the reference: {lost}"


def readme_commands() -> list[str]:
    """The README's shell commands: the lines of its indented code blocks."""
    return [line.strip() for line in README.read_text().splitlines() if line.startswith("    ") and line.strip()]


def run(command: str, *args: str, timeout: int) -> subprocess.CompletedProcess:
    """A README command in this interpreter (the venv it names), from the checkout."""
    argv = [sys.executable if word == VENV_PYTHON else word for word in command.split()]
    return subprocess.run(
        [*argv, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=subprocess_env()
    )


def test_the_readme_is_two_screens_with_two_commands():
    assert len(README.read_text().splitlines()) <= 150
    assert readme_commands() == [INSTALL, QUICK_JOB, TESTS], "a new README command needs its run in this file"


def test_the_readme_install_is_what_ci_does_and_resolves():
    venv, pip = INSTALL.split(" && ")
    ci = CI.read_text().splitlines()
    assert venv in ci and '.venv/bin/pip install --quiet -e ".[dev,team]"' in ci  # the README's, with the team extra
    # the install itself, without downloading the stack again: the project and its dev extra resolve
    done = run(
        pip.replace(".venv/bin/pip", f"{VENV_PYTHON} -m pip").replace('".[dev]"', ".[dev]"),
        "--dry-run",
        "--no-deps",
        "--no-build-isolation",
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Would install cellexp" in done.stdout


@pytest.mark.slow
def test_the_readme_quick_job_runs_and_says_what_next(tmp_path):
    done = run(QUICK_JOB, f"paths.root_dir={tmp_path}", timeout=1800)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "finished run" in output and "evaluate" in output and "open the UI" in output


@pytest.mark.slow
def test_the_readme_test_command_is_cis_and_collects_the_suite():
    assert TESTS in CI.read_text().splitlines()
    done = run(TESTS, "--collect-only", "-q", "-p", "no:cacheprovider", timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
