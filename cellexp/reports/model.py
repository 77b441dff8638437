"""A model's description for the run's record: parameter counts, what a head says of itself, its graph's picture."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from cellexp.graphs.figure import draw_graph


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def log_model_description(tracker, model: nn.Module, run_dir: Path) -> None:
    """Parameter counts of the whole model and its parts; heads that have more to say (a graph's statistics) say it
    through `describe()`, and graph-shaped heads are drawn with the nodes that hold a unit filled in."""
    parts = {"total": model, "backbone": model.backbone, "head": model.head}
    metrics = {f"model/{name}_params": parameter_count(part) for name, part in parts.items()}
    metrics["model/trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    describe = getattr(model.head, "describe", None)
    if describe is not None:
        metrics.update({f"head/{key}": value for key, value in describe().items()})
    tracker.log_metrics(metrics)
    head = model.head
    if hasattr(head, "graph") and hasattr(head, "unit_nodes"):
        title = f"{head.num_units} units, {head.reached_motors} motors reached"
        tracker.log_artifact(draw_graph(head.graph, head.unit_nodes, run_dir / "head" / "graph.png", title), "head")
