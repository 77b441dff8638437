"""The published Elegans pass as a list of unit applications (`published_ops`), and its batch schedule.

`cellexp.models.elegans_published` states the pass and computes it; this module only decides which
unit applies to what, in which order, and which applications may run together.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import networkx as nx

from cellexp.graphs.roles import checked_roles
from cellexp.models.units import check_choice

VARIANTS: tuple[str, ...] = ("published", "intended")
EMBEDDING = None  # an op's source when it reads the input every sensor holds


@dataclass(frozen=True)
class Op:
    """One unit application of the published pass: `dst` takes in `src`'s current state (EMBEDDING: x)."""

    src: Hashable | None
    dst: Hashable
    first: bool  # dst had no state yet: its first arrival


def published_ops(graph: nx.DiGraph, variant: str = "published") -> list[Op]:
    """The pass of the module docstring as a list of unit applications, in the published order.

    Parallel edges count once (the published code only asks whether an edge exists); an undirected
    graph works both ways.
    """
    check_choice("variant", variant, VARIANTS)
    g = graph if graph.is_directed() else graph.to_directed()
    roles = checked_roles(g)
    order = {node: i for i, node in enumerate(g.nodes)}
    targets = {node: sorted(set(g.successors(node)), key=order.__getitem__) for node in g.nodes}
    has_state = {node for node, role in roles.items() if role == "sensor"}
    ops: list[Op] = []

    def arrive(src, dst) -> None:
        ops.append(Op(src, dst, dst not in has_state))
        has_state.add(dst)

    for node in g.nodes:  # S->O
        if roles[node] == "sensor":
            for dst in targets[node]:
                if roles[dst] in ("inter", "motor"):
                    arrive(EMBEDDING, dst)
    if variant == "intended":  # I->O: interneurons emit to motors
        for node in g.nodes:
            if roles[node] == "inter" and node in has_state:
                for dst in targets[node]:
                    if roles[dst] == "motor":
                        arrive(node, dst)
    for node in g.nodes:  # M->M, a motor's state read as it is when its row comes
        if roles[node] == "motor" and node in has_state:
            for dst in targets[node]:
                if roles[dst] == "motor":
                    arrive(node, dst)
    return _live(ops, roles)


def _live(ops: list[Op], roles: dict) -> list[Op]:
    """Drop what cannot reach the output: ops into nodes that no motor state depends on."""
    live = {op.dst for op in ops if roles[op.dst] == "motor"}
    for op in reversed(ops):
        if op.dst in live and op.src is not EMBEDDING:
            live.add(op.src)
    return [op for op in ops if op.dst in live]


@dataclass(frozen=True)
class Batch:
    """Ops that can run together: every read happens before every write, and no two write the same node."""

    first: tuple[Op, ...]
    update: tuple[Op, ...]


def schedule(ops: Sequence[Op]) -> list[Batch]:
    """Greedy list scheduling that keeps the sequential semantics.

    An op goes after the last write to its source (read after write) and to its target (write after
    write), and no earlier than the last read of its target (a read in the same batch happens first).
    """
    last_write: dict = {}
    last_read: dict = {}
    placed: list[list[Op]] = []
    for op in ops:
        batch = max(
            last_write.get(op.src, -1) + 1 if op.src is not EMBEDDING else 0,
            last_write.get(op.dst, -1) + 1,
            last_read.get(op.dst, 0),
        )
        while len(placed) <= batch:
            placed.append([])
        placed[batch].append(op)
        last_write[op.dst] = batch
        if op.src is not EMBEDDING:
            last_read[op.src] = max(last_read.get(op.src, 0), batch)
    return [Batch(tuple(o for o in ops if o.first), tuple(o for o in ops if not o.first)) for ops in placed]
