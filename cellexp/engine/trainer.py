"""The one training engine: epochs with validation, checkpoints, resume, preemption, NaN stops, mixed precision,
accumulation and early stopping, around a task's step.

A task subclasses `Trainer` and fills in its extension points, in the spirit of the Accelerate examples:

    train_step(batch) -> StepOutput   forward and loss under `self.autocast()`; the engine does backward, clipping,
                                       the optimizer step and gradient accumulation
    evaluate(loader) -> metrics       a whole split's metrics, without the "val/" prefix
    hooks                             before_fit, on_epoch_start, on_step_start, before_optimizer_step,
                                       after_optimizer_step, end_of_epoch (all optional)

Every epoch starts from `set_seed(seed + epoch)` and samplers seeded by (seed, epoch), so a run resumed from an
epoch checkpoint replays exactly what an uninterrupted run would have done; a mid-epoch (preemption) checkpoint
also restores the RNG state and the epoch's running sums and skips the batches already seen. A non-finite loss, or
a non-finite validation loss or selection metric, stops the run before anything is saved from it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from torch import nn
from torch.utils.data import DataLoader

from cellexp.engine.checkpoint import BEST, CheckpointManager, load_model_state, load_training_state
from cellexp.engine.cpu_bf16 import guard_small_strided_convs
from cellexp.engine.preemption import Preempted, PreemptionWatch
from cellexp.engine.schedulers import step_scheduler
from cellexp.engine.settings import Selection, TrainerSettings
from cellexp.engine.tracker import NullTracker
from cellexp.errors import CheckpointError, ConfigError, NonFiniteLossError, TrialPruned
from cellexp.progress import progress, summary_line

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """Counters that resume needs besides weights; plain values so checkpoints load with weights_only."""

    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0  # batches finished in the unfinished epoch (mid-epoch checkpoints only)
    global_step: int = 0
    best_value: float | None = None
    best_epoch: int = -1
    monitor_best: float | None = None
    bad_epochs: int = 0
    finished: bool = False  # training is over (max_epochs, or stopped early): a resumed run goes on to test
    epoch_sums: dict = field(default_factory=dict)  # the unfinished epoch's running sums of the logged stats
    epoch_seen: int = 0

    @classmethod
    def restored(cls, saved: Mapping) -> LoopState:
        """From a checkpoint; counters that an older checkpoint lacks keep their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in saved.items() if key in known})


@dataclass
class StepOutput:
    """One step's loss (for backward), the statistics to average over the epoch as train/<name>, and how many
    samples it saw (for train/<unit>_per_s)."""

    loss: torch.Tensor
    samples: int
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class Trainer:
    """Owns the loop; subclasses own what a step and an evaluation are (see the module docstring)."""

    def __init__(
        self,
        accelerator: Accelerator,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        selection: Selection,
        checkpoints: CheckpointManager,
        settings: TrainerSettings,
        tracker=None,
        checkpoint_meta: Mapping[str, Any] | None = None,
        prune_check: Callable[[int, float], str | None] | None = None,
    ):
        self.acc = accelerator
        if accelerator.mixed_precision == "bf16" and accelerator.device.type == "cpu":
            guard_small_strided_convs(model)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.scheduler, self.selection, self.checkpoints, self.settings = scheduler, selection, checkpoints, settings
        self.tracker = tracker or NullTracker()
        self.checkpoint_meta = dict(checkpoint_meta or {})
        # a sweep trial's pruner: told each epoch's selected value, it answers why to stop now (or None)
        self.prune_check = prune_check
        self.state = LoopState()
        self._rng_to_restore: torch.Tensor | None = None

    # -- extension points ----------------------------------------------------------------------
    def train_step(self, batch) -> StepOutput:
        raise NotImplementedError

    def evaluate(self, loader) -> dict[str, float]:
        raise NotImplementedError

    def before_fit(self, val_dl) -> None:
        """Once, before the first epoch of a fresh run."""

    def on_epoch_start(self, epoch: int, steps: int) -> None: ...

    def on_step_start(self) -> None: ...

    def before_optimizer_step(self) -> None:
        """After backward and clipping, on optimizer steps only (not on accumulation steps)."""

    def after_optimizer_step(self) -> None: ...

    def end_of_epoch(self, metrics: dict) -> dict:
        """The epoch's train/ and val/ metrics, before they are checked, logged and saved; may add some."""
        return metrics

    # -- helpers for subclasses ----------------------------------------------------------------
    def autocast(self):
        return self.acc.autocast()

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last_3d if x.ndim == 5 else torch.channels_last
        return x.contiguous(memory_format=fmt) if self.settings.channels_last else x

    @property
    def unwrapped(self) -> nn.Module:
        return self.acc.unwrap_model(self.model)

    # -- resume --------------------------------------------------------------------------------
    def resume_from(self, checkpoint) -> None:
        """Restore weights, optimizer, scheduler, RNG and counters from a resumable checkpoint."""
        self.unwrapped.load_state_dict(load_model_state(checkpoint))
        saved = load_training_state(checkpoint)
        try:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            if saved.get("scaler") is not None and self.acc.scaler is not None:
                self.acc.scaler.load_state_dict(saved["scaler"])
            self.state = LoopState.restored(saved["loop"])
        except (KeyError, ValueError, TypeError) as err:
            raise CheckpointError(
                f"checkpoint {checkpoint} does not fit this run's optimizer or schedule: {err}"
            ) from None
        if self.state.step_in_epoch:
            self._rng_to_restore = saved["torch_rng"]
        done = " (training had finished)" if self.state.finished else ""
        log.info("resumed from %s (epoch %d, step %d)%s", checkpoint, self.state.epoch, self.state.step_in_epoch, done)

    # -- fit -----------------------------------------------------------------------------------
    def fit(self, train_dl: DataLoader, val_dl) -> LoopState:
        train_dl, val_dl = self.acc.prepare(train_dl, val_dl)
        with PreemptionWatch() as watch:
            if self.state.global_step == 0 and not self.state.finished:
                self.before_fit(val_dl)
            while not self.state.finished:
                train_metrics = self.train_epoch(train_dl, watch)
                val_metrics = {f"val/{k}": v for k, v in self.evaluate(val_dl).items()}
                self._end_epoch({**train_metrics, **val_metrics})
                if watch.requested:  # a signal during validation: the epoch's checkpoint is saved, stop here
                    raise Preempted(self.checkpoints.latest())
        return self.state

    def train_epoch(self, train_dl: DataLoader, watch: PreemptionWatch | None = None) -> dict:
        """One epoch of `optimize_step`s with the per-step gather and checks, and its train/ metrics; `fit` calls
        it, a benchmark may too. A signal seen by `watch` saves a mid-epoch checkpoint and raises `Preempted`."""
        state, acc = self.state, self.acc
        epoch, skip = state.epoch, state.step_in_epoch
        train_dl.set_epoch(epoch)
        if self._rng_to_restore is None:
            set_seed(self.settings.seed + epoch, device_specific=True)
        batches = acc.skip_first_batches(train_dl, skip) if skip else train_dl
        self.model.train()
        self.on_epoch_start(epoch, len(train_dl))
        sums, seen, started = dict(state.epoch_sums), state.epoch_seen, time.perf_counter()
        bar = progress(
            batches,
            total=len(train_dl),
            initial=skip,
            desc=f"epoch {epoch + 1}/{self.settings.max_epochs}",
            unit="batch",
            enabled=acc.is_local_main_process,
        )
        for step, batch in enumerate(bar, start=skip):
            if self._rng_to_restore is not None:
                # Restored only now: creating the loader's iterator draws from the RNG, as it did before the stop.
                torch.set_rng_state(self._rng_to_restore)
                self._rng_to_restore = None
            self.on_step_start()
            out = self.optimize_step(batch)
            # One small gather per step: every rank sees every rank's loss, statistics and preemption flag.
            names = ["loss", *out.stats]
            values = torch.stack([out.loss.detach().float(), *(v.detach().float() for v in out.stats.values())])
            flag = torch.tensor([float(watch is not None and watch.requested)], device=values.device)
            gathered = acc.gather(torch.cat([values, flag])[None])
            if not torch.isfinite(gathered[:, 0]).all():
                self._raise_non_finite(f"the training loss became {gathered[:, 0].tolist()}", step)
            for name, value in zip(names, gathered[:, :-1].mean(0).tolist(), strict=True):
                sums[name] = sums.get(name, 0.0) + value
            sums["steps"] = sums.get("steps", 0) + 1
            seen += out.samples * acc.num_processes
            state.global_step += 1
            if acc.is_local_main_process:
                bar.set_postfix(loss=f"{gathered[:, 0].mean().item():.3f}")
            if gathered[:, -1].any():
                state.step_in_epoch, state.epoch_sums, state.epoch_seen = step + 1, sums, seen
                raise Preempted(self._save_resumable(f"epoch_{epoch:04d}_step_{step + 1:06d}"))
        bar.close()
        elapsed = time.perf_counter() - started
        steps = max(sums.pop("steps", 0), 1)
        metrics = {f"train/{name}": value / steps for name, value in sums.items()}
        metrics["train/lr"] = self.optimizer.param_groups[0]["lr"]
        metrics[f"train/{self.settings.sample_unit}_per_s"] = (seen - state.epoch_seen) / max(elapsed, 1e-9)
        return metrics

    def optimize_step(self, batch) -> StepOutput:
        """One batch's `train_step`, backward, clipping and optimizer step (accumulated as configured)."""
        with self.acc.accumulate(self.model):
            out = self.train_step(batch)
            self.acc.backward(out.loss)
            if self.acc.sync_gradients:
                if self.settings.grad_clip:
                    self.acc.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
                self.before_optimizer_step()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        if self.acc.sync_gradients:
            self.after_optimizer_step()
        return out

    def _raise_non_finite(self, what: str, step: int | None = None) -> None:
        last_good = self.checkpoints.latest()
        where = f"epoch {self.state.epoch + 1}" + (
            f", step {step + 1} (global step {self.state.global_step + 1})" if step is not None else ""
        )
        raise NonFiniteLossError(
            f"{what} at {where}; training stopped. Last good checkpoint: "
            f"{last_good or 'none (no epoch finished)'}. Try a lower optim.optimizer.lr, trainer.grad_clip, "
            "or trainer.precision=no."
        )

    def _end_epoch(self, metrics: dict) -> None:
        metrics = self.end_of_epoch(metrics)
        state, selection, rule = self.state, self.selection, self.settings.early_stopping
        watched = [key for key in ("val/loss", selection.metric, rule.monitor if rule else None) if key in metrics]
        bad = {key: metrics[key] for key in watched if not math.isfinite(metrics[key])}
        if bad:
            self.tracker.log_metrics(metrics, state.epoch + 1)
            self._raise_non_finite(", ".join(f"{k} became {v}" for k, v in bad.items()))
        if selection.metric not in metrics:
            raise ConfigError(
                f"optimized_metric {selection.metric!r} is not among the logged metrics: " + ", ".join(sorted(metrics))
            )
        step_scheduler(self.scheduler, metrics)
        state.epoch += 1
        state.step_in_epoch, state.epoch_sums, state.epoch_seen = 0, {}, 0
        if selection.improves(metrics[selection.metric], state.best_value):
            state.best_value, state.best_epoch = metrics[selection.metric], state.epoch
            self._save_best(metrics)
        stopped = self._should_stop_early(metrics)
        state.finished = stopped or state.epoch >= self.settings.max_epochs
        self.tracker.log_metrics(metrics, state.epoch)
        self._save_resumable(f"epoch_{state.epoch:04d}")
        log.info("epoch %d/%d  %s", state.epoch, self.settings.max_epochs, summary_line(metrics, selection.metric))
        if stopped:
            log.info("early stopping: %s did not improve for %d epochs", rule.monitor, state.bad_epochs)
        if self.prune_check is not None:
            self._prune_if_told(metrics[selection.metric])

    def _prune_if_told(self, value: float) -> None:
        """The main process asks the pruner (it reports the value even on the last epoch); every rank stops together."""
        reason = [self.prune_check(self.state.epoch, value) if self.acc.is_main_process else None]
        if self.acc.num_processes > 1:
            broadcast_object_list(reason)
        if reason[0] and not self.state.finished:
            raise TrialPruned(reason[0], value)

    def _should_stop_early(self, metrics: dict) -> bool:
        rule = self.settings.early_stopping
        if rule is None:
            return False
        if rule.monitor not in metrics:
            val = ", ".join(k for k in metrics if k.startswith("val/"))
            raise ConfigError(f"trainer.early_stopping.monitor={rule.monitor!r} is not one of {val}")
        state = self.state
        state.monitor_best, state.bad_epochs = rule.update(metrics[rule.monitor], state.monitor_best, state.bad_epochs)
        return state.bad_epochs >= rule.patience and state.epoch >= rule.min_epochs

    # -- checkpoints ---------------------------------------------------------------------------
    def _save_best(self, metrics: dict) -> None:
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            meta = {
                **self.checkpoint_meta,
                "epoch": self.state.epoch,
                "metric": self.selection.metric,
                "value": self.state.best_value,
                "metrics": metrics,
            }
            self.checkpoints.save(BEST, self._model_state(), None, meta)

    def _save_resumable(self, tag: str):
        self.acc.wait_for_everyone()
        path = self.checkpoints.folder / tag
        if self.acc.is_main_process:
            training_state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.acc.scaler.state_dict() if self.acc.scaler is not None else None,
                "loop": asdict(self.state),
                "torch_rng": torch.get_rng_state(),
            }
            meta = {
                **self.checkpoint_meta,
                "epoch": self.state.epoch,
                "step_in_epoch": self.state.step_in_epoch,
                "global_step": self.state.global_step,
                "finished": self.state.finished,
            }
            self.checkpoints.save(tag, self._model_state(), training_state, meta)
        self.acc.wait_for_everyone()
        return path

    def _model_state(self) -> dict:
        return self.acc.get_state_dict(self.model)
