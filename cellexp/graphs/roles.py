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
