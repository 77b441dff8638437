"""The checkpoints a run names (`ckpt`, `backbone.init_from`, `xai.compare_ckpt`, `trainer.resume`), checked before
its run folder is kept, its MLflow run is opened or any data is prepared.

A folder on disk is found and its run config read and checked (cellexp.tracking.saved_config: nothing in it
runs), and its weights file must be safetensors whose header parses; `trainer.resume` must name a complete
resumable checkpoint.
An MLflow run id is left to the task (looking it up opens the store, and its artifacts may need a download).
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

SOURCE_KEYS = ("ckpt", "backbone.init_from", "xai.compare_ckpt")
# the tasks that read `ckpt=`; the others refuse it by name themselves, pointing to what they take instead
CKPT_TASKS = ("classify", "mil", "xai", "embed", "predict")
_MLFLOW_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def check_sources(cfg: DictConfig) -> None:
    """One-line CheckpointError naming the key for a checkpoint the run cannot use."""
    from cellexp.engine.checkpoint import CheckpointManager
    from cellexp.tracking.loading import resolve

    for key in SOURCE_KEYS:
        spec = OmegaConf.select(cfg, key, default=None)
        if not spec or (_MLFLOW_RUN_ID.match(str(spec)) and not Path(str(spec)).exists()):
            continue
        if key == "ckpt" and cfg.task.name not in CKPT_TASKS:
            continue
        resolve(cfg, str(spec), option=key)  # finds the folder, checks its weights file and its run's config
    resume = OmegaConf.select(cfg, "trainer.resume", default=None)
    if resume and str(resume) != "auto":
        CheckpointManager(Path(cfg.paths.output_dir) / "checkpoints").resume_point(resume)
