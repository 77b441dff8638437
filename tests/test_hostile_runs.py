"""Run folders from elsewhere, written as an attacker would: nothing in them runs, every refusal is one line.

Each payload, if it ran, would unpickle `payload.pkl`, whose code creates a marker file (or, for cellexp's own
resolvers, would create a folder); each is tried through evaluate, explain, predict and the MLflow model's loader.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

import cellexp
from cellexp.config import BUILDABLE
from cellexp.errors import CellexpError, CheckpointError, ConfigError
from cellexp.tracking.mlflow_model import CellClassifierModel
from cellexp.tracking.saved_config import find_run_config, load_run_config, model_targets, shipped_targets

LINEAR = "{_target_: cellexp.models.heads.LinearHead, _partial_: true}"
BACKBONE = "{_target_: cellexp.models.backbones.timm_backbone, _partial_: true, model_name: test_resnet, family: cnn}"
LOAD = "{_target_: torch.load, f: PAYLOAD, weights_only: false}"
GOOD = {"task": "{name: classify}", "dataset": "{name: synthetic, in_chans: 1, image_size: 32}", "backbone": BACKBONE}


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# (what the config.yaml says, what the one-line refusal must say)
CONFIGS = {
    "oc.decode": ({"head": f"\"${{oc.decode:'{LOAD}'}}\""}, "interpolation at head"),
    "oc.decode in backbone": (
        {"backbone": f"\"${{oc.decode:'{LOAD}'}}\"", "head": LINEAR},
        "interpolation at backbone",
    ),
    "oc.create": ({"head": f'"${{oc.create:{LOAD}}}"'}, "interpolation at head"),
    "oc.env": ({"head": LINEAR, "extra": "${oc.env:HOME}"}, "interpolation at extra"),
    "oc.select": ({"head": "${oc.select:evil}", "evil": LOAD}, "interpolation at head"),
    "node interpolation": ({"head": "${evil}", "evil": LOAD}, "interpolation at head"),
    "nested interpolation": (
        {"head": "{_target_: cellexp.models.heads.LinearHead, x: '${evil}'}", "evil": LOAD},
        "interpolation at head.x",
    ),
    "cellexp resolver": ({"head": LINEAR, "out": "${cellexp.run_dir:MARKER_DIR}"}, "interpolation at out"),
    "direct target": ({"head": LOAD}, "_target_ 'torch.load' at head,"),
    "list item": (
        {"head": f"{{_target_: cellexp.models.heads.LinearHead, extra: [{LOAD}]}}"},
        "_target_ 'torch.load' at head.extra[0]",
    ),
    "_args_": (
        {"head": f"{{_target_: cellexp.models.heads.LinearHead, _args_: [{LOAD}]}}"},
        "_target_ 'torch.load' at head._args_[0]",
    ),
    "_partial_": ({"head": "{_target_: torch.load, _partial_: true, f: PAYLOAD}"}, "_target_ 'torch.load' at head,"),
    "nested kwargs": (
        {"head": LINEAR, "backbone": BACKBONE[:-1] + f", kwargs: {{x: {{y: {LOAD}}}}}}}"},
        "_target_ 'torch.load' at backbone.kwargs.x.y",
    ),
    "a shipped target out of place": (
        {"head": "{_target_: torch.optim.SGD, _partial_: true}"},
        "_target_ 'torch.optim.SGD' at head,",
    ),
    "target not a string": ({"head": "{_target_: [torch.load]}"}, "_target_ ['torch.load'] at head,"),
    "yaml tag": ({"head": "!!python/object/apply:pathlib.Path.touch [MARKER]"}, "ConstructorError"),
    "malformed": ({"head": "{_target_: [unclosed"}, "is not a readable config (ParserError"),
}


def _write_run(folder: Path, entries: dict[str, str], marker: Path) -> Path:
    """A run folder with a checkpoint (real safetensors) and a config.yaml made of `entries` over GOOD."""
    best = folder / "checkpoints" / "best"
    best.mkdir(parents=True)
    save_file({"w": torch.zeros(1)}, best / "model.safetensors")
    (folder / "payload.pkl").write_bytes(pickle.dumps(Payload(marker)))
    lines = [f"{key}: {value}" for key, value in {**GOOD, **entries}.items()]
    text = "\n".join(lines).replace("PAYLOAD", str(folder / "payload.pkl")).replace("MARKER_DIR", str(marker))
    (folder / "config.yaml").write_text(text.replace("MARKER", str(marker)) + "\n")
    return best


def _uses(make_cfg, tmp_path, ckpt: Path) -> dict:
    """The four ways a run folder from elsewhere is used, each a callable that loads it."""
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    common = [f"ckpt={ckpt}", "logger=none"]
    return {
        "evaluate": lambda: cellexp.run(make_cfg(["task.fit=false", *common], run_name="evaluate")),
        "explain": lambda: cellexp.run(make_cfg(["task=xai", *common], run_name="explain", tiny=False)),
        "predict": lambda: cellexp.run(
            make_cfg(["task=predict", f"task.images={images}", *common], run_name="predict", tiny=False)
        ),
        "mlflow model": lambda: CellClassifierModel().load_context(SimpleNamespace(artifacts={"checkpoint": ckpt})),
    }


@pytest.mark.parametrize("payload", list(CONFIGS))
def test_a_hostile_config_runs_nothing_anywhere_and_is_refused_in_one_line(make_cfg, tmp_path, payload):
    entries, message = CONFIGS[payload]
    marker = tmp_path / "payload_ran"
    best = _write_run(tmp_path / "foreign", entries, marker)
    # the MLflow model keeps its config beside its weights, as log_classifier stages it
    (best / "config.yaml").write_text((tmp_path / "foreign" / "config.yaml").read_text())
    (best / "payload.pkl").write_bytes((tmp_path / "foreign" / "payload.pkl").read_bytes())
    for use, load in _uses(make_cfg, tmp_path, best).items():
        with pytest.raises(CheckpointError) as err:
            load()
        assert message in str(err.value), (use, str(err.value))
        assert "config.yaml" in str(err.value) and "\n" not in str(err.value), use
        assert not marker.exists(), use


@pytest.mark.parametrize("name", ["model.safetensors", "meta.json", "config.yaml"])
def test_a_pickle_under_any_file_name_the_loader_opens_is_never_unpickled(make_cfg, tmp_path, name):
    marker = tmp_path / "payload_ran"
    best = _write_run(tmp_path / "foreign", {"head": LINEAR}, marker)
    (best / "config.yaml").write_text((tmp_path / "foreign" / "config.yaml").read_text())
    torch.save({"x": Payload(marker)}, best / name)
    if name == "config.yaml":
        torch.save({"x": Payload(marker)}, tmp_path / "foreign" / name)
    for use, load in _uses(make_cfg, tmp_path, best).items():
        with pytest.raises(CellexpError) as err:
            load()
        assert name in str(err.value) and "\n" not in str(err.value), (use, str(err.value))
        assert not marker.exists(), use


def test_a_config_that_links_out_of_its_run_folder_is_refused(make_cfg, tmp_path):
    marker = tmp_path / "payload_ran"
    best = _write_run(tmp_path / "foreign", {"head": LINEAR}, marker)
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text((tmp_path / "foreign" / "config.yaml").read_text())
    (tmp_path / "foreign" / "config.yaml").unlink()
    (tmp_path / "foreign" / "config.yaml").symlink_to(elsewhere)
    (best / "config.yaml").symlink_to(elsewhere)
    for use, load in _uses(make_cfg, tmp_path, best).items():
        with pytest.raises(CheckpointError, match="is a link to .*elsewhere.yaml, outside its run folder") as err:
            load()
        assert "\n" not in str(err.value), use


def test_a_config_waiting_in_a_folder_above_the_run_is_never_read(make_cfg, tmp_path):
    marker = tmp_path / "payload_ran"
    best = _write_run(tmp_path / "parent" / "run", {"head": LOAD}, marker)
    (tmp_path / "parent" / "run" / "config.yaml").rename(tmp_path / "parent" / "config.yaml")
    (tmp_path / "config.yaml").write_text((tmp_path / "parent" / "config.yaml").read_text())
    for use, load in _uses(make_cfg, tmp_path, best).items():
        with pytest.raises(CheckpointError, match="no config.yaml in .*: cannot tell which model it holds") as err:
            load()
        assert "\n" not in str(err.value) and not marker.exists(), use


def test_a_backbone_option_that_reads_a_file_through_pickle_is_refused(make_cfg, tmp_path):
    marker = tmp_path / "payload_ran"
    backbone = BACKBONE[:-1] + ", kwargs: {checkpoint_path: PAYLOAD}}"
    best = _write_run(tmp_path / "foreign", {"head": LINEAR, "backbone": backbone}, marker)
    with pytest.raises(ConfigError, match="backbone.kwargs.checkpoint_path is not taken: it reads a weights file"):
        cellexp.run(make_cfg(["task.fit=false", f"ckpt={best}", "logger=none"], run_name="evaluate"))
    assert not marker.exists()


def test_the_build_whitelist_names_exactly_the_callables_conf_ships_for_a_run():
    app_only = {target for target in shipped_targets() if target.startswith(("optuna.", "cellexp.sweeps."))}
    assert set(BUILDABLE) == shipped_targets() - app_only
    assert not any("*" in target for target in BUILDABLE)
    assert "torch.load" not in BUILDABLE and model_targets() < set(BUILDABLE)


def test_a_key_the_model_does_not_take_is_named_in_one_line(tmp_path):
    head = "{_target_: cellexp.models.heads.LinearHead, _partial_: true, bogus: 1}"
    dataset = "{name: synthetic, in_chans: 1, image_size: 32, normalize: {mean: 0.5, std: 0.25}, cell_lines: [BV2]}"
    best = _write_run(tmp_path / "foreign", {"head": head, "dataset": dataset}, tmp_path / "payload_ran")
    (best / "config.yaml").write_text((tmp_path / "foreign" / "config.yaml").read_text())
    with pytest.raises(ConfigError, match=r"^head: .*unexpected keyword argument 'bogus' \(its config has") as err:
        CellClassifierModel().load_context(SimpleNamespace(artifacts={"checkpoint": best}))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"input": {"image_size": 60000}}, "input.image_size=60000 is not an integer from 1 to 4096"),
        ({"input": {"image_size": 32, "in_chans": "3"}}, "input.in_chans='3' is not an integer from 1 to 64"),
        ({"input": {"image_size": 32, "std": 0}}, "input.mean, std or intensity are not finite numbers"),
        ({"input": {"image_size": 32, "intensity": [[0]]}}, "is not one (low, high) pair per channel"),
        ({"input": {"image_size": 32, "intensity": 5}}, "its input record is not usable"),
        ([1, 2], "holds list, not a mapping"),
    ],
)
def test_a_meta_json_that_would_size_the_model_wrongly_is_named_before_anything_is_built(
    make_cfg, tmp_path, record, message
):
    best = _write_run(tmp_path / "foreign", {"head": LINEAR}, tmp_path / "payload_ran")
    (best / "config.yaml").write_text((tmp_path / "foreign" / "config.yaml").read_text())
    (best / "meta.json").write_text(json.dumps(record))
    for use, load in _uses(make_cfg, tmp_path, best).items():
        with pytest.raises(CheckpointError) as err:
            load()
        assert message in str(err.value) and "meta.json" in str(err.value) and "\n" not in str(err.value), use


@pytest.mark.parametrize("where", ["beside the weights", "in a parent folder"])
def test_the_mlflow_model_loader_runs_no_payload(tmp_path, where):
    import mlflow

    from cellexp.tracking.mlflow_model import MODEL_CODE

    marker = tmp_path / "payload_ran"
    best = _write_run(tmp_path / "foreign", {"head": LOAD}, marker)
    saved = tmp_path / "models" / "model"
    mlflow.pyfunc.save_model(
        str(saved), python_model=str(MODEL_CODE), artifacts={"checkpoint": str(best)}, pip_requirements=[]
    )
    staged = next(path.parent for path in saved.rglob("model.safetensors"))
    hostile = (tmp_path / "foreign" / "config.yaml").read_text().replace(str(tmp_path / "foreign"), str(staged))
    if where == "beside the weights":
        (staged / "config.yaml").write_text(hostile)
        (staged / "payload.pkl").write_bytes((tmp_path / "foreign" / "payload.pkl").read_bytes())
        message = "names _target_ 'torch.load' at head"
    else:  # the model's own config removed, a hostile one waiting above it
        (staged / "config.yaml").unlink(missing_ok=True)
        for parent in (staged.parent, saved, saved.parent):
            (parent / "config.yaml").write_text(hostile)
        message = "no config.yaml in"
    with pytest.raises(CheckpointError, match=message) as err:
        mlflow.pyfunc.load_model(str(saved))
    assert "\n" not in str(err.value) and not marker.exists()


# every resolver that OmegaConf, Hydra and cellexp register; each would be evaluated on access if a loaded config
# were resolved
RESOLVERS = [
    *("oc.coerce", "oc.create", "oc.decode", "oc.deprecated", "oc.dict.keys", "oc.dict.values", "oc.env", "oc.select"),
    *("hydra", "hydra.instantiate_override", "now", "python_version"),
    *("hydra_override_dirname", "hydra_deprecated_override_dirname"),
    *("cellexp.auto_if_requeued", "cellexp.main_rank_only", "cellexp.project_root", "cellexp.run_dir"),
    *("cellexp.run_id", "cellexp.study_name", "cellexp.sweep_id"),
]


def test_the_resolver_list_covers_every_registered_resolver():
    from omegaconf.basecontainer import BaseContainer

    assert set(BaseContainer._resolvers) <= set(RESOLVERS)


@pytest.mark.parametrize("resolver", RESOLVERS)
@pytest.mark.parametrize("place", ["value", "inside a string", "list item", "key of a target's options"])
def test_no_resolver_in_a_loaded_config_is_ever_evaluated(tmp_path, resolver, place):
    marker = tmp_path / "made_by_a_resolver"
    call = f"${{{resolver}:{marker}}}"
    node = {
        "value": f"'{call}'",
        "inside a string": f"'prefix {call} suffix'",
        "list item": f"[1, '{call}']",
        "key of a target's options": f"{{_target_: cellexp.models.heads.LinearHead, dim: '{call}'}}",
    }[place]
    best = _write_run(tmp_path / "foreign", {"head": LINEAR, "extra": node}, marker)
    with pytest.raises(CheckpointError, match=r"has an interpolation at extra.*: a saved run config holds") as err:
        load_run_config(find_run_config(best, "ckpt"))
    assert "\n" not in str(err.value) and not marker.exists()
