"""The loops the rows time against each other: the engine's epoch and step (the task's trainer, through its public
methods), a plain timm-style loop outside it, and the FLOPs of one step."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cellexp.engine.classification import ClassifierTrainer
from gpu_rows.suite import Suite


def plain_loop(model: nn.Module, optimizer, criterion, loader, suite: Suite, train: bool = True) -> Callable:
    """A timm-style benchmark loop on device tensors: autocast forward and loss, backward, optimizer step."""

    def run() -> None:
        model.train()
        for x, y in loader:
            with suite.amp():
                loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def infer() -> None:
        model.eval()
        for x, _ in loader:
            with suite.amp():
                model(x)

    return run if train else infer


def engine_epoch(trainer: ClassifierTrainer, loader, transform: nn.Module) -> Callable:
    """The engine's own epoch loop: per-step gather, finiteness check, running sums, progress."""

    def run() -> None:
        trainer.train_transform = transform
        trainer.train_epoch(loader)

    return run


def engine_steps(trainer: ClassifierTrainer, loader) -> Callable:
    """The engine's step alone (train_step, backward, optimizer step), on ready model inputs."""

    def run() -> None:
        trainer.train_transform = nn.Identity()
        trainer.model.train()
        for batch in loader:
            trainer.optimize_step(batch)

    return run


def step_flops(model: nn.Module, criterion, batch, suite: Suite, backward: bool = True) -> float:
    x, y = batch
    with FlopCounterMode(display=False) as counter:
        with suite.amp(), torch.set_grad_enabled(backward):
            loss = criterion(model(x), y)
        if backward:
            loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def rate(images: int, seconds: float) -> str:
    return f"{images / seconds:,.0f} img/s"
