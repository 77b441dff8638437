"""Building blocks both connectome heads share: unit stacks, activations, and the choice of compute path.

A unit is Linear dim->dim with an optional LayerNorm; a step's (or batch's) units are stored stacked
(`UnitStack`) so that an accelerator applies them in one `baddbmm` and a CPU node by node over views.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cellexp.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "hardtanh": nn.Hardtanh,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}
COMPUTE_PATHS: tuple[str, ...] = ("auto", "batched", "looped")
LOOPED_MIN_DIM = 128  # on CPU, heads wider than this run faster node by node


def check_choice(kind: str, value: str, valid) -> None:
    """One message naming the bad head option and the valid ones."""
    if value not in valid:
        raise ConfigError(f"unknown head.{kind} {value!r}; valid: {', '.join(valid)}")


def compute_path(compute: str, device: torch.device, dim: int) -> str:
    """What `compute="auto"` means here: per-node matmuls for wide heads on CPU, step-batched otherwise."""
    if compute != "auto":
        return compute
    return "looped" if device.type == "cpu" and dim > LOOPED_MIN_DIM else "batched"


def make_activation(name: str) -> nn.Module:
    check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


class UnitStack(nn.Module):
    """The units of one step as stacked parameters: n x (Linear dim->dim, optional LayerNorm).

    Shapes mirror n separate nn.Linear / nn.LayerNorm modules (weight is (n, out, in)), so the
    parameter count matches the per-node design exactly and weights copy one to one.
    """

    def __init__(self, n: int, dim: int, layer_norm: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, dim, dim))
        self.bias = nn.Parameter(torch.empty(n, dim))
        self.ln_weight = nn.Parameter(torch.ones(n, dim)) if layer_norm else None
        self.ln_bias = nn.Parameter(torch.zeros(n, dim)) if layer_norm else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's default initialisation, unit by unit (uniform in +-1/sqrt(fan_in))."""
        bound = 1.0 / math.sqrt(self.weight.shape[-1])
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def _rows(self, n: int) -> list[torch.Tensor | None]:
        """The first n units' parameters; whole tensors when n is all (a slice's backward copies)."""
        params = [self.weight, self.bias, self.ln_weight, self.ln_bias]
        if n == self.weight.shape[0]:
            return params
        return [None if p is None else p[:n] for p in params]

    def batched(self, x: torch.Tensor) -> torch.Tensor:
        """x (n, B, dim): summed inputs of the first n units, node-major -> pre-activation outputs."""
        weight, bias, ln_weight, ln_bias = self._rows(x.shape[0])
        y = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
        if ln_weight is None:
            return y
        return torch.addcmul(ln_bias.unsqueeze(1), F.layer_norm(y, y.shape[-1:]), ln_weight.unsqueeze(1))

    def per_node(self) -> list[tuple]:
        """Per unit, (weight, bias, ln_weight, ln_bias) views of the stacked parameters (`unbind`,
        whose backward is one stack per tensor) for `apply_unit`."""
        n = self.weight.shape[0]
        params = (self.weight, self.bias, self.ln_weight, self.ln_bias)
        return list(zip(*(p.unbind(0) if p is not None else (None,) * n for p in params), strict=True))


def apply_unit(x, weight, bias, ln_weight=None, ln_bias=None) -> torch.Tensor:
    """One unit before its activation: Linear, then LayerNorm when the head has one."""
    y = F.linear(x, weight, bias)
    return y if ln_weight is None else F.layer_norm(y, y.shape[-1:], ln_weight, ln_bias)
