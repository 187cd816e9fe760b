"""The dense backend: ``F.scaled_dot_product_attention`` with the graph as a mask.

Full and causal patterns run without a mask (``is_causal`` for causal). A batch that replicates
one pattern ``B`` times (``AttentionGraph.batch([g] * B)``) runs as ``[B, H, L, L]`` attention
with ``g``'s mask rather than one block-diagonal ``[B*L, B*L]`` mask.

Empty rows: SDPA returns NaN for a row whose keys are all masked, so such rows are given an
all-zero additive mask (attend everything) and their output is multiplied by zero; their
gradients are therefore exactly zero too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from graphattn.graph import AttentionGraph
from graphattn.ops._common import AttentionResult, dense_mask, scatter_dense_bias

__all__ = ["dense_attention"]


def dense_attention(
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
    """SDPA over the graph's mask. Shapes as in :func:`graphattn.attention`."""
    if return_weights:
        # SDPA does not expose its probabilities: compute them with the reference math.
        from graphattn.ops.reference import reference_attention

        return reference_attention(
            q, k, v, graph, bias=bias, scale=scale, dropout=dropout, return_weights=True
        )
    pattern = graph.replicated_from
    if pattern is not None and bias is None and pattern.num_edges * graph.num_graphs == graph.num_edges:
        batch = graph.num_graphs
        qb = q.view(batch, pattern.num_queries, *q.shape[1:]).transpose(1, 2)  # [B, H, L, D]
        kb = k.view(batch, pattern.num_keys, *k.shape[1:]).transpose(1, 2)
        vb = v.view(batch, pattern.num_keys, *v.shape[1:]).transpose(1, 2)
        out = _sdpa(qb, kb, vb, pattern, None, scale, dropout)  # [B, H, L, Dv]
        return AttentionResult(out.transpose(1, 2).reshape(q.size(0), *out.shape[1::2]), None)
    out = _sdpa(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), graph, bias, scale, dropout)
    return AttentionResult(out.transpose(0, 1), None)


def _sdpa(
    q: Tensor, k: Tensor, v: Tensor, graph: AttentionGraph, bias: Tensor | None, scale: float, dropout: float
) -> Tensor:
    """q ``[..., H, Nq, D]`` -> ``[..., H, Nq, Dv]`` under ``graph`` (one sequence's pattern)."""
    if bias is None and graph.is_full:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scale)
    if bias is None and graph.is_causal:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scale)
    allowed, empty = graph.cached(("dense_allowed", q.size(-3)), lambda: _allowed(graph, q.size(-3)))
    if bias is None and empty is None:
        mask: Tensor = allowed
    else:
        # additive float mask: 0 on edges (+ bias), -inf elsewhere, all 0 on empty rows
        stats = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
        mask = torch.zeros(allowed.shape, dtype=stats, device=q.device).masked_fill(~allowed, float("-inf"))
        if bias is not None:
            mask = mask + scatter_dense_bias(bias.to(stats), graph, fill=0.0)
        mask = mask.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
    if empty is not None:
        out = out * (~empty).to(out.dtype).unsqueeze(-1)
    return out


def _allowed(graph: AttentionGraph, num_heads: int) -> tuple[Tensor, Tensor | None]:
    """Boolean mask ``[H or 1, Nq, Nk]`` with empty rows opened up, and the empty-row mask."""
    mask = dense_mask(graph, num_heads)
    empty = ~mask.any(-1)  # [H or 1, Nq]
    if not bool(empty.any()):
        return mask, None
    return mask | empty.unsqueeze(-1), empty
