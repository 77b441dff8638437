"""The Accelerate training loop: fit with per-epoch validation, checkpoints, resume, early stopping.

Every epoch starts from `set_seed(seed + epoch)` and samplers seeded by (seed, epoch), so a run
resumed from an epoch checkpoint replays exactly what an uninterrupted run would have done; a
mid-epoch (preemption) checkpoint also restores the RNG state and skips the batches already seen.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cellexp.engine.checkpoint import BEST, CheckpointManager, load_model_state, load_training_state
from cellexp.engine.cpu_bf16 import guard_small_strided_convs
from cellexp.engine.metrics import classification_metrics
from cellexp.engine.preemption import Preempted, PreemptionWatch
from cellexp.engine.schedulers import step_scheduler
from cellexp.errors import ConfigError, NonFiniteLossError

log = logging.getLogger(__name__)

MetricsLogger = Callable[[dict, int], None]


@dataclass
class Selection:
    """Which validation metric picks the best epoch, and which way is better."""

    metric: str
    direction: str = "maximize"

    def __post_init__(self):
        if self.direction not in ("maximize", "minimize"):
            raise ConfigError(f"direction={self.direction!r} must be 'maximize' or 'minimize'")

    def improves(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.direction == "maximize" else value < best


@dataclass
class EarlyStopping:
    """Stop after `patience` epochs in a row without the monitored metric improving."""

    monitor: str = "val/loss"
    mode: str = "min"
    patience: int = 5
    min_epochs: int = 0  # never stop before this many epochs (Lightning's min_epochs)

    def __post_init__(self):
        if self.mode not in ("min", "max"):
            raise ConfigError(f"trainer.early_stopping.mode={self.mode!r} must be 'min' or 'max'")

    def update(self, value: float, best: float | None, bad_epochs: int) -> tuple[float, int]:
        """The new (best value, epochs without improvement) after an epoch that scored `value`."""
        if Selection(self.monitor, "minimize" if self.mode == "min" else "maximize").improves(value, best):
            return value, 0
        return best, bad_epochs + 1


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


class Trainer:
    def __init__(
        self,
        accelerator: Accelerator,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        criterion: nn.Module,
        train_transform: nn.Module,
        eval_transform: nn.Module,
        class_names: list[str],
        selection: Selection,
        checkpoints: CheckpointManager,
        seed: int,
        max_epochs: int,
        grad_clip: float | None = None,
        early_stopping: EarlyStopping | None = None,
        channels_last: bool = False,
        log_metrics: MetricsLogger = lambda metrics, step: None,
    ):
        self.acc = accelerator
        if accelerator.mixed_precision == "bf16" and accelerator.device.type == "cpu":
            guard_small_strided_convs(model)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.scheduler, self.criterion = scheduler, criterion
        self.train_transform = train_transform.to(accelerator.device).train()
        self.eval_transform = eval_transform.to(accelerator.device).eval()
        self.class_names, self.selection, self.checkpoints = class_names, selection, checkpoints
        self.seed, self.max_epochs, self.grad_clip = seed, max_epochs, grad_clip
        self.early_stopping, self.channels_last = early_stopping, channels_last
        self.log_metrics = log_metrics
        self.state = LoopState()
        self._torch_rng_to_restore: torch.Tensor | None = None

    # -- resume ---------------------------------------------------------------------------
    def resume_from(self, checkpoint) -> None:
        """Restore weights, optimizer, scheduler, RNG and counters from a resumable checkpoint."""
        self.acc.unwrap_model(self.model).load_state_dict(load_model_state(checkpoint))
        saved = load_training_state(checkpoint)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler") is not None and self.acc.scaler is not None:
            self.acc.scaler.load_state_dict(saved["scaler"])
        self.state = LoopState(**saved["loop"])
        if self.state.step_in_epoch:
            self._torch_rng_to_restore = saved["torch_rng"]
        log.info("resumed from %s (epoch %d, step %d)", checkpoint, self.state.epoch, self.state.step_in_epoch)

    # -- fit ------------------------------------------------------------------------------
    def fit(self, train_dl: DataLoader, val_dl: DataLoader) -> LoopState:
        train_dl, val_dl = self.acc.prepare(train_dl, val_dl)
        with PreemptionWatch() as watch:
            while self.state.epoch < self.max_epochs:
                train_metrics = self._train_epoch(train_dl, watch)
                val_metrics = {f"val/{k}": v for k, v in self.evaluate(val_dl).items()}
                self._end_epoch({**train_metrics, **val_metrics})
                if self._should_stop_early(val_metrics):
                    log.info(
                        "early stopping: %s did not improve for %d epochs",
                        self.early_stopping.monitor,
                        self.state.bad_epochs,
                    )
                    break
        return self.state

    def _train_epoch(self, train_dl: DataLoader, watch: PreemptionWatch) -> dict:
        epoch = self.state.epoch
        train_dl.set_epoch(epoch)
        skip = self.state.step_in_epoch
        if self._torch_rng_to_restore is None:
            set_seed(self.seed + epoch, device_specific=True)
        batches = self.acc.skip_first_batches(train_dl, skip) if skip else train_dl
        self.model.train()
        loss_sum, steps, seen, started = 0.0, 0, 0, time.perf_counter()
        progress = tqdm(
            batches,
            total=len(train_dl),
            initial=skip,
            desc=f"epoch {epoch + 1}/{self.max_epochs}",
            disable=not self.acc.is_local_main_process,
            leave=False,
            unit="batch",
        )
        for step, (crops, labels) in enumerate(progress, start=skip):
            if self._torch_rng_to_restore is not None:
                # Restored only now: creating the loader's iterator draws from the RNG, as it did before the stop.
                torch.set_rng_state(self._torch_rng_to_restore)
                self._torch_rng_to_restore = None
            loss = self._train_step(crops, labels)
            # One small gather per step: every rank sees every rank's loss and preemption flag.
            flag = torch.tensor(float(watch.requested), device=loss.device)
            losses, flags = self.acc.gather(torch.stack([loss.detach().float(), flag])[None]).T
            if not torch.isfinite(losses).all():
                self._raise_non_finite(losses, step)
            loss_sum, steps = loss_sum + losses.mean().item(), steps + 1
            seen += labels.shape[0] * self.acc.num_processes
            self.state.global_step += 1
            progress.set_postfix(loss=f"{losses.mean().item():.3f}")
            if flags.any():
                self.state.step_in_epoch = step + 1
                raise Preempted(self._save_resumable(f"epoch_{epoch:04d}_step_{step + 1:06d}"))
        progress.close()
        elapsed = time.perf_counter() - started
        return {
            "train/loss": loss_sum / max(steps, 1),
            "train/lr": self.optimizer.param_groups[0]["lr"],
            "train/images_per_s": seen / max(elapsed, 1e-9),
        }

    def _train_step(self, crops: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with self.acc.accumulate(self.model):
            inputs = self._inputs(crops, self.train_transform)
            with self.acc.autocast():
                loss = self.criterion(self.model(inputs), labels)
            self.acc.backward(loss)
            if self.grad_clip and self.acc.sync_gradients:
                self.acc.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss

    def _inputs(self, crops: torch.Tensor, transform: nn.Module) -> torch.Tensor:
        x = transform(crops)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _raise_non_finite(self, losses: torch.Tensor, step: int) -> None:
        last_good = self.checkpoints.latest()
        raise NonFiniteLossError(
            f"loss became {losses.tolist()} at epoch {self.state.epoch + 1}, step {step + 1} "
            f"(global step {self.state.global_step + 1}); training stopped. "
            f"Last good checkpoint: {last_good or 'none (no epoch finished)'}. "
            "Try a lower optim.optimizer.lr, trainer.grad_clip, or trainer.precision=no."
        )

    def _end_epoch(self, metrics: dict) -> None:
        step_scheduler(self.scheduler, metrics)
        state = self.state
        state.epoch += 1
        state.step_in_epoch = 0
        value = metrics.get(self.selection.metric)
        if value is None:
            raise ConfigError(
                f"optimized_metric {self.selection.metric!r} is not among the logged metrics: "
                + ", ".join(sorted(metrics))
            )
        if self.selection.improves(value, state.best_value):
            state.best_value, state.best_epoch = value, state.epoch
            self._save_best(metrics)
        self.log_metrics(metrics, state.epoch)
        self._save_resumable(f"epoch_{state.epoch:04d}")
        log.info("epoch %d/%d  %s", state.epoch, self.max_epochs, _summary_line(metrics, self.selection.metric))

    def _should_stop_early(self, val_metrics: dict) -> bool:
        rule = self.early_stopping
        if rule is None:
            return False
        if rule.monitor not in val_metrics:
            raise ConfigError(f"trainer.early_stopping.monitor={rule.monitor!r} is not one of {', '.join(val_metrics)}")
        state = self.state
        state.monitor_best, state.bad_epochs = rule.update(
            val_metrics[rule.monitor], state.monitor_best, state.bad_epochs
        )
        return state.bad_epochs >= rule.patience and state.epoch >= rule.min_epochs

    # -- checkpoints ----------------------------------------------------------------------
    def _save_best(self, metrics: dict) -> None:
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            meta = {
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
                "epoch": self.state.epoch,
                "step_in_epoch": self.state.step_in_epoch,
                "global_step": self.state.global_step,
            }
            self.checkpoints.save(tag, self._model_state(), training_state, meta)
        self.acc.wait_for_everyone()
        return path

    def _model_state(self) -> dict:
        return self.acc.get_state_dict(self.model)

    # -- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, dl: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and targets of a whole split (a loader passed through `accelerator.prepare`),
        gathered across ranks without duplicates."""
        self.model.eval()
        logits, targets = [], []
        for crops, labels in dl:
            with self.acc.autocast():
                out = self.model(self._inputs(crops, self.eval_transform))
            out, labels = self.acc.gather_for_metrics((out.float(), labels))
            logits.append(out.cpu())
            targets.append(labels.cpu())
        return torch.cat(logits), torch.cat(targets)

    def evaluate(self, dl: DataLoader) -> dict:
        logits, targets = self.predict(dl)
        return classification_metrics(logits, targets, self.class_names)


def _summary_line(metrics: dict, selected: str) -> str:
    keys = [
        "train/loss",
        "val/loss",
        "val/accuracy",
        "val/balanced_accuracy",
        selected,
        "train/lr",
        "train/images_per_s",
    ]
    shown = dict.fromkeys(k for k in keys if k in metrics)
    return "  ".join(f"{k} {_fmt(metrics[k])}" for k in shown)


def _fmt(value: float) -> str:
    if math.isfinite(value) and (abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3)):
        return f"{value:.2e}"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.0f}"
