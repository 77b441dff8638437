"""Multiple-instance learning over a sequence's patch embeddings: gated attention (Ilse et al. 2018).

A bag is every patch of every frame of one sequence (or of a training sample of its frames). Bags of
different sizes go through together, padded, with a mask; attention is a softmax over the real instances
only, so padding changes nothing.
"""

from __future__ import annotations

import torch
from torch import nn


class GatedAttentionMIL(nn.Module):
    """a_i = softmax_i(w^T (tanh(V h_i) * sigmoid(U h_i))); bag = sum_i a_i h_i; logits = classifier(norm(bag)).

    With `standardize`, instances are standardised first by `feature_mean` and `feature_std` (buffers, set from
    the training patches with `fit_standardization`), so a saved model carries what it needs to embed new data
    alike. `bag_norm` layer-normalises the pooled bag: a weighted mean of standardised instances is much smaller
    than they are, and its scale varies with how spread the attention is. CLANet's published aggregator
    (`models/MIL_aggregator.py`, GatedAttention) is this with standardize, dropout and bag_norm off."""

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        attention_dim: int = 128,
        dropout: float = 0.0,
        bag_norm: bool = True,
        standardize: bool = True,
    ):
        super().__init__()
        self.standardizes = standardize
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        self.dropout = nn.Dropout(dropout)
        self.value = nn.Linear(in_dim, attention_dim)
        self.gate = nn.Linear(in_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)
        self.norm = nn.LayerNorm(in_dim) if bag_norm else nn.Identity()
        self.classifier = nn.Linear(in_dim, num_classes)

    @torch.no_grad()
    def fit_standardization(self, instances: torch.Tensor) -> None:
        """Per-feature mean and standard deviation of the training instances (N, in_dim); kept at 0 and 1 (the
        identity) when the model does not standardise."""
        if not self.standardizes:
            return
        self.feature_mean.copy_(instances.mean(0))
        self.feature_std.copy_(instances.std(0, correction=0) + 1e-6)

    def standardize(self, instances: torch.Tensor) -> torch.Tensor:
        return (instances - self.feature_mean) / self.feature_std

    def forward(self, instances: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """instances (B, N, in_dim) raw embeddings, mask (B, N) True for real instances -> logits (B, C),
        attention (B, N)."""
        h = self.dropout(self.standardize(instances))
        scores = self.score(torch.tanh(self.value(h)) * torch.sigmoid(self.gate(h))).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        attention = scores.softmax(dim=1)
        bag = torch.einsum("bn,bnd->bd", attention, h)
        return self.classifier(self.norm(bag)), attention


def pad_bags(bags: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bags of (n_i, d) instances into (B, max n_i, d) zeros-padded, and the (B, max n_i) mask of real ones."""
    longest = max(len(b) for b in bags)
    out = bags[0].new_zeros((len(bags), longest, bags[0].shape[1]))
    mask = torch.zeros((len(bags), longest), dtype=torch.bool, device=bags[0].device)
    for i, bag in enumerate(bags):
        out[i, : len(bag)] = bag
        mask[i, : len(bag)] = True
    return out, mask
