"""The Elegans-AI tensor-network head as the published code computes it, and as it was meant.

Published: NeuRoNeLab/connectome-livecell-cls at e675f76, `FunctionalTensorNetwork` inside
`elegans_vision.TensorNetworkHead` with the `tensornet_config` of every `_configs/elegans_*.yaml`
(processing order `S->O,I->O,M->M`, `reapply_unit_synapses` SS/SI/SM/II/IM/MM, additive skips,
`norm_tensor_unit` true, attention `learn-q-cross-skip`, `norm_output` false, hardtanh, 8 heads).
Its forward, restated (`variant="published"`):

- Every sensor holds the (projected) input x.
- S->O: one pass over (source, target) pairs in vertex order. A motor's first arrival s gives
  act(LN(W s + b)); each later arrival into its state m gives m = LN(act(LN(s)) + m): the node's own
  LayerNorm stands where its Linear was meant (`neuron_layer[1]` in `functional_tensornet.py`).
  Interneurons get states the same way, but I->O only lets nodes whose role is 'I' emit, and the
  published graph labels its interneurons 'NA': no interneuron ever reaches the output.
- M->M: one pass over (source, target) pairs of motors in vertex order, each reading the source's
  state as it is at that moment (a source updated after its row has passed does not send again),
  self-loops included; a motor without a state gets its first arrival, one with a state the update.
- A learnable query, N(0, 1), cross-attends (w_q/w_k/w_v/w_out, softmax(q.k / sqrt(head_dim))) over
  the reached motors' states in vertex order; the attention output plus x goes to the final Linear.

`variant="intended"` is the same network with the two slips fixed: interneurons emit in I->O (to
motors; their edges to sensors change states that nothing reads later), and a later arrival gives
m = LN(act(W s + b) + m). On the published graph at dim 512 with 8 classes: published 84 units
(23,204,360 parameters), intended 150 units (61 interneurons, 89 motors: 40,607,240).

Only units on the output path hold parameters, as in the published code (its symbolic model
registers the modules the output uses). Speed: the pass is compiled once into batches of unit
applications that can run together (`cellexp.models.elegans_pass.schedule`): all S->O first
arrivals are one matmul, and order-dependent updates are grouped as far as their read/write
dependencies allow. `PerNodePublished` is the plain per-node eager implementation of the same function.
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import torch
import torch.nn.functional as F
from torch import nn

from cellexp.errors import ConfigError
from cellexp.graphs import graph_stats, head_graph
from cellexp.models.attention import pooled_query_attention
from cellexp.models.elegans_pass import EMBEDDING, Op, published_ops, schedule
from cellexp.models.units import ACTIVATIONS, COMPUTE_PATHS, UnitStack, check_choice, compute_path


def _affine_norm(y: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
    """LayerNorm of (k, B, dim) rows with per-row affine (k, dim); identity when the head has none."""
    if weight is None:
        return y
    return torch.addcmul(bias.unsqueeze(1), F.layer_norm(y, y.shape[-1:]), weight.unsqueeze(1))


def _by_target(ops: Sequence[Op], rows: torch.Tensor) -> dict:
    """{op.dst: its row} for the rows (k, B, dim) that a batch of ops computed."""
    return dict(zip((op.dst for op in ops), rows.unbind(0), strict=True))


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack states that autocast may have left in different dtypes (bf16 input, fp32 LayerNorm outputs)."""
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        tensors = [t.float() for t in tensors]
    return torch.stack(tensors)


class QueryAttentionReadout(nn.Module):
    """`learn-q-cross-skip` then the final Linear: logits = final(attention(query, motors) + x).

    The attention is the published `CustomMultiHeadAttention` (separate w_q, w_k, w_v, w_out; heads of
    `head_dim`; scores scaled by 1/sqrt(head_dim)); its query is one learnable vector, N(0, 1) as
    published, shared by the batch, so it is computed in closed form without a key or value per motor
    (`forward`, see `cellexp.models.attention`); `reference` computes it the textbook way.
    """

    def __init__(self, dim: int, num_classes: int, num_heads: int, head_dim: int | None):
        super().__init__()
        if head_dim is None:
            if dim % num_heads:
                raise ConfigError(f"head.dim={dim} must be divisible by head.num_heads={num_heads} (or give head_dim)")
            head_dim = dim // num_heads
        self.num_heads, self.head_dim = num_heads, head_dim
        inner = num_heads * head_dim
        self.query = nn.Parameter(torch.randn(dim))
        self.w_q, self.w_k, self.w_v = (nn.Linear(dim, inner) for _ in range(3))
        self.w_out = nn.Linear(inner, dim)
        self.final = nn.Linear(dim, num_classes)

    def forward(self, motors: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """motors (B, n, dim), x (B, dim) -> logits (B, C), the attention in closed form."""
        q = self.w_q(self.query.to(motors.dtype)).view(self.num_heads, self.head_dim)
        attended = self.w_out(pooled_query_attention(q, self.w_k.weight, self.w_v.weight, self.w_v.bias, motors))
        return self.final(attended + x.to(attended.dtype))

    def reference(self, motors: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The same, as the published module computes it: project keys and values of every motor."""
        heads, d, n = self.num_heads, self.head_dim, motors.shape[1]
        q = self.w_q(self.query).view(1, heads, 1, d).expand(len(motors), -1, -1, -1)
        k = self.w_k(motors).view(-1, n, heads, d).transpose(1, 2)
        v = self.w_v(motors).view(-1, n, heads, d).transpose(1, 2)
        attention = torch.softmax(q @ k.transpose(-1, -2) * d**-0.5, dim=-1)
        attended = self.w_out((attention @ v).transpose(1, 2).reshape(len(motors), heads * d))
        return self.final(attended + x)


class _PublishedBase(nn.Module):
    """What both implementations share: the pass, the projection, the read-out and the options."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        graph: nx.DiGraph,
        dim: int,
        variant: str,
        num_heads: int,
        head_dim: int | None,
        activation: str,
        layer_norm: bool,
    ):
        super().__init__()
        check_choice("activation", activation, ACTIVATIONS)
        self.variant, self.dim, self.layer_norm = variant, dim, layer_norm
        self.ops = published_ops(graph, variant)
        roles = dict(graph.nodes(data="role"))  # checked by published_ops
        order = {node: i for i, node in enumerate(graph.nodes)}
        self.motors = sorted({op.dst for op in self.ops if roles[op.dst] == "motor"}, key=order.__getitem__)
        if not self.motors:
            raise ConfigError(
                f"no motor node is reached from the sensors with head.variant={variant}: "
                "the attention read-out would have nothing to attend over"
            )
        # units in order of first arrival
        self.unit_nodes = [op.dst for op in self.ops if op.first]
        self.activation = ACTIVATIONS[activation]()
        self.projection = nn.Identity() if in_features == dim else nn.Linear(in_features, dim)
        self.readout = QueryAttentionReadout(dim, num_classes, num_heads, head_dim)
        self.graph = graph

    @property
    def num_units(self) -> int:
        return len(self.unit_nodes)

    @property
    def reached_motors(self) -> int:
        return len(self.motors)


class PublishedTensorNetwork(_PublishedBase):
    """The published head's function (or the intended one), compiled: maps (B, in_features) -> (B, C).

    Units are stacked per batch of first arrivals (`UnitStack`, the shapes of one nn.Linear and one nn.LayerNorm
    per node); `unit_index[node]` is (stack, row). Batch 0 holds every S->O first arrival: one wide matmul of x.
    A later arrival from x brings the same term each time (act(LN_j(x)) published, act(W_j x + b_j) intended),
    computed once per unit. `compute`: "batched" runs each batch's other ops together (one baddbmm, stacked
    states; the accelerator path), "looped" runs them one by one on views of the stacks (faster on CPU for wide
    heads, where stacking costs more memory traffic than it saves), "auto" picks as `compute_path` does.
    Stats: `num_units`, `reached_motors`, `batches` (sequential steps of the compiled pass).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        graph: nx.DiGraph,
        dim: int = 512,
        variant: str = "published",
        num_heads: int = 8,
        head_dim: int | None = None,
        activation: str = "hardtanh",
        layer_norm: bool = True,
        compute: str = "auto",
    ):
        super().__init__(in_features, num_classes, graph, dim, variant, num_heads, head_dim, activation, layer_norm)
        check_choice("compute", compute, COMPUTE_PATHS)
        self.compute = compute
        self.plan = schedule(self.ops)
        stacks = [batch.first for batch in self.plan if batch.first]
        self.units = nn.ModuleList(UnitStack(len(first), dim, layer_norm) for first in stacks)
        self.unit_index = {op.dst: (s, row) for s, first in enumerate(stacks) for row, op in enumerate(first)}
        # the units a later arrival from x reaches: all of them were first reached in batch 0 (stack 0)
        self.embedding_updates = sorted(
            {op.dst for op in self.ops if not op.first and op.src is EMBEDDING}, key=self.unit_nodes.index
        )
        rows = [self.unit_index[node][1] for node in self.embedding_updates]
        self.register_buffer("embedding_rows", torch.tensor(rows, dtype=torch.long), persistent=False)

    @property
    def batches(self) -> int:
        return len(self.plan)

    def describe(self) -> dict[str, float]:
        """The graph's statistics and what the pass made of it, for MLflow (`steps`: sequential batches)."""
        stats = {"units": self.num_units, "reached_motors": self.reached_motors, "steps": self.batches}
        return {**graph_stats(self.graph), **stats}

    def unit_parameters(self, node) -> tuple[torch.Tensor | None, ...]:
        """(weight, bias, ln_weight, ln_bias) rows of a node's unit (ln_* None without LayerNorm)."""
        s, row = self.unit_index[node]
        stack = self.units[s]
        return tuple(None if p is None else p[row] for p in (stack.weight, stack.bias, stack.ln_weight, stack.ln_bias))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.readout(*self.motor_states(inputs))

    def motor_states(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reached motors' final states (B, n_motor, dim) in vertex order, and the projected input x."""
        x = self.projection(inputs)
        first = self.plan[0].first
        y0 = F.linear(x, self.units[0].weight.view(-1, self.dim), self.units[0].bias.view(-1))
        y0 = y0.view(len(x), len(first), self.dim).transpose(0, 1)  # (k0, B, dim) pre-LayerNorm
        stack0 = self.units[0]
        states = _by_target(first, self._finish(y0, stack0.ln_weight, stack0.ln_bias))
        terms = dict(zip(self.embedding_updates, self._embedding_terms(x, y0).unbind(0), strict=True))
        run = self._batched if compute_path(self.compute, x.device, self.dim) == "batched" else self._looped
        run(x, states, terms)
        return _stack([states[m] for m in self.motors]).transpose(0, 1), x

    def _finish(self, y, ln_weight, ln_bias) -> torch.Tensor:
        """A first arrival's act(LN(y)), y = W s + b."""
        return self.activation(_affine_norm(y, ln_weight, ln_bias))

    def _embedding_terms(self, x: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        """What each later arrival from x adds, once per unit: act(LN_j(x)) published, act(W_j x + b_j) intended."""
        rows = self.embedding_rows
        if self.variant == "published" and self.layer_norm:
            ln_weight, ln_bias = (p.index_select(0, rows) for p in (self.units[0].ln_weight, self.units[0].ln_bias))
            return self.activation(_affine_norm(x.unsqueeze(0).expand(len(rows), -1, -1), ln_weight, ln_bias))
        return self.activation(y0.index_select(0, rows))

    def _batched(self, x: torch.Tensor, states: dict, terms: dict) -> None:
        """Batches after the first, each as one stacked computation."""
        rows = self._per_unit_rows()
        for b, batch in enumerate(self.plan[1:], start=1):
            written = {}
            if batch.first:
                stack = self.units[self._stack_of(b)]
                src = _stack([states[op.src] for op in batch.first])
                weight = stack.weight.transpose(1, 2).to(src.dtype)
                y = torch.baddbmm(stack.bias.unsqueeze(1).to(src.dtype), src, weight)
                written.update(_by_target(batch.first, self._finish(y, stack.ln_weight, stack.ln_bias)))
            if batch.update:
                written.update(_by_target(batch.update, self._updates(batch.update, states, terms, rows)))
            states.update(written)

    def _updates(self, ops: Sequence[Op], states: dict, terms: dict, rows) -> torch.Tensor:
        """m = LN(t + m) for a batch of later arrivals, t their terms (computed together where not from x)."""
        weight, bias, ln_weight, ln_bias = rows
        computed = [op for op in ops if op.src is not EMBEDDING]
        arrived = {}
        if computed:
            src = _stack([states[op.src] for op in computed])
            if self.variant == "published" and self.layer_norm:
                g, beta = (torch.stack([p[op.dst] for op in computed]) for p in (ln_weight, ln_bias))
                t = self.activation(_affine_norm(src, g, beta))
            else:  # intended; also published without LayerNorm, where the node's Linear is applied again
                w = torch.stack([weight[op.dst] for op in computed]).transpose(1, 2).to(src.dtype)
                t = self.activation(torch.baddbmm(torch.stack([bias[op.dst] for op in computed]).unsqueeze(1), src, w))
            arrived = _by_target(computed, t)
        t = _stack([terms[op.dst] if op.src is EMBEDDING else arrived[op.dst] for op in ops])
        m = _stack([states[op.dst] for op in ops])
        if ln_weight is None:
            return t + m
        g, beta = (torch.stack([p[op.dst] for op in ops]) for p in (ln_weight, ln_bias))
        return _affine_norm(t + m, g, beta)

    def _looped(self, x: torch.Tensor, states: dict, terms: dict) -> None:
        """Ops after the first batch one at a time, in a valid sequential order, on views of the stacks."""
        weight, bias, ln_weight, ln_bias = self._per_unit_rows()

        def norm(y, node):
            return y if ln_weight is None else F.layer_norm(y, (self.dim,), ln_weight[node], ln_bias[node])

        for batch in self.plan[1:]:
            written = {}
            for op in batch.first:
                written[op.dst] = self.activation(norm(F.linear(states[op.src], weight[op.dst], bias[op.dst]), op.dst))
            for op in batch.update:
                if op.src is EMBEDDING:
                    t = terms[op.dst]
                elif self.variant == "published" and ln_weight is not None:
                    t = self.activation(norm(states[op.src], op.dst))
                else:
                    t = self.activation(F.linear(states[op.src], weight[op.dst], bias[op.dst]))
                written[op.dst] = norm(t + states[op.dst], op.dst)
            states.update(written)

    def _stack_of(self, batch: int) -> int:
        """The UnitStack of the units first reached in `batch`."""
        return sum(1 for b in self.plan[:batch] if b.first)

    def _per_unit_rows(self) -> list[dict | None]:
        """Per parameter kind, {node: its row}, views of the stacks made once per forward (their backward is one
        stack per parameter, however many ops use them)."""
        kinds = []
        for name in ("weight", "bias", "ln_weight", "ln_bias"):
            if getattr(self.units[0], name) is None:
                kinds.append(None)
                continue
            views = [getattr(stack, name).unbind(0) for stack in self.units]
            kinds.append({node: views[s][row] for node, (s, row) in self.unit_index.items()})
        return kinds


class PerNodePublished(_PublishedBase):
    """The plain per-node eager implementation: one nn.Linear (+ nn.LayerNorm) per unit, ops in sequence,
    textbook attention. Tests and benchmarks check `PublishedTensorNetwork` against it; `copy_from` loads
    a batched head's weights."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        graph: nx.DiGraph,
        dim: int = 512,
        variant: str = "published",
        num_heads: int = 8,
        head_dim: int | None = None,
        activation: str = "hardtanh",
        layer_norm: bool = True,
    ):
        super().__init__(in_features, num_classes, graph, dim, variant, num_heads, head_dim, activation, layer_norm)
        self.linears = nn.ModuleDict({_key(node): nn.Linear(dim, dim) for node in self.unit_nodes})
        self.norms = nn.ModuleDict({_key(node): nn.LayerNorm(dim) for node in self.unit_nodes} if layer_norm else {})

    @torch.no_grad()
    def copy_from(self, head: PublishedTensorNetwork) -> PerNodePublished:
        self.projection.load_state_dict(head.projection.state_dict())
        self.readout.load_state_dict(head.readout.state_dict())
        for node in self.unit_nodes:
            weight, bias, ln_weight, ln_bias = head.unit_parameters(node)
            self.linears[_key(node)].weight.copy_(weight)
            self.linears[_key(node)].bias.copy_(bias)
            if self.layer_norm:
                self.norms[_key(node)].weight.copy_(ln_weight)
                self.norms[_key(node)].bias.copy_(ln_bias)
        return self

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.projection(inputs)
        norm = (lambda node, y: self.norms[_key(node)](y)) if self.layer_norm else (lambda node, y: y)
        states: dict = {}
        for op in self.ops:
            s = x if op.src is EMBEDDING else states[op.src]
            linear = self.linears[_key(op.dst)]
            if op.first:
                states[op.dst] = self.activation(norm(op.dst, linear(s)))
            elif self.variant == "published" and self.layer_norm:
                states[op.dst] = norm(op.dst, self.activation(norm(op.dst, s)) + states[op.dst])
            else:
                states[op.dst] = norm(op.dst, self.activation(linear(s)) + states[op.dst])
        motors = torch.stack([states[m] for m in self.motors], dim=1)
        return self.readout.reference(motors, x)


def _key(node) -> str:
    """ModuleDict keys are strings without dots."""
    return str(node).replace(".", "_")


def published_graph_head(
    in_features: int,
    num_classes: int,
    graph: str = "elegans",
    graph_file: str | None = None,
    graph_seed: int = 0,
    graph_params: dict | None = None,
    **head_options,
) -> PublishedTensorNetwork:
    """The factory `head=elegans_published` names: build the graph, then the published (or intended) head."""
    built = head_graph(graph, graph_file, graph_seed, graph_params)
    return PublishedTensorNetwork(in_features, num_classes, built, **head_options)
