"""Which of a run's own overrides the commands printed after it need, so that they run on the same data.

A finished run prints how to evaluate and explain it. Those commands rebuild the model from the run's checkpoint,
but take the data, the device and the store from their own command line: without the run's `dataset=...`,
`debug=default` or `paths.data_dir=...` they evaluate another split (or are refused). So they carry the run's
overrides of what they read (CARRIED), and none of what they would refuse or redo (model, task, optimiser).
A preset (`debug=`, `experiment=`) is carried as given when the follow-up accepts all it sets, else as the
keys it sets that the follow-up reads.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from cellexp.config import project_root

# trainer keys that only a training run reads (tasks that train nothing refuse them; evaluation ignores them)
TRAINING_KEYS = (
    "max_epochs",
    "batch_size",
    "grad_accum_steps",
    "grad_clip",
    "channels_last",
    "compile",
    "split_batches",
    "sync_batchnorm",
    "early_stopping",
    "resume",
    "checkpoint",
)
# what a follow-up reads from its own command line: the data and its split, the device, the store
CARRIED = ("dataset", "seed", "paths", "logger", "trainer.cpu", "trainer.eval_batch_size", "trainer.num_workers")
NOT_CARRIED = ("logger.run_name",)
PRESETS = ("debug", "experiment")
# what each follow-up ignores (it rebuilds the checkpoint's model and trains nothing), so that a preset setting it
# may still be carried as given; task=xai refuses training keys that differ from their defaults
IGNORED = {
    "evaluate": ("backbone", "head", "optim", *(f"trainer.{key}" for key in TRAINING_KEYS)),
    "explain": ("backbone", "head", "optim"),
}


def carried_overrides(overrides: tuple[str, ...] | list[str], step: str) -> list[str]:
    """The run's command-line `overrides` that the follow-up `step` (evaluate, explain, ...) needs, in order."""
    explicit = {_key(override) for override in overrides}
    carried = []
    for override in overrides:
        key, value = _key(override), override.partition("=")[2]
        if key in PRESETS:
            preset = preset_keys(key, value)
            if preset is None or all(_carried(k) or _ignored(k, step) for k in preset):
                carried.append(override)
            else:
                carried += [f"{k}={v}" for k, v in preset.items() if _carried(k) and k not in explicit]
        elif _carried(key):
            carried.append(override)
    return carried


def preset_keys(group: str, name: str) -> dict[str, str] | None:
    """What conf/<group>/<name>.yaml sets, as dotted keys and override values (None: no such file here)."""
    path = Path(project_root()) / "conf" / group / f"{name}.yaml"
    if not path.is_file():
        return None
    tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    keys = {}
    for entry in tree.pop("defaults", None) or []:  # `override /dataset: x` picks a group option
        if isinstance(entry, dict):
            keys.update({k.split()[-1].lstrip("/"): str(v) for k, v in entry.items()})
    keys.update(_flatten(tree))
    return keys


def _flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = _value(value)
    return flat


def _value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_value(v) for v in value) + "]"
    return str(value)


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def _carried(key: str) -> bool:
    return _under(key, CARRIED) and not _under(key, NOT_CARRIED)


def _ignored(key: str, step: str) -> bool:
    return _under(key, IGNORED.get(step, ()))


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == prefix or key.startswith(f"{prefix}.") for prefix in prefixes)
