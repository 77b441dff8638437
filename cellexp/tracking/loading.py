"""Models from configs and from other runs: `ckpt=`, `backbone.init_from=` and a task's trained model, in one place.

`ckpt=` (and every option like it) takes a checkpoint folder or its `model.safetensors`, a run folder (its
`checkpoints/best`) or an MLflow run id (the run's folder if it is still on disk, else its artifacts). The model is
rebuilt from that run's own config, which is checked first: only the `_target_`s that cellexp's own configs name
can be instantiated from it, so a checkpoint from someone else never runs code. Weights load from safetensors.

Built models carry their input config (`backbone.input_config`: size, channels, intensity ranges, normalisation),
from which every transform is made; checkpoints record it, and a trained model is rebuilt with the one it
recorded (its channels and 16-bit ranges came from its data, not from its config). A ViT trained at another image
size gets its position embedding resampled to the new patch grid, as timm does for pretrained weights.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from timm.layers import resample_abs_pos_embed
from torch import nn

from cellexp.config import build
from cellexp.data.transforms import InputConfig
from cellexp.engine.checkpoint import BEST, META_FILE, MODEL_FILE, check_model_file, load_model_state, read_meta
from cellexp.errors import CheckpointError, ConfigError
from cellexp.models.classifier import CellClassifier
from cellexp.tracking.saved_config import RUN_CONFIG, find_run_config, load_run_config

_MLFLOW_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
# the largest input a recorded meta.json may ask a model to be built for
INPUT_LIMITS = {"image_size": 4096, "in_chans": 64, "channels": 64, "depth": 1024}  # depth: 3-D crops' planes
# Where a checkpoint keeps its backbone, in order of preference: a task=ssl run's teacher, a classifier's.
BACKBONE_PREFIXES = ("teacher.backbone.", "backbone.")


@dataclass(frozen=True)
class ResolvedCheckpoint:
    folder: Path  # holds model.safetensors
    config: DictConfig  # the resolved config of the run that wrote it, checked (cellexp.tracking.saved_config)


# ------------------------------------------------------------------------------------------------- building


def build_backbone(cfg: DictConfig, inputs: InputConfig | None = None, **options) -> nn.Module:
    """The configured backbone, carrying `inputs` (by default the input config that `cfg.dataset` describes)."""
    inputs = inputs or InputConfig.from_dataset(cfg.dataset)
    backbone = _built(cfg.backbone, "backbone", options, in_chans=inputs.in_chans, image_size=inputs.image_size)
    backbone.input_config = inputs
    return backbone


def check_backbone(cfg: DictConfig) -> None:
    """Build the configured backbone on the meta device (shapes only: no weights, memory or download, well under a
    second), so that an input it cannot take, such as an image size its patches do not divide, or crops of the
    other dimensionality (a 2-D network on 3-D crops), stops a run before any data is prepared."""
    data_dims, model_dims = cfg.dataset.get("spatial_dims", 2), cfg.backbone.get("spatial_dims", 2)
    if data_dims != model_dims:
        raise ConfigError(
            f"backbone={cfg.backbone.get('model_name')} is a {model_dims}-D network and dataset={cfg.dataset.name} has "
            f"{data_dims}-D crops: give a {data_dims}-D backbone ("
            + ("efficientnet3d_b0, resnet3d_18, test_efficientnet3d" if data_dims == 3 else "resnet18, efficientnet_b0")
            + ")"
        )
    with torch.device("meta"):
        build_backbone(cfg, pretrained=False)


def build_model(cfg: DictConfig, num_classes: int, inputs: InputConfig | None = None) -> CellClassifier:
    """Backbone plus the configured head, sized to the backbone's embedding."""
    backbone = build_backbone(cfg, inputs)
    head = _built(cfg.head, "head", {}, in_features=backbone.num_features, num_classes=num_classes)
    return CellClassifier(backbone, head)


def _built(node: DictConfig, key: str, options: dict, **inputs) -> nn.Module:
    """`build(node, **options)(**inputs)`; a key its callable does not take (or a missing one) is named in one
    line, as a config from elsewhere may have one."""
    try:
        return build(node, **options)(**inputs)
    except TypeError as err:
        if "keyword argument" not in str(err) and "required positional argument" not in str(err):
            raise
        raise ConfigError(f"{key}: {err} (its config has a key that {node.get('_target_')} does not take)") from None


def load_weights(model: nn.Module, folder: Path) -> None:
    try:
        model.load_state_dict(load_model_state(folder))
    except RuntimeError as err:
        lines = str(err).splitlines()
        raise CheckpointError(
            f"checkpoint {folder} does not fit the model built from its config: "
            f"{lines[1].strip() if len(lines) > 1 else err}"
        ) from None


def load_trained(source: ResolvedCheckpoint, num_classes: int) -> CellClassifier:
    """The model `source` was trained as, built from its run's config and recorded input, with its weights, in
    eval mode."""
    model = build_model(source.config, num_classes, trained_inputs(source))
    load_weights(model, source.folder)
    return model.eval()


def trained_classes(source: ResolvedCheckpoint, default: tuple[str, ...]) -> list[str]:
    """The classes a trained classifier predicts, in its logits' order: as its checkpoint recorded them, else its
    run's `dataset.cell_lines`, else `default`."""
    recorded = read_meta(source.folder).get("classes") if (source.folder / META_FILE).is_file() else None
    return list(recorded or source.config.dataset.get("cell_lines") or default)


def trained_inputs(source: ResolvedCheckpoint) -> InputConfig:
    """The input config the checkpoint recorded; its run's `dataset` for checkpoints that recorded none."""
    record = read_meta(source.folder).get("input") if (source.folder / META_FILE).is_file() else None
    return recorded_inputs(record, source.folder) if record else InputConfig.from_dataset(source.config.dataset)


def recorded_inputs(record, folder: Path) -> InputConfig:
    """A meta.json's input record as an InputConfig, its values checked (sizes a model can be built for, finite
    scaling): a damaged or foreign meta.json is named in one line, before anything is sized by it."""
    where = folder / META_FILE
    try:
        inputs = InputConfig.from_record(dict(record))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: its input record is not usable ({err})") from None
    for key, high in INPUT_LIMITS.items():
        value = getattr(inputs, key)
        if (key != "depth" or value is not None) and (type(value) is not int or not 1 <= value <= high):
            raise CheckpointError(f"{where}: input.{key}={value!r} is not an integer from 1 to {high}")
    ranges = inputs.intensity
    if ranges is not None and (len(ranges) != inputs.channels or any(len(pair) != 2 for pair in ranges)):
        raise CheckpointError(f"{where}: input.intensity={ranges} is not one (low, high) pair per channel")
    scaling = [inputs.mean, inputs.std, *(v for pair in ranges or () for v in pair)]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in scaling) or not inputs.std > 0:
        raise CheckpointError(f"{where}: input.mean, std or intensity are not finite numbers (std > 0): {scaling}")
    return inputs


# ----------------------------------------------------------------------------------------------- resolving


def resolve(cfg: DictConfig, spec: str, option: str = "ckpt") -> ResolvedCheckpoint:
    """A `ckpt=`-style spec found through this run's logger settings; errors name `option`, the key it came from."""
    return resolve_checkpoint(spec, cfg.logger, Path(cfg.paths.cache_dir), option=option)


def resolve_checkpoint(spec: str, logger_cfg: DictConfig, cache_dir: Path, option: str = "ckpt") -> ResolvedCheckpoint:
    path = Path(str(spec)).expanduser()
    if path.exists():
        folder = _checkpoint_folder(path, option)
        check_model_file(folder, option)
        if (folder / META_FILE).is_file():
            _check_meta(folder)
        return ResolvedCheckpoint(folder, _run_config(folder, option))
    if _MLFLOW_RUN_ID.match(str(spec)):
        return _from_mlflow(str(spec), logger_cfg, cache_dir, option)
    raise CheckpointError(
        f"{option}={spec!r} is neither an existing file or folder nor an MLflow run id (32 hex characters)"
    )


def _check_meta(folder: Path) -> None:
    """The checkpoint's meta.json parses to a mapping whose input record fits, or is named now."""
    meta = read_meta(folder)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{folder / META_FILE} holds {type(meta).__name__}, not a mapping")
    if meta.get("input"):
        recorded_inputs(meta["input"], folder)


def _checkpoint_folder(path: Path, option: str) -> Path:
    if path.is_file():
        if path.name != MODEL_FILE:
            raise CheckpointError(f"{option}={path} is not a {MODEL_FILE} file")
        return path.parent
    for candidate in (path, path / BEST, path / "checkpoints" / BEST):
        if (candidate / MODEL_FILE).is_file():
            return candidate
    raise CheckpointError(f"{option}={path}: no {MODEL_FILE} in it, nor in {BEST}/ or checkpoints/{BEST}/ below it")


def _run_config(folder: Path, option: str) -> DictConfig:
    """The config of the run that wrote the checkpoint, from its own run folder only, checked."""
    return load_run_config(find_run_config(folder, option), option)


def _from_mlflow(run_id: str, logger_cfg: DictConfig, cache_dir: Path, option: str) -> ResolvedCheckpoint:
    import mlflow
    from mlflow.exceptions import MlflowException

    from cellexp.tracking.session import RUN_ID_FILE, configure_mlflow

    configure_mlflow(logger_cfg)
    try:
        run = mlflow.get_run(run_id)
    except MlflowException as err:
        raise CheckpointError(
            f"{option}={run_id}: no such MLflow run in {mlflow.get_tracking_uri()} ({err.message})"
        ) from None
    local = Path(run.data.tags.get("run_dir", ""))
    # the run's folder on disk, if it is still this run's (a folder that a later run took over is not)
    owner = local / RUN_ID_FILE
    ours = run.data.tags.get("run_dir") and owner.is_file() and owner.read_text().strip() == run_id
    if ours and (local / "checkpoints" / BEST / MODEL_FILE).is_file():
        return _checked(
            ResolvedCheckpoint(local / "checkpoints" / BEST, load_run_config(local / RUN_CONFIG, option)), option
        )
    target = cache_dir / "mlflow_checkpoints" / run_id
    try:
        download = mlflow.artifacts.download_artifacts
        folder = Path(download(run_id=run_id, artifact_path=f"checkpoints/{BEST}", dst_path=str(target)))
        config = Path(download(run_id=run_id, artifact_path=RUN_CONFIG, dst_path=str(target)))
    except (MlflowException, OSError) as err:
        raise CheckpointError(
            f"{option}={run_id}: run has no checkpoints/{BEST} artifact (was logger.log_checkpoints false?): "
            f"{' '.join(str(err).split())}"
        ) from None
    return _checked(ResolvedCheckpoint(folder, load_run_config(config, option)), option)


def _checked(source: ResolvedCheckpoint, option: str = "ckpt") -> ResolvedCheckpoint:
    """`source` once its weights file and meta.json are checked (a run's, found through MLflow)."""
    check_model_file(source.folder, option)
    if (source.folder / META_FILE).is_file():
        _check_meta(source.folder)
    return source


# ---------------------------------------------------------------------------------------- other runs' backbones


def init_backbone(cfg: DictConfig, backbone: nn.Module) -> ResolvedCheckpoint | None:
    """Load the weights `backbone.init_from` names into `backbone`, built from `cfg`; the source, for the record."""
    spec = cfg.backbone.get("init_from")
    if not spec:
        return None
    source = resolve(cfg, spec, option="backbone.init_from")
    built = (cfg.backbone.get("model_name"), backbone.input_config.in_chans)
    load_backbone(backbone, source, f"backbone.init_from={spec}", built)
    return source


def pretrained_backbone(cfg: DictConfig, spec: str, option: str = "ckpt") -> tuple[nn.Module, ResolvedCheckpoint]:
    """The backbone a checkpoint holds, rebuilt from its own run's config (with that run's input config), with its
    weights, in eval mode: for tasks that embed cells with a trained backbone (the MIL task's `ckpt=`)."""
    source = resolve(cfg, spec, option=option)
    run = source.config
    backbone = build_backbone(run, trained_inputs(source))
    built = (run.backbone.get("model_name"), backbone.input_config.in_chans)
    load_backbone(backbone, source, f"{option}={spec}", built)
    return backbone.eval(), source


def backbone_weights(folder: Path, option: str) -> dict[str, torch.Tensor]:
    """The backbone's tensors in a checkpoint, keyed as in the backbone itself."""
    state = load_model_state(folder)
    for prefix in BACKBONE_PREFIXES:
        found = {key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)}
        if found:
            return found
    raise CheckpointError(f"{option}: {folder} holds no backbone (no weights under {' or '.join(BACKBONE_PREFIXES)})")


def load_backbone(backbone: nn.Module, source: ResolvedCheckpoint, option: str, built: tuple[str, int]) -> None:
    """Copy the checkpoint's backbone into `backbone` (built as `built` = (model name, input channels))."""
    weights = _fit_position_embedding(backbone, backbone_weights(source.folder, option))
    try:
        backbone.load_state_dict(weights)
    except RuntimeError as err:
        theirs = (source.config.backbone.get("model_name"), source.config.dataset.get("in_chans"))
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise CheckpointError(
            f"{option}: its backbone ({theirs[0]}, {theirs[1]} input channels, from {source.folder}) does not fit "
            f"this run's ({built[0]}, {built[1]} input channels): {lines[1] if len(lines) > 1 else lines[0]}"
        ) from None


def _fit_position_embedding(backbone: nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    ours, theirs = getattr(backbone, "pos_embed", None), weights.get("pos_embed")
    if ours is None or theirs is None or theirs.shape == ours.shape or theirs.shape[-1] != ours.shape[-1]:
        return weights
    prefix = 0 if getattr(backbone, "no_embed_class", False) else backbone.num_prefix_tokens
    resampled = resample_abs_pos_embed(theirs, new_size=list(backbone.patch_embed.grid_size), num_prefix_tokens=prefix)
    return {**weights, "pos_embed": resampled}
