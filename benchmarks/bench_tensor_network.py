"""Forward+backward time of the tensor-network head against the plain per-node reference.

    python benchmarks/bench_tensor_network.py [--device cpu|cuda] [--batch 256] [--dim 512]
        [--wiring full] [--graph reference|random] [--threads 2] [--iters 10]

Both modules hold the same weights and see the same input; each iteration times the reference
(`PerNodeTensorNetwork`: one nn.Linear + nn.LayerNorm per node and nn.MultiheadAttention, as
in the published code) and both compute paths of `TensorNetworkHead` ("looped": one matmul per
live unit over stacked parameters, the CPU default; "batched": one baddbmm per step, the
accelerator default) in turn, so that machine noise hits all three alike; medians after warm-up.

Graph: `--graph reference` reads ../shared/reference/celegans_elegansai.graphml (the published
connectome) and falls back to `random` where that file is absent. `random` is a directed
Erdos-Renyi graph on 279 nodes with the connectome's density (3,225 edges / (279 x 278)),
roles 98 sensor / 92 inter / 89 motor assigned to a seeded shuffle of the nodes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import networkx as nx
import torch

from cellexp.models.graphs import read_graph_file
from cellexp.models.tensor_network import PerNodeTensorNetwork, TensorNetworkHead, compute_path

REFERENCE_GRAPH = Path(__file__).resolve().parents[2] / "shared" / "reference" / "celegans_elegansai.graphml"
CONNECTOME_NODES, CONNECTOME_EDGES = 279, 3225
CONNECTOME_ROLES = {"sensor": 98, "inter": 92, "motor": 89}


def random_connectome(seed: int = 0) -> nx.DiGraph:
    """Erdos-Renyi control with the connectome's size, density and role counts."""
    density = CONNECTOME_EDGES / (CONNECTOME_NODES * (CONNECTOME_NODES - 1))
    g = nx.gnp_random_graph(CONNECTOME_NODES, density, seed=seed, directed=True)
    nodes = list(g)
    random.Random(seed).shuffle(nodes)
    roles = [role for role, count in CONNECTOME_ROLES.items() for _ in range(count)]
    nx.set_node_attributes(g, dict(zip(nodes, roles, strict=True)), "role")
    return g


def reference_connectome() -> nx.DiGraph:
    """The published graph, read through the project's reader (it maps the roles S/NA/M)."""
    return read_graph_file(REFERENCE_GRAPH)


def load_graph(kind: str) -> tuple[nx.DiGraph, str]:
    if kind == "reference" and REFERENCE_GRAPH.is_file():
        return reference_connectome(), f"reference ({REFERENCE_GRAPH.name})"
    note = " (reference graph absent)" if kind == "reference" else ""
    return random_connectome(), f"random Erdos-Renyi, 279 nodes, roles 98/92/89{note}"


def gflop_per_step(head: TensorNetworkHead, batch: int, dim: int) -> tuple[float, float]:
    """Matmul GFLOP of one forward+backward (backward = 2x forward): (reference, head).

    The reference runs every unit forward and autograd runs only the live ones backward; it
    projects keys and values of every motor state. The head runs live units only and its
    closed-form attention needs no key/value projection (its remaining work is O(B n dim heads)).
    """
    unit = 2 * batch * dim * dim
    reference = head.num_units * unit + 2 * head.live_units * unit
    reference += 3 * 2 * batch * head.reached_motors * dim * 2 * dim
    own = 3 * head.live_units * unit
    return reference / 1e9, own / 1e9


class ReadOutOnly(torch.nn.Module):
    """The head's attention read-out on given motor states, with or without the closed form."""

    def __init__(self, head: TensorNetworkHead, closed_form: bool):
        super().__init__()
        self.readout, self.closed_form = head.readout, closed_form

    def forward(self, motors: torch.Tensor) -> torch.Tensor:
        return self.readout.logits(motors, closed_form=self.closed_form)


def step_fn(module: torch.nn.Module, x: torch.Tensor, device: torch.device):
    """One training-like step: forward, backward to weights and input, gradients freed afterwards."""

    def step() -> float:
        module.zero_grad(set_to_none=True)
        start = time.perf_counter()
        module(x).float().square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--wiring", default="full", choices=["full", "paper"])
    parser.add_argument("--graph", default="reference", choices=["reference", "random"])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    graph, graph_name = load_graph(args.graph)
    kwargs = dict(in_features=args.dim, num_classes=8, graph=graph, dim=args.dim, wiring=args.wiring)
    head = TensorNetworkHead(**kwargs).to(device)
    reference = PerNodeTensorNetwork(**kwargs).to(device).copy_from(head)
    x = torch.randn(args.batch, args.dim, device=device, requires_grad=True)

    def with_path(path: str):
        def step() -> float:
            head.compute = path
            return step_fn(head, x, device)()

        return step

    motors = torch.randn(args.batch, head.reached_motors, args.dim, device=device, requires_grad=True)
    runs = {
        "reference": step_fn(reference, x, device),
        "looped": with_path("looped"),
        "batched": with_path("batched"),
        # the read-out alone, to show what the closed-form attention contributes to the ratios
        "readout nn.MHA": step_fn(ReadOutOnly(head, closed_form=False), motors, device),
        "readout closed": step_fn(ReadOutOnly(head, closed_form=True), motors, device),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(args.warmup + args.iters):
        for name, step in runs.items():
            elapsed = step()
            if i >= args.warmup:
                times[name].append(elapsed)
    medians = {name: statistics.median(values) for name, values in times.items()}

    ref_gflop, head_gflop = gflop_per_step(head, args.batch, args.dim)
    print(f"graph: {graph_name}; wiring={args.wiring}; device={args.device}; threads={torch.get_num_threads()}")
    print(f"batch {args.batch}, dim {args.dim}: {head.num_units} units ({head.live_units} live), ", end="")
    print(f"{head.reached_motors} reached motors, {head.steps} steps")
    print(f"GFLOP per step (matmuls, fwd+bwd): reference {ref_gflop:.1f}, head {head_gflop:.1f}")
    print(f"median of {args.iters} after {args.warmup} warm-up:")
    for name in ("reference", "looped", "batched"):
        gflop = ref_gflop if name == "reference" else head_gflop
        print(f"  {name:14s} {medians[name] * 1e3:9.1f} ms  {gflop / medians[name]:7.1f} GFLOP/s")
    for name in ("readout nn.MHA", "readout closed"):
        print(f"  {name:14s} {medians[name] * 1e3:9.1f} ms  (attention read-out alone, motor states given)")
    auto = compute_path("auto", device, args.dim)
    for name in ("looped", "batched"):
        default = " (compute=auto here)" if name == auto else ""
        print(f"ratio reference_time / {name}_time = {medians['reference'] / medians[name]:.2f}{default}")


if __name__ == "__main__":
    main()
