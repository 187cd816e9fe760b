"""The csr backend: SDDMM -> segment softmax -> SpMM with a hand-written backward.

Two kernels share one contract: the forward saves only the per-edge softmax weights (``[E, H]``,
or their tile-padded layout) and the output; never ``[E, H, D]`` per-edge tensors and never an
``Nq x Nk`` matrix. The backward uses the standard identities (``O = P V``)::

    dV = P^T dO            dP = dO V^T (on edges)      delta_i = dO_i . O_i
    dS = P * (dP - delta)  dQ = dS K * scale           dK = dS^T Q * scale

* ``tiled``: the edges are grouped into ``T x T`` tiles (query block, key block). Every non-empty
  tile is computed densely with batched matmuls and masked to its edges; the row softmax spans
  the tiles of a query block. Fast when edges cluster into tiles (local windows, blocks,
  block-diagonal batches of small graphs, 2-D neighbourhoods): the work is BLAS-bound.
* ``sparse``: ``torch.sparse.sampled_addmm`` computes the scores of exactly the edges (SDDMM),
  a segment softmax normalizes each row, and CSR SpMM (``torch.sparse.mm``) aggregates values;
  the backward uses the graph's cached transpose. Any sparsity, cost proportional to ``E``.

:func:`choose_kernel` picks by tile fill (edges / cells of the non-empty tiles).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from graphattn.graph import AttentionGraph
from graphattn.ops._common import AttentionResult, stats_dtype

__all__ = ["csr_attention", "choose_kernel", "estimate_kernel", "cost_lower_bound", "TileLayout", "tile_layout", "tiled_plan"]

TILE_SIZES = (16, 32, 64, 128)
# Cost model, fitted to experiments/results/calibrate_csr.md (forward+backward, H=4, D=64,
# float32, 2-core Xeon): tiled ~ 33 ns per tile cell + 1.54 us per tile row (cells / T: small
# tiles make small, less efficient matmuls) + a fixed cost per group of query blocks (Python
# and launch overhead); sparse ~ 223 ns per edge + 3.1 us per node (per-head sparse calls,
# transposes: least squares over the same table) + 0.5 ms fixed (measured on batches of 32
# ZINC molecules, ~730 atoms and ~2300 bond edges: 1.8-2.5 ms against 6.3-7.4 ms tiled; an
# earlier 8 ms fixed term sent such small graphs to the tiled kernel). Only the ratio matters.
TILED_NS_PER_CELL = 33.0
TILED_NS_PER_TILE_ROW = 1540.0
TILED_NS_PER_GROUP = 500_000.0
SPARSE_NS_PER_EDGE = 223.0
SPARSE_NS_PER_NODE = 3100.0
SPARSE_NS_FIXED = 500_000.0
# dense masked SDPA (for auto's comparison): ~27 ns per (query, key) cell, measured on local
# n=4096 in experiments/results/bench_attention.md, plus a small fixed cost, and more when
# unequal graphs of a batch are first scattered into padded slots.
DENSE_NS_PER_CELL = 27.0
DENSE_NS_FIXED = 300_000.0
DENSE_NS_PADDING = 1_000_000.0


def csr_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: AttentionGraph,
    *,
    kernel: str,
    bias: Tensor | None,
    scale: float,
    dropout: float,
    return_weights: bool,
) -> AttentionResult:
    """Run the ``tiled`` or ``sparse`` kernel. Shapes as in :func:`graphattn.attention`."""
    if graph.num_edges == 0:
        out = q.new_zeros(q.size(0), q.size(1), v.size(2))
        # keep the autograd graph connected: gradients are zero
        out = out + 0.0 * (q.sum() + k.sum() + v.sum())
        weights = q.new_zeros(0, q.size(1)) if return_weights else None
        return AttentionResult(out, weights)
    if kernel == "tiled":
        plan = tiled_plan(graph, choose_tile_size(graph), stats_dtype(q.dtype))
        out, weights = _TiledAttention.apply(q, k, v, bias, plan, scale, dropout, return_weights)
    elif kernel == "sparse":
        out, weights = _SparseAttention.apply(q, k, v, bias, graph, scale, dropout, return_weights)
    else:
        raise ValueError(f"Unknown csr kernel {kernel!r}; expected 'tiled' or 'sparse'")
    return AttentionResult(out, weights if return_weights else None)


# ====================================================================== kernel choice
def choose_kernel(graph: AttentionGraph, num_heads: int) -> tuple[str, str]:
    """``("tiled" | "sparse", reason)`` for this graph: the lower estimated cost."""
    kernel, _, reason = estimate_kernel(graph)
    return kernel, reason


def cost_lower_bound(num_edges: int) -> float:
    """Nanoseconds no csr kernel can beat on ``num_edges`` edges (each edge is at least one tile cell)."""
    per_cell = TILED_NS_PER_CELL + TILED_NS_PER_TILE_ROW / max(TILE_SIZES)
    return min(per_cell * num_edges, SPARSE_NS_PER_EDGE * num_edges + SPARSE_NS_FIXED)


def _sparse_cost(graph: AttentionGraph) -> float:
    """Estimated forward+backward nanoseconds of the sparse kernel (see the constants above)."""
    nodes = graph.num_queries + graph.num_keys
    return SPARSE_NS_PER_EDGE * graph.num_edges + SPARSE_NS_PER_NODE * nodes / 2 + SPARSE_NS_FIXED


def estimate_kernel(graph: AttentionGraph) -> tuple[str, float, str]:
    """``(kernel, estimated forward+backward ns, reason)`` of the cheaper csr kernel."""
    if graph.num_edges == 0:
        return "sparse", 0.0, "no edges"
    size = choose_tile_size(graph)
    num_tiles, num_groups = tile_stats(graph, size)
    fill = graph.num_edges / max(num_tiles * size * size, 1)
    tiled = _tiled_cost(size, num_tiles, num_groups)
    sparse = _sparse_cost(graph)
    if tiled <= sparse:
        return "tiled", tiled, f"{size}x{size} tiles {fill:.0%} full (est. {tiled / sparse:.2f}x the sparse cost)"
    return "sparse", sparse, f"edges scattered: best tiles ({size}x{size}) {fill:.0%} full, est. {tiled / sparse:.1f}x the sparse cost"


def choose_tile_size(graph: AttentionGraph) -> int:
    """The tile size with the lowest estimated cost, cached per graph."""

    def compute() -> int:
        costs = {size: _tiled_cost(size, *tile_stats(graph, size)) for size in TILE_SIZES}
        return min(costs, key=costs.__getitem__)

    return graph.cached("tile_size", compute)


def _tiled_cost(size: int, num_tiles: int, num_groups: int) -> float:
    """Estimated forward+backward nanoseconds of the tiled kernel (see the constants above)."""
    cells = num_tiles * size * size
    return TILED_NS_PER_CELL * cells + TILED_NS_PER_TILE_ROW * cells / size + TILED_NS_PER_GROUP * num_groups


def tile_stats(graph: AttentionGraph, size: int) -> tuple[int, int]:
    """``(number of non-empty tiles, number of distinct tiles-per-query-block counts)``.

    Cheap (one pass over the edges, no sort) when the tile grid is small; cached per size.
    """

    def compute() -> tuple[int, int]:
        n_qb = -(-graph.num_queries // size)
        n_kb = -(-graph.num_keys // size)
        if n_qb * n_kb > (1 << 24):
            layout = tile_layout(graph, size)
            counts = torch.bincount(layout.tile_query, minlength=n_qb)
        else:
            tile_id = torch.div(graph.row, size, rounding_mode="floor") * n_kb + torch.div(
                graph.col, size, rounding_mode="floor"
            )
            occupied = torch.bincount(tile_id, minlength=n_qb * n_kb).view(n_qb, n_kb) > 0
            counts = occupied.sum(1)
        distinct = torch.unique(counts[counts > 0]).numel()
        return int(counts.sum()), distinct

    return graph.cached(("tile_stats", size), compute)


def choose_tile_size(graph: AttentionGraph) -> int:
    """The tile size with the lowest estimated cost (cells plus per-tile overhead), cached."""

    def compute() -> int:
        costs = {size: _tiled_cost(size, *tile_stats(graph, size)) for size in TILE_SIZES}
        return min(costs, key=costs.__getitem__)

    return graph.cached("tile_size", compute)


# ====================================================================== tiled kernel
@dataclass(frozen=True)
class TileLayout:
    """The non-empty ``T x T`` tiles of a graph.

    Attributes:
        size: ``T``.
        num_query_blocks / num_key_blocks: ``ceil(Nq / T)``, ``ceil(Nk / T)``.
        tile_query: ``[nt]`` query block of every tile (sorted).
        tile_key: ``[nt]`` key block of every tile.
        edge_position: ``[E]`` flat index of every edge in ``[nt, T, T]``.
        mask: ``[nt, T, T]`` (or ``[H, nt, T, T]`` for per-head patterns) True on edges;
            ``None`` when every tile is full.
        num_queries / num_keys / num_edges: of the graph.
    """

    size: int
    num_query_blocks: int
    num_key_blocks: int
    tile_query: Tensor
    tile_key: Tensor
    edge_position: Tensor
    mask: Tensor | None
    num_queries: int
    num_keys: int
    num_edges: int

    @property
    def num_tiles(self) -> int:
        return self.tile_query.numel()

    @property
    def num_cells(self) -> int:
        return self.num_tiles * self.size * self.size

    @property
    def fill(self) -> float:
        return self.num_edges / max(self.num_cells, 1)


def tile_layout(graph: AttentionGraph, size: int) -> TileLayout:
    """Group the edges of ``graph`` into ``size x size`` tiles (cached per graph and size)."""

    def compute() -> TileLayout:
        row, col = graph.row, graph.col
        n_qb = -(-graph.num_queries // size)
        n_kb = -(-graph.num_keys // size)
        tile_id = torch.div(row, size, rounding_mode="floor") * n_kb + torch.div(col, size, rounding_mode="floor")
        tiles, edge_tile = torch.unique(tile_id, sorted=True, return_inverse=True)
        position = edge_tile * (size * size) + (row % size) * size + (col % size)
        n_tiles = tiles.numel()
        mask: Tensor | None
        if graph.head_mask is not None:
            heads = graph.head_mask.size(1)
            mask = torch.zeros(heads, n_tiles * size * size, dtype=torch.bool, device=row.device)
            mask[:, position] = graph.head_mask.t()
            mask = mask.view(heads, n_tiles, size, size)
        elif graph.num_edges == n_tiles * size * size:
            mask = None
        else:
            mask = torch.zeros(n_tiles * size * size, dtype=torch.bool, device=row.device)
            mask[position] = True
            mask = mask.view(n_tiles, size, size)
        return TileLayout(
            size=size,
            num_query_blocks=n_qb,
            num_key_blocks=n_kb,
            tile_query=torch.div(tiles, n_kb, rounding_mode="floor"),
            tile_key=tiles % n_kb,
            edge_position=position,
            mask=mask,
            num_queries=graph.num_queries,
            num_keys=graph.num_keys,
            num_edges=graph.num_edges,
        )

    return graph.cached(("tile_layout", size), compute)


@dataclass(frozen=True)
class TileGroup:
    """Query blocks that have the same number ``m`` of non-empty tiles, run as one batch.

    Attributes:
        query_blocks: ``[nG]`` query block indices.
        key_blocks: ``[nG, m]`` key block of each tile.
        edges: ``[E_g]`` ids of the edges in this group (CSR order).
        positions: ``[E_g]`` flat position of each edge in the ``[nG, T, m*T]`` score block.
        additive_mask: ``[nG, T, m*T]`` or ``[H, nG, T, m*T]``: 0 on edges, -inf elsewhere;
            ``None`` when every cell is an edge.
        query_run: ``(start, step)`` when ``query_blocks`` is ``start + step * i``: the blocks are
            then a strided view, not a copy.
        key_run: ``(start, step)`` when ``key_blocks[i, j] = start + step * i + j`` (a band, as in
            local windows): the key/value tiles are then an overlapping strided view.
    """

    query_blocks: Tensor
    key_blocks: Tensor
    edges: Tensor
    positions: Tensor
    additive_mask: Tensor | None
    query_run: tuple[int, int] | None
    key_run: tuple[int, int] | None
    has_empty_rows: bool


@dataclass(frozen=True)
class TiledPlan:
    """How the tiled kernel runs a graph: tile size and the groups of query blocks."""

    layout: TileLayout
    groups: tuple[TileGroup, ...]

    @property
    def num_cells(self) -> int:
        t = self.layout.size
        return sum(g.key_blocks.numel() * t * t for g in self.groups)


def _arithmetic_run(values: Tensor) -> tuple[int, int] | None:
    """``(start, step)`` if ``values`` (1-D, non-empty) is ``start + step * i`` with step >= 0."""
    start = int(values[0])
    if values.numel() == 1:
        return start, 1
    step = int(values[1] - values[0])
    if step < 0 or not torch.equal(values, start + step * torch.arange(values.numel(), device=values.device)):
        return None
    return start, step


def tiled_plan(graph: AttentionGraph, size: int, dtype: torch.dtype = torch.float32) -> TiledPlan:
    """Group the query blocks of ``graph``'s ``size``-tiles by tile count (cached per dtype)."""

    def compute() -> TiledPlan:
        layout = tile_layout(graph, size)
        t, n_qb = size, layout.num_query_blocks
        device = graph.device
        counts = torch.bincount(layout.tile_query, minlength=n_qb)  # tiles per query block
        first_tile = torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])
        rank = torch.arange(layout.num_tiles, device=device) - first_tile[layout.tile_query]
        edge_tile = torch.div(layout.edge_position, t * t, rounding_mode="floor")
        edge_block = layout.tile_query[edge_tile]
        edge_rank = rank[edge_tile]
        within = layout.edge_position % (t * t)
        edge_row, edge_col = torch.div(within, t, rounding_mode="floor"), within % t
        groups = []
        for m in torch.unique(counts).tolist():
            if m == 0:
                continue  # query blocks without edges: their output stays zero
            blocks = (counts == m).nonzero().flatten()
            n_g = blocks.numel()
            local = torch.full((n_qb,), -1, dtype=torch.long, device=device)
            local[blocks] = torch.arange(n_g, device=device)
            key_blocks = torch.empty((n_g, m), dtype=torch.long, device=device)
            in_group = local[layout.tile_query] >= 0
            key_blocks[local[layout.tile_query[in_group]], rank[in_group]] = layout.tile_key[in_group]
            edges = (local[edge_block] >= 0).nonzero().flatten()
            positions = (
                local[edge_block[edges]] * (t * m * t) + edge_row[edges] * (m * t) + edge_rank[edges] * t + edge_col[edges]
            )
            cells = n_g * t * m * t
            additive: Tensor | None = None
            if graph.head_mask is not None:
                heads = graph.head_mask.size(1)
                flat = torch.full((heads, cells), float("-inf"), dtype=dtype, device=device)
                flat[:, positions] = torch.where(graph.head_mask[edges].t(), 0.0, float("-inf")).to(dtype)
                additive = flat.view(heads, n_g, t, m * t)
            elif edges.numel() != cells:
                flat = torch.full((cells,), float("-inf"), dtype=dtype, device=device)
                flat[positions] = 0.0
                additive = flat.view(n_g, t, m * t)
            key_run = None
            starts = _arithmetic_run(key_blocks[:, 0])
            if starts is not None and torch.equal(key_blocks, key_blocks[:, :1] + torch.arange(m, device=device)):
                key_run = starts
            row_has_edge = torch.zeros(n_g * t, dtype=torch.bool, device=device)
            row_has_edge[torch.div(positions, m * t, rounding_mode="floor")] = True
            # padding rows past num_queries have no edges either; per-head masks may empty a row
            has_empty = graph.head_mask is not None or not bool(row_has_edge.all())
            groups.append(
                TileGroup(blocks, key_blocks, edges, positions, additive, _arithmetic_run(blocks), key_run, has_empty)
            )
        return TiledPlan(layout, tuple(groups))

    return graph.cached(("tiled_plan", size, dtype), compute)


def _to_blocks(x: Tensor, num_blocks: int, size: int) -> Tensor:
    """``[N, H, D]`` -> ``[H, num_blocks, T, D]`` (zero padded).

    A strided view of ``x`` (no copy) when ``N == num_blocks * T`` and rows are evenly spaced;
    matmuls take it as is (row stride ``H * D``).
    """
    n, h, d = x.shape
    if n == num_blocks * size and x.stride(2) == 1 and x.stride(0) >= d and n > 0:
        return x.as_strided((h, num_blocks, size, d), (x.stride(1), size * x.stride(0), x.stride(0), 1))
    out = x.new_empty(h, num_blocks, size, d)
    flat = out.view(h, -1, d)
    flat[:, :n].copy_(x.transpose(0, 1))
    if num_blocks * size > n:
        flat[:, n:].zero_()
    return out


def _from_blocks(x: Tensor, n: int) -> Tensor:
    """``[H, num_blocks, T, D]`` -> ``[N, H, D]``."""
    h, nb, t, d = x.shape
    return x.reshape(h, nb * t, d)[:, :n].transpose(0, 1)


def _query_tiles(blocks: Tensor, group: TileGroup) -> Tensor:
    """``blocks[:, group.query_blocks]``: a view when the blocks form a run."""
    if group.query_run is not None:
        start, step = group.query_run
        n_g = group.query_blocks.numel()
        return blocks[:, start : start + step * (n_g - 1) + 1 : step] if step else blocks.index_select(1, group.query_blocks)
    return blocks.index_select(1, group.query_blocks)


def _key_tiles(blocks: Tensor, group: TileGroup) -> Tensor:
    """``[H, nB, T, D]`` -> the group's tiles ``[H, nG, m*T, D]``: an overlapping view for bands."""
    h, _, t, d = blocks.shape
    n_g, m = group.key_blocks.shape
    if group.key_run is not None and blocks.stride(1) == t * blocks.stride(2):
        start, step = group.key_run
        return blocks.as_strided(
            (h, n_g, m * t, d),
            (blocks.stride(0), step * blocks.stride(1), blocks.stride(2), blocks.stride(3)),
            blocks.storage_offset() + start * blocks.stride(1),
        )
    return blocks.index_select(1, group.key_blocks.flatten()).view(h, n_g, m * t, d)


def _accumulate_key_grad(target: Tensor, group: TileGroup, weights: Tensor, rows: Tensor) -> None:
    """``target[key_blocks] += weights^T @ rows`` per tile, for one head.

    weights ``[nG, T, m*T]``, rows ``[nG, T, D]``, target ``[nB, T, D]`` (contiguous). For a band
    with step 1 the tiles of slot ``j`` land in a contiguous slice of ``target``, so GEMM
    accumulates into it directly (``baddbmm`` with beta 1); otherwise tiles are scattered.
    """
    _, t, d = target.shape
    n_g, m = group.key_blocks.shape
    if group.key_run is not None and group.key_run[1] == 1:
        start = group.key_run[0]
        for j in range(m):
            view = target[start + j : start + j + n_g]
            torch.baddbmm(view, weights[..., j * t : (j + 1) * t].transpose(-1, -2), rows, out=view)
        return
    tiles = torch.bmm(weights.transpose(-1, -2), rows)  # [nG, m*T, D]
    target.index_add_(0, group.key_blocks.flatten(), tiles.reshape(-1, t, d))


def _put_query_tiles(target: Tensor, group: TileGroup, tiles: Tensor) -> None:
    """``target[query_blocks] = tiles`` for one head (``[nB, T, D]`` and ``[nG, T, D]``)."""
    if group.query_run is not None and group.query_run[1] > 0:
        start, step = group.query_run
        target[start : start + step * (group.query_blocks.numel() - 1) + 1 : step] = tiles
    else:
        target.index_copy_(0, group.query_blocks, tiles)


def _masked_softmax_(scores: Tensor, fast: bool) -> Tensor:
    """Softmax over the last dim; rows that are all ``-inf`` give zeros (in place when not ``fast``)."""
    if fast:
        return torch.softmax(scores, dim=-1)  # one fused kernel; the caller knows no row is empty
    row_max = scores.amax(-1, keepdim=True)
    row_max.nan_to_num_(nan=0.0, neginf=0.0)  # rows without edges: -inf -> 0
    probs = scores.sub_(row_max).exp_()
    row_sum = probs.sum(-1, keepdim=True)
    return probs.mul_(row_sum.reciprocal_().nan_to_num_(posinf=0.0))


class _TiledAttention(torch.autograd.Function):
    """The tiled kernel. Loops run head by head so each head's ``[nG, T, m*T]`` scores stay in
    cache through mask, softmax and the value product (26% faster than all heads at once)."""

    @staticmethod
    def forward(ctx, q, k, v, bias, plan: TiledPlan, scale: float, dropout: float, want_weights: bool):
        layout = plan.layout
        t, heads = layout.size, q.size(1)
        stats = stats_dtype(q.dtype)
        fused = stats == q.dtype  # scores straight into the statistics dtype
        qb = _to_blocks(q, layout.num_query_blocks, t)  # [H, nQB, T, D]
        kb = _to_blocks(k, layout.num_key_blocks, t)
        vb = _to_blocks(v, layout.num_key_blocks, t)
        out_blocks = q.new_zeros(heads, layout.num_query_blocks, t, v.size(2))
        weights = q.new_zeros(layout.num_edges, heads) if want_weights else None
        saved: list[Tensor] = []
        keep_flags: list[bool] = []
        for group in plan.groups:
            qg = _query_tiles(qb, group)  # [H, nG, T, D]
            kg = _key_tiles(kb, group)  # [H, nG, mT, D]
            vg = _key_tiles(vb, group)
            n_g, m = group.key_blocks.shape
            fast = bias is None and not group.has_empty_rows
            scratch = q.new_empty(n_g, t, m * t)
            for h in range(heads):
                mask = group.additive_mask
                mask = mask[h] if mask is not None and mask.dim() == 4 else mask
                if fused and mask is not None:
                    scores = torch.baddbmm(mask, qg[h], kg[h].transpose(1, 2), alpha=scale, out=scratch)
                else:
                    scores = torch.bmm(qg[h], kg[h].transpose(1, 2), out=scratch).to(stats).mul_(scale)
                    if mask is not None:
                        scores.add_(mask)
                if bias is not None:
                    scores.view(-1).index_add_(0, group.positions, bias[group.edges, h].to(stats))
                if not fast:
                    scores = scores.clone()  # the scratch is reused by the next head
                probs = _masked_softmax_(scores, fast)  # [nG, T, mT]
                keep = None
                used = probs
                if dropout > 0.0:
                    keep = torch.rand_like(probs) >= dropout
                    used = probs * keep / (1.0 - dropout)
                _put_query_tiles(out_blocks[h], group, torch.bmm(used.to(v.dtype), vg[h]))
                if weights is not None:
                    weights[group.edges, h] = probs.view(-1)[group.positions].to(q.dtype)
                saved.append(probs)
                keep_flags.append(keep is not None)
                if keep is not None:
                    saved.append(keep)
        out = _from_blocks(out_blocks, layout.num_queries)
        ctx.save_for_backward(q, k, v, out, *saved)
        ctx.keep_flags = keep_flags
        ctx.plan, ctx.scale, ctx.dropout = plan, scale, dropout
        ctx.bias_dtype = None if bias is None else bias.dtype
        if weights is not None:
            ctx.mark_non_differentiable(weights)
        return out, weights

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, _grad_weights):
        q, k, v, out, *rest = ctx.saved_tensors
        plan: TiledPlan = ctx.plan
        layout = plan.layout
        t, scale, heads = layout.size, ctx.scale, q.size(1)
        stats = stats_dtype(q.dtype)
        fused = stats == q.dtype
        saved = iter(rest)
        flags = iter(ctx.keep_flags)
        vb = _to_blocks(v, layout.num_key_blocks, t)
        dob = _to_blocks(grad_out.contiguous(), layout.num_query_blocks, t)  # [H, nQB, T, Dv]
        delta = (grad_out.to(stats) * out.to(stats)).sum(-1, keepdim=True)  # [Nq, H, 1]
        delta_b = _to_blocks(delta, layout.num_query_blocks, t)  # [H, nQB, T, 1]
        need_q, need_k, need_v, need_bias = ctx.needs_input_grad[:4]
        # the score scale is applied to the (small) q / k blocks rather than to dS
        kb_scaled = _to_blocks(k * scale, layout.num_key_blocks, t) if need_q else None
        qb_scaled = _to_blocks(q * scale, layout.num_query_blocks, t) if need_k else None
        grad_qb = q.new_zeros(heads, layout.num_query_blocks, t, q.size(2)) if need_q else None
        grad_kb = k.new_zeros(heads, layout.num_key_blocks, t, k.size(2)) if need_k else None
        grad_vb = v.new_zeros(vb.shape) if need_v else None
        grad_bias = torch.zeros(layout.num_edges, heads, dtype=ctx.bias_dtype, device=q.device) if need_bias else None
        for group in plan.groups:
            n_g, m = group.key_blocks.shape
            dog = _query_tiles(dob, group)  # [H, nG, T, Dv]
            vt = _key_tiles(vb, group)
            delta_g = _query_tiles(delta_b, group)  # [H, nG, T, 1]
            kt = _key_tiles(kb_scaled, group) if need_q else None
            qt = _query_tiles(qb_scaled, group) if need_k else None
            scratch = q.new_empty(n_g, t, m * t)
            for h in range(heads):
                probs = next(saved)
                keep = next(saved) if next(flags) else None
                used = probs if keep is None else probs * keep / (1.0 - ctx.dropout)
                if need_v:
                    _accumulate_key_grad(grad_vb[h], group, used.to(v.dtype), dog[h])
                if keep is None and fused:
                    # dP - delta straight out of the GEMM (beta = 1 on the broadcast -delta)
                    ds = torch.baddbmm(delta_g[h].neg(), dog[h], vt[h].transpose(1, 2), out=scratch)
                else:
                    ds = torch.bmm(dog[h], vt[h].transpose(1, 2), out=scratch).to(stats)
                    if keep is not None:
                        ds = ds * keep / (1.0 - ctx.dropout)
                    ds = ds.sub_(delta_g[h])
                ds = ds.mul_(probs)  # dS = P * (dP - delta): the gradient of the scores (and bias)
                if grad_bias is not None:
                    grad_bias[group.edges, h] = ds.view(-1)[group.positions].to(ctx.bias_dtype)
                ds = ds.to(q.dtype)
                if need_q:
                    _put_query_tiles(grad_qb[h], group, torch.bmm(ds, kt[h]))
                if need_k:
                    _accumulate_key_grad(grad_kb[h], group, ds, qt[h])
        grad_q = _from_blocks(grad_qb, layout.num_queries) if need_q else None
        grad_k = _from_blocks(grad_kb, layout.num_keys) if need_k else None
        grad_v = _from_blocks(grad_vb, layout.num_keys) if need_v else None
        return grad_q, grad_k, grad_v, grad_bias, None, None, None, None


# ====================================================================== sparse kernel
def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, ...]) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _batched_pattern(graph: AttentionGraph, heads: int, dtype: torch.dtype, transposed: bool = False) -> Tensor:
    """A ``[H, Nq, Nk]`` CSR tensor with the graph's pattern (zero values), cached."""

    def compute() -> Tensor:
        g = graph.transpose() if transposed else graph
        crow = g.crow.unsqueeze(0).expand(heads, -1).contiguous()
        col = g.col.unsqueeze(0).expand(heads, -1).contiguous()
        if max(g.num_edges, g.num_queries, g.num_keys) < 2**31:
            crow, col = crow.int(), col.int()
        values = torch.zeros(heads, g.num_edges, dtype=dtype, device=g.device)
        return _csr(crow, col, values, (heads, g.num_queries, g.num_keys))

    return graph.cached(("sparse_pattern", heads, dtype, transposed), compute)


def _sddmm(graph: AttentionGraph, a: Tensor, b: Tensor, alpha: float) -> Tensor:
    """``alpha * (a_i . b_j)`` on every edge: a ``[H, Nq, D]``, b ``[H, Nk, D]`` -> ``[E, H]``."""
    pattern = _batched_pattern(graph, a.size(0), a.dtype)
    out = torch.sparse.sampled_addmm(pattern, a, b.transpose(1, 2), beta=0.0, alpha=alpha)
    return out.values().t()


def _head_block_structure(graph: AttentionGraph, heads: int) -> tuple[Tensor, Tensor]:
    """CSR ``(crow, col)`` of the ``[H*Nq, H*Nk]`` block diagonal holding one copy per head (cached)."""

    def compute() -> tuple[Tensor, Tensor]:
        offsets = torch.arange(heads, device=graph.device)
        crow = (graph.crow[1:].unsqueeze(0) + offsets.unsqueeze(1) * graph.num_edges).flatten()
        crow = torch.cat([graph.crow[:1], crow])
        col = (graph.col.unsqueeze(0) + offsets.unsqueeze(1) * graph.num_keys).flatten()
        if heads * max(graph.num_edges, graph.num_queries, graph.num_keys) < 2**31:
            crow, col = crow.int(), col.int()  # sparse BLAS is faster with 32-bit indices
        return crow, col

    return graph.cached(("head_block_structure", heads), compute)


def _spmm(graph: AttentionGraph, values: Tensor, x: Tensor, transposed: bool) -> Tensor:
    """``sum_j A_ij x_j`` per head: values ``[E, H]`` on ``graph`` (or its transpose) -> ``[N, H, D]``.

    x is ``[H, N_cols, D]``. With ``transposed`` the values are given in ``graph``'s edge order
    and aggregated over ``graph.transpose()``. All heads run as one SpMM with the block-diagonal
    ``[H*N, H*N_cols]`` matrix, so there is no per-head loop.
    """
    g = graph.transpose() if transposed else graph
    if transposed:
        values = values[graph.transpose_permutation()]
    heads = values.size(1)
    crow, col = _head_block_structure(g, heads)
    a = _csr(crow, col, values.t().reshape(-1), (heads * g.num_queries, heads * g.num_keys))
    dense = x.reshape(heads * g.num_keys, x.size(-1))
    out = dense.new_empty(heads * g.num_queries, x.size(-1))
    # addmm with out= and beta=0 skips the zero fill and result copy that `a @ dense` makes
    torch.addmm(out, a, dense, beta=0.0, out=out)  # [H*N, D]
    return out.view(heads, g.num_queries, -1).transpose(0, 1)  # [N, H, D]


def _segment_softmax(scores: Tensor, graph: AttentionGraph) -> Tensor:
    """Softmax of ``[E, H]`` scores over each query's edges (``-inf`` entries get 0)."""
    row = graph.row
    heads = scores.size(1)
    index = row.unsqueeze(1).expand(-1, heads)
    row_max = torch.full((graph.num_queries, heads), float("-inf"), dtype=scores.dtype, device=scores.device)
    row_max.scatter_reduce_(0, index, scores, "amax")
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    probs = (scores - row_max[row]).exp_()
    row_sum = torch.zeros_like(row_max).index_add_(0, row, probs)
    inv = torch.where(row_sum > 0, 1.0 / row_sum, torch.zeros_like(row_sum))
    return probs.mul_(inv[row])


def _sparse_dtype(dtype: torch.dtype) -> torch.dtype:
    # sparse BLAS has no half kernels on CPU: compute those in float32
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _SparseAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, graph: AttentionGraph, scale: float, dropout: float, want_weights: bool):
        work = _sparse_dtype(q.dtype)
        qh = q.to(work).transpose(0, 1).contiguous()  # [H, Nq, D]
        kh = k.to(work).transpose(0, 1).contiguous()
        vh = v.to(work).transpose(0, 1).contiguous()
        scores = _sddmm(graph, qh, kh, scale)  # [E, H]
        if bias is not None:
            scores = scores + bias.to(work)
        if graph.head_mask is not None:
            scores = scores.masked_fill(~graph.head_mask, float("-inf"))
        probs = _segment_softmax(scores, graph)
        keep = None
        used = probs
        if dropout > 0.0:
            keep = torch.rand_like(probs) >= dropout
            used = probs * keep / (1.0 - dropout)
        out = _spmm(graph, used, vh, transposed=False)
        # the head-major copies are kept (O(N H D), like the inputs) so backward need not redo them
        ctx.save_for_backward(qh, kh, vh, out, probs, keep)
        ctx.input_dtypes = (q.dtype, k.dtype, v.dtype)
        ctx.graph, ctx.scale, ctx.dropout = graph, scale, dropout
        ctx.bias_dtype = None if bias is None else bias.dtype
        out = out.to(q.dtype)
        weights = probs.to(q.dtype) if want_weights else None
        if weights is not None:
            ctx.mark_non_differentiable(weights)
        return out, weights

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, _grad_weights):
        qh, kh, vh, out, probs, keep = ctx.saved_tensors
        graph: AttentionGraph = ctx.graph
        scale = ctx.scale
        q_dtype, k_dtype, v_dtype = ctx.input_dtypes
        work = probs.dtype
        d_out = grad_out.to(work)
        doh = d_out.transpose(0, 1).contiguous()  # [H, Nq, Dv]
        grad_q = grad_k = grad_v = grad_bias = None
        used = probs if keep is None else probs * keep / (1.0 - ctx.dropout)
        if ctx.needs_input_grad[2]:
            grad_v = _spmm(graph, used, doh, transposed=True).to(v_dtype)
        dp = _sddmm(graph, doh, vh, 1.0)  # [E, H]
        if keep is not None:
            dp = dp * keep / (1.0 - ctx.dropout)
        delta = (d_out * out).sum(-1)  # [Nq, H]
        ds = (dp - delta[graph.row]) * probs
        if ctx.needs_input_grad[3]:
            grad_bias = ds.to(ctx.bias_dtype)
        ds = ds * scale
        if ctx.needs_input_grad[0]:
            grad_q = _spmm(graph, ds, kh, transposed=False).to(q_dtype)
        if ctx.needs_input_grad[1]:
            grad_k = _spmm(graph, ds, qh, transposed=True).to(k_dtype)
        return grad_q, grad_k, grad_v, grad_bias, None, None, None, None
