"""The docs: the configuration reference holds every key and comment of conf/, and the README stays two screens whose
every command runs."""

from __future__ import annotations

import functools
import re

import pytest
import yaml

from cellexp.commands import configs
from tests.conftest import CONF

OPTIONS = sorted(CONF.rglob("*.yaml"))
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
