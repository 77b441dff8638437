"""Rows 3 and 6: trainer.compile=true against eager on the engine's step, and the eager runs' peak GPU memory."""

from __future__ import annotations

import torch

from gpu_rows.loops import engine_steps, rate, step_flops
from gpu_rows.suite import Row, Suite


def row_compile(suite: Suite) -> list[Row]:
    """Row 3, and the peak memory of the eager runs for row 6."""
    s, rows = suite.sizes, []
    skip = suite.args.compile is False or (suite.args.compile is None and suite.device.type == "cpu")
    images = s.batch * s.steps
    for name in (s.resnet, s.big):
        ready = suite.inputs(channels_last=False)
        trainer = suite.trainer(suite.cfg(f"backbone={name}", "trainer.compile=false"))
        if suite.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(suite.device)
        eager = suite.interleaved({"eager": engine_steps(trainer, ready)})["eager"]
        if suite.device.type == "cuda":
            suite.memory[name] = torch.cuda.max_memory_allocated(suite.device)
        flops = step_flops(trainer.unwrapped, trainer.criterion, ready.batches[0], suite) * s.steps
        del trainer
        suite.release()
        what = f"compile / eager, {name} {s.image}px b{s.batch} bf16, engine step"
        if skip:
            why = "skipped: cpu quick" if suite.device.type == "cpu" else "skipped: --no-compile"
            rows.append(Row("3", what, why, rate(images, eager), why, "", f"eager {suite.tflops(flops, eager)}"))
            continue
        trainer = suite.trainer(suite.cfg(f"backbone={name}", "trainer.compile=true"))
        run = engine_steps(trainer, ready)
        first = suite.timed(run)  # compiles forward and backward
        compiled = suite.interleaved({"compiled": run})["compiled"]
        note = f"compile {first - compiled:.1f} s; {suite.tflops(flops, compiled)}"
        rows.append(Row("3", what, rate(images, compiled), rate(images, eager), eager / compiled, "> 1", note))
        del trainer, run
        suite.release()
    return rows


def row_memory(suite: Suite) -> list[Row]:
    """Row 6: peak memory allocated in row 3's eager training runs."""
    s, rows = suite.sizes, []
    for name in (s.resnet, s.big):
        what = f"peak memory allocated, {name} {s.image}px b{s.batch} bf16 training"
        if name not in suite.memory:
            why = "n/a (cpu)" if suite.device.type == "cpu" else "n/a (row 3 not run)"
            rows.append(Row("6", what, why, "", why))
            continue
        total = torch.cuda.get_device_properties(suite.device).total_memory
        gib = suite.memory[name] / 2**30
        rows.append(Row("6", what, f"{gib:.1f} GiB", f"{total / 2**30:.0f} GiB device", gib * 2**30 / total, "< 1"))
    return rows
