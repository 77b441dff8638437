"""One Accelerator per run, configured from `cfg.trainer`, with bad precision choices caught early."""

from __future__ import annotations

import functools

import accelerate.optimizer
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DataLoaderConfiguration, is_lomo_available
from omegaconf import DictConfig

from cellexp.engine.cluster import export_slurm_ranks
from cellexp.errors import ConfigError

PRECISIONS = ("no", "fp16", "bf16")

# accelerate asks importlib whether the `lomo` package is installed twice per optimizer step (about 0.2 ms, as
# much as a small model's step); whether it is installed does not change while a run is going.
accelerate.optimizer.is_lomo_available = functools.lru_cache(maxsize=None)(is_lomo_available)


def make_accelerator(trainer_cfg: DictConfig) -> Accelerator:
    """A fresh Accelerator; state left by an earlier job of an in-process sweep is cleared first."""
    precision = str(trainer_cfg.precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    use_cpu = bool(trainer_cfg.cpu) or not torch.cuda.is_available()
    if precision == "fp16" and use_cpu:
        raise ConfigError("trainer.precision=fp16 needs a GPU; on CPU use trainer.precision=bf16 or no")
    if not torch.distributed.is_initialized():
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    export_slurm_ranks()
    split = bool(trainer_cfg.get("split_batches", False))
    accelerator = Accelerator(
        cpu=use_cpu,
        mixed_precision=precision,
        gradient_accumulation_steps=int(trainer_cfg.grad_accum_steps),
        dynamo_backend="inductor" if trainer_cfg.compile else "no",
        dataloader_config=DataLoaderConfiguration(split_batches=split),
    )
    for key in ("batch_size", "eval_batch_size"):
        if split and int(trainer_cfg[key]) % accelerator.num_processes:
            raise ConfigError(
                f"trainer.split_batches=true splits trainer.{key}={trainer_cfg[key]} across "
                f"{accelerator.num_processes} processes: make it a multiple of {accelerator.num_processes}"
            )
    return accelerator


def sync_batchnorm(model: torch.nn.Module, accelerator: Accelerator, trainer_cfg: DictConfig, default: bool):
    """Batch norm over all processes' batches (`trainer.sync_batchnorm`, null: the task's `default`). PyTorch
    synchronises batch norm on CUDA only; CPU ranks (gloo) keep their own statistics."""
    wanted = trainer_cfg.get("sync_batchnorm")
    wanted = default if wanted is None else bool(wanted)
    if wanted and accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model
