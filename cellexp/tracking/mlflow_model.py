"""A trained classifier as an MLflow model: `mlflow.pyfunc.load_model("runs:/<id>/model").predict(crops)`.

Nothing is pickled. The model is MLflow's "model from code": the code is cellexp's own (mlflow_model_code.py, which
MLflow copies beside the weights and runs at load time), the weights are the run's best checkpoint in safetensors,
and the model is rebuilt from the run's config.yaml, whose targets are checked as for `ckpt=`
(cellexp.tracking.loading).
Loading needs cellexp installed. In an artifact store on this disk the model's weights are a hard link to the run's
best checkpoint, not a second copy. Input: a batch of crops as the crop store holds them (N, S, S) or (N, C, S, S),
uint8 or uint16, as the signature says; output: one row per crop, the predicted class and one probability column
per class (`p_<class>`, as in test/predictions.csv).
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from cellexp.tracking.session import local_path, retrying

MODEL_CODE = Path(__file__).with_name("mlflow_model_code.py")
ARTIFACT_PATH = "model"
BATCH_SIZE = 256
# what MLflow warns of on every log_model that does not apply here: the signature is given, and an input example
# would be loaded and run at logging time (ANSI colour codes precede the text)
QUIET = (r".*Add type hints to the `predict` method", r".*An input example was not provided")


@contextmanager
def _quiet():
    """Drops the QUIET warnings. Not by a filter: MLflow's own `catch_warnings` resets the filters around them."""
    with warnings.catch_warnings():
        show = warnings.showwarning

        def shown(message, *args, **kwargs):
            if not any(re.match(pattern, str(message)) for pattern in QUIET):
                show(message, *args, **kwargs)

        warnings.showwarning = shown
        yield


with _quiet():  # MLflow checks a PythonModel's `predict` for type hints when the class is made

    class CellClassifierModel(mlflow.pyfunc.PythonModel):
        def load_context(self, context) -> None:
            from cellexp.tracking.loading import load_trained, resolve_checkpoint, trained_classes

            folder = Path(context.artifacts["checkpoint"])
            source = resolve_checkpoint(str(folder), OmegaConf.create(), folder, option="the MLflow model's checkpoint")
            self.class_names = trained_classes(source, ())
            self.model = load_trained(source, len(self.class_names))
            self.transform = self.model.input_config.transform()

        def predict(self, context, model_input, params=None) -> pd.DataFrame:
            from cellexp.plates.inference import classify_crops

            crops = np.asarray(model_input)
            probabilities, _ = classify_crops(self.model, self.transform, crops, BATCH_SIZE, torch.device("cpu"))
            columns = {f"p_{name}": probabilities[:, i] for i, name in enumerate(self.class_names)}
            predicted = [self.class_names[i] for i in probabilities.argmax(axis=1)] if len(crops) else []
            return pd.DataFrame({"predicted": predicted, **columns})


def log_classifier(best: Path, config_file: Path, class_names: list[str], example: np.ndarray, staging: Path) -> None:
    """Log the run's best checkpoint as the active MLflow run's `model`, with its input and output signature
    (`example`: a batch of crops as the model takes them)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for path in (*best.iterdir(), config_file):
        if path.is_file() and path.suffix != ".pt":  # weights, meta and config; not the optimizer state
            _link_or_copy(path, staging / path.name)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(example.dtype, (-1, *example.shape[1:]))]),
        outputs=Schema([ColSpec("string", "predicted"), *(ColSpec("float", f"p_{name}") for name in class_names)]),
    )
    with _quiet(), _no_mismatch_check():
        info = retrying(
            mlflow.pyfunc.log_model,
            name=ARTIFACT_PATH,
            python_model=str(MODEL_CODE),
            artifacts={"checkpoint": str(staging)},
            signature=signature,
            pip_requirements=_requirements(),
        )
    shutil.rmtree(staging)
    _share_weights(info.model_id, best)


@contextmanager
def _no_mismatch_check():
    """MLflow checks the pip requirements it is given against this environment by mapping every installed
    distribution to its modules: 2.3 s of the first model a process logs, on 2 cores. Ours are pinned to the
    installed versions (_requirements), so that check cannot find a mismatch: it is skipped while logging and put
    back after (a MLflow without that function skips nothing). Loading a model elsewhere still checks there."""
    from mlflow.utils import environment

    checked = getattr(environment, "warn_dependency_requirement_mismatches", None)
    if checked is None:
        yield
        return
    environment.warn_dependency_requirement_mismatches = lambda requirements: None
    try:
        yield
    finally:
        environment.warn_dependency_requirement_mismatches = checked


def _share_weights(model_id: str, best: Path) -> None:
    """MLflow copies a model's artifacts into the store: where the store is on this disk, each weights file of the
    model that is byte for byte the checkpoint's becomes a hard link to it (checkpoints are replaced by renaming,
    never rewritten in place), so that a run's weights take their size on disk once."""
    from mlflow.tracking import MlflowClient

    folder = local_path(retrying(MlflowClient().get_logged_model, model_id).artifact_location)
    if folder is None:
        return
    for copy in folder.rglob("*.safetensors"):
        original = best / copy.name
        if original.is_file() and filecmp.cmp(original, copy, shallow=False):
            _link_or_copy(original, copy, copy=False)


def _link_or_copy(source: Path, target: Path, copy: bool = True) -> None:
    """`target` becomes a hard link to `source` (replaced whole, by a rename), or where links are impossible (another
    filesystem) a copy, or with `copy=False` stays as it is."""
    staged = target.with_name(f".{target.name}.link")
    staged.unlink(missing_ok=True)
    try:
        os.link(source, staged)
    except OSError:
        if not copy:
            return
        shutil.copy2(source, staged)
    os.replace(staged, target)


def _requirements() -> list[str]:
    """What loading needs besides cellexp itself, at the versions that trained it (given, not inferred: inferring
    loads the model in a subprocess)."""
    from importlib.metadata import version

    names = ("mlflow", "torch", "timm", "safetensors", "omegaconf", "hydra-core")
    return [f"{name}=={version(name)}" for name in names]
