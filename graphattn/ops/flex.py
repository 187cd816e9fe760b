"""The flex backend: PyTorch FlexAttention with a BlockMask built directly from the CSR.

The graph's ``128 x 128`` tiles (see :func:`graphattn.ops.csr.tile_layout`) become the BlockMask:
tiles whose every cell is an edge are *full* blocks (no mask evaluation), the others are
*partial* blocks whose ``mask_mod`` looks the cell up in the tile mask. Per-edge bias becomes a
``score_mod`` that looks up the same layout. Nothing ``Nq x Nk`` is built.

FlexAttention's fused kernels need CUDA (compiled with Triton); on the CPU PyTorch runs it for
inference only, so this backend refuses CPU inputs that need gradients.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from graphattn.graph import AttentionGraph
from graphattn.ops._common import AttentionResult
from graphattn.ops.csr import TileLayout, tile_layout

__all__ = ["flex_attention_graph", "flex_unsupported_reason", "flex_worthwhile", "graph_block_mask"]

FLEX_BLOCK = 128
_compiled: dict[str, Any] = {}


def flex_unsupported_reason(q: Tensor, k: Tensor, v: Tensor, dropout: float, *, needs_grad: bool) -> str | None:
    """Why FlexAttention cannot run these inputs, or ``None`` if it can."""
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no FlexAttention (needs >= 2.5)"
    if dropout > 0.0:
        return "FlexAttention has no attention dropout"
    if not q.is_cuda and needs_grad:
        return "FlexAttention has no CPU backward"
    if q.is_cuda and q.size(-1) < 16:
        return f"head dim {q.size(-1)} < 16 is not supported by the Triton kernels"
    return None


def flex_worthwhile(graph: AttentionGraph) -> bool:
    """True when at most half of the 128 x 128 blocks are non-empty and they are >= 25% full."""
    layout = tile_layout(graph, FLEX_BLOCK)
    total_blocks = layout.num_query_blocks * layout.num_key_blocks
    return layout.num_tiles <= 0.5 * total_blocks and layout.fill >= 0.25


def graph_block_mask(graph: AttentionGraph, num_heads: int) -> Any:
    """A FlexAttention ``BlockMask`` for ``graph`` (cached per graph and head count)."""
    from torch.nn.attention.flex_attention import BlockMask

    def compute() -> Any:
        layout = tile_layout(graph, FLEX_BLOCK)
        per_head = graph.head_mask is not None
        heads = num_heads if per_head else 1
        device = graph.device
        n_qb, n_kb = layout.num_query_blocks, layout.num_key_blocks
        if per_head:
            cells = layout.mask.view(heads, layout.num_tiles, -1).sum(-1)  # [H, nt]
        elif layout.mask is None:
            cells = torch.full((1, layout.num_tiles), FLEX_BLOCK * FLEX_BLOCK, device=device)
        else:
            cells = layout.mask.view(1, layout.num_tiles, -1).sum(-1)
        full = cells == FLEX_BLOCK * FLEX_BLOCK
        partial = (cells > 0) & ~full

        def block_lists(selected: Tensor) -> tuple[Tensor, Tensor]:
            # selected [heads, nt] -> counts [1, heads, n_qb], indices [1, heads, n_qb, n_kb]
            counts = torch.zeros(heads, n_qb, dtype=torch.int32, device=device)
            counts.index_add_(1, layout.tile_query, selected.int())
            indices = torch.zeros(heads, n_qb, n_kb, dtype=torch.int32, device=device)
            # rank of each selected tile within its query block
            order = torch.cumsum(selected.int(), 1) - 1
            start = torch.cumsum(torch.cat([counts.new_zeros(heads, 1), counts], 1), 1)[:, :-1]
            rank = order - start.gather(1, layout.tile_query.unsqueeze(0).expand(heads, -1))
            h_idx, t_idx = selected.nonzero(as_tuple=True)
            indices[h_idx, layout.tile_query[t_idx], rank[h_idx, t_idx]] = layout.tile_key[t_idx].int()
            return counts.unsqueeze(0), indices.unsqueeze(0)

        kv_num, kv_idx = block_lists(partial)
        full_num, full_idx = block_lists(full)
        slot = torch.full((n_qb, n_kb), -1, dtype=torch.long, device=device)
        slot[layout.tile_query, layout.tile_key] = torch.arange(layout.num_tiles, device=device)
        mask_flat = (
            layout.mask.reshape(heads, -1)
            if layout.mask is not None
            else torch.ones(1, layout.num_cells, dtype=torch.bool, device=device)
        )

        def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            s = slot[q_idx // FLEX_BLOCK, kv_idx // FLEX_BLOCK]
            cell = s.clamp(min=0) * (FLEX_BLOCK * FLEX_BLOCK) + (q_idx % FLEX_BLOCK) * FLEX_BLOCK + kv_idx % FLEX_BLOCK
            head = h if per_head else 0
            return (s >= 0) & mask_flat[head, cell]

        block_mask = BlockMask.from_kv_blocks(
            kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=FLEX_BLOCK, mask_mod=mask_mod,
            seq_lengths=(graph.num_queries, graph.num_keys),
        )
        return block_mask, slot

    return graph.cached(("flex_block_mask", num_heads if graph.head_mask is not None else 1), compute)


def flex_attention_graph(
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
    """FlexAttention over the graph. Shapes as in :func:`graphattn.attention`."""
    from torch.nn.attention.flex_attention import flex_attention

    if return_weights:
        raise ValueError("backend='flex' cannot return attention weights; use backend='csr'")
    heads = q.size(1)
    block_mask, slot = graph_block_mask(graph, heads)
    fn = flex_attention
    if not q.is_cuda and not torch.is_grad_enabled():
        # PyTorch refuses CPU inputs that require grad even under no_grad
        q, k, v = q.detach(), k.detach(), v.detach()
        bias = None if bias is None else bias.detach()
    score_mod = None
    if bias is not None:
        layout: TileLayout = tile_layout(graph, FLEX_BLOCK)
        bias_flat = bias.new_zeros(heads, layout.num_cells).index_copy(1, layout.edge_position, bias.t())

        def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            s = slot[q_idx // FLEX_BLOCK, kv_idx // FLEX_BLOCK].clamp(min=0)
            cell = s * (FLEX_BLOCK * FLEX_BLOCK) + (q_idx % FLEX_BLOCK) * FLEX_BLOCK + kv_idx % FLEX_BLOCK
            return score + bias_flat[h, cell]

    if q.is_cuda:
        fn = _compiled.get("cuda")
        if fn is None:
            fn = _compiled["cuda"] = torch.compile(flex_attention, dynamic=False)
    with warnings.catch_warnings():
        # on the CPU PyTorch runs the unfused reference and warns that it is not compiled
        warnings.simplefilter("ignore", UserWarning)
        out = fn(
            q.transpose(0, 1).unsqueeze(0), k.transpose(0, 1).unsqueeze(0), v.transpose(0, 1).unsqueeze(0),
            score_mod=score_mod, block_mask=block_mask, scale=scale,
        )  # [1, H, Nq, Dv]
    out = out[0].transpose(0, 1)
    # rows without edges: FlexAttention leaves them at zero; make that explicit and NaN-proof
    empty = graph.cached("empty_rows", lambda: graph.degrees == 0)
    if bool(empty.any()):
        out = out.masked_fill(empty.view(-1, 1, 1), 0.0)
    if graph.head_mask is not None:
        head_empty = graph.cached("empty_head_rows", lambda: _empty_head_rows(graph))
        out = out.masked_fill(head_empty.unsqueeze(-1), 0.0)
    return AttentionResult(out, None)


def _empty_head_rows(graph: AttentionGraph) -> Tensor:
    """``[Nq, H]`` True where a query has no edge in that head."""
    counts = torch.zeros(graph.num_queries, graph.head_mask.size(1), dtype=torch.int32, device=graph.device)
    counts.index_add_(0, graph.row, graph.head_mask.int())
    return counts == 0
