"""Module paths from before the package was grouped by job, still importable: an MLflow model logged earlier runs
code that names `cellexp.mlflow_model`, and a lab's notes say `python -m cellexp.runs`. Each old path imports (or
runs) the module at its new path and says the new path once. Old paths that are now package names (cellexp.tracking,
cellexp.schema, cellexp.data.livecell, cellexp.data.timelapse, cellexp.data.synthetic) name the packages."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "cellexp.run_identity": "cellexp.tracking.identity",
    "cellexp.mlflow_model": "cellexp.tracking.mlflow_model",
    "cellexp.mlflow_model_code": "cellexp.tracking.mlflow_model_code",
    "cellexp.handoff": "cellexp.tracking.handoff",
    "cellexp.follow_up": "cellexp.tracking.follow_up",
    "cellexp.kinds": "cellexp.tracking.kinds",
    "cellexp.run_page": "cellexp.tracking.param_order",
    "cellexp.run_folder": "cellexp.tracking.run_folder",
    "cellexp.run_config": "cellexp.tracking.saved_config",
    "cellexp.loading": "cellexp.tracking.loading",
    "cellexp.schema_values": "cellexp.schema.values",
    "cellexp.sweep": "cellexp.sweeps.callback",
    "cellexp.sweep_runs": "cellexp.sweeps.records",
    "cellexp.optuna_sweeper": "cellexp.sweeps.optuna_sweeper",
    "cellexp.sweeper_plugin": "cellexp.sweeps.plugin",
    "cellexp.pruning": "cellexp.sweeps.pruning",
    "cellexp.compare": "cellexp.commands.compare",
    "cellexp.runs": "cellexp.commands.runs",
    "cellexp.team": "cellexp.commands.team",
    "cellexp.data.coco": "cellexp.data.livecell.coco",
    "cellexp.data.sources": "cellexp.data.livecell.sources",
    "cellexp.data.prepare": "cellexp.data.livecell.prepare",
    "cellexp.data.bags": "cellexp.data.timelapse.bags",
    "cellexp.data.patches": "cellexp.data.timelapse.patches",
    "cellexp.data.split_files": "cellexp.data.timelapse.split_files",
    "cellexp.data.clanet_selection": "cellexp.data.timelapse.clanet_selection",
    "cellexp.data.clanet_texture": "cellexp.data.timelapse.clanet_texture",
    "cellexp.data.synthetic_render": "cellexp.data.synthetic.render",
    "cellexp.data.synthetic_styles": "cellexp.data.synthetic.styles",
    "cellexp.data.timelapse_synthetic": "cellexp.data.synthetic.timelapse",
}


class OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and hands over the module at its new one (for `python -m`, its code)."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        warnings.warn(f"{spec.name} moved to {MOVED[spec.name]}", FutureWarning, stacklevel=2)
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):
        """The new module ran when it was imported."""

    def get_code(self, name):
        """`python -m <old path>`: the new module's code, run as __main__."""
        warnings.warn(f"{name} moved to {MOVED[name]}: python -m {MOVED[name]}", FutureWarning, stacklevel=2)
        new = importlib.util.find_spec(MOVED[name])
        return new.loader.get_code(MOVED[name])


def install() -> None:
    if not any(isinstance(finder, OldPaths) for finder in sys.meta_path):
        sys.meta_path.append(OldPaths())
