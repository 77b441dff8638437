"""Graphs for the connectome-shaped heads: the C. elegans wiring (from cect), random controls in our style and
the published one, users' graph files, checks, statistics and a picture. Models take the networkx graphs these
return; nothing here knows of models."""

from cellexp.graphs.build import GRAPH_KINDS, build_graph, check_head_graph, graph_stats, head_graph
from cellexp.graphs.files import read_graph_file
from cellexp.graphs.roles import ROLES

__all__ = ["GRAPH_KINDS", "ROLES", "build_graph", "check_head_graph", "graph_stats", "head_graph", "read_graph_file"]
