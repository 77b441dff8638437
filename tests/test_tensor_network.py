"""Tensor-network head: the propagation rule, agreement with the per-node reference, counts, errors."""

from __future__ import annotations

import random
from pathlib import Path

import networkx as nx
import pytest
import torch

from cellexp.errors import ConfigError
from cellexp.graphs import read_graph_file
from cellexp.models.propagation import propagation_plan
from cellexp.models.tensor_network import PerNodeTensorNetwork, TensorNetworkHead
from cellexp.models.units import compute_path

REFERENCE_GRAPH = Path(__file__).resolve().parents[2] / "shared" / "reference" / "celegans_elegansai.graphml"


def graph_of(roles: dict[str, str], edges: list[tuple[str, str]]) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from((node, {"role": role}) for node, role in roles.items())
    g.add_edges_from(edges)
    return g


def hand_graph() -> nx.DiGraph:
    """Every case of the rule in a few nodes (see the expected plans below)."""
    roles = {"s1": "sensor", "s2": "sensor", "i1": "inter", "i2": "inter", "i3": "inter"}
    roles |= {f"m{k}": "motor" for k in range(1, 7)}
    edges = [
        ("s1", "i1"), ("s2", "i1"), ("s1", "m1"), ("s1", "s2"),  # i1 has two sensor sources; s->s ignored
        ("i1", "m1"),  # reached in the same step: i1 does not feed m1
        ("i1", "i2"), ("i1", "m2"), ("m1", "m2"), ("m1", "m1"), ("m1", "i2"),  # self-loop, m->i ignored
        ("i2", "m3"), ("i2", "i3"), ("i3", "m1"),  # i3 is reached but feeds no later unit: dead
        ("m2", "m4"), ("m3", "m4"), ("m4", "m5"), ("m6", "m5"),  # m6 is never reached
    ]  # fmt: skip
    return graph_of(roles, edges)


def summary(plan) -> list[list[tuple]]:
    """Per step, (node, sensor sources, source nodes), with unit indices turned back into names."""
    nodes = plan.nodes
    return [
        [
            (node, count, [nodes[j] for j in sources])
            for node, count, sources in zip(s.nodes, s.sensor_sources, s.sources, strict=True)
        ]
        for s in plan.steps
    ]


def test_full_wiring_plan_follows_the_rule():
    plan = propagation_plan(hand_graph(), "full")
    assert summary(plan) == [
        [("i1", 2, []), ("m1", 1, [])],
        [("i2", 0, ["i1"]), ("m2", 0, ["i1", "m1"])],
        [("m3", 0, ["i2"]), ("i3", 0, ["i2"])],  # live before dead
        [("m4", 0, ["m2", "m3"])],
        [("m5", 0, ["m4"])],
    ]
    assert [s.live for s in plan.steps] == [2, 2, 1, 1, 1]


def test_sensor_motor_wiring_plan_skips_interneurons():
    plan = propagation_plan(hand_graph(), "sensor_motor")
    assert summary(plan) == [[("m1", 1, [])], [("m2", 0, ["m1"])], [("m4", 0, ["m2"])], [("m5", 0, ["m4"])]]


def random_graph(seed: int, n: int = 24, p: float = 0.12) -> nx.DiGraph:
    rng = random.Random(seed)
    g = nx.gnp_random_graph(n, p, seed=seed, directed=True)
    nx.set_node_attributes(g, {node: rng.choice(["sensor", "inter", "inter", "motor", "motor"]) for node in g}, "role")
    return g


SEEDS = (0, 1, 2, 3)


def test_random_graphs_exercise_the_rule():
    """The equivalence test below is only as good as its graphs: check they hit every case."""
    plans = [propagation_plan(random_graph(seed), wiring) for seed in SEEDS for wiring in ("full", "sensor_motor")]
    assert max(len(plan.steps) for plan in plans) >= 4
    assert any(len(sources) >= 2 for plan in plans for s in plan.steps for sources in s.sources)
    assert any(s.live < len(s.nodes) for plan in plans for s in plan.steps)  # dead units
    assert any(
        len(plan.motor_units) < sum(role == "motor" for role in plan.roles.values()) for plan in plans
    )  # unreached motors
    assert all(plan.motor_units for plan in plans)


def copy_of_grads(module) -> dict[str, torch.Tensor]:
    return {
        name: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for name, p in module.named_parameters()
    }


def run_both(head, reference, x):
    """Outputs and gradients of the head and of the per-node reference on the same input."""
    results = []
    for module in (head, reference):
        module.zero_grad(set_to_none=True)
        inp = x.clone().requires_grad_()
        out = module(inp)
        (out * torch.arange(1, out.shape[1] + 1, dtype=out.dtype)).sum().backward()
        results.append((out.detach(), inp.grad, copy_of_grads(module)))
    return results


def assert_same_grads(head_grads, ref_grads, head):
    for name, grad in head_grads.items():
        if name.startswith("readout."):
            torch.testing.assert_close(grad, ref_grads[name], atol=1e-9, rtol=1e-7, msg=name)
    offset = 0
    for s, stack in enumerate(head.units):
        for i in range(stack.weight.shape[0]):
            for mine, theirs in [
                ("weight", "0.weight"),
                ("bias", "0.bias"),
                ("ln_weight", "1.weight"),
                ("ln_bias", "1.bias"),
            ]:
                if f"units.{s}.{mine}" in head_grads:
                    expected = ref_grads[f"units.{offset + i}.{theirs}"]
                    torch.testing.assert_close(head_grads[f"units.{s}.{mine}"][i], expected, atol=1e-9, rtol=1e-7)
        offset += stack.weight.shape[0]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("wiring", ["full", "sensor_motor"])
@pytest.mark.parametrize("compute", ["looped", "batched"])
def test_head_matches_per_node_reference(seed, wiring, compute):
    torch.manual_seed(seed)
    kwargs = dict(in_features=12, num_classes=3, graph=random_graph(seed), dim=16, wiring=wiring, num_heads=4)
    kwargs["layer_norm"] = seed % 2 == 0
    kwargs["activation"] = ["gelu", "tanh", "silu", "relu"][seed]
    head = TensorNetworkHead(**kwargs, compute=compute).double()
    with torch.no_grad():  # LayerNorm affine away from its 1/0 initialisation, so a mix-up would show
        for stack in head.units:
            if stack.ln_weight is not None:
                stack.ln_weight.uniform_(0.5, 1.5)
                stack.ln_bias.uniform_(-0.5, 0.5)
    reference = PerNodeTensorNetwork(**kwargs).double().copy_from(head)
    (out, x_grad, grads), (ref_out, ref_x_grad, ref_grads) = run_both(head, reference, torch.randn(5, 12).double())
    torch.testing.assert_close(out, ref_out, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(x_grad, ref_x_grad, atol=1e-10, rtol=1e-8)
    assert_same_grads(grads, ref_grads, head)


def test_unreached_motor_and_dead_units_on_hand_graph():
    torch.manual_seed(0)
    kwargs = dict(in_features=8, num_classes=2, graph=hand_graph(), dim=8, num_heads=2)
    for compute in ("looped", "batched"):
        head = TensorNetworkHead(**kwargs, compute=compute).double()
        reference = PerNodeTensorNetwork(**kwargs).double().copy_from(head)
        (out, x_grad, grads), (ref_out, ref_x_grad, ref_grads) = run_both(head, reference, torch.randn(4, 8).double())
        torch.testing.assert_close(out, ref_out)
        torch.testing.assert_close(x_grad, ref_x_grad)
        assert_same_grads(grads, ref_grads, head)
        dead_row = head.plan.steps[2].nodes.index("i3")
        assert grads["units.2.weight"][dead_row].abs().sum() == 0
    assert (head.num_units, head.live_units, head.reached_motors, head.steps) == (8, 7, 5, 5)


def test_float32_agreement_at_working_size():
    torch.manual_seed(0)
    kwargs = dict(in_features=32, num_classes=4, graph=random_graph(5, n=40), dim=32, num_heads=8)
    head = TensorNetworkHead(**kwargs, compute="looped")
    reference = PerNodeTensorNetwork(**kwargs).copy_from(head)
    x = torch.randn(16, 32)
    expected = reference(x)
    torch.testing.assert_close(head(x), expected, atol=1e-5, rtol=1e-5)
    head.compute = "batched"
    torch.testing.assert_close(head(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_path_on_cuda_matches_cpu():
    torch.manual_seed(0)
    head = TensorNetworkHead(16, 3, random_graph(1), dim=16, num_heads=4)
    x = torch.randn(8, 16)
    expected = head(x)  # auto: looped on CPU
    torch.testing.assert_close(head.cuda()(x.cuda()).cpu(), expected, atol=1e-4, rtol=1e-4)


def test_projection_only_when_sizes_differ():
    assert isinstance(TensorNetworkHead(16, 3, hand_graph(), dim=16, num_heads=4).readout.projection, torch.nn.Identity)
    head = TensorNetworkHead(24, 3, hand_graph(), dim=16, num_heads=4)
    assert isinstance(head.readout.projection, torch.nn.Linear)
    assert head(torch.randn(2, 24)).shape == (2, 3)


def test_state_dict_round_trip_and_dropout_in_training():
    torch.manual_seed(0)
    head = TensorNetworkHead(8, 3, hand_graph(), dim=8, num_heads=2, dropout=0.5)
    clone = TensorNetworkHead(8, 3, hand_graph(), dim=8, num_heads=2, dropout=0.5)
    clone.load_state_dict(head.state_dict())
    head.eval(), clone.eval()
    x = torch.randn(3, 8)
    torch.testing.assert_close(head(x), clone(x))
    head.train()
    assert head(x).shape == (3, 3)


def unit_params(dim: int, layer_norm: bool = True) -> int:
    return dim * dim + dim + (2 * dim if layer_norm else 0)


def test_parameter_count_formula():
    head = TensorNetworkHead(10, 3, hand_graph(), dim=8, num_heads=2, layer_norm=False)
    expected = 10 * 8 + 8 + 8 * unit_params(8, False) + (4 * 8 * 8 + 4 * 8) + 8 + (8 * 3 + 3)
    assert sum(p.numel() for p in head.parameters()) == expected


def reference_graph() -> nx.DiGraph:
    if not REFERENCE_GRAPH.is_file():
        pytest.skip(f"reference graph absent: {REFERENCE_GRAPH}")
    return read_graph_file(REFERENCE_GRAPH)


def test_sensor_motor_wiring_has_the_published_unit_set_and_size():
    head = TensorNetworkHead(512, 8, reference_graph(), dim=512, wiring="sensor_motor")
    assert head.reached_motors == head.num_units == 84
    assert sum(p.numel() for p in head.parameters()) == 23_204_360


def test_full_wiring_on_reference_graph():
    head = TensorNetworkHead(512, 8, reference_graph(), dim=512, wiring="full")
    assert (head.num_units, head.reached_motors) == (180, 89)  # 91 of 92 interneurons, all 89 motors
    assert sum(p.numel() for p in head.parameters()) == 180 * unit_params(512) + 1_050_624 + 512 + 4_104


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"wiring": "sparse"}, "unknown head.wiring 'sparse'; valid: full, sensor_motor"),
        ({"activation": "swish"}, "unknown head.activation 'swish'; valid: gelu, hardtanh, relu, tanh, silu, identity"),
        ({"compute": "gpu"}, "unknown head.compute 'gpu'; valid: auto, batched, looped"),
        ({"num_heads": 3}, "head.dim=8 must be divisible by head.num_heads=3"),
    ],
)
def test_bad_options_are_named(change, message):
    kwargs = dict(in_features=8, num_classes=2, graph=hand_graph(), dim=8, num_heads=2) | change
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        TensorNetworkHead(**kwargs)


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (graph_of({"i": "inter", "m": "motor"}, [("i", "m")]), "no sensor nodes"),
        (graph_of({"s": "sensor", "i": "inter", "m": "motor"}, [("s", "i"), ("i", "m")]), "no motor node is reached"),
        (graph_of({"s": "S", "m": "motor"}, [("s", "m")]), "graph node 's' has role 'S'"),
        (nx.Graph(graph_of({"s": "sensor", "m": "motor"}, [("s", "m")])), "must be directed"),
    ],
)
def test_bad_graphs_are_explained(graph, message):
    with pytest.raises(ConfigError, match=message):
        TensorNetworkHead(4, 2, graph, dim=4, num_heads=2, wiring="sensor_motor")


def test_batched_inputs_accept_mixed_precision():
    """Under CUDA autocast the embedding can be bf16 while LayerNorm outputs are fp32."""
    head = TensorNetworkHead(8, 2, hand_graph(), dim=8, num_heads=2, compute="batched")
    embedding = torch.randn(3, 8, dtype=torch.bfloat16)
    states = [torch.randn(2, 3, 8), torch.randn(2, 3, 8)]
    assert head.inputs[2](embedding, states).dtype == torch.float32


def test_auto_compute_path_is_looped_only_for_wide_heads_on_cpu():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert compute_path("auto", cpu, 64) == "batched"
    assert compute_path("auto", cpu, 512) == "looped"
    assert compute_path("auto", gpu, 512) == "batched"
    assert compute_path("looped", gpu, 64) == "looped"
