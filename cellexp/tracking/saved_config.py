"""A saved run's config.yaml, read as data only: a run folder from elsewhere never runs code.

A run saves its config resolved (cellexp.run), so a genuine one holds plain values and no interpolation. Reading
one therefore evaluates no resolver at all: any `${...}` (`oc.decode`, `oc.env`, `oc.create`, a reference to
another node) is refused, so the tree that is checked is the tree that is built. Its `_target_`s are then checked
against the exact callables that cellexp's own conf/ ships (a model's backbone and head only under `backbone` and
`head`), and YAML tags are refused by the safe loader. The config is looked for in the checkpoint's own run folder
only (the checkpoint folder itself, or the folder that holds its `checkpoints/`), never in folders above it, and a
config.yaml that is a link out of that folder is refused. Every refusal is one line naming the file and the key.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cellexp.config import project_root, walk
from cellexp.errors import CheckpointError

RUN_CONFIG = "config.yaml"
# a saved config is a few kB; a bigger one is not a run's (and a YAML alias bomb never gets parsed)
MAX_CONFIG_BYTES = 1_000_000
# the groups whose targets a loaded config may build, and where in it
MODEL_GROUPS = ("backbone", "head")
# hydra's instantiate reads these keys; only `_target_` names a callable, the others are checked for their type
_BOOLEAN_KEYS = ("_partial_", "_recursive_")


def find_run_config(folder: Path, option: str) -> Path:
    """The config.yaml of the run that wrote checkpoint `folder`: in `folder` itself, else in the run folder that
    holds `checkpoints/<folder>`; never further up."""
    run_folder = folder.parent.parent if folder.parent.name == "checkpoints" else None
    for candidate in (folder, run_folder):
        path = candidate / RUN_CONFIG if candidate is not None else None
        if path is not None and (path.is_symlink() or path.is_file()):
            return path
    where = f"{folder}" + (f" or its run folder {run_folder}" if run_folder else "")
    raise CheckpointError(f"{option}: no {RUN_CONFIG} in {where}: cannot tell which model it holds")


def load_run_config(path: Path, option: str = "ckpt") -> DictConfig:
    """The run config at `path` as plain values, checked; one-line CheckpointError naming the file and key."""
    origin = f"{option}: {path}"
    real, home = path.resolve(), path.parent.resolve()
    if real.parent != home:
        raise CheckpointError(f"{origin} is a link to {real}, outside its run folder: refusing to read it")
    try:
        if real.stat().st_size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{origin} is over {MAX_CONFIG_BYTES} bytes: not a run's config")
        text = real.read_text(encoding="utf-8")
        config = OmegaConf.create(text) if text.strip() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException, ValueError) as err:
        raise CheckpointError(f"{origin} is not a readable config ({type(err).__name__}: {_one_line(err)})") from None
    if not isinstance(config, DictConfig):
        raise CheckpointError(f"{origin} does not hold a config mapping")
    check_saved(OmegaConf.to_container(config, resolve=False), origin)
    return config


def check_saved(tree: dict, origin: str) -> None:
    """Refuse interpolations anywhere and any `_target_` that cellexp does not ship for its place."""
    for key, value in walk(tree, ""):
        if isinstance(value, str) and "${" in value:
            raise CheckpointError(
                f"{origin} has an interpolation at {key} ({_short(value)}): a saved run config holds resolved "
                "values only, and none from elsewhere is evaluated"
            )
    check_targets(tree, origin)


def check_targets(tree, origin: str) -> None:
    """Refuse a config tree that would build anything cellexp does not ship, before anything is built: under
    `backbone` and `head` only the models conf/ names there, elsewhere any callable conf/ names."""
    if isinstance(tree, DictConfig):
        tree = OmegaConf.to_container(tree, resolve=False)
    models, anything = model_targets(), shipped_targets()
    for key, value in walk(tree, ""):
        name = key.rsplit(".", 1)[-1]
        if name in _BOOLEAN_KEYS and not isinstance(value, bool):
            raise CheckpointError(f"{origin} has {key}={_short(value)}: {name} is true or false")
        if name != "_target_":
            continue
        allowed = models if key.split(".", 1)[0].split("[", 1)[0] in MODEL_GROUPS else anything
        if not isinstance(value, str) or value not in allowed:
            raise CheckpointError(
                f"{origin} names _target_ {_short(value)} at {key.removesuffix('._target_') or 'the top'}, which "
                "no cellexp config ships there: refusing to build anything from it (a config from elsewhere could "
                "run code)"
            )


@functools.cache
def _targets(*groups: str) -> frozenset[str]:
    pattern = re.compile(r"^\s*_target_:\s*([\w.]+)\s*$", re.MULTILINE)
    conf = Path(project_root()) / "conf"
    folders = [conf / group for group in groups] or [conf]
    texts = (path.read_text() for folder in folders for path in folder.rglob("*.yaml"))
    return frozenset(match for text in texts for match in pattern.findall(text))


def shipped_targets() -> frozenset[str]:
    """Every `_target_` that cellexp's own configs (conf/) name."""
    return _targets()


def model_targets() -> frozenset[str]:
    """The `_target_`s of conf/backbone and conf/head: all that a loaded run config is built into."""
    return _targets(*MODEL_GROUPS)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
