"""Neuron roles: the three a head graph's nodes carry, and the names users' files give them."""

from __future__ import annotations

from collections import Counter

import networkx as nx

from cellexp.errors import ConfigError

ROLES: tuple[str, ...] = ("sensor", "inter", "motor")

# Role names accepted in users' graph files (matched case-insensitively); `NA` is how the published Elegans-AI
# graph marks interneurons.
ROLE_ALIASES: dict[str, str] = {
    "s": "sensor",
    "sensor": "sensor",
    "sensory": "sensor",
    "i": "inter",
    "na": "inter",
    "inter": "inter",
    "interneuron": "inter",
    "m": "motor",
    "motor": "motor",
}


def normalize_role(value: object) -> str:
    """Map a role name through ROLE_ALIASES, so files written for the published code (S/NA/M) work unchanged."""
    role = ROLE_ALIASES.get(str(value).strip().lower())
    if role is None:
        raise ConfigError(f"unknown role {value!r}; accepted role names (any case): {', '.join(ROLE_ALIASES)}")
    return role


def role_counts(g: nx.Graph) -> Counter:
    return Counter(role for _, role in g.nodes(data="role"))


def checked_roles(graph: nx.DiGraph) -> dict:
    """Each node's role, checked, so that a graph read without role mapping fails by name."""
    if not graph.is_directed():
        raise ConfigError("the head's graph must be directed (nx.DiGraph): signals follow edge directions")
    roles = dict(graph.nodes(data="role"))
    for node, role in roles.items():
        if role not in ROLES:
            raise ConfigError(
                f"graph node {node!r} has role {role!r}; valid: {', '.join(ROLES)} "
                "(cellexp.graphs.read_graph_file maps aliases such as S/NA/M)"
            )
    return roles
