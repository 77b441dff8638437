"""Forward+backward time of a tensor-network head against a plain per-node eager implementation of it.

    python benchmarks/bench_tensor_network.py [--variant published|intended|ours] [--device cpu|cuda]
        [--batch 256] [--dim 512] [--wiring full] [--graph reference|random] [--threads 2] [--iters 10]

Both modules hold the same weights and see the same input; each iteration times the per-node
implementation and both compute paths of the head in turn, so that machine noise hits all three
alike; medians after warm-up.

- `--variant published` (default) or `intended`: `PublishedTensorNetwork` (the published head's
  function, compiled into batches) against `PerNodePublished` (one nn.Linear + nn.LayerNorm per
  unit, the published pass op by op, textbook attention).
- `--variant ours`: `TensorNetworkHead` (`--wiring full|sensor_motor`) against
  `PerNodeTensorNetwork` (one nn.Linear + nn.LayerNorm per node and nn.MultiheadAttention).

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

from cellexp.graphs import read_graph_file
from cellexp.models.elegans_published import PerNodePublished, PublishedTensorNetwork
from cellexp.models.tensor_network import PerNodeTensorNetwork, TensorNetworkHead
from cellexp.models.units import compute_path

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


def gflop_per_step(head, batch: int, dim: int) -> tuple[float, float]:
    """Matmul GFLOP of one forward+backward (backward = 2x forward): (per-node implementation, head).

    Ours: the per-node implementation runs every unit forward and autograd only the live ones backward;
    published: every unit is live and applies its Linear once (intended: at every arrival). Both per-node
    implementations project keys and values of every motor state; the heads' closed-form attention needs
    no key/value projection (their remaining work is O(B n dim heads)).
    """
    unit = 2 * batch * dim * dim
    if isinstance(head, PublishedTensorNetwork):
        if head.variant == "published":  # a unit's Linear runs at its first arrival only
            ref_ops = own_ops = head.num_units
        else:  # at every arrival; the compiled head reuses W x + b for later arrivals from x
            ref_ops = len(head.ops)
            own_ops = ref_ops - sum(not op.first and op.src is None for op in head.ops)
        reference, own = 3 * ref_ops * unit, 3 * own_ops * unit
    else:
        reference = head.num_units * unit + 2 * head.live_units * unit
        own = 3 * head.live_units * unit
    reference += 3 * 2 * batch * head.reached_motors * dim * 2 * dim
    return reference / 1e9, own / 1e9


def readout_runs(head, motors: torch.Tensor, x: torch.Tensor, device) -> dict:
    """The attention read-out alone on given motor states, textbook and closed form."""
    if isinstance(head, PublishedTensorNetwork):
        textbook, closed = (lambda m: head.readout.reference(m, x)), (lambda m: head.readout(m, x))
    else:
        textbook = lambda m: head.readout.logits(m, closed_form=False)  # noqa: E731
        closed = lambda m: head.readout.logits(m, closed_form=True)  # noqa: E731
    return {
        "readout textbook": step_fn(textbook, motors, device, head),
        "readout closed": step_fn(closed, motors, device, head),
    }


def build(args, graph):
    """(head, per-node implementation) with the same weights."""
    kwargs = dict(in_features=args.dim, num_classes=8, graph=graph, dim=args.dim)
    if args.variant == "ours":
        head = TensorNetworkHead(**kwargs, wiring=args.wiring)
        return head, PerNodeTensorNetwork(**kwargs, wiring=args.wiring).copy_from(head)
    head = PublishedTensorNetwork(**kwargs, variant=args.variant)
    return head, PerNodePublished(**kwargs, variant=args.variant).copy_from(head)


def step_fn(module, x: torch.Tensor, device: torch.device, owner: torch.nn.Module | None = None):
    """One training-like step: forward, backward to weights and input, gradients freed afterwards."""

    def step() -> float:
        (owner or module).zero_grad(set_to_none=True)
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
    parser.add_argument("--variant", default="published", choices=["published", "intended", "ours"])
    parser.add_argument("--wiring", default="full", choices=["full", "sensor_motor"], help="--variant ours only")
    parser.add_argument("--graph", default="reference", choices=["reference", "random"])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    graph, graph_name = load_graph(args.graph)
    head, reference = (module.to(device) for module in build(args, graph))
    x = torch.randn(args.batch, args.dim, device=device, requires_grad=True)

    def with_path(path: str):
        def step() -> float:
            head.compute = path
            return step_fn(head, x, device)()

        return step

    motors = torch.randn(args.batch, head.reached_motors, args.dim, device=device, requires_grad=True)
    runs = {
        "per-node": step_fn(reference, x, device),
        "looped": with_path("looped"),
        "batched": with_path("batched"),
        # the read-out alone, to show what the closed-form attention contributes to the ratios
        **readout_runs(head, motors, x.detach(), device),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(args.warmup + args.iters):
        for name, step in runs.items():
            elapsed = step()
            if i >= args.warmup:
                times[name].append(elapsed)
    medians = {name: statistics.median(values) for name, values in times.items()}

    ref_gflop, head_gflop = gflop_per_step(head, args.batch, args.dim)
    variant = f"variant={args.variant}" + (f", wiring={args.wiring}" if args.variant == "ours" else "")
    print(f"graph: {graph_name}; {variant}; device={args.device}; threads={torch.get_num_threads()}")
    live = getattr(head, "live_units", head.num_units)
    steps = head.steps if args.variant == "ours" else head.batches
    print(f"batch {args.batch}, dim {args.dim}: {head.num_units} units ({live} live), ", end="")
    print(f"{head.reached_motors} reached motors, {steps} sequential steps")
    print(f"GFLOP per step (matmuls, fwd+bwd): per-node {ref_gflop:.1f}, head {head_gflop:.1f}")
    print(f"median of {args.iters} after {args.warmup} warm-up:")
    for name in ("per-node", "looped", "batched"):
        gflop = ref_gflop if name == "per-node" else head_gflop
        print(f"  {name:16s} {medians[name] * 1e3:9.1f} ms  {gflop / medians[name]:7.1f} GFLOP/s")
    for name in ("readout textbook", "readout closed"):
        print(f"  {name:16s} {medians[name] * 1e3:9.1f} ms  (attention read-out alone, motor states given)")
    auto = compute_path("auto", device, args.dim)
    for name in ("looped", "batched"):
        default = " (compute=auto here)" if name == auto else ""
        print(f"ratio per-node_time / {name}_time = {medians['per-node'] / medians[name]:.2f}{default}")


if __name__ == "__main__":
    main()
