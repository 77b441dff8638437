"""Multi-head attention of one query shared by the whole batch, in closed form.

Per head h, q_h . (W_k,h m + b_k,h) / sqrt(d) = ((W_k,h^T q_h) / sqrt(d)) . m + const, and softmax ignores the
constant; the values are linear and the weights sum to 1, so attention-pooling the memory first and projecting
it once gives the same output as projecting a key and a value for every element. That replaces a (B, n, dim) x
(dim, 2 heads d) projection (as much work as two tensor-network units per motor) by (B, n, dim) x (dim, heads)
products. Both connectome heads read their motors out this way.
"""

from __future__ import annotations

import math

import torch


def pooled_query_attention(
    q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor, b_v: torch.Tensor, memory: torch.Tensor
) -> torch.Tensor:
    """Attention of the per-head query q (heads, d) over memory (B, n, dim) with key and value weights
    w_k, w_v (heads * d, dim) and value bias b_v (heads * d) -> the heads' values side by side (B, heads * d),
    before the output projection."""
    heads, d = q.shape
    dtype = memory.dtype
    key_dirs = torch.einsum("hk,hkd->hd", q.to(dtype), w_k.view(heads, d, -1).to(dtype)) / math.sqrt(d)
    weights = torch.softmax(memory @ key_dirs.T, dim=1)  # (B, n, heads)
    pooled = torch.einsum("bnh,bnd->bhd", weights, memory)
    values = torch.einsum("bhd,hkd->bhk", pooled, w_v.view(heads, d, -1).to(dtype)) + b_v.view(heads, d).to(dtype)
    return values.reshape(len(memory), heads * d)
