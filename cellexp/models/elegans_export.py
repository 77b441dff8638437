"""Check a head export against the published function: `python -m cellexp.models.elegans_export FILE [--graph-file G]`.

An export is a safetensors file holding an Elegans head's parameters under neutral names, an `input` batch and the
`output` the exporting code computed for it (the format of shared/reference/README.md):

    units.<node>.linear.weight / .bias, units.<node>.norm.weight / .bias   one reached unit each
    readout.query, readout.w_q/w_k/w_v/w_out.weight / .bias                the attention read-out
    projection.weight / .bias                                              only where input_dim != dim
    final.weight / .bias                                                   the classifier
    input (B, input_dim), output (B, C)

with `input_dim`, `dim`, `num_heads`, `activation` (and optionally `head_dim`, `layer_norm`) in its metadata. The
file is loaded into `PublishedTensorNetwork` built on the graph (GraphML with a role per node; default: cect's
connectome), `input` is run through it, and `max_abs_diff=<value>` against `output` is printed. Exit status 0
below 1e-5, 1 above, 2 for a file that is not such an export or does not fit the graph (the message names the
tensor or the node).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from cellexp.errors import CellexpError, CheckpointError
from cellexp.graphs import build_graph, read_graph_file
from cellexp.models.elegans_pass import VARIANTS
from cellexp.models.elegans_published import PublishedTensorNetwork

TOLERANCE = 1e-5
REQUIRED_METADATA = ("input_dim", "dim", "num_heads", "activation")
READOUT = ("w_q", "w_k", "w_v", "w_out")


def read_export(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The file's tensors and metadata, or a CheckpointError that says why it is not an export."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a safetensors file: {err}") from None
    for key in REQUIRED_METADATA:
        if key not in metadata:
            raise CheckpointError(f"{path}: metadata has no {key!r} (needs {', '.join(REQUIRED_METADATA)})")
    for key in ("input", "output", "final.weight"):
        if key not in tensors:
            raise CheckpointError(f"{path}: no tensor {key!r}")
    return tensors, metadata


def head_for_export(tensors: dict, metadata: dict, graph, variant: str = "published") -> PublishedTensorNetwork:
    """A head sized from the export's metadata and tensors, with the export's parameters in it."""
    try:
        input_dim, dim, num_heads = (int(metadata[key]) for key in ("input_dim", "dim", "num_heads"))
        head_dim = int(metadata["head_dim"]) if metadata.get("head_dim") else None
    except ValueError as err:
        raise CheckpointError(f"export metadata is not a whole number: {err}") from None
    layer_norm = str(metadata.get("layer_norm", "true")).lower() == "true"
    head = PublishedTensorNetwork(
        input_dim,
        tensors["final.weight"].shape[0],
        graph,
        dim=dim,
        variant=variant,
        num_heads=num_heads,
        head_dim=head_dim,
        activation=str(metadata["activation"]),
        layer_norm=layer_norm,
    )
    _check_units(tensors, head)
    with torch.no_grad():
        for node in head.unit_nodes:
            names = ("linear.weight", "linear.bias", "norm.weight", "norm.bias")
            for name, param in zip(names, head.unit_parameters(node), strict=True):
                if param is not None:
                    param.copy_(_tensor(tensors, f"units.{node}.{name}", param.shape))
        readout = head.readout
        readout.query.copy_(_tensor(tensors, "readout.query", readout.query.shape))
        for name in READOUT:
            for kind in ("weight", "bias"):
                param = getattr(getattr(readout, name), kind)
                param.copy_(_tensor(tensors, f"readout.{name}.{kind}", param.shape))
        for kind in ("weight", "bias"):
            param = getattr(readout.final, kind)
            param.copy_(_tensor(tensors, f"final.{kind}", param.shape))
        if input_dim != dim:
            for kind in ("weight", "bias"):
                param = getattr(head.projection, kind)
                param.copy_(_tensor(tensors, f"projection.{kind}", param.shape))
    return head.eval()


def _check_units(tensors: dict, head: PublishedTensorNetwork) -> None:
    """The export's units and the graph's reached units must be the same nodes."""
    exported = {key.split(".")[1] for key in tensors if key.startswith("units.")}
    ours = {str(node) for node in head.unit_nodes}
    missing, extra = sorted(ours - exported), sorted(exported - ours)
    if missing:
        raise CheckpointError(
            f"the graph gives node {missing[0]!r} a unit, but the export has none (no units.{missing[0]}.*; "
            f"{len(missing)} such nodes): is --graph-file the graph the export was made on?"
        )
    if extra:
        raise CheckpointError(
            f"the export has a unit for node {extra[0]!r}, which the graph never reaches ({len(extra)} such nodes): "
            "is --graph-file the graph the export was made on?"
        )


def _tensor(tensors: dict, name: str, shape: torch.Size) -> torch.Tensor:
    if name not in tensors:
        raise CheckpointError(f"the export has no tensor {name!r}")
    value = tensors[name]
    if value.shape != shape:
        raise CheckpointError(f"tensor {name!r} has shape {tuple(value.shape)}, the head needs {tuple(shape)}")
    return value


def max_abs_diff(path: Path, graph_file: Path | None = None, variant: str = "published") -> float:
    tensors, metadata = read_export(path)
    graph = read_graph_file(graph_file) if graph_file else build_graph("elegans")
    head = head_for_export(tensors, metadata, graph, variant)
    expected = tensors["output"].float()
    with torch.no_grad():
        got = head(tensors["input"].float())
    if got.shape != expected.shape:
        raise CheckpointError(f"tensor 'output' has shape {tuple(expected.shape)}, the head gives {tuple(got.shape)}")
    return (got - expected).abs().max().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cellexp.models.elegans_export", description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path, help="a head export (.safetensors)")
    parser.add_argument("--graph-file", type=Path, default=None, help="the graph it was made on (default: cect's)")
    parser.add_argument("--variant", choices=VARIANTS, default="published")
    args = parser.parse_args(argv)
    try:
        diff = max_abs_diff(args.file, args.graph_file, args.variant)
    except CellexpError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"max_abs_diff={diff:.3g}")
    return 0 if diff < TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
