"""The published Elegans head as a function: golden outputs of the published code, its rules, sizes, controls."""

from __future__ import annotations

import random
from pathlib import Path

import networkx as nx
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cellexp.errors import CheckpointError, ConfigError
from cellexp.graphs import build_graph, read_graph_file
from cellexp.models import elegans_export
from cellexp.models.elegans_pass import EMBEDDING, Op, published_ops, schedule
from cellexp.models.elegans_published import PerNodePublished, PublishedTensorNetwork

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference"
GRAPH = SHARED / "celegans_elegansai.graphml"
EXPORTS = [SHARED / "elegans_head_published_32.safetensors", SHARED / "elegans_head_published_40to32.safetensors"]


def needs(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"reference file absent: {path}")
    return path


@pytest.fixture(scope="module")
def reference_graph() -> nx.DiGraph:
    return read_graph_file(needs(GRAPH))


def load_export(path: Path, graph, **metadata_changes):
    """The export loaded into the published head (optionally with metadata changed), its input and output."""
    tensors, metadata = elegans_export.read_export(needs(path))
    head = elegans_export.head_for_export(tensors, {**metadata, **metadata_changes}, graph)
    return head, tensors["input"], tensors["output"]


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("compute", ["batched", "looped"])
def test_published_head_reproduces_the_published_code_output(reference_graph, path, compute):
    head, x, expected = load_export(path, reference_graph)
    head.compute = compute
    with torch.no_grad():
        torch.testing.assert_close(head(x), expected, atol=1e-5, rtol=0)
        reference = PerNodePublished(x.shape[1], 8, reference_graph, dim=head.dim).copy_from(head)
        torch.testing.assert_close(reference(x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.stem)
def test_export_command_prints_the_difference_and_exits_0(path, capsys):
    assert elegans_export.main([str(needs(path)), "--graph-file", str(needs(GRAPH))]) == 0
    value = float(capsys.readouterr().out.strip().removeprefix("max_abs_diff="))
    assert value < 1e-5


def deviation(head, x, expected) -> float:
    with torch.no_grad():
        return (head(x) - expected).abs().max().item()


def test_each_published_rule_changes_the_output(reference_graph):
    """Undoing any of the published rules moves the logits far beyond the 1e-5 the golden test allows."""
    path = EXPORTS[0]
    head, x, expected = load_export(path, reference_graph)
    with torch.no_grad():
        motors, projected = head.motor_states(x)
        query_skip = head.readout(motors, head.readout.query.expand_as(projected))  # ours: attention + query
    assert (query_skip - expected).abs().max() > 1e-2
    head.variant = "intended"  # a later arrival through the node's Linear instead of its LayerNorm
    assert deviation(head, x, expected) > 1e-2
    for change in ({"activation": "gelu"}, {"num_heads": "4", "head_dim": "8"}):
        changed, _, _ = load_export(path, reference_graph, **change)
        assert deviation(changed, x, expected) > 1e-2, change


def hand_graph() -> nx.DiGraph:
    g = nx.DiGraph()
    roles = {"s1": "sensor", "s2": "sensor", "i1": "inter", "m1": "motor", "m2": "motor", "m3": "motor", "m4": "motor"}
    g.add_nodes_from((node, {"role": role}) for node, role in roles.items())
    g.add_edges_from(
        [("s1", "m2"), ("s2", "m2"), ("s1", "i1"), ("i1", "m1"), ("m2", "m1"), ("m2", "m2"), ("m2", "m3")]
        + [("m3", "m1"), ("m1", "m4"), ("s2", "s1")]
    )
    return g


def test_published_pass_order_on_a_hand_graph():
    """Vertex order, first arrival then updates, self-loops, a row that has passed does not send again, and
    interneurons that never emit (so their units are dead and dropped)."""
    ops = [(op.src, op.dst, op.first) for op in published_ops(hand_graph(), "published")]
    assert ops == [
        (EMBEDDING, "m2", True),  # s1 -> m2
        (EMBEDDING, "m2", False),  # s2 -> m2: a second sensor arrival updates m2
        ("m2", "m1", True),  # M->M in vertex order: m1 had no state when its row came
        ("m2", "m2", False),  # the self-loop updates m2 in its own row
        ("m2", "m3", True),  # ... and m3 gets the updated m2
        ("m3", "m1", False),  # m1 is updated after its row passed: m4 is never reached
    ]
    intended = [(op.src, op.dst, op.first) for op in published_ops(hand_graph(), "intended")]
    assert intended == [
        (EMBEDDING, "i1", True),
        (EMBEDDING, "m2", True),
        (EMBEDDING, "m2", False),
        ("i1", "m1", True),  # I->O: the interneuron emits
        ("m1", "m4", True),  # so m1 has a state by its row, and m4 is reached
        ("m2", "m1", False),
        ("m2", "m2", False),
        ("m2", "m3", True),
        ("m3", "m1", False),
    ]


def batch_of_each(ops: list[Op]) -> list[int]:
    where = {id(op): b for b, batch in enumerate(schedule(ops)) for op in (*batch.first, *batch.update)}
    return [where[id(op)] for op in ops]


def test_schedule_keeps_sequential_semantics():
    # a second write to a waits for the first; b reads the updated a; d is independent of everything
    ops = [Op(EMBEDDING, "a", True), Op(EMBEDDING, "a", False), Op("a", "b", True), Op(EMBEDDING, "d", True)]
    assert batch_of_each(ops) == [0, 1, 2, 0]
    # c reads a before b->a rewrites it: they share a batch (reads come first); d reads the new a
    ops = [Op(EMBEDDING, "a", True), Op(EMBEDDING, "b", True), Op("a", "c", True), Op("b", "a", False)]
    assert batch_of_each([*ops, Op("a", "d", True)]) == [0, 0, 1, 1, 2]


@pytest.mark.parametrize("variant", ["published", "intended"])
@pytest.mark.parametrize("layer_norm", [True, False])
@pytest.mark.parametrize("compute", ["batched", "looped"])
def test_compiled_head_matches_the_per_node_implementation(variant, layer_norm, compute):
    torch.manual_seed(0)
    graph = build_graph("er_published", seed=3, n=40, p=0.15)
    kwargs = dict(dim=16, variant=variant, num_heads=4, activation="tanh", layer_norm=layer_norm)
    head = PublishedTensorNetwork(12, 3, graph, compute=compute, **kwargs).double()
    with torch.no_grad():
        for stack in head.units:
            if stack.ln_weight is not None:
                stack.ln_weight.uniform_(0.5, 1.5)
                stack.ln_bias.uniform_(-0.5, 0.5)
    reference = PerNodePublished(12, 3, graph, **kwargs).double().copy_from(head)
    assert head.batches < len(head.ops)
    x = torch.randn(5, 12, dtype=torch.double)
    outputs, grads = [], []
    for module in (head, reference):
        inp = x.clone().requires_grad_()
        out = module(inp)
        (out * torch.arange(1, 4)).sum().backward()
        outputs.append(out.detach())
        grads.append(inp.grad)
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-10, rtol=1e-8)
    for node in head.unit_nodes:
        s, row = head.unit_index[node]
        expected = reference.linears[str(node)].weight.grad
        torch.testing.assert_close(head.units[s].weight.grad[row], expected, atol=1e-10, rtol=1e-8)


def unit_params(dim: int) -> int:
    return dim * dim + 3 * dim


READOUT_512 = 4 * (512 * 512 + 512) + 512 + (512 * 8 + 8)  # attention, query, final Linear


def test_published_and_intended_sizes_on_the_published_graph(reference_graph):
    published = PublishedTensorNetwork(512, 8, reference_graph, dim=512)
    assert (published.num_units, published.reached_motors) == (84, 84)
    assert sum(p.numel() for p in published.parameters()) == 23_204_360
    intended = PublishedTensorNetwork(512, 8, reference_graph, dim=512, variant="intended")
    roles = [reference_graph.nodes[node]["role"] for node in intended.unit_nodes]
    # S->O reaches 91 interneurons; I->O lets the 61 with a motor among their targets reach the output,
    # and through them all 89 motors get a state.
    assert (roles.count("inter"), roles.count("motor")) == (61, 89)
    assert sum(p.numel() for p in intended.parameters()) == 150 * unit_params(512) + READOUT_512 == 40_607_240


def test_projection_only_where_the_width_differs(reference_graph):
    head = PublishedTensorNetwork(1280, 8, reference_graph, dim=512)
    assert sum(p.numel() for p in head.parameters()) == 23_204_360 + 1280 * 512 + 512


def published_draw(seed: int, n: int = 279) -> list[str]:
    """The published generator's role draw, as utils/random_graph_utils.py writes it."""
    random.seed(seed)
    labels = random.choices(["S", "M", "NA"], weights=[98 / 279, 89 / 279, 92 / 279], k=n)
    return [{"S": "sensor", "M": "motor", "NA": "inter"}[label] for label in labels]


def undirected(g: nx.DiGraph) -> int:
    assert all(g.has_edge(v, u) for u, v in g.edges), "every edge works both ways"
    return g.number_of_edges() // 2


def roles_of(g: nx.DiGraph) -> list[str]:
    return [g.nodes[node]["role"] for node in sorted(g.nodes)]


@pytest.mark.parametrize("seed", [1, 6])
def test_published_style_er(seed):
    g = build_graph("er_published", seed=seed)
    p = 3225 / 279**2
    expected, sigma = p * 279 * 278 / 2, (p * (1 - p) * 279 * 278 / 2) ** 0.5
    assert g.number_of_nodes() == 279 and abs(undirected(g) - expected) < 5 * sigma
    assert roles_of(g) == published_draw(seed)
    assert nx.utils.graphs_equal(g, build_graph("er_published", seed=seed))
    assert set(g.edges) != set(build_graph("er_published", seed=seed + 1).edges)


@pytest.mark.parametrize("seed", [1, 2])
def test_published_style_ba(seed):
    random.seed(seed)
    m = 19 - random.randint(0, 19 // 4)  # as the published generator draws it
    g = build_graph("ba_published", seed=seed)
    assert g.number_of_nodes() == 279 and undirected(g) == m * (m - 1) // 2 + m * (279 - m)
    assert g.graph["m"] == m and roles_of(g) == published_draw(seed)


def test_published_style_ws_and_its_bug_only_behind_the_flag():
    random.seed(8)
    nei = random.randint(19 // 2, 19)
    g = build_graph("ws_published", seed=8)
    assert g.number_of_nodes() == 279 and undirected(g) == 279 * nei
    assert roles_of(g) == published_draw(8)
    bug = build_graph("ws_published", seed=8, size_bug=True)
    assert bug.number_of_nodes() == nei and undirected(bug) == nei * (nei - 1) // 2
    assert roles_of(bug) == published_draw(8)[:nei]


def test_published_head_runs_on_a_published_style_control():
    head = PublishedTensorNetwork(32, 8, build_graph("ba_published", seed=1), dim=32)
    assert head(torch.randn(3, 32)).shape == (3, 8) and head.reached_motors > 0


def write_export(tmp_path: Path, change) -> Path:
    source = needs(EXPORTS[0])
    with safe_open(str(source), framework="pt") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    change(tensors)
    path = tmp_path / "export.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("readout.w_k.weight"), "no tensor 'readout.w_k.weight'"),
        (lambda t: t.update({"final.bias": torch.zeros(9)}), "tensor 'final.bias' has shape \\(9,\\)"),
        (lambda t: t.update({"readout.query": torch.zeros(31)}), "tensor 'readout.query' has shape \\(31,\\)"),
        (lambda t: [t.pop(k) for k in list(t) if k.startswith("units.n190.")], "node 'n190' a unit, but the export"),
        (lambda t: t.pop("input"), "no tensor 'input'"),
    ],
)
def test_bad_exports_name_the_tensor_or_node(tmp_path, capsys, change, message):
    path = write_export(tmp_path, change)
    with pytest.raises(CheckpointError, match=message):
        elegans_export.max_abs_diff(path, needs(GRAPH))
    assert elegans_export.main([str(path), "--graph-file", str(GRAPH)]) == 2
    assert "error:" in capsys.readouterr().err


def test_export_on_another_graph_names_a_node(tmp_path):
    with pytest.raises(CheckpointError, match="the graph gives node 'AS01' a unit, but the export has none"):
        elegans_export.max_abs_diff(needs(EXPORTS[0]))  # cect's connectome: other node names


def test_not_an_export_exits_2(tmp_path, capsys):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    assert elegans_export.main([str(junk)]) == 2
    assert "is not a safetensors file" in capsys.readouterr().err


def test_wrong_export_output_exits_1(tmp_path, capsys):
    path = write_export(tmp_path, lambda t: t.update({"output": t["output"] + 1e-3}))
    assert elegans_export.main([str(path), "--graph-file", str(GRAPH)]) == 1


def test_bad_options_are_named():
    with pytest.raises(ConfigError, match="unknown head.variant 'paper'"):
        published_ops(hand_graph(), "paper")
    with pytest.raises(ConfigError, match="unknown head.activation 'swish'"):
        PublishedTensorNetwork(8, 2, hand_graph(), dim=8, num_heads=2, activation="swish")
    with pytest.raises(ConfigError, match="unknown head.compute 'gpu'"):
        PublishedTensorNetwork(8, 2, hand_graph(), dim=8, num_heads=2, compute="gpu")
    with pytest.raises(ConfigError, match="head.wiring=paper is retired"):
        from cellexp.models.tensor_network import TensorNetworkHead

        TensorNetworkHead(8, 2, hand_graph(), dim=8, num_heads=2, wiring="paper")
