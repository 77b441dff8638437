"""Row 5: evaluation through the engine and Grad-CAM, each against a plain no-grad forward loop."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cellexp.data.datamodule import eval_loader
from cellexp.xai.cams import cam_maps
from cellexp.xai.targets import default_target_layer, find_layer, reshape_transform
from gpu_rows.loops import plain_loop, rate, step_flops
from gpu_rows.suite import Row, Suite


def row_eval(suite: Suite) -> list[Row]:
    """Row 5: evaluation over the store through the engine, and Grad-CAM, against a plain no-grad forward loop."""
    s = suite.sizes
    images = s.batch * s.steps
    cfg = suite.cfg()
    trainer = suite.trainer(cfg)
    dataset = suite.crops(images)
    store = trainer.acc.prepare(eval_loader(dataset, s.batch, suite.args.workers))
    model, _ = suite.plain_model(cfg)
    ready = suite.inputs(channels_last=False)
    explained = model.eval()
    crops = torch.from_numpy(np.asarray(suite.data.store.images("train")[dataset.indices])).unsqueeze(1)
    transform = explained.input_config.transform()
    layer_name = default_target_layer(explained, s.image)
    layer, reshape = find_layer(explained, layer_name), reshape_transform(explained.backbone, s.image)

    def gradcam() -> None:
        maps = cam_maps(
            "gradcam", explained, layer, reshape, lambda chunk: transform(crops[chunk].to(suite.device)),
            dataset.labels, s.batch,
        )  # fmt: skip
        for _ in maps:
            pass

    t = suite.interleaved(
        {"predict": lambda: trainer.predict(store), "plain": plain_loop(model, None, None, ready, suite, False),
         "gradcam": gradcam}
    )  # fmt: skip
    flops = step_flops(model, nn.CrossEntropyLoss(), ready.batches[0], suite, backward=False) * s.steps
    setting = f"{s.resnet} {s.image}px b{s.batch}"
    rows = [
        Row("5", f"evaluation (predict over the store) / plain forward, {setting} bf16", rate(images, t["predict"]),
            rate(images, t["plain"]), t["plain"] / t["predict"], "", f"{suite.tflops(flops, t['predict'])}"),
        Row("5", f"Grad-CAM (cam_maps, fp32, layer {layer_name}) / plain bf16 forward, {setting}",
            f"{images / t['gradcam']:,.0f} cells/s", rate(images, t["plain"]), t["plain"] / t["gradcam"], "", ""),
    ]  # fmt: skip
    return rows
