"""Users' head graphs from GraphML/GML/GEXF/node-link JSON files, with a role on every node."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import networkx as nx

from cellexp.errors import ConfigError
from cellexp.graphs.roles import ROLE_ALIASES, normalize_role


def _read_node_link(path: Path) -> nx.Graph:
    """networkx node-link JSON; older files name the edge list "links", newer ones "edges"."""
    data = json.loads(path.read_text())
    edges = "links" if "links" in data and "edges" not in data else "edges"
    return nx.node_link_graph(data, edges=edges)


# Extension -> (format name for messages, reader).
_GRAPH_READERS: dict[str, tuple[str, Callable[[Path], nx.Graph]]] = {
    ".graphml": ("GraphML", nx.read_graphml),
    ".xml": ("GraphML", nx.read_graphml),
    ".gml": ("GML", nx.read_gml),
    ".gexf": ("GEXF", nx.read_gexf),
    ".json": ("node-link JSON", _read_node_link),
}
_EDGE_LIST_SUFFIXES = (".edgelist", ".edges", ".txt", ".csv", ".tsv", ".adjlist")


def _normalised_roles(g: nx.Graph, source: str) -> nx.Graph:
    """Every node must say what it is; map its role through the aliases, naming the first offending node."""
    missing = [node for node, data in g.nodes(data=True) if "role" not in data]
    if missing:
        raise ConfigError(
            f"{source}: node {missing[0]!r} has no 'role' attribute ({len(missing)} of {g.number_of_nodes()} "
            f"nodes lack one); every node needs a role, one of: {', '.join(ROLE_ALIASES)}"
        )
    for node, data in g.nodes(data=True):
        try:
            data["role"] = normalize_role(data["role"])
        except ConfigError as error:
            raise ConfigError(f"{source}: node {node!r}: {error}") from None
    return g


def read_graph_file(path: str | Path) -> nx.DiGraph:
    """A user's head graph from GraphML/GML/GEXF/node-link JSON, with a `role` on every node.

    Undirected graphs become directed both ways. Parallel edges are kept (a MultiDiGraph where the file has them).
    Edge lists are refused: they cannot carry node attributes, so the roles would be unknown.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"graph file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in _EDGE_LIST_SUFFIXES:
        raise ConfigError(
            f"{path}: an edge list has no node attributes, so it cannot say which nodes are sensor/inter/motor "
            f"neurons; save the graph as {', '.join(sorted(set(_GRAPH_READERS)))} with a 'role' on every node"
        )
    if suffix not in _GRAPH_READERS:
        raise ConfigError(
            f"{path}: unknown graph file extension {suffix!r}; supported: {', '.join(sorted(_GRAPH_READERS))}"
        )
    fmt, reader = _GRAPH_READERS[suffix]
    try:
        g = reader(path)
    except Exception as error:  # parsers raise anything from XML/JSON errors to NetworkXError and KeyError
        raise ConfigError(f"cannot parse graph file {path} as {fmt}: {type(error).__name__}: {error}") from error
    g = g if g.is_directed() else g.to_directed()
    return _normalised_roles(g, str(path))
