"""Rows 1 and 2: end-to-end training from the crop store against the engine's loop on ready device inputs, and
the engine's epoch loop and step against a plain timm-style loop."""

from __future__ import annotations

from torch import nn

from cellexp.data.datamodule import train_loader
from gpu_rows.loops import engine_epoch, engine_steps, plain_loop, rate, step_flops
from gpu_rows.suite import Row, Suite


def rows_training(suite: Suite) -> list[Row]:
    """Rows 1 and 2: one trainer and one plain model per channels_last setting, all runs interleaved."""
    s, rows1, rows2 = suite.sizes, [], []
    images = s.batch * s.steps
    for channels_last in (False, True):
        cfg = suite.cfg(f"trainer.channels_last={channels_last}")
        trainer = suite.trainer(cfg)
        store = trainer.acc.prepare(
            train_loader(suite.crops(images), s.batch, suite.args.workers, 0, cfg.task.balanced_sampling)
        )
        ready = suite.inputs(channels_last)
        model, optimizer = suite.plain_model(cfg)
        transform = trainer.train_transform
        t = suite.interleaved(
            {
                "store": engine_epoch(trainer, store, transform),
                "ready": engine_epoch(trainer, ready, nn.Identity()),
                "step": engine_steps(trainer, ready),
                "plain": plain_loop(model, optimizer, trainer.criterion, ready, suite),
            }
        )
        flops = step_flops(model, trainer.criterion, ready.batches[0], suite) * s.steps
        setting = f"{s.resnet} {s.image}px b{s.batch} bf16, channels_last {'on' if channels_last else 'off'}"
        rows1.append(
            Row("1", f"end-to-end / ready inputs, {setting}", rate(images, t["store"]), rate(images, t["ready"]),
                t["ready"] / t["store"], ">= 0.9", f"{suite.args.workers} workers; {suite.tflops(flops, t['store'])}")
        )  # fmt: skip
        for name, what in (("ready", "engine epoch loop"), ("step", "engine step alone")):
            rows2.append(
                Row("2", f"{what} / plain loop, {setting}", rate(images, t[name]), rate(images, t["plain"]),
                    t["plain"] / t[name], ">= 0.95", f"plain {suite.tflops(flops, t['plain'])}")
            )  # fmt: skip
        del trainer, store, ready, model, optimizer
        suite.release()
    return rows1 + rows2
