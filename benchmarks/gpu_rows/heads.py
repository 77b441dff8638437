"""Row 4: the Elegans heads against their per-node eager implementations, and each head's share of a training
step."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from bench_tensor_network import build as build_head_pair
from bench_tensor_network import step_fn as head_step
from torch import nn

from cellexp.graphs.build import head_graph
from cellexp.models.units import compute_path
from gpu_rows.loops import plain_loop
from gpu_rows.suite import Row, Suite


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
