"""The GPU path, measured: one table of ratios, each of two things timed side by side in this process.

    python benchmarks/gpu_suite.py            # on the GPU: resnet18 / efficientnetv2_m at 224 px, batch 256, bf16
    python benchmarks/gpu_suite.py --quick    # the same code paths at toy sizes on the CPU (under a minute)
        [--rows 1,2,3,4,5,6,7] [--workers N] [--repeats 3] [--no-compile | --compile] [--cudnn-benchmark]

Rows (medians of --repeats, the runs of a row interleaved after one warm-up each):
 1 end-to-end training: the synthetic crop store -> train_loader -> Accelerate -> BatchTransform (augmentation on the
   device) -> ClassifierTrainer's epoch loop (`Trainer.train_epoch`), against the same loop fed random model inputs
   already on the device (identity transform); channels_last off and on.
 2 the engine, on those device inputs: its epoch loop (per-step gather and checks included) and its step alone
   (`Trainer.optimize_step`), against a plain timm-style loop (autocast forward, loss, backward, optimizer step).
 3 trainer.compile=true (Accelerate's inductor backend) against eager, engine step; the compile time is the first
   compiled run's excess over a steady one.
 4 the Elegans heads (ours: head=elegans; published: head=elegans_published) forward+backward against their
   per-node eager implementations (as benchmarks/bench_tensor_network.py builds them), and the head's share of a
   resnet18 training step: 1 - t(resnet18 + linear head) / t(resnet18 + that head).
 5 evaluation (`ClassifierTrainer.predict` over the store) and Grad-CAM (`cellexp.xai.cams.cam_maps`, fp32 as
   task=xai runs it), each against a plain no-grad bf16 forward loop on device inputs.
 6 peak GPU memory allocated in row 3's eager runs (model, AdamW state, activations, the few input batches), as a
   share of the device's memory.
 7 3-D: efficientnet3d_b0 (MONAI, spatial_dims=3) training steps on 5-channel 12-plane crops against its forward.
TFLOP/s come from torch.utils.flop_counter.FlopCounterMode (one step counted), against the vendor datasheet's dense
bf16 peak. Models have random weights (speed does not depend on training), one input channel as the datasets do.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import networkx as nx
import numpy as np
import torch
from accelerate.utils import set_seed
from bench_tensor_network import build as build_head_pair
from bench_tensor_network import step_fn as head_step
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cellexp  # noqa: F401  (registers the config resolvers)
from cellexp.config import build
from cellexp.data.datamodule import eval_loader, load_crop_data, train_loader
from cellexp.data.dataset import CropDataset
from cellexp.data.transforms import InputConfig, augmentation
from cellexp.engine.accelerator import make_accelerator
from cellexp.engine.checkpoint import CheckpointManager
from cellexp.engine.classification import ClassifierTrainer
from cellexp.engine.cpu_bf16 import guard_small_strided_convs
from cellexp.engine.settings import Selection, TrainerSettings
from cellexp.graphs.build import head_graph
from cellexp.models.units import compute_path
from cellexp.tracking.loading import build_model
from cellexp.xai.cams import cam_maps
from cellexp.xai.targets import default_target_layer, find_layer, reshape_transform

CONF = Path(__file__).resolve().parents[1] / "conf"
# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's datasheets (H100: "NVIDIA H100 Tensor Core GPU"
# datasheet, SXM 1,979 / PCIe 1,513 with sparsity; H200 datasheet, SXM 1,979 with sparsity; A100 datasheet: 312).
# Checked in order against torch.cuda.get_device_name(); NVL parts and anything else get no peak.
BF16_PEAKS = (("NVL", None), ("H200", 989.5), ("H100 PCIe", 756.5), ("H100", 989.5), ("A100", 312.0))
PEAK_SOURCE = "NVIDIA datasheet, dense bf16"


@dataclass(frozen=True)
class Sizes:
    image: int
    crop: int
    batch: int
    steps: int  # batches per timed run
    resnet: str
    big: str  # the large CNN of rows 3 and 6
    head_batch: int
    head_dim: int
    train_images: int  # synthetic source images per cell line in the train split
    repeats: int
    toy_graph: bool  # the heads on a 30-node random graph (a graph file) rather than the connectome


FULL = Sizes(224, 128, 256, 20, "resnet18", "efficientnetv2_m", 256, 512, 12, 3, False)
QUICK = Sizes(32, 48, 8, 2, "test_resnet", "test_efficientnet", 8, 32, 1, 2, True)


@dataclass
class Row:
    row: str
    what: str
    ours: str
    reference: str
    ratio: float | str
    goal: str = ""
    note: str = ""


class DeviceBatches:
    """A loader of ready (inputs, labels) batches on the device: `steps` batches cycling over a few distinct ones."""

    def __init__(self, batches: list, steps: int):
        self.batches, self.steps = batches, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return (self.batches[i % len(self.batches)] for i in range(self.steps))

    def set_epoch(self, epoch: int) -> None: ...


class Suite:
    def __init__(self, args, sizes: Sizes, device: torch.device, tmp: Path):
        self.args, self.sizes, self.device, self.tmp = args, sizes, device, tmp
        self.peak = bf16_peak(device)
        self.data = load_crop_data(self.cfg().dataset, seed=0)
        self.num_classes = len(self.data.class_names)
        self.memory: dict[str, float] = {}  # peak bytes of row 3's eager runs, for row 6
        self.graph_file = toy_graph(tmp / "toy_graph.graphml") if sizes.toy_graph else None

    def cfg(self, *overrides: str):
        s = self.sizes
        base = [
            f"paths.data_dir={self.tmp / 'data'}",
            f"paths.cache_dir={self.tmp / 'cache'}",
            "logger=none",
            f"backbone={s.resnet}",
            "head=linear",
            f"dataset.crop_size={s.crop}",
            f"dataset.image_size={s.image}",
            f"dataset.generate.images_per_line={{train:{s.train_images},val:1,test:1}}",
            f"trainer.batch_size={s.batch}",
            f"trainer.eval_batch_size={s.batch}",
            "trainer.precision=bf16",
            f"trainer.cpu={self.device.type == 'cpu'}",
            f"trainer.num_workers={self.args.workers}",
        ]
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF)):
            return compose("config", overrides=[*base, *overrides])

    def trainer(self, cfg) -> ClassifierTrainer:
        """ClassifierTrainer as task=classify builds it (tasks/classify.py), with a fresh Accelerator."""
        accelerator = make_accelerator(cfg.trainer)
        set_seed(cfg.seed)
        model = build_model(cfg, self.num_classes)
        if cfg.trainer.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = build(cfg.optim.optimizer)(params=model.parameters())
        inputs = model.input_config
        return ClassifierTrainer(
            accelerator,
            model,
            optimizer,
            scheduler=build(cfg.optim.scheduler)(optimizer=optimizer),
            selection=Selection(cfg.task.optimized_metric, cfg.task.direction),
            checkpoints=CheckpointManager(self.tmp / "checkpoints"),
            settings=TrainerSettings.from_config(cfg.trainer, cfg.seed),
            criterion=nn.CrossEntropyLoss(label_smoothing=cfg.task.label_smoothing),
            train_transform=inputs.transform(augment=bool(cfg.dataset.augment), **augmentation(cfg.dataset)),
            eval_transform=inputs.transform(),
            class_names=self.data.class_names,
        )

    def plain_model(self, cfg) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The same model and optimizer, built from the same config and seed, outside the engine."""
        set_seed(cfg.seed)
        model = build_model(cfg, self.num_classes).to(self.device)
        if cfg.trainer.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.device.type == "cpu":
            guard_small_strided_convs(model)  # as the engine does for bf16 on CPU
        return model, build(cfg.optim.optimizer)(params=model.parameters())

    def inputs(self, channels_last: bool, distinct: int = 2) -> DeviceBatches:
        """Random model inputs (normalised-looking floats) and labels, already on the device."""
        s, g = self.sizes, torch.Generator().manual_seed(0)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        batches = [
            (
                torch.randn(s.batch, 1, s.image, s.image, generator=g).to(self.device).contiguous(memory_format=fmt),
                torch.randint(0, self.num_classes, (s.batch,), generator=g).to(self.device),
            )
            for _ in range(distinct)
        ]
        return DeviceBatches(batches, s.steps)

    def crops(self, count: int) -> CropDataset:
        return CropDataset(self.data.store, "train", limit=count, seed=0)

    def amp(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def timed(self, fn: Callable[[], object]) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start

    def interleaved(self, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
        """Median seconds per run: one warm-up each, then --repeats rounds of every run in turn."""
        for fn in runs.values():
            self.timed(fn)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(self.args.repeats or self.sizes.repeats):
            for name, fn in runs.items():
                times[name].append(self.timed(fn))
        return {name: statistics.median(values) for name, values in times.items()}

    def tflops(self, flops: float, seconds: float) -> str:
        achieved = flops / seconds / 1e12
        if self.peak is None:
            return f"{achieved:.2f} TFLOP/s" if achieved >= 0.1 else f"{achieved * 1e3:.2f} GFLOP/s"
        return f"{achieved:.1f} TFLOP/s = {100 * achieved / self.peak:.1f}% of peak"

    def release(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def toy_graph(path: Path) -> Path:
    """A directed random graph of 30 nodes, a third of each role, as a head graph file (quick mode)."""
    g = nx.gnp_random_graph(30, 0.15, seed=0, directed=True)
    nx.set_node_attributes(g, {node: ("sensor", "inter", "motor")[node % 3] for node in g}, "role")
    nx.write_graphml(g, path)
    return path


def bf16_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAKS if key in name), None)


# ---------------------------------------------------------------------------------------------- the loops


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


# ---------------------------------------------------------------------------------------------- the rows


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


def row_heads(suite: Suite) -> list[Row]:
    """Row 4: each Elegans head against its per-node eager implementation, and its share of a resnet18 step."""
    s, rows, device = suite.sizes, [], suite.device
    graph = head_graph("elegans", graph_file=str(suite.graph_file) if suite.graph_file else None)
    graph_name = f"toy graph ({graph.number_of_nodes()} nodes)" if suite.graph_file else "connectome"
    graph_key = [f"head.graph_file={suite.graph_file}"] if suite.graph_file else []
    x = torch.randn(s.head_batch, s.head_dim, device=device, requires_grad=True)
    for variant, head_cfg in (("ours", "elegans"), ("published", "elegans_published")):
        head, per_node = (m.to(device) for m in build_head_pair(SimpleNamespace(variant=variant, wiring="full",
                                                                                 dim=s.head_dim), graph))  # fmt: skip
        t = suite.interleaved({"head": head_step(head, x, device), "per-node": head_step(per_node, x, device)})
        rows.append(
            Row("4", f"per-node eager / {variant} head, b{s.head_batch} dim {s.head_dim}, fwd+bwd fp32",
                f"{t['head'] * 1e3:.1f} ms", f"{t['per-node'] * 1e3:.1f} ms", t["per-node"] / t["head"], ">= 10",
                f"{graph_name}; compute {compute_path(head.compute, device, s.head_dim)}")
        )  # fmt: skip
        del head, per_node
        ready = suite.inputs(channels_last=False)
        plain = {}
        for key, overrides in (
            ("linear", ["head=linear"]),
            ("head", [f"head={head_cfg}", f"head.dim={s.head_dim}", *graph_key]),
        ):
            model, optimizer = suite.plain_model(suite.cfg(*overrides))
            plain[key] = plain_loop(model, optimizer, nn.CrossEntropyLoss(), ready, suite)
        t = suite.interleaved(plain)
        steps = s.steps
        rows.append(
            Row("4", f"{variant} head's share of a {s.resnet} step, {s.image}px b{s.batch} bf16, dim {s.head_dim}",
                f"{t['head'] / steps * 1e3:.1f} ms", f"{t['linear'] / steps * 1e3:.1f} ms (linear head)",
                1 - t["linear"] / t["head"], "", "share = 1 - linear / head")
        )  # fmt: skip
        del plain, ready
        suite.release()
    return rows


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


ROWS = {"1": rows_training, "3": row_compile, "4": row_heads, "5": row_eval, "6": row_memory, "7": row_3d}


def table(rows: list[Row]) -> str:
    lines = ["| row | what | ours | reference | ratio | goal | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r.ratio:.3g}" if isinstance(r.ratio, float) else r.ratio
        lines.append(f"| {r.row} | {r.what} | {r.ours} | {r.reference} | {ratio} | {r.goal} | {r.note} |")
    return "\n".join(lines)


def header(suite: Suite, args) -> str:
    device = suite.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = f"{suite.peak:.1f} TFLOP/s ({PEAK_SOURCE})" if suite.peak else "unknown for this device"
        where = f"{name}; CUDA {torch.version.cuda}; cuDNN {torch.backends.cudnn.version()}; bf16 peak {peak}"
    else:
        where = f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads); no bf16 peak"
    mode = "quick (toy sizes)" if args.quick else "full"
    repeats = args.repeats or suite.sizes.repeats
    return (
        f"device: {where}\ntorch {torch.__version__}; mode {mode}; {repeats} repeats, {suite.sizes.steps} "
        f"batches per run; cudnn.benchmark {torch.backends.cudnn.benchmark}"
    )


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="toy sizes, on the CPU unless --device says otherwise")
    parser.add_argument("--device", default=None)
    parser.add_argument("--rows", default="1,2,3,4,5,6,7", help="which rows (2 comes with 1, 6 needs 3)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: 0 quick, 4 full)")
    parser.add_argument("--repeats", type=int, default=None, help="default: 3 full, 2 quick")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None, help="also on the CPU")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="as timm's benchmark does (the project doesn't)")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.quick else "cpu"))
    if args.workers is None:
        args.workers = 0 if args.quick else min(4, max((os.cpu_count() or 1) - 1, 0))
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    wanted = {"1" if r == "2" else r for r in args.rows.split(",")}
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gpu_suite_") as tmp:
        suite = Suite(args, QUICK if args.quick else FULL, device, Path(tmp))
        print(f"crop store ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        for key, fn in ROWS.items():
            if key in wanted:
                begun = time.perf_counter()
                rows += fn(suite)
                suite.release()
                print(f"row {key} done in {time.perf_counter() - begun:.1f} s", file=sys.stderr)
        print(header(suite, args))
    print(table(rows))
    print(f"total {time.perf_counter() - started:.1f} s")
    return rows


if __name__ == "__main__":
    main()
