"""The dense backend: ``F.scaled_dot_product_attention`` with the graph as a mask.

* Full and causal patterns run without a mask (``is_causal`` for causal).
* A batch that replicates one pattern ``B`` times (``AttentionGraph.batch([g] * B)``) runs as
  ``[B, H, L, S]`` attention with ``g``'s ``[L, S]`` mask shared by the batch.
* Any other batch (``query_ptr`` / ``key_ptr`` set) runs as ``[B, H, L, S]`` attention with a
  ``[B, 1 or H, L, S]`` mask, never one block-diagonal ``[B*L, B*S]`` mask: equal-size graphs
  (e.g. a replicated pattern with padded keys removed) directly, unequal ones (a batch of
  molecules) scattered into slots padded to the largest graph.

Empty rows: SDPA returns NaN for a row whose keys are all masked, so such rows get an all-zero
additive mask (attend everything) and their output is multiplied by zero; their gradients are
therefore exactly zero too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from graphattn.graph import AttentionGraph
from graphattn.ops._common import AttentionResult, dense_mask, stats_dtype

__all__ = ["dense_attention", "padded_blocks"]


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

        return reference_attention(q, k, v, graph, bias=bias, scale=scale, dropout=dropout, return_weights=True)
    heads = q.size(1)
    pattern = graph.replicated_from
    if pattern is not None and bias is None:
        batch, length, keys = graph.num_graphs, pattern.num_queries, pattern.num_keys
        layout: tuple[Tensor, Tensor | None, Tensor | None] | None = None
        if not (pattern.is_full or pattern.is_causal):
            layout = pattern.cached(("dense_layout", heads), lambda: _single_layout(pattern, heads))
            layout = (layout[0].unsqueeze(0), None if layout[1] is None else layout[1].unsqueeze(0), layout[2])
        return _run_blocked(q, k, v, pattern, batch, length, keys, layout, None, scale, dropout)
    blocks = padded_blocks(graph)
    if blocks is not None:
        batch, length, keys = blocks
        layout = graph.cached(("dense_block_layout", heads), lambda: _block_layout(graph, blocks, heads))
        positions = graph.cached("dense_block_positions", lambda: _block_positions(graph, length, keys))
        if positions is None:
            return _run_blocked(q, k, v, graph, batch, length, keys, layout, bias, scale, dropout)
        # unequal graphs: scatter nodes into [B * L] / [B * S] slots, attend, gather back
        q_pos, k_pos = positions
        qp = q.new_zeros(batch * length, *q.shape[1:]).index_copy(0, q_pos, q)
        kp = k.new_zeros(batch * keys, *k.shape[1:]).index_copy(0, k_pos, k)
        vp = v.new_zeros(batch * keys, *v.shape[1:]).index_copy(0, k_pos, v)
        out = _run_blocked(qp, kp, vp, graph, batch, length, keys, layout, bias, scale, dropout).output
        return AttentionResult(out.index_select(0, q_pos), None)
    layout = None
    if bias is not None or not (graph.is_full or graph.is_causal):
        layout = graph.cached(("dense_layout", heads), lambda: _single_layout(graph, heads))
        layout = (layout[0].unsqueeze(0), None if layout[1] is None else layout[1].unsqueeze(0), layout[2])
    return _run_blocked(q, k, v, graph, 1, graph.num_queries, graph.num_keys, layout, bias, scale, dropout)


def _run_blocked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: AttentionGraph,
    batch: int,
    length: int,
    keys: int,
    layout: tuple[Tensor, Tensor | None, Tensor | None] | None,
    bias: Tensor | None,
    scale: float,
    dropout: float,
) -> AttentionResult:
    """Attention as ``[B, H, L, S]`` SDPA.

    ``layout`` is ``(allowed [B', Hm, L, S], empty rows [B', Hm, L] or None, flat edge index
    [E] into [B, L, S])``; ``None`` means the graph (each block) is full or causal.
    """
    heads = q.size(1)
    qb = q.reshape(batch, length, heads, -1).transpose(1, 2)  # [B, H, L, D]
    kb = k.reshape(batch, keys, heads, -1).transpose(1, 2)
    vb = v.reshape(batch, keys, heads, -1).transpose(1, 2)
    if layout is None:
        out = F.scaled_dot_product_attention(qb, kb, vb, dropout_p=dropout, is_causal=graph.is_causal, scale=scale)
        return AttentionResult(out.transpose(1, 2).reshape(q.size(0), heads, -1), None)
    allowed, empty, edge_cells = layout
    mask: Tensor = allowed
    if bias is not None or empty is not None:
        stats = stats_dtype(q.dtype)
        additive = torch.zeros(allowed.shape, dtype=stats, device=q.device).masked_fill_(~allowed, float("-inf"))
        if bias is not None:
            # bias [E, H] -> [B, H, L, S] at the edges' cells (differentiable w.r.t. bias)
            flat = bias.new_zeros(heads, batch * length * keys).index_copy(1, edge_cells, bias.t())
            additive = additive + flat.view(heads, batch, length, keys).transpose(0, 1).to(stats)
        mask = additive.to(q.dtype)
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, dropout_p=dropout, scale=scale)
    if empty is not None:
        out = out * (~empty).unsqueeze(-1).to(out.dtype)
    return AttentionResult(out.transpose(1, 2).reshape(q.size(0), heads, -1), None)


def _open_empty_rows(allowed: Tensor) -> tuple[Tensor, Tensor | None]:
    """Allow every key on rows without any (so SDPA gives no NaN); return the empty-row mask."""
    empty = ~allowed.any(-1)
    if not bool(empty.any()):
        return allowed, None
    return allowed | empty.unsqueeze(-1), empty


def _single_layout(graph: AttentionGraph, heads: int) -> tuple[Tensor, Tensor | None, Tensor]:
    allowed, empty = _open_empty_rows(dense_mask(graph, heads))  # [Hm, Nq, Nk]
    return allowed, empty, graph.row * graph.num_keys + graph.col


def padded_blocks(graph: AttentionGraph) -> tuple[int, int, int] | None:
    """``(B, L, S)``: a batch of ``B`` graphs padded to ``L`` queries and ``S`` keys each."""

    def compute() -> tuple[int, int, int] | None:
        if graph.query_ptr is None or graph.key_ptr is None or graph.num_graphs < 2:
            return None
        return graph.num_graphs, int(graph.query_ptr.diff().max()), int(graph.key_ptr.diff().max())

    return graph.cached("padded_blocks", compute)


def _block_positions(graph: AttentionGraph, length: int, keys: int) -> tuple[Tensor, Tensor] | None:
    """Slot of every query in ``[B * L]`` and key in ``[B * S]``; ``None`` if the sizes are equal."""
    if graph.uniform_blocks is not None:
        return None

    def slots(ptr: Tensor, size: int) -> Tensor:
        counts = ptr.diff()
        block = torch.repeat_interleave(torch.arange(counts.numel(), device=ptr.device), counts)
        return torch.arange(int(ptr[-1]), device=ptr.device) - ptr[block] + block * size

    return slots(graph.query_ptr, length), slots(graph.key_ptr, keys)


def _block_layout(
    graph: AttentionGraph, blocks: tuple[int, int, int], heads: int
) -> tuple[Tensor, Tensor | None, Tensor]:
    batch, length, keys = blocks
    positions = _block_positions(graph, length, keys)
    row, col = graph.row, graph.col
    if positions is not None:
        row, col = positions[0][row], positions[1][col]
    block = torch.div(row, length, rounding_mode="floor")
    cells = row * keys + (col - block * keys)  # into [B, L, S]
    if graph.head_mask is None:
        flat = torch.zeros(batch * length * keys, dtype=torch.bool, device=graph.device)
        flat[cells] = True
        allowed = flat.view(batch, 1, length, keys)
    else:
        flat = torch.zeros(graph.head_mask.size(1), batch * length * keys, dtype=torch.bool, device=graph.device)
        flat[:, cells] = graph.head_mask.t()
        allowed = flat.view(-1, batch, length, keys).transpose(0, 1)
    allowed, empty = _open_empty_rows(allowed)
    return allowed, empty, cells
