"""The propagation rule of our connectome head: which nodes get a unit, in which order, fed by whom.

Steps are numbered globally; step 0 holds the sensors. A phase names the role that emits and the
roles that receive. It starts from every node of the emitting role that already has a state; each
step reaches the receiving-role nodes without a state that are out-neighbours of the previous
step's emitters, and the newly reached nodes of the emitting role emit in the next step, until
nothing new is reached. A node first reached at step t sums the states of its in-neighbours
computed at steps < t, over the wiring's edge kinds (self-loops are ignored, parallel edges count
once, nodes reached in the same step never feed each other). Once a node has a state it is never
recomputed (first arrival). `cellexp.models.tensor_network` says what each wiring means.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from cellexp.errors import ConfigError
from cellexp.graphs.roles import checked_roles
from cellexp.models.units import check_choice

# Per wiring, the phases in order: (emitting role, receiving roles).
WIRINGS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "full": (("sensor", ("inter", "motor")), ("inter", ("inter", "motor")), ("motor", ("motor",))),
    "sensor_motor": (("sensor", ("motor",)), ("motor", ("motor",))),
}


@dataclass(frozen=True, eq=False)
class Step:
    """Nodes first reached in one step, live ones first, and where their inputs come from.

    `live` counts the leading nodes that can influence the logits. `sensor_sources[i]` counts
    node i's sensor in-neighbours (all sensors hold the embedding); `sources[i]` lists the unit
    indices (global, in plan order) of its other in-neighbours.
    """

    nodes: tuple
    live: int
    sensor_sources: tuple[int, ...]
    sources: tuple[tuple[int, ...], ...]


@dataclass(frozen=True, eq=False)
class PropagationPlan:
    """The order in which units are reached, shared by the batched head and the per-node reference."""

    sensors: tuple
    steps: tuple[Step, ...]
    roles: dict

    @property
    def nodes(self) -> list:
        """Unit-holding nodes in unit order: step by step; live then dead, graph order within each."""
        return [node for step in self.steps for node in step.nodes]

    @property
    def motor_units(self) -> list[int]:
        """Unit indices of the reached motor nodes, in unit order (the attention's keys)."""
        return [i for i, node in enumerate(self.nodes) if self.roles[node] == "motor"]

    @property
    def live_units(self) -> int:
        return sum(step.live for step in self.steps)


def _reach(graph: nx.DiGraph, roles: dict, phases, sensors) -> list[dict]:
    """Breadth-first role phases with first arrival: per step, {node: its source nodes}, graph order."""
    edge_kinds = {(emit, recv) for emit, receivers in phases for recv in receivers}
    order = {node: i for i, node in enumerate(graph.nodes)}
    have_state = set(sensors)
    layers: list[dict] = []
    for emit, receivers in phases:
        frontier = [node for node in have_state if roles[node] == emit]
        while frontier:
            reached = {
                succ
                for node in frontier
                for succ in graph.successors(node)
                if succ not in have_state and roles[succ] in receivers
            }
            if not reached:
                break
            layer = {
                node: [
                    pred
                    for pred in graph.predecessors(node)
                    if pred != node and pred in have_state and (roles[pred], roles[node]) in edge_kinds
                ]
                for node in sorted(reached, key=order.__getitem__)
            }
            layers.append(layer)
            have_state |= reached
            frontier = [node for node in layer if roles[node] == emit]
    return layers


def _live(layers: list[dict], roles: dict) -> set:
    """Nodes that can influence the logits: reached motors and, backwards, everything feeding them."""
    live = {node for layer in layers for node in layer if roles[node] == "motor"}
    for layer in reversed(layers):
        for node, sources in layer.items():
            if node in live:
                live.update(sources)
    return live


def propagation_plan(graph: nx.DiGraph, wiring: str = "full") -> PropagationPlan:
    """Unit order and sources for `wiring` (the exact rule is in the module docstring)."""
    if wiring == "paper":
        raise ConfigError(
            "head.wiring=paper is retired: it never computed the published network. Use head=elegans_published "
            "for the published head (head.variant=intended for its slips fixed), or head.wiring=sensor_motor for "
            "our design on the published unit set"
        )
    check_choice("wiring", wiring, WIRINGS)
    roles = checked_roles(graph)
    sensors = tuple(node for node in graph.nodes if roles[node] == "sensor")
    if not sensors:
        raise ConfigError("the head's graph has no sensor nodes (role 'sensor'): nothing receives the embedding")
    layers = _reach(graph, roles, WIRINGS[wiring], sensors)
    live = _live(layers, roles)
    unit_of: dict = {}
    steps = []
    for layer in layers:
        nodes = [node for node in layer if node in live] + [node for node in layer if node not in live]
        sensor_sources = tuple(sum(roles[src] == "sensor" for src in layer[node]) for node in nodes)
        sources = tuple(tuple(sorted(unit_of[src] for src in layer[node] if roles[src] != "sensor")) for node in nodes)
        unit_of.update((node, i) for i, node in enumerate(nodes, start=len(unit_of)))
        steps.append(Step(tuple(nodes), sum(node in live for node in nodes), sensor_sources, sources))
    return PropagationPlan(sensors=sensors, steps=tuple(steps), roles=roles)


def checked_plan(graph: nx.DiGraph, wiring: str) -> PropagationPlan:
    plan = propagation_plan(graph, wiring)
    if not plan.motor_units:
        raise ConfigError(
            f"no motor node is reached from the sensors with head.wiring={wiring!r}: "
            "the attention read-out would have nothing to attend over"
        )
    return plan
