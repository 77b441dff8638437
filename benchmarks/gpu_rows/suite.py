"""What every row of the GPU suite shares: the sizes, the synthetic crop store, configs composed from conf/, the
task's own trainer, random inputs already on the device, and interleaved timing."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import torch
from accelerate.utils import set_seed
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torch import nn

import cellexp  # noqa: F401  (registers the config resolvers)
from cellexp.config import build
from cellexp.data.datamodule import load_crop_data
from cellexp.data.dataset import CropDataset
from cellexp.engine.accelerator import make_accelerator
from cellexp.engine.classification import ClassifierTrainer
from cellexp.engine.cpu_bf16 import guard_small_strided_convs
from cellexp.tasks.classify import build_trainer
from cellexp.tracking.loading import build_model

CONF = Path(__file__).resolve().parents[2] / "conf"
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
        """task=classify's own trainer (`build_trainer`) for this config, with a fresh Accelerator."""
        accelerator = make_accelerator(cfg.trainer)
        set_seed(cfg.seed)
        return build_trainer(cfg, accelerator, build_model(cfg, self.num_classes), self.data, self.tmp)

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
