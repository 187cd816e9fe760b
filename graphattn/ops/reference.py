"""The dense reference backend: the test oracle every other backend is checked against.

It builds the full ``[H, Nq, Nk]`` score matrix in the input dtype, so it is only for small
inputs (tests use float64).
"""
from __future__ import annotations

import torch
from torch import Tensor

from graphattn.graph import AttentionGraph
from graphattn.ops._common import AttentionResult, dense_mask, scatter_dense_bias

__all__ = ["reference_attention"]


def reference_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: AttentionGraph,
    *,
    bias: Tensor | None,
    scale: float,
    dropout: float,
    return_weights: bool,
) -> AttentionResult:
    """softmax(q k^T * scale + bias, over each query's edges) v, computed densely.

    Shapes: q ``[Nq, H, D]``, k ``[Nk, H, D]``, v ``[Nk, H, Dv]``, bias ``[E, H]`` ->
    output ``[Nq, H, Dv]`` and weights ``[E, H]``. Empty rows give zeros.
    """
    qh, kh, vh = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # [H, N, D]
    scores = torch.matmul(qh, kh.transpose(1, 2)) * scale  # [H, Nq, Nk]
    if bias is not None:
        scores = scores + scatter_dense_bias(bias, graph, fill=0.0).to(scores.dtype)
    allowed = dense_mask(graph, q.size(1))  # [H or 1, Nq, Nk]
    scores = scores.masked_fill(~allowed, float("-inf"))
    row_max = scores.amax(-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exp = torch.exp(scores - row_max)
    total = exp.sum(-1, keepdim=True)
    probs = exp / torch.where(total > 0, total, torch.ones_like(total))  # empty rows stay 0
    weights = probs[:, graph.row, graph.col].t() if return_weights else None  # [E, H]
    if dropout > 0.0:
        probs = torch.nn.functional.dropout(probs, p=dropout, training=True)
    out = torch.matmul(probs, vh).transpose(0, 1)  # [Nq, H, Dv]
    return AttentionResult(out, weights)
