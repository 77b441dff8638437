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
The engine's rows drive task=classify's own trainer (`cellexp.tasks.classify.build_trainer`); each row is a module
of benchmarks/gpu_rows/.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from gpu_rows.compiling import row_compile, row_memory
from gpu_rows.evaluation import row_eval
from gpu_rows.heads import row_heads
from gpu_rows.suite import FULL, PEAK_SOURCE, QUICK, Row, Suite
from gpu_rows.training import rows_training
from gpu_rows.volume import row_3d

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
