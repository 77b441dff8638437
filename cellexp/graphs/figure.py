"""A picture of a head's graph: roles in columns and colours, the nodes that got a unit filled in."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402

ROLE_ORDER = ("sensor", "inter", "motor")
ROLE_COLOURS = {"sensor": "#1b9e77", "inter": "#7570b3", "motor": "#d95f02"}


def layered_positions(graph: nx.DiGraph) -> dict:
    """Sensors left, interneurons middle, motors right; each column ordered by in+out degree."""
    positions = {}
    for column, role in enumerate(ROLE_ORDER):
        nodes = sorted((n for n, r in graph.nodes(data="role") if r == role), key=graph.degree, reverse=True)
        for row, node in zip(np.linspace(1, 0, len(nodes)) if nodes else [], nodes, strict=True):
            positions[node] = (column + 0.15 * ((row * 37) % 1 - 0.5), row)
    return positions


def draw_graph(graph: nx.DiGraph, reached: Collection, path: Path, title: str = "") -> Path:
    """Write a PNG of the graph; `reached` nodes are filled, the rest drawn hollow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    positions = layered_positions(graph)
    fig, ax = plt.subplots(figsize=(9, 7))
    nx.draw_networkx_edges(graph, positions, ax=ax, alpha=0.06, arrows=False, width=0.5)
    reached = set(reached)
    for role in ROLE_ORDER:
        nodes = [n for n, r in graph.nodes(data="role") if r == role]
        hit = [n for n in nodes if n in reached or role == "sensor"]
        missed = [n for n in nodes if n not in hit]
        colour = ROLE_COLOURS[role]
        nx.draw_networkx_nodes(
            graph,
            positions,
            nodelist=hit,
            node_color=colour,
            node_size=22,
            ax=ax,
            label=f"{role} ({len(hit)} of {len(nodes)} active)",
        )
        nx.draw_networkx_nodes(
            graph,
            positions,
            nodelist=missed,
            node_color="white",
            edgecolors=colour,
            node_size=22,
            linewidths=0.8,
            ax=ax,
        )
    ax.set_xticks(range(len(ROLE_ORDER)), ROLE_ORDER)
    ax.tick_params(left=False, labelleft=False)
    ax.set_title(title or f"{graph.number_of_nodes()} nodes, {graph.number_of_edges()} edges")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, -0.15), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
