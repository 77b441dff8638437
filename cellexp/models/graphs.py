"""Graphs for the connectome tensor-network head (Elegans-AI): the C. elegans wiring, random controls, user files.

Every graph is a directed networkx graph whose nodes carry `role` in ("sensor", "inter", "motor"): the head feeds
the backbone embedding into the sensors and reads its logits from the motor neurons that signals reach, so
`build_graph` checks that at least one motor neuron is reachable from a sensor before a run starts.

The connectome is a `nx.MultiDiGraph` (a `nx.DiGraph` subclass): a neuron pair can be joined by a chemical synapse
and by a gap junction, and the published graph counts both (3,225 edges over 2,993 connected pairs). The random
controls are simple `nx.DiGraph`s sized to the connectome (node count, density, median degree, role counts).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import networkx as nx
import numpy as np

from cellexp.errors import ConfigError, DataError

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

GRAPH_KINDS: tuple[str, ...] = ("elegans", "ba", "er", "ws", "file")

# Parameters each generated kind takes through `build_graph(**params)`.
_KIND_PARAMS: dict[str, tuple[str, ...]] = {
    "elegans": (),
    "er": ("n", "density"),
    "ba": ("n", "m"),
    "ws": ("n", "k", "p"),
}

# Varshney et al. 2011 connection types (NeuronConnect.xls): S/Sp are chemical synapses sent by `Neuron 1`
# (monadic / polyadic); R/Rp repeat the same synapses from the receiver's side; EJ gap junctions are already listed
# in both directions; NMJ rows go to body-wall muscle, not to a neuron.
_CHEMICAL_SENDS = ("S", "Sp")
_ELECTRICAL = "EJ"
_VARSHNEY_FILE = "NeuronConnect.xls"

# Classes whose members are numbered along the body; the published graph writes them zero-padded (AS01, VD13).
_NUMBERED_CELL = re.compile(r"(AS|DA|DB|DD|VA|VB|VC|VD)0*(\d+)")


# ----------------------------------------------------------------------------------------------------------- roles


def normalize_role(value: object) -> str:
    """Map a role name through ROLE_ALIASES, so files written for the published code (S/NA/M) work unchanged."""
    role = ROLE_ALIASES.get(str(value).strip().lower())
    if role is None:
        raise ConfigError(f"unknown role {value!r}; accepted role names (any case): {', '.join(ROLE_ALIASES)}")
    return role


def _role_counts(g: nx.Graph) -> Counter:
    return Counter(role for _, role in g.nodes(data="role"))


# ------------------------------------------------------------------------------------------------------ connectome


def canonical_neuron_name(name: str) -> str:
    """Zero-pad numbered motor-neuron names (AS1 -> AS01) so that cect's spellings match the published graph's."""
    name = str(name).strip()
    match = _NUMBERED_CELL.fullmatch(name)
    return f"{match[1]}{int(match[2]):02d}" if match else name


def _cect_data_file(name: str) -> Path:
    """A data file shipped inside the cect package, read offline."""
    path = Path(str(importlib.resources.files("cect") / "data" / name))
    if not path.is_file():
        raise DataError(f"cect's data file {name} is missing at {path}; reinstall the `cect` package")
    return path


def _varshney_rows() -> Iterable[tuple[str, str, str, float]]:
    """(Neuron 1, Neuron 2, Type, Nbr) rows of Varshney et al. 2011's NeuronConnect.xls as shipped by cect."""
    import xlrd  # a dependency of cect, which reads the same file with it

    sheet = xlrd.open_workbook(str(_cect_data_file(_VARSHNEY_FILE))).sheet_by_index(0)
    for row in range(1, sheet.nrows):  # row 0 is the header
        pre, post, kind, count = sheet.row_values(row)[:4]
        yield str(pre).strip(), str(post).strip(), str(kind).strip(), float(count)


def _varshney_synapses(is_neuron: Callable[[str], bool]) -> dict[tuple[str, str, str], float]:
    """Neuron-to-neuron synapse counts keyed by (pre, post, "C"|"E").

    A pair's monadic (S) and polyadic (Sp) rows are summed: the weight is the total number of chemical contacts,
    as cect documents for this dataset. Receive rows (R/Rp) only repeat the sends and NMJ rows end on muscle.
    """
    weights: dict[tuple[str, str, str], float] = defaultdict(float)
    for pre, post, kind, count in _varshney_rows():
        synapse_type = "C" if kind in _CHEMICAL_SENDS else "E" if kind == _ELECTRICAL else None
        if synapse_type is None or not (is_neuron(pre) and is_neuron(post)):
            continue
        weights[canonical_neuron_name(pre), canonical_neuron_name(post), synapse_type] += count
    return weights


def _cook_roles() -> dict[str, str]:
    """Neuron roles from Cook et al. 2019 (Nature 571:63-71, Suppl. Info. 1), as listed in `cect.Cells`.

    Cook et al. sort every hermaphrodite neuron into one of sensory (SN1-6), interneuron (IN1-4, pharyngeal) or
    motor (head, sublateral, ventral cord, sex-specific, pharyngeal) classes; cect also builds its WormAtlas colour
    coding from these lists. The published Elegans-AI roles differ for 51 neurons, mostly polymodal ones (e.g. URA,
    SMB: sensory there, motor here; SIA/SIB/SAB/RME: interneurons there, motor here), see tests/test_graphs.py.
    """
    from cect import Cells

    roles: dict[str, str] = {}
    for role, cells in (
        ("sensor", Cells.SENSORY_NEURONS_COOK),
        ("inter", Cells.INTERNEURONS_COOK),
        ("motor", Cells.MOTORNEURONS_COOK),
    ):
        for cell in cells:
            roles.setdefault(canonical_neuron_name(cell), role)
    return roles


def _is_herm_neuron(name: str) -> bool:
    """cect's test for a hermaphrodite neuron (not a muscle, not the NMJ placeholder); cect spells AS1, not AS01."""
    from cect import Cells

    return bool(Cells.is_herm_neuron(Cells.remove_leading_index_zero(name)))


@functools.lru_cache(maxsize=1)
def _connectome() -> nx.MultiDiGraph:
    """Build once per process: reading the spreadsheet and importing cect take about half a second."""
    synapses = _varshney_synapses(_is_herm_neuron)
    roles = _cook_roles()
    g = nx.MultiDiGraph(
        source="Varshney et al. 2011 hermaphrodite wiring (cect data/NeuronConnect.xls)",
        roles="Cook et al. 2019 neuron classes (cect.Cells)",
    )
    for name in sorted({name for pre, post, _ in synapses for name in (pre, post)}):
        if name not in roles:
            raise DataError(f"neuron {name} of the Varshney wiring has no sensory/inter/motor class in cect.Cells")
        g.add_node(name, role=roles[name])
    for (pre, post, synapse_type), weight in sorted(synapses.items()):
        g.add_edge(pre, post, key=synapse_type, synapse_type=synapse_type, weight=weight)
    return g


def connectome_graph() -> nx.MultiDiGraph:
    """C. elegans hermaphrodite somatic wiring (Varshney et al. 2011): 279 neurons, 3,225 directed edges.

    Nodes are neuron names (zero-padded like the published graph: AS01, VD13) with `role` from Cook et al. 2019
    (see `_cook_roles`). Edges carry `synapse_type` "C" (2,194 chemical: each sending pair once) or "E" (1,031
    gap-junction entries, listed in both directions by Varshney) and `weight` (synapse count); a pair joined both
    ways keeps one edge per type (edge key = type), as the published graph does. Returns a copy of a cached graph.
    """
    return _connectome().copy()


@functools.lru_cache(maxsize=1)
def _connectome_targets() -> tuple[int, float, float, dict[str, int]]:
    """(nodes, density, median degree, role counts): what the random controls are matched to."""
    g = _connectome()
    counts = _role_counts(g)
    return g.number_of_nodes(), nx.density(g), _median_degree(g), {role: counts[role] for role in ROLES}


def _median_degree(g: nx.Graph) -> float:
    """Median of in+out degree, parallel edges counted: 19 for the connectome, the value the paper quotes."""
    degrees = [degree for _, degree in g.degree()]
    return float(np.median(degrees)) if degrees else 0.0


# ------------------------------------------------------------------------------------------------- random controls


def _node_count(n: int | None) -> int:
    n = _connectome_targets()[0] if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"random graph node count n must be a positive integer, got {n!r}")
    return n


def _scaled_role_counts(n: int) -> dict[str, int]:
    """The connectome's role counts, scaled to n nodes by largest remainder (exact when n = 279)."""
    base_n, _, _, base = _connectome_targets()
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
    density = _check_fraction("density", _connectome_targets()[1] if density is None else density)
    g = nx.gnp_random_graph(n, density, seed=seed, directed=True)
    return _with_roles(g, seed, "er", n=n, density=density)


def barabasi_albert_graph(seed: int, n: int | None = None, m: int | None = None) -> nx.DiGraph:
    """Scale-free control; m defaults to the connectome's median degree (19), edges randomly oriented.

    networkx grows an undirected graph with m(n - m) edges (4,940 for n=279, m=19); see `_orient_randomly`.
    """
    n = _node_count(n)
    m = round(_connectome_targets()[2]) if m is None else m
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
    k = 2 * math.floor(_connectome_targets()[2] / 2 + 0.5) if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or k % 2 or not 2 <= k < n:
        raise ConfigError(f"Watts-Strogatz k must be an even integer with 2 <= k < n={n}, got {k!r}")
    p = _check_fraction("Watts-Strogatz p", p)
    g = _orient_randomly(nx.watts_strogatz_graph(n, k, p, seed=seed), seed)
    return _with_roles(g, seed, "ws", n=n, k=k, p=p)


# ------------------------------------------------------------------------------------------------------ user files


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


# ----------------------------------------------------------------------------------------------- checks and entry


def check_head_graph(g: nx.Graph) -> None:
    """Refuse graphs on which the head has no input or no output: no sensors, or no motor reachable from one."""
    bad = [(node, role) for node, role in g.nodes(data="role") if role not in ROLES]
    if bad:
        raise ConfigError(f"head graph node {bad[0][0]!r} has role {bad[0][1]!r}, not one of {ROLES}")
    counts = _role_counts(g)
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
    "er": erdos_renyi_graph,
    "ba": barabasi_albert_graph,
    "ws": watts_strogatz_graph,
}


def graph_stats(g: nx.Graph) -> dict[str, int | float]:
    """Size, role counts, density and median degree, logged to MLflow so controls can be compared to the worm."""
    counts = _role_counts(g)
    return {
        "nodes": g.number_of_nodes(),
        "edges": g.number_of_edges(),
        "sensors": counts["sensor"],
        "inters": counts["inter"],
        "motors": counts["motor"],
        "density": float(nx.density(g)),
        "median_degree": _median_degree(g),
    }
