"""The head graph a config names, checked before a run starts, and its statistics for MLflow.

Every graph is a directed networkx graph whose nodes carry `role` in ("sensor", "inter", "motor"): the head feeds
the backbone embedding into the sensors and reads its logits from the motor neurons that signals reach, so
`build_graph` checks that at least one motor neuron is reachable from a sensor before a run starts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import networkx as nx

from cellexp.errors import ConfigError
from cellexp.graphs import random_graphs as rg
from cellexp.graphs.connectome import connectome_graph, median_degree
from cellexp.graphs.files import read_graph_file
from cellexp.graphs.roles import ROLES, checked_roles, role_counts

# Parameters each generated kind takes through `build_graph(**params)`.
_KIND_PARAMS: dict[str, tuple[str, ...]] = {
    "elegans": (),
    "ba": ("n", "m"),
    "er": ("n", "density"),
    "ws": ("n", "k", "p"),
    "ba_published": ("n", "k"),
    "er_published": ("n", "p"),
    "ws_published": ("n", "k", "p", "size_bug"),
}
GRAPH_KINDS: tuple[str, ...] = (*_KIND_PARAMS, "file")


def check_head_graph(g: nx.Graph) -> None:
    """Refuse graphs on which the head has no input or no output: no sensors, or no motor reachable from one."""
    checked_roles(g)
    counts = role_counts(g)
    summary = ", ".join(f"{counts[role]} {role}" for role in ROLES)
    summary = f"{g.number_of_nodes()} nodes: {summary}"
    sensors = [node for node, role in g.nodes(data="role") if role == "sensor"]
    if not sensors:
        raise ConfigError(f"head graph has no sensor neurons ({summary}); the backbone embedding enters at sensors")
    reached = set(sensors).union(*(nx.descendants(g, node) for node in sensors))
    if not any(g.nodes[node]["role"] == "motor" for node in reached):
        raise ConfigError(
            f"no motor neuron is reachable from the {len(sensors)} sensor neurons along the graph's "
            f"{g.number_of_edges()} directed edges ({summary}); the head reads its logits from reached motor neurons"
        )


def build_graph(kind: str, seed: int = 0, graph_file: str | Path | None = None, **params: object) -> nx.DiGraph:
    """The head graph a config names: kind in GRAPH_KINDS, checked by `check_head_graph`.

    Parameters that a kind does not take are an error unless None, so one config can list all of them.
    """
    if kind not in GRAPH_KINDS:
        raise ConfigError(f"unknown graph kind {kind!r}; valid kinds: {', '.join(GRAPH_KINDS)}")
    if kind == "file":
        if graph_file is None or str(graph_file) == "":
            raise ConfigError("graph kind 'file' needs graph_file=<path to a GraphML/GML/GEXF/JSON graph>")
        _check_params(kind, params, accepted=())
        g = read_graph_file(graph_file)
    else:
        if graph_file is not None:
            raise ConfigError(f"graph_file is only read with kind='file', not kind={kind!r}")
        accepted = _KIND_PARAMS[kind]
        _check_params(kind, params, accepted)
        given = {name: value for name, value in params.items() if name in accepted and value is not None}
        g = _generated(kind, seed, tuple(sorted(given.items()))).copy()
    check_head_graph(g)
    return g


@functools.lru_cache(maxsize=32)
def _generated(kind: str, seed: int, params: tuple) -> nx.DiGraph:
    """Generated graphs are a pure function of (kind, seed, params): build each once per process."""
    return _GENERATORS[kind](seed, **dict(params))


def _check_params(kind: str, params: dict[str, object], accepted: tuple[str, ...]) -> None:
    unknown = sorted(name for name, value in params.items() if name not in accepted and value is not None)
    if unknown:
        raise ConfigError(
            f"graph kind {kind!r} does not take {', '.join(unknown)}; it takes: {', '.join(accepted) or 'nothing'}"
        )


_GENERATORS: dict[str, Callable[..., nx.DiGraph]] = {
    "elegans": lambda seed: connectome_graph(),  # the wiring is fixed; the seed does not apply
    "er": rg.erdos_renyi_graph,
    "ba": rg.barabasi_albert_graph,
    "ws": rg.watts_strogatz_graph,
    "er_published": rg.erdos_renyi_published,
    "ba_published": rg.barabasi_albert_published,
    "ws_published": rg.watts_strogatz_published,
}


def graph_stats(g: nx.Graph) -> dict[str, int | float]:
    """Size, role counts, density and median degree, logged to MLflow so controls can be compared to the worm."""
    counts = role_counts(g)
    return {
        "nodes": g.number_of_nodes(),
        "edges": g.number_of_edges(),
        "sensors": counts["sensor"],
        "inters": counts["inter"],
        "motors": counts["motor"],
        "density": float(nx.density(g)),
        "median_degree": median_degree(g),
    }


def head_graph(graph: str = "elegans", graph_file: str | None = None, graph_seed: int = 0, graph_params=None):
    """The graph a head config's keys name (`graph_file` wins over `graph`)."""
    kind = "file" if graph_file else graph
    return build_graph(kind, seed=graph_seed, graph_file=graph_file, **(graph_params or {}))
