"""Row 7: a 3-D EfficientNet's training step on Cell Painting crops against its forward."""

from __future__ import annotations

import torch
from accelerate.utils import set_seed
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from cellexp.config import build
from cellexp.data.transforms import InputConfig
from cellexp.tracking.loading import build_model
from gpu_rows.loops import plain_loop, rate
from gpu_rows.suite import CONF, DeviceBatches, Row, Suite


def row_3d(suite: Suite) -> list[Row]:
    """Row 7: a 3-D EfficientNet's bf16 training step on Cell Painting crops (5 channels, 12 planes of 32 px, as
    dataset=cellpainting3d cuts them) against its forward alone, and the step's peak memory on a GPU."""
    s, device = suite.sizes, suite.device
    name, batch = ("test_efficientnet3d", 4) if suite.args.quick else ("efficientnet3d_b0", 64)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose("config", overrides=["dataset=cellpainting3d", f"backbone={name}", "head=linear", "logger=none"])
    inputs = InputConfig(image_size=32, in_chans=5, channels=5, depth=12)
    set_seed(0)
    model = build_model(cfg, 4, inputs).to(device)
    optimizer = build(cfg.optim.optimizer)(params=model.parameters())
    g = torch.Generator().manual_seed(0)
    ready = DeviceBatches(
        [(torch.randn(batch, 5, 12, 32, 32, generator=g).to(device), torch.randint(0, 4, (batch,)).to(device))],
        s.steps,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train = plain_loop(model, optimizer, nn.CrossEntropyLoss(), ready, suite)
    t = suite.interleaved({"train": train, "forward": plain_loop(model, None, None, ready, suite, False)})
    cells = batch * s.steps
    peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB peak" if device.type == "cuda" else "cpu"
    what = f"3-D training step / forward, {name} 5x12x32x32 b{batch} bf16"
    return [Row("7", what, rate(cells, t["train"]), rate(cells, t["forward"]), t["train"] / t["forward"], "", peak)]
