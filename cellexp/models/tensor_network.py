"""Connectome tensor-network head, our design (Elegans-AI's idea): embedding (B, D) -> logits (B, C) through a graph.

This is cellexp's own reading of the connectome head, cleaner than the published code and not the same
function: `cellexp.models.elegans_published` computes the published head (and the intended one), quirks
included, and docs/tasks/classify.md's head table says how the three differ.

Every sensor node holds the projected embedding. Signals then travel along the graph's edges in
role phases; a node gets one trainable unit (Linear dim->dim, optional LayerNorm, activation)
the first time a signal reaches it, and its state is that unit applied to the sum of the states
of its in-neighbours that already have one. A learnable query cross-attends over the reached
motor states, and a linear layer makes the logits.

Propagation rule: `cellexp.models.propagation` (first arrival along role phases).

- wiring="full": phase A sensor -> {inter, motor}; phase B inter -> {inter, motor};
  phase C motor -> {motor}. Every reached interneuron and motor gets a unit.
- wiring="sensor_motor": phase A sensor -> {motor}; phase C motor -> {motor}; interneurons get no
  unit. It has the published network's unit set (interneurons never reach the output there), so
  its parameter count is the published one: on the published graph 84 units, 23,204,360
  parameters at dim 512 with 8 classes; but it computes our rule, not the published function.

Dead units: under first arrival a non-motor unit that no later motor draws on, directly or
through other units, cannot influence the logits (e.g. an interneuron reached in phase A whose
targets were all reached in phase A too: 73 of 180 units on the published graph with
wiring="full"). They keep their parameters, so counts follow the per-node design, but are not
computed; their gradients are zero.

Read-out: the single learnable query makes the attention computable in closed form
(`single_query_attention`) with the parameters and output of nn.MultiheadAttention but without
projecting a key and a value for every motor state.

Compute paths (`compute`): nodes reached in one step are independent, so on an accelerator
("batched") each step is one `baddbmm` over stacked weights (n_step, dim, dim) with sources
gathered by `index_select`/`index_add`; states are node-major (n_step, B, dim). On CPU with a
wide head ("looped") one (B, dim) matmul per node over views of the same stacked parameters is
faster, because every node's working set stays in cache while the batched path's elementwise
passes (LayerNorm, activation and their backward) stream step-sized tensors through memory; for
narrow heads the batched path's fewer kernels win there too (2-core CPU, batch 256: equal at dim
128, looped 1.35x faster at 256; batch 64 at dim 64: batched 2.3x faster). "auto" picks "looped"
for CPU tensors when dim > LOOPED_MIN_DIM and "batched" otherwise. `PerNodeTensorNetwork` is the plain
per-node reference that both must agree with.
"""

from __future__ import annotations

import networkx as nx
import torch
import torch.nn.functional as F
from torch import nn

from cellexp.errors import ConfigError
from cellexp.graphs import graph_stats, head_graph
from cellexp.models.attention import pooled_query_attention
from cellexp.models.propagation import PropagationPlan, Step, checked_plan
from cellexp.models.units import COMPUTE_PATHS, UnitStack, apply_unit, check_choice, compute_path, make_activation


class StepInputs(nn.Module):
    """Summed source states of one step's live units, from index buffers built once (batched path).

    Sensor sources all hold the embedding, so they enter as count x embedding. Other sources are
    gathered per source step with `index_select` and summed with out-of-place `index_add`
    (autograd-safe; its backward is a gather): O(edges x B x dim), no dense (n, n_prev) matmul.
    """

    def __init__(self, step: Step, step_and_row: list[tuple[int, int]]):
        super().__init__()
        live = range(step.live)
        counts = torch.tensor([step.sensor_sources[i] for i in live], dtype=torch.float32)
        self.register_buffer("sensor_count", counts, persistent=False)
        groups: dict[int, tuple[list[int], list[int]]] = {}
        for dst in live:
            for unit in step.sources[dst]:
                src_step, row = step_and_row[unit]
                rows, dsts = groups.setdefault(src_step, ([], []))
                rows.append(row)
                dsts.append(dst)
        self.source_steps = sorted(groups)
        for s in self.source_steps:
            self.register_buffer(f"src_{s}", torch.tensor(groups[s][0], dtype=torch.long), persistent=False)
            self.register_buffer(f"dst_{s}", torch.tensor(groups[s][1], dtype=torch.long), persistent=False)

    def forward(self, embedding: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        """embedding (B, dim), states[s] (live_s, B, dim) -> summed inputs (live, B, dim)."""
        total = self.sensor_count.to(embedding.dtype)[:, None, None] * embedding.unsqueeze(0)
        for s in self.source_steps:
            gathered = states[s].index_select(0, getattr(self, f"src_{s}"))
            dtype = torch.promote_types(total.dtype, gathered.dtype)  # autocast may mix bf16 and fp32
            total = total.to(dtype).index_add(0, getattr(self, f"dst_{s}"), gathered.to(dtype))
        return total


class _ReadOut(nn.Module):
    """Projection in; query cross-attention over motor states and the final Linear out.

    Shared by the batched head and the per-node reference so that both hold identical parameters.
    """

    def __init__(self, in_features: int, num_classes: int, dim: int, num_heads: int, dropout: float):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"head.dim={dim} must be divisible by head.num_heads={num_heads}")
        self.projection = nn.Identity() if in_features == dim else nn.Linear(in_features, dim)
        self.query = nn.Parameter(torch.randn(1, dim) * 0.02)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.final = nn.Linear(dim, num_classes)

    def logits(self, motors: torch.Tensor, closed_form: bool = True) -> torch.Tensor:
        """motors (B, n_motor, dim) -> logits (B, C); out = attention(query) + query (skip connection).

        `closed_form` computes the same attention as `self.attention(...)` without keys or values
        (see `single_query_attention`); the per-node reference calls the module itself.
        """
        if closed_form:
            attended = single_query_attention(self.attention, self.query, motors)
        else:
            query = self.query.unsqueeze(0).expand(motors.shape[0], -1, -1)
            attended = self.attention(query, motors, motors, need_weights=False)[0].squeeze(1)
        return self.final(self.dropout(attended + self.query))


def single_query_attention(mha: nn.MultiheadAttention, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """`mha(query, memory, memory)` for one query (1, dim) shared by the batch, in closed form (see
    `cellexp.models.attention`): memory (B, n, dim) -> (B, dim). `mha` must have its default biases and no
    dropout (as `_ReadOut` builds it)."""
    heads, dim = mha.num_heads, mha.embed_dim
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, _, b_v = mha.in_proj_bias.chunk(3)
    q = F.linear(query, w_q, b_q).view(heads, dim // heads)
    return mha.out_proj(pooled_query_attention(q, w_k, w_v, b_v, memory))


def _step_and_row(plan: PropagationPlan) -> list[tuple[int, int]]:
    """For each unit index, (its step's position in the plan, its row within that step)."""
    return [(s, row) for s, step in enumerate(plan.steps) for row in range(len(step.nodes))]


class TensorNetworkHead(nn.Module):
    """Connectome-shaped head: units over the graph in role phases, query attention over motors.

    Built as `TensorNetworkHead(in_features=D, num_classes=C, graph=G, ...)`; maps (B, D) -> (B, C).
    Projection Linear(D, dim) (Identity when D == dim) gives the sensor states; units follow
    `wiring` ("full" or "sensor_motor", see the module docstring); a learnable (1, dim) query attends
    (nn.MultiheadAttention, `num_heads`) over the reached motor states, out = attention + query
    (skip connection), then Linear(dim, C). `dropout` follows every unit and precedes the final
    Linear. `compute` is "auto" (looped on CPU for dim > 128, else batched), "batched" or "looped"; both
    give the same function. Stats: `num_units`, `live_units`, `reached_motors`, `steps`.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        graph: nx.DiGraph,
        dim: int = 512,
        wiring: str = "full",
        layer_norm: bool = True,
        activation: str = "gelu",
        num_heads: int = 8,
        dropout: float = 0.0,
        compute: str = "auto",
    ):
        super().__init__()
        check_choice("compute", compute, COMPUTE_PATHS)
        self.plan = checked_plan(graph, wiring)
        self.wiring, self.dim, self.compute = wiring, dim, compute
        self.activation = make_activation(activation)
        self.readout = _ReadOut(in_features, num_classes, dim, num_heads, dropout)
        self.units = nn.ModuleList(UnitStack(len(step.nodes), dim, layer_norm) for step in self.plan.steps)
        self.unit_dropout = nn.Dropout(dropout)
        step_and_row = _step_and_row(self.plan)
        self.inputs = nn.ModuleList(StepInputs(step, step_and_row) for step in self.plan.steps)
        self._register_motor_rows(step_and_row)
        self.graph = graph

    def describe(self) -> dict[str, float]:
        """The graph's statistics and what the wiring made of it, for MLflow."""
        return {
            **graph_stats(self.graph),
            "units": self.num_units,
            "live_units": self.live_units,
            "reached_motors": self.reached_motors,
            "steps": self.steps,
        }

    @property
    def unit_nodes(self) -> list:
        """The nodes that hold a unit (what a picture of the graph fills in)."""
        return self.plan.nodes

    def _register_motor_rows(self, step_and_row) -> None:
        """Per step, the rows that hold motor states, so the batched read-out gathers only those."""
        self.motor_steps = []
        for s in range(len(self.plan.steps)):
            rows = [step_and_row[u][1] for u in self.plan.motor_units if step_and_row[u][0] == s]
            if rows:
                self.motor_steps.append(s)
                self.register_buffer(f"motor_rows_{s}", torch.tensor(rows, dtype=torch.long), persistent=False)

    @property
    def num_units(self) -> int:
        return len(self.plan.nodes)

    @property
    def live_units(self) -> int:
        return self.plan.live_units

    @property
    def reached_motors(self) -> int:
        return len(self.plan.motor_units)

    @property
    def steps(self) -> int:
        return len(self.plan.steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = self.readout.projection(x)
        batched = compute_path(self.compute, x.device, self.dim) == "batched"
        motors = self._motors_batched(embedding) if batched else self._motors_looped(embedding)
        return self.readout.logits(motors)

    def _unit_out(self, y: torch.Tensor) -> torch.Tensor:
        return self.unit_dropout(self.activation(y))

    def _motors_batched(self, embedding: torch.Tensor) -> torch.Tensor:
        """One batched matmul per step over its live units -> motor states (B, n_motor, dim)."""
        states: list[torch.Tensor | None] = []
        for step, inputs, units in zip(self.plan.steps, self.inputs, self.units, strict=True):
            states.append(self._unit_out(units.batched(inputs(embedding, states))) if step.live else None)
        motors = [states[s].index_select(0, getattr(self, f"motor_rows_{s}")) for s in self.motor_steps]
        return torch.cat(motors).transpose(0, 1)

    def _motors_looped(self, embedding: torch.Tensor) -> torch.Tensor:
        """One (B, dim) matmul per live unit, in plan order -> motor states (B, n_motor, dim)."""
        scaled: dict[int, torch.Tensor] = {}  # sensor count -> count x embedding, made once
        states: dict[int, torch.Tensor] = {}
        first = 0  # unit index of the step's first node
        for step, units in zip(self.plan.steps, self.units, strict=True):
            params = units.per_node() if step.live else []
            for i in range(step.live):
                count = step.sensor_sources[i]
                if count and count not in scaled:
                    scaled[count] = embedding if count == 1 else embedding * count
                terms = ([scaled[count]] if count else []) + [states[j] for j in step.sources[i]]
                states[first + i] = self._unit_out(apply_unit(sum(terms[1:], terms[0]), *params[i]))
            first += len(step.nodes)
        return torch.stack([states[u] for u in self.plan.motor_units], dim=1)


class PerNodeTensorNetwork(nn.Module):
    """The plain reference used by tests and benchmarks: one nn.Linear (+ nn.LayerNorm) per node, in a loop.

    Same plan and parameters as `TensorNetworkHead`, one small matmul per node as in the published
    code, every reached unit computed (dead ones included); `copy_from` loads a head's weights.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        graph: nx.DiGraph,
        dim: int = 512,
        wiring: str = "full",
        layer_norm: bool = True,
        activation: str = "gelu",
        num_heads: int = 8,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.plan = checked_plan(graph, wiring)
        act = make_activation(activation)
        self.readout = _ReadOut(in_features, num_classes, dim, num_heads, dropout)
        self.units = nn.ModuleList(
            nn.Sequential(
                nn.Linear(dim, dim), nn.LayerNorm(dim) if layer_norm else nn.Identity(), act, nn.Dropout(dropout)
            )
            for _ in self.plan.nodes
        )
        self.sensor_sources = [count for step in self.plan.steps for count in step.sensor_sources]
        self.sources = [sources for step in self.plan.steps for sources in step.sources]

    @torch.no_grad()
    def copy_from(self, head: TensorNetworkHead) -> PerNodeTensorNetwork:
        """Load a head's weights: row i of step s's stack becomes unit (units before s) + i."""
        self.readout.load_state_dict(head.readout.state_dict())
        modules = iter(self.units)
        for stack in head.units:
            for i in range(stack.weight.shape[0]):
                linear, norm = next(modules)[:2]
                linear.weight.copy_(stack.weight[i])
                linear.bias.copy_(stack.bias[i])
                if stack.ln_weight is not None:
                    norm.weight.copy_(stack.ln_weight[i])
                    norm.bias.copy_(stack.ln_bias[i])
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = self.readout.projection(x)
        states: list[torch.Tensor] = []
        for unit, n_sensors, sources in zip(self.units, self.sensor_sources, self.sources, strict=True):
            inputs = [embedding] * n_sensors + [states[j] for j in sources]
            states.append(unit(torch.stack(inputs).sum(0)))
        motors = torch.stack([states[u] for u in self.plan.motor_units], dim=1)
        return self.readout.logits(motors, closed_form=False)


def graph_head(
    in_features: int,
    num_classes: int,
    graph: str = "elegans",
    graph_file: str | None = None,
    graph_seed: int = 0,
    graph_params: dict | None = None,
    **head_options,
) -> TensorNetworkHead:
    """The factory `head=elegans|ba|er|ws` names: build the graph (`graph_file` wins over `graph`), then the head."""
    built = head_graph(graph, graph_file, graph_seed, graph_params)
    return TensorNetworkHead(in_features, num_classes, built, **head_options)
