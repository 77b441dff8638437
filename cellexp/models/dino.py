"""DINO (Caron et al. 2021): a student and its EMA teacher, each a backbone plus a projection head.

The student sees every view of a cell, the teacher only the global ones; the student learns to predict
the teacher's centred, sharpened output distribution for the other views. Everything the method keeps
between steps (teacher weights, the centre) lives in `state_dict()`, so checkpoints hold plain tensors.
"""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn.functional as F
from timm.layers import DropBlock2d, DropPath
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class DinoHead(nn.Module):
    """MLP to a bottleneck, L2-normalised, then a weight-normalised linear layer to `out_dim` prototypes.

    With `norm_last_layer` the last layer's weight norm stays at 1, so its outputs are cosines: DINO's
    recipe for stable ViT training (a learnable norm trains faster but can diverge).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        layers: int = 3,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
    ):
        super().__init__()
        if layers < 1:
            raise ValueError(f"a DINO head needs at least one layer, got layers={layers}")
        widths = [in_dim, *[hidden_dim] * (layers - 1), bottleneck_dim]
        blocks: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            blocks.append(nn.Linear(fan_in, fan_out))
            if i < layers - 1:
                blocks.extend([nn.BatchNorm1d(fan_out)] if batch_norm else [])
                blocks.append(nn.GELU())
        self.mlp = nn.Sequential(*blocks)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        norm = self.last_layer.parametrizations.weight.original0
        norm.data.fill_(1.0)
        norm.requires_grad = not norm_last_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class MultiCropNet(nn.Module):
    """Backbone and head applied to a list of views: one backbone pass per run of views of the same size."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        """Head outputs of all views, stacked in view order: (len(views) * B, out_dim)."""
        features = [
            self.backbone(torch.cat(list(same)))
            for _, same in itertools.groupby(views, key=lambda view: tuple(view.shape[2:]))
        ]
        return self.head(torch.cat(features))


class Dino(nn.Module):
    """Student, teacher (a frozen copy, moved by `update_teacher`) and the centre of the teacher's outputs.

    `forward` returns DINO's loss (cross-entropy from each global teacher view to every other student
    view) and detached statistics that show whether training is collapsing.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: DinoHead,
        global_views: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        centering: bool = True,
    ):
        super().__init__()
        self.student = MultiCropNet(backbone, head)
        self.teacher = without_stochastic_layers(copy.deepcopy(self.student)).requires_grad_(False)
        self.global_views, self.student_temp = global_views, student_temp
        self.center_momentum, self.centering = center_momentum, centering
        out_dim = head.last_layer.out_features
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, views: list[torch.Tensor], teacher_temp: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            teacher_out = self.teacher(views[: self.global_views]).float()
        student_out = self.student(views).float()
        loss, stats = dino_loss(
            student_out.chunk(len(views)),
            teacher_out.chunk(self.global_views),
            self.center,
            self.student_temp,
            teacher_temp,
        )
        if self.centering:
            self._update_center(teacher_out)
        return loss, stats

    @torch.no_grad()
    def _update_center(self, teacher_out: torch.Tensor) -> None:
        """EMA of the batch mean over all processes: every rank keeps the same centre."""
        total = teacher_out.sum(dim=0, keepdim=True)
        count = torch.tensor(float(len(teacher_out)), device=total.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(total)
            torch.distributed.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(total / count, alpha=1 - self.center_momentum)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher = momentum * teacher + (1 - momentum) * student, parameter by parameter."""
        teacher = list(self.teacher.parameters())
        torch._foreach_lerp_(teacher, [p.detach() for p in self.student.parameters()], 1.0 - momentum)


def without_stochastic_layers(net: nn.Module) -> nn.Module:
    """`net` with every stochastic depth and dropout rate set to 0, in place: DINO builds its teacher without
    them (CLANet's main_dino_patch.py L160 gives the teacher no drop_path_rate), so that its targets are not noisy
    although the engine keeps the whole model, teacher included, in train mode. The layers stay (timm's attention
    reads its dropout's rate), so the teacher's parameters and state keys are the student's."""
    for module in net.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        elif isinstance(module, (DropPath, DropBlock2d)):
            module.drop_prob = 0.0
    return net


def dino_loss(
    student_views: tuple[torch.Tensor, ...],
    teacher_views: tuple[torch.Tensor, ...],
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean cross-entropy H(teacher_i, student_v) over pairs of different views, and collapse statistics.

    The statistics: the teacher's mean per-cell entropy, the entropy of its batch-mean distribution
    (how many prototypes the batch uses) and the KL divergence from teacher to student (loss minus
    the entropy: every teacher view is paired with the same number of student views).
    """
    log_student = [(view / student_temp).log_softmax(dim=-1) for view in student_views]
    teacher = [((view - center) / teacher_temp).softmax(dim=-1) for view in teacher_views]
    terms = [
        -(probs * log_student[v]).sum(dim=-1).mean()
        for i, probs in enumerate(teacher)
        for v in range(len(log_student))
        if v != i
    ]
    loss = torch.stack(terms).mean()
    with torch.no_grad():
        probs = torch.cat(teacher)
        entropy = _entropy(probs).mean()
        stats = {
            "teacher_entropy": entropy,
            "teacher_batch_entropy": _entropy(probs.mean(dim=0)),
            "kl_divergence": loss.detach() - entropy,
        }
    return loss, stats


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=-1)
