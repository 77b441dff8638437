"""DINO's training on the engine: its step, schedules, teacher and collapse checks; the engine's epochs, resume,
preemption and checkpoints around them.

The model is a `cellexp.models.dino.Dino` (student, teacher and centre all in its state dict, hence in
`model.safetensors`); DINO's per-step schedules stand in for the epoch scheduler (their tensors go into
`training_state.pt`); validation is a kNN probe of the teacher's backbone on labelled cells.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from cellexp.engine.metrics import embedding_spread, weighted_knn_accuracy
from cellexp.engine.settings import Selection
from cellexp.engine.trainer import StepOutput, Trainer
from cellexp.models.dino import Dino

log = logging.getLogger(__name__)

STATS = ("loss", "teacher_entropy", "teacher_batch_entropy", "kl_divergence")


def cosine_schedule(start: float, end: float, steps: int, warmup_steps: int = 0, warmup_from: float = 0.0):
    """Linear warm-up from `warmup_from` to `start`, then half a cosine from `start` to `end`; one value per step."""
    warmup_steps = min(warmup_steps, steps)
    warmup = torch.linspace(warmup_from, start, warmup_steps, dtype=torch.float64)
    t = torch.arange(steps - warmup_steps, dtype=torch.float64)
    cosine = end + 0.5 * (start - end) * (1 + torch.cos(math.pi * t / max(len(t), 1)))
    return torch.cat([warmup, cosine])


class DinoSchedules:
    """Learning rate, weight decay, teacher momentum and teacher temperature for every optimisation step.

    Built once the number of steps per epoch is known; saved and restored as tensors, so a resumed run
    follows the schedules it started with. The engine steps its scheduler once per epoch: these are
    indexed by step instead, so `step()` has nothing to do.
    """

    KEYS = ("lr", "weight_decay", "momentum", "teacher_temp")

    def __init__(
        self,
        lr: float,
        min_lr: float,
        warmup_epochs: float,
        weight_decay: float,
        weight_decay_end: float,
        momentum: float,
        momentum_end: float,
        teacher_temp: float,
        warmup_teacher_temp: float,
        warmup_teacher_temp_epochs: float,
    ):
        self.lr, self.min_lr, self.warmup_epochs = lr, min_lr, warmup_epochs
        self.weight_decay, self.weight_decay_end = weight_decay, weight_decay_end
        self.momentum, self.momentum_end = momentum, momentum_end
        self.teacher_temp, self.warmup_teacher_temp = teacher_temp, warmup_teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.values: dict[str, torch.Tensor] | None = None

    def build(self, steps_per_epoch: int, epochs: int) -> None:
        steps = steps_per_epoch * epochs
        temp_warmup = min(round(self.warmup_teacher_temp_epochs * steps_per_epoch), steps)
        self.values = {
            "lr": cosine_schedule(self.lr, self.min_lr, steps, round(self.warmup_epochs * steps_per_epoch)),
            "weight_decay": cosine_schedule(self.weight_decay, self.weight_decay_end, steps),
            "momentum": cosine_schedule(self.momentum, self.momentum_end, steps),
            "teacher_temp": torch.cat(
                [
                    torch.linspace(self.warmup_teacher_temp, self.teacher_temp, temp_warmup, dtype=torch.float64),
                    torch.full((steps - temp_warmup,), self.teacher_temp, dtype=torch.float64),
                ]
            ),
        }

    def at(self, step: int) -> dict[str, float]:
        """The values for optimisation step `step` (the last ones past the end, e.g. after max_epochs grew)."""
        return {key: values[min(step, len(values) - 1)].item() for key, values in self.values.items()}

    def step(self) -> None: ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.values)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.values = {key: state[key].clone() for key in self.KEYS}


@dataclass(frozen=True)
class CollapseRule:
    """When to warn that DINO collapses: the teacher's output stops carrying information about the cell.

    Two collapses are known (Caron et al. 2021, section 5.3): sharpening without enough centering makes
    the teacher's output one-hot (its entropy falls towards 0, and one prototype comes to dominate), and
    centering without enough sharpening makes it uniform (its entropy rises towards log(out_dim)). The
    mean entropy per cell is compared as a share of log(out_dim). A third sign, whatever the head does,
    is that the backbone's embeddings of the val cells all point the same way (`val/embedding_spread`).
    """

    min_entropy: float = 0.02
    max_entropy: float = 0.99
    min_spread: float = 0.01

    def reasons(self, metrics: Mapping[str, float], out_dim: int) -> list[str]:
        share = metrics["train/teacher_entropy"] / math.log(out_dim)
        found = []
        if share < self.min_entropy:
            found.append(f"the teacher's entropy is {share:.3f} of log(out_dim): its output is one-hot")
        if share > self.max_entropy:
            found.append(f"the teacher's entropy is {share:.3f} of log(out_dim): its output is uniform")
        spread = metrics.get("val/embedding_spread")
        if spread is not None and spread < self.min_spread:
            found.append(f"val/embedding_spread is {spread:.4f}: the cells' embeddings coincide")
        return found


class LastEpoch(Selection):
    """Keeps the last epoch's model whatever the probe says, as DINO keeps checkpoint_main.pth (task.keep=last)."""

    def improves(self, value: float, best: float | None) -> bool:
        return True


class DinoTrainer(Trainer):
    """DINO on the engine: the multi-crop step, DINO's per-step schedules, the teacher's EMA, the prototypes held
    still at first, collapse statistics per epoch, a kNN probe as validation and a step-0 probe.

    `scheduler` is a `DinoSchedules` (stepped per epoch by the engine, a no-op: it is indexed by step here).
    """

    def __init__(
        self,
        *args,
        multicrop: nn.Module,
        eval_transform: nn.Module,
        bank: DataLoader,
        freeze_last_layer_epochs: int = 1,
        knn_k: int = 20,
        knn_temperature: float = 0.07,
        collapse: CollapseRule = CollapseRule(),
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.multicrop, self.eval_transform = multicrop, eval_transform.to(self.acc.device).eval()
        self.bank = self.acc.prepare(bank)
        self.freeze_last_layer_epochs = freeze_last_layer_epochs
        self.knn_k, self.knn_temperature, self.collapse = knn_k, knn_temperature, collapse
        self.dino: Dino = self.unwrapped
        self._values: dict[str, float] = {}

    def before_fit(self, val_dl) -> None:
        """The kNN probe of the initial weights, logged at step 0."""
        initial = {f"val/{k}": v for k, v in self.evaluate(val_dl).items()}
        self.tracker.log_metrics(initial, 0)
        log.info("before training: %s", "  ".join(f"{k} {v:.4f}" for k, v in initial.items()))

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        if self.scheduler.values is None:
            self.scheduler.build(steps, self.settings.max_epochs)

    def on_step_start(self) -> None:
        self._values = self.scheduler.at(self.state.global_step)
        for group in self.optimizer.param_groups:
            group["lr"] = self._values["lr"]
            if group.get("decay_scheduled"):
                group["weight_decay"] = self._values["weight_decay"]

    def train_step(self, batch) -> StepOutput:
        crops, _ = batch
        views = [self.model_input(view) for view in self.multicrop(crops)]
        with self.autocast():
            loss, stats = self.model(views, self._values["teacher_temp"])
        return StepOutput(loss, samples=crops.shape[0], stats={key: stats[key] for key in STATS[1:]})

    def before_optimizer_step(self) -> None:
        if self.state.epoch < self.freeze_last_layer_epochs:
            # DINO keeps the prototypes fixed at first: moving them early destabilises training.
            for param in self.dino.student.head.last_layer.parameters():
                param.grad = None

    def after_optimizer_step(self) -> None:
        self.dino.update_teacher(self._values["momentum"])

    def end_of_epoch(self, metrics: dict) -> dict:
        current = self.scheduler.at(max(self.state.global_step - 1, 0))
        metrics.update({f"train/{key}": current[key] for key in ("weight_decay", "momentum", "teacher_temp")})
        metrics["train/center_norm"] = self.dino.center.norm().item()
        reasons = self.collapse.reasons(metrics, self.dino.center.shape[1])
        if reasons:
            epoch = self.state.epoch + 1
            log.warning(
                "DINO is collapsing at epoch %d: %s. Try centering on, a lower task.teacher.temp, a higher "
                "task.teacher.momentum or a lower learning rate.",
                epoch,
                "; ".join(reasons),
            )
            self.tracker.set_tags({"ssl.collapse": f"epoch {epoch}: {'; '.join(reasons)}"})
        return {**metrics, "train/collapse": float(bool(reasons))}

    @torch.no_grad()
    def evaluate(self, dl: DataLoader) -> dict:
        """kNN accuracy of the teacher backbone's embeddings of `dl` against those of the bank, and their spread."""
        backbone = self.dino.teacher.backbone.eval()
        bank, bank_labels = self._embed(backbone, self.bank)
        queries, labels = self._embed(backbone, dl)
        return {
            "knn_accuracy": weighted_knn_accuracy(bank, bank_labels, queries, labels, self.knn_k, self.knn_temperature),
            "embedding_spread": embedding_spread(queries),
        }

    def _embed(self, backbone: nn.Module, dl: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings, targets = [], []
        for crops, labels in dl:
            with self.autocast():
                out = backbone(self.model_input(self.eval_transform(crops)))
            out, labels = self.acc.gather_for_metrics((out.float(), labels))
            embeddings.append(out)
            targets.append(labels)
        return torch.cat(embeddings), torch.cat(targets)
