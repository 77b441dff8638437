"""Random-graph controls for the connectome head, in two styles.

Ours (`er`, `ba`, `ws`): directed graphs on the connectome's 279 nodes, matched to its density or median degree,
with its exact role counts (Cook et al. 2019 via cect) in a seeded random order.

Published (`er_published`, `ba_published`, `ws_published`): what the published generator
(NeuRoNeLab/connectome-livecell-cls e675f76, `utils/random_graph_utils.py` and `generate_random_graphs.py`)
draws: undirected igraph graphs (every edge works both ways in the head; returned here as both directed arcs),
ER with p = edges / nodes^2 of the published graph, BA with m = 19 - U{0..4}, WS on all nodes with U{9..19}
neighbours per side, and roles drawn independently per node at the published graph's frequencies
(98 sensor, 89 motor, 92 interneuron of 279). Each `random.seed(seed)` draw of the published code (m, the WS
neighbour count, the roles) is reproduced exactly with Python's `random`; the edges come from networkx or our
own sampler, since igraph's sequence is not reproducible without igraph. The published WS generator swapped its
arguments (`Watts_Strogatz(size=U{9..19}, nei=19)`: a complete graph on 9-19 nodes): `size_bug=true` gives that.
"""

from __future__ import annotations

import math
import random

import networkx as nx
import numpy as np

from cellexp.errors import ConfigError
from cellexp.graphs.connectome import connectome_targets
from cellexp.graphs.roles import ROLES

# ------------------------------------------------------------------------------------------------------------ ours


def _node_count(n: int | None) -> int:
    n = connectome_targets()[0] if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"random graph node count n must be a positive integer, got {n!r}")
    return n


def _scaled_role_counts(n: int) -> dict[str, int]:
    """The connectome's role counts, scaled to n nodes by largest remainder (exact when n = 279)."""
    base_n, _, _, base = connectome_targets()
    quotas = {role: base[role] * n / base_n for role in ROLES}
    counts = {role: math.floor(quota) for role, quota in quotas.items()}
    by_remainder = sorted(ROLES, key=lambda role: counts[role] - quotas[role])  # stable: ties keep ROLES order
    for role in by_remainder[: n - sum(counts.values())]:
        counts[role] += 1
    return counts


def _rng(seed: int, stream: str) -> random.Random:
    """Independent, seed-reproducible streams (string seeding is stable across processes and PYTHONHASHSEED)."""
    return random.Random(f"cellexp.graphs:{stream}:{seed}")


def _with_roles(g: nx.Graph, seed: int, kind: str, **params: object) -> nx.DiGraph:
    """Give the nodes the connectome's role counts in a seeded random order, so controls differ in wiring only."""
    counts = _scaled_role_counts(g.number_of_nodes())
    roles = [role for role in ROLES for _ in range(counts[role])]
    _rng(seed, "roles").shuffle(roles)
    nx.set_node_attributes(g, dict(zip(sorted(g.nodes), roles, strict=True)), "role")
    g.graph.update(kind=kind, seed=seed, **params)
    return g


def _orient_randomly(g: nx.Graph, seed: int) -> nx.DiGraph:
    """Direct each undirected edge one way, chosen by a fair seeded coin.

    Random orientation keeps one directed edge per undirected edge, so the edge count stays comparable to the
    connectome's; making both directions would double it (BA with m=19 would give 9,880 edges against 3,225).
    """
    rng = _rng(seed, "orientation")
    directed = nx.DiGraph()
    directed.add_nodes_from(sorted(g.nodes))
    directed.add_edges_from((u, v) if rng.random() < 0.5 else (v, u) for u, v in sorted(g.edges))
    return directed


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def erdos_renyi_graph(seed: int, n: int | None = None, density: float | None = None) -> nx.DiGraph:
    """Directed G(n, p) control; p defaults to the connectome's directed density (3,225 / (279 * 278) = 0.0416).

    The density counts the connectome's C and E edges separately, so the expected edge count equals its 3,225.
    """
    n = _node_count(n)
    density = _check_fraction("density", connectome_targets()[1] if density is None else density)
    g = nx.gnp_random_graph(n, density, seed=seed, directed=True)
    return _with_roles(g, seed, "er", n=n, density=density)


def barabasi_albert_graph(seed: int, n: int | None = None, m: int | None = None) -> nx.DiGraph:
    """Scale-free control; m defaults to the connectome's median degree (19), edges randomly oriented.

    networkx grows an undirected graph with m(n - m) edges (4,940 for n=279, m=19); see `_orient_randomly`.
    """
    n = _node_count(n)
    m = round(connectome_targets()[2]) if m is None else m
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m < n:
        raise ConfigError(f"Barabasi-Albert m must be an integer with 1 <= m < n={n}, got {m!r}")
    g = _orient_randomly(nx.barabasi_albert_graph(n, m, seed=seed), seed)
    return _with_roles(g, seed, "ba", n=n, m=m)


def watts_strogatz_graph(seed: int, n: int | None = None, k: int | None = None, p: float = 0.5) -> nx.DiGraph:
    """Small-world control on all n nodes; k defaults to the even number nearest the median degree (19 -> 20).

    k must be even: networkx joins each node to k/2 neighbours per side and silently floors an odd k. The ring
    has n*k/2 edges (2,790 for n=279, k=20), rewired with probability p, then randomly oriented.
    """
    n = _node_count(n)
    k = 2 * math.floor(connectome_targets()[2] / 2 + 0.5) if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or k % 2 or not 2 <= k < n:
        raise ConfigError(f"Watts-Strogatz k must be an even integer with 2 <= k < n={n}, got {k!r}")
    p = _check_fraction("Watts-Strogatz p", p)
    g = _orient_randomly(nx.watts_strogatz_graph(n, k, p, seed=seed), seed)
    return _with_roles(g, seed, "ws", n=n, k=k, p=p)


# ------------------------------------------------------------------------------------------------------- published

# The published graph (Elegans-AI): 279 nodes, 3,225 directed edges, median in+out degree 19; role frequencies in
# the order the published generator passes them to random.choices: S, M, NA.
PUBLISHED_NODES, PUBLISHED_EDGES, PUBLISHED_MEDIAN_DEGREE = 279, 3225, 19
PUBLISHED_ROLE_WEIGHTS = (("sensor", 98 / 279), ("motor", 89 / 279), ("inter", 92 / 279))


def published_roles(seed: int, n: int) -> list[str]:
    """`random.seed(seed); random.choices([S, M, NA], weights=..., k=n)`, as the published generator draws them."""
    roles, weights = zip(*PUBLISHED_ROLE_WEIGHTS, strict=True)
    return random.Random(seed).choices(roles, weights=weights, k=n)


def _published(g: nx.Graph, seed: int, kind: str, roles: list[str], **params: object) -> nx.DiGraph:
    """Roles in node order (igraph writes its vertices 0..n-1), then both directions of every undirected edge."""
    directed = nx.DiGraph(g.to_directed())
    nx.set_node_attributes(directed, dict(zip(sorted(directed.nodes), roles, strict=False)), "role")
    directed.graph.update(kind=kind, seed=seed, style="published", undirected_edges=g.number_of_edges(), **params)
    return directed


def erdos_renyi_published(seed: int, n: int = PUBLISHED_NODES, p: float | None = None) -> nx.DiGraph:
    """Undirected G(n, p), p = 3,225 / 279^2 = 0.0414 by default (the published `num_e / (num_n * num_n)`)."""
    n = _node_count(n)
    p = _check_fraction("er_published p", PUBLISHED_EDGES / PUBLISHED_NODES**2 if p is None else p)
    g = nx.gnp_random_graph(n, p, seed=seed)
    return _published(g, seed, "er_published", published_roles(seed, n), n=n, p=p)


def barabasi_albert_published(seed: int, n: int = PUBLISHED_NODES, k: int = PUBLISHED_MEDIAN_DEGREE) -> nx.DiGraph:
    """igraph's `Barabasi(n, m)` (psumtree: each new vertex joins min(m, i) distinct earlier vertices, chosen in
    proportion to degree + 1), m = k - U{0..k//4} drawn as the published code does: 15-19 for k = 19."""
    n = _node_count(n)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ConfigError(f"ba_published k must be an integer with 1 <= k < n={n}, got {k!r}")
    m = k - random.Random(seed).randint(0, k // 4)
    rng = np.random.default_rng(seed)
    degree = np.zeros(n)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for new in range(1, n):
        if m >= new:
            targets = np.arange(new)
        else:
            weights = degree[:new] + 1.0
            targets = rng.choice(new, size=m, replace=False, p=weights / weights.sum())
        g.add_edges_from((new, int(t)) for t in targets)
        degree[targets] += 1
        degree[new] += len(targets)
    return _published(g, seed, "ba_published", published_roles(seed, n), n=n, k=k, m=m)


def watts_strogatz_published(
    seed: int, n: int = PUBLISHED_NODES, k: int = PUBLISHED_MEDIAN_DEGREE, p: float = 0.5, size_bug: bool = False
) -> nx.DiGraph:
    """A ring of n nodes, each joined to its `nei` = U{k//2..k} nearest neighbours per side, rewired with
    probability p (no loops or multi-edges): the published call with its size and nei put back in place.

    `size_bug=true` is the call as published, `Watts_Strogatz(dim=1, size=nei, nei=k, p)`: a complete graph on
    nei (9-19) nodes, which rewiring cannot change, with the first nei of the n drawn roles.
    """
    n = _node_count(n)
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k < n:
        raise ConfigError(f"ws_published k must be an integer with 2 <= k < n={n}, got {k!r}")
    p = _check_fraction("ws_published p", p)
    nei = random.Random(seed).randint(k // 2, k)
    if not isinstance(size_bug, bool):
        raise ConfigError(f"ws_published size_bug must be true or false, got {size_bug!r}")
    if 2 * nei >= n and not size_bug:
        raise ConfigError(f"ws_published: {nei} neighbours per side do not fit on a ring of n={n} nodes")
    g = nx.complete_graph(nei) if size_bug else nx.watts_strogatz_graph(n, 2 * nei, p, seed=seed)
    return _published(g, seed, "ws_published", published_roles(seed, n), n=n, k=k, p=p, nei=nei, size_bug=size_bug)
