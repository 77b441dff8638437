"""`python -m cellexp.commands.configs`: the configuration reference, every group, option and key of `conf/` with
the YAML comment above it or beside it, as Markdown. The docs site builds its reference page from this at build
time, so the reference cannot drift from the YAML.

A folder under a group is a nested group (`optim/scheduler`, `hydra/launcher`) unless its files are global presets
(`# @package _global_`, as `experiment/paper/`), whose options are then named by their path (`paper/resnet18`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parents[2] / "conf"
PACKAGE_HEADER = "# @package "


@dataclass(frozen=True)
class Key:
    """One key of an option: its dotted path, its value as written (empty for a mapping) and its comment."""

    path: str
    value: str
    comment: str


@dataclass(frozen=True)
class Option:
    group: str
    name: str
    package: str
    description: str
    keys: tuple[Key, ...]


def _is_global(path: Path) -> bool:
    return path.read_text().startswith(PACKAGE_HEADER + "_global_")


def group_of(path: Path, conf: Path = CONF) -> tuple[str, str]:
    """(group, option) of a YAML file under `conf`; `("", "config")` for the primary config."""
    parts = path.relative_to(conf).with_suffix("").parts
    if len(parts) == 1:
        return "", parts[0]
    split = 1
    while split < len(parts) - 1 and not any(_is_global(f) for f in conf.joinpath(*parts[: split + 1]).glob("*.yaml")):
        split += 1
    return "/".join(parts[:split]), "/".join(parts[split:])


def _comment(line: str) -> str:
    return line.strip().removeprefix("#").strip()


def _header(lines: list[str]) -> tuple[str, list[str], int]:
    """The package line, the description (the comment block the file opens with) and where that block ends."""
    end = 0
    while end < len(lines) and lines[end].lstrip().startswith("#"):
        end += 1
    block = lines[:end]
    package = ""
    if block and block[0].startswith(PACKAGE_HEADER):
        package, block = block[0].removeprefix(PACKAGE_HEADER).strip(), block[1:]
    return package, [_comment(line) for line in block], end


def _above(lines: list[str], line: int, floor: int) -> list[str]:
    """The comment lines directly above `line` (no blank line between), not reaching into the file's header."""
    start = line
    while start > floor and lines[start - 1].lstrip().startswith("#"):
        start -= 1
    return [_comment(text) for text in lines[start:line]]


def _inline(line: str, column: int) -> list[str]:
    rest = line[column:].lstrip().removeprefix(":").strip()
    return [_comment(rest)] if rest.startswith("#") else []


def _text(node: yaml.Node, source: str) -> str:
    """A value as written, block sequences and mappings folded onto one line."""
    if isinstance(node, yaml.SequenceNode) and not node.flow_style:
        return "[" + ", ".join(_text(item, source) for item in node.value) + "]"
    if isinstance(node, yaml.MappingNode) and not node.flow_style:
        return "{" + ", ".join(f"{_text(k, source)}: {_text(v, source)}" for k, v in node.value) + "}"
    return " ".join(source[node.start_mark.index : node.end_mark.index].split())


def _keys(node: yaml.MappingNode, prefix: str, lines: list[str], floor: int, source: str):
    for key, value in node.value:
        path = f"{prefix}{key.value}"
        comment = _above(lines, key.start_mark.line, floor)
        nested = isinstance(value, yaml.MappingNode) and value.value
        if nested:
            flow = value.end_mark.line == key.start_mark.line
            comment += _inline(lines[key.start_mark.line], (value if flow else key).end_mark.column)
            yield Key(path, "", " ".join(comment))
            yield from _keys(value, f"{path}.", lines, floor, source)
            continue
        end = min(value.end_mark.line - (value.end_mark.column == 0), len(lines) - 1)
        while end > key.start_mark.line and (not lines[end].strip() or lines[end].lstrip().startswith("#")):
            end -= 1  # a block value ends where the next key begins: its comments are that key's
        if end == key.start_mark.line:
            comment += _inline(lines[end], value.end_mark.column)
        else:  # a block value: its comments (a defaults list's) go with it
            comment += [_comment(text) for text in lines[key.start_mark.line + 1 : end + 1] if "#" in text]
        yield Key(path, _text(value, source), " ".join(comment))


def read_option(path: Path, conf: Path = CONF) -> Option:
    """One YAML file of `conf` as an Option."""
    source = path.read_text()
    lines = source.splitlines()
    package, description, floor = _header(lines)
    group, name = group_of(path, conf)
    root = yaml.compose(source)
    keys = tuple(_keys(root, "", lines, floor, source)) if isinstance(root, yaml.MappingNode) else ()
    return Option(group, name, package, " ".join(description), keys)


def options(conf: Path = CONF) -> list[Option]:
    """Every option of `conf`, the primary config first, then by group and name."""
    found = [read_option(path, conf) for path in conf.rglob("*.yaml")]
    return sorted(found, key=lambda o: (o.group != "", o.group, o.name))


def escape(text: str) -> str:
    """A comment as Markdown text: outside code spans, `<run id>` would be read as an HTML tag and `[a] [b]` as a
    reference link."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        parts[i] = parts[i].replace("[", "\\[").replace("]", "\\]")
    return "`".join(parts)


def markdown(conf: Path = CONF) -> str:
    """The reference page: a section per group, an entry per option, a line per key."""
    out = [
        "# Configuration reference",
        "",
        "Every group, option and key of `conf/`, with its YAML comment; generated from the YAML when the site is "
        "built (`python -m cellexp.commands.configs`). Select an option with `group=option`, set a key with "
        "`key=value` (a global preset's keys are full paths).",
    ]
    group = None
    for option in options(conf):
        if option.group != group:
            group = option.group
            out += ["", f"## `{group}`" if group else "## The primary config"]
        select = f"{option.group}={option.name}" if option.group else f"{option.name}.yaml"
        out += ["", f"### `{select}`", ""]
        if option.package:
            out += [f"Package: `{option.package}`.", ""]
        if option.description:
            out += [escape(option.description), ""]
        for key in option.keys:
            value = f" = `{key.value}`" if key.value else ""
            comment = f": {escape(key.comment)}" if key.comment else ""
            out.append(f"- `{key.path}`{value}{comment}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cellexp.commands.configs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--conf", type=Path, default=CONF, help="the config folder (default: the project's conf/)")
    args = parser.parse_args(argv)
    sys.stdout.write(markdown(args.conf.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
