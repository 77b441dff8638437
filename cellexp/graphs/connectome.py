"""The C. elegans connectome, built offline from the `cect` package: Varshney et al. 2011's wiring, Cook et al.
2019's roles, and the figures the random controls are matched to."""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import networkx as nx
import numpy as np

from cellexp.errors import DataError
from cellexp.graphs.roles import ROLES, role_counts

# Varshney et al. 2011 connection types (NeuronConnect.xls): S/Sp are chemical synapses sent by `Neuron 1`
# (monadic / polyadic); R/Rp repeat the same synapses from the receiver's side; EJ gap junctions are already listed
# in both directions; NMJ rows go to body-wall muscle, not to a neuron.
_CHEMICAL_SENDS = ("S", "Sp")
_ELECTRICAL = "EJ"
_VARSHNEY_FILE = "NeuronConnect.xls"

# Classes whose members are numbered along the body; the published graph writes them zero-padded (AS01, VD13).
_NUMBERED_CELL = re.compile(r"(AS|DA|DB|DD|VA|VB|VC|VD)0*(\d+)")


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
def connectome_targets() -> tuple[int, float, float, dict[str, int]]:
    """(nodes, density, median degree, role counts): what the random controls are matched to."""
    g = _connectome()
    counts = role_counts(g)
    return g.number_of_nodes(), nx.density(g), median_degree(g), {role: counts[role] for role in ROLES}


def median_degree(g: nx.Graph) -> float:
    """Median of in+out degree, parallel edges counted: 19 for the connectome, the value the paper quotes."""
    degrees = [degree for _, degree in g.degree()]
    return float(np.median(degrees)) if degrees else 0.0
