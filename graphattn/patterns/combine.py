"""Combinators: build patterns out of patterns.

* :func:`union` / :func:`intersect` / :func:`difference`: set operations on edge sets of the
  same size ``[Nq, Nk]``. Per-head patterns combine per head (or / and / and-not); a graph
  without a head mask counts as "every head".
* :func:`per_head`: one pattern per attention head, returned as the union graph with an
  ``[E, H]`` head mask.
* :func:`batch`: block-diagonal batch of independent graphs (see
  :meth:`AttentionGraph.batch <graphattn.graph.AttentionGraph.batch>`).

Every combinator accepts its graphs either as separate arguments or as one list:
``union(a, b, c) == union([a, b, c])``.

Block offsets (``query_ptr``/``key_ptr``) survive when the result is still block diagonal
with respect to them, e.g. ``union(adjacency(batch.edge_index, N), full_per_graph(batch.batch))``
keeps the per-graph offsets of :func:`~graphattn.patterns.full_per_graph`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from graphattn.graph import AttentionGraph, _rows_to_crow

__all__ = ["union", "intersect", "difference", "per_head", "batch"]


def _collect(graphs: tuple, name: str, minimum: int = 1) -> list[AttentionGraph]:
    """Accept ``f(a, b, c)`` and ``f([a, b, c])``; check every item is an AttentionGraph."""
    if len(graphs) == 1 and isinstance(graphs[0], (list, tuple)):
        graphs = tuple(graphs[0])
    if len(graphs) < minimum:
        raise ValueError(
            f"Expected at least {minimum} AttentionGraph for {name}() (got {len(graphs)}); pass "
            f"them as {name}(a, b, ...) or {name}([a, b, ...])"
        )
    for position, graph in enumerate(graphs):
        if not isinstance(graph, AttentionGraph):
            raise TypeError(
                f"Expected an AttentionGraph at position {position} of {name}() (got "
                f"{type(graph).__name__}); build one with graphattn.patterns or "
                f"AttentionGraph.from_edge_index"
            )
    return list(graphs)


def _check_same_size(graphs: Sequence[AttentionGraph], name: str) -> tuple[int, int]:
    n_q, n_k = graphs[0].num_queries, graphs[0].num_keys
    for position, graph in enumerate(graphs):
        if (graph.num_queries, graph.num_keys) != (n_q, n_k):
            raise ValueError(
                f"Expected every graph given to {name}() to have the same size [num_queries, num_keys] = "
                f"[{n_q}, {n_k}] as the first one, but graph {position} is "
                f"[{graph.num_queries}, {graph.num_keys}]; build them over the same nodes "
                f"(use batch() to put graphs of different sizes side by side)"
            )
    return n_q, n_k


def _check_same_device(graphs: Sequence[AttentionGraph], name: str) -> torch.device:
    device = graphs[0].device
    for position, graph in enumerate(graphs):
        if graph.device != device:
            raise ValueError(
                f"Expected every graph given to {name}() on device {device} like the first one, "
                f"but graph {position} is on {graph.device}; move it with graph.to({str(device)!r})"
            )
    return device


def _num_heads(graphs: Sequence[AttentionGraph], name: str) -> int | None:
    heads = sorted({g.num_heads for g in graphs if g.num_heads is not None})
    if len(heads) > 1:
        raise ValueError(
            f"Expected the per-head graphs given to {name}() to agree on the number of heads "
            f"(got head counts {heads}); build them with the same number of heads"
        )
    return heads[0] if heads else None


def _head_mask_or_all(graph: AttentionGraph, num_heads: int) -> Tensor:
    if graph.head_mask is not None:
        return graph.head_mask
    return torch.ones(graph.num_edges, num_heads, dtype=torch.bool, device=graph.device)


def _flat_index(graph: AttentionGraph) -> Tensor:
    """``[E]`` ``row * Nk + col``: sorted ascending because the CSR is sorted."""
    return graph.row * graph.num_keys + graph.col


def _from_flat(flat: Tensor, num_queries: int, num_keys: int, head_mask: Tensor | None) -> AttentionGraph:
    """Graph from sorted unique flat indices (the cheap constructor)."""
    rows = torch.div(flat, max(num_keys, 1), rounding_mode="floor")
    cols = flat - rows * num_keys
    graph = AttentionGraph(
        _rows_to_crow(rows, num_queries), cols, num_queries, num_keys, head_mask=head_mask, validate=False
    )
    graph.cached("row", lambda: rows)
    return graph


def _graph_id(index: Tensor, ptr: Tensor) -> Tensor:
    """Which block of ``ptr`` (``[G + 1]`` offsets) each node index falls in."""
    return torch.searchsorted(ptr, index, right=True) - 1


def _inside_blocks(graph: AttentionGraph, query_ptr: Tensor, key_ptr: Tensor) -> bool:
    if graph.num_edges == 0:
        return True
    return bool(torch.equal(_graph_id(graph.row, query_ptr), _graph_id(graph.col, key_ptr)))


def _shared_block_offsets(
    graphs: Sequence[AttentionGraph], subset: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Block offsets that the combined graph still respects, or ``(None, None)``.

    ``subset=True`` (intersect, difference): the result's edges are a subset of a batched
    graph's edges, so that graph's offsets hold. Otherwise (union, per_head) every batched
    input must agree on the offsets and every other input must lie inside those blocks.
    """
    batched = [g for g in graphs if g.query_ptr is not None and g.key_ptr is not None]
    if not batched:
        return None, None
    query_ptr, key_ptr = batched[0].query_ptr, batched[0].key_ptr
    if subset:
        return query_ptr, key_ptr
    for graph in graphs:
        if graph.query_ptr is not None and graph.key_ptr is not None:
            if not (torch.equal(graph.query_ptr, query_ptr) and torch.equal(graph.key_ptr, key_ptr)):
                return None, None
        elif not _inside_blocks(graph, query_ptr, key_ptr):
            return None, None
    return query_ptr, key_ptr


def _merge(
    edge_index: Tensor, num_queries: int, num_keys: int, head_mask: Tensor | None, graphs: Sequence[AttentionGraph]
) -> AttentionGraph:
    out = AttentionGraph.from_edge_index(edge_index, num_queries, num_keys, head_mask=head_mask)
    out.input_edge_map = None  # the inputs were graphs, not a user's edge_index
    out.query_ptr, out.key_ptr = _shared_block_offsets(graphs, subset=False)
    return out


def union(*graphs: AttentionGraph | Sequence[AttentionGraph]) -> AttentionGraph:
    """Edges present in any of the graphs (logical or of the dense masks).

    Per-head patterns: ``head_mask`` is or-ed per head; a graph without a head mask
    contributes its edges to every head. All per-head inputs must agree on ``H``.

    Args:
        *graphs: one or more graphs of the same size ``[Nq, Nk]`` (or one list of them).

    Returns:
        The union graph (sorted CSR, duplicates merged). A single input is returned as is.

    Example:
        >>> from graphattn.patterns import local, global_tokens
        >>> union(local(4, 0), global_tokens(4, [0])).num_edges
        10
    """
    graphs = _collect(graphs, "union")
    if len(graphs) == 1:
        return graphs[0]
    n_q, n_k = _check_same_size(graphs, "union")
    _check_same_device(graphs, "union")
    num_heads = _num_heads(graphs, "union")
    if num_heads is None:
        # Sort the concatenated (query, key) codes and drop repeats: cheaper than a full
        # from_edge_index (no inverse map, no range checks the inputs already passed).
        flat = torch.sort(torch.cat([_flat_index(g) for g in graphs])).values
        out = _from_flat(torch.unique_consecutive(flat), n_q, n_k, None)
        out.query_ptr, out.key_ptr = _shared_block_offsets(graphs, subset=False)
        return out
    edge_index = torch.cat([g.edge_index for g in graphs], dim=1)
    head_mask = torch.cat([_head_mask_or_all(g, num_heads) for g in graphs])
    return _merge(edge_index, n_q, n_k, head_mask, graphs)


def intersect(*graphs: AttentionGraph | Sequence[AttentionGraph]) -> AttentionGraph:
    """Edges present in every graph (logical and of the dense masks).

    Per-head patterns: ``head_mask`` is and-ed per head (a graph without a head mask allows
    every head); edges that no head keeps are dropped.

    Args:
        *graphs: one or more graphs of the same size ``[Nq, Nk]`` (or one list of them).

    Example:
        >>> from graphattn.patterns import local, causal
        >>> intersect(local(4, 1), causal(4)).to_dense().int()
        tensor([[1, 0, 0, 0],
                [1, 1, 0, 0],
                [0, 1, 1, 0],
                [0, 0, 1, 1]], dtype=torch.int32)
    """
    graphs = _collect(graphs, "intersect")
    if len(graphs) == 1:
        return graphs[0]
    n_q, n_k = _check_same_size(graphs, "intersect")
    _check_same_device(graphs, "intersect")
    num_heads = _num_heads(graphs, "intersect")
    flat = _flat_index(graphs[0])
    for graph in graphs[1:]:
        flat = flat[torch.isin(flat, _flat_index(graph))]
    head_mask = None
    if num_heads is not None:
        head_mask = torch.ones(flat.numel(), num_heads, dtype=torch.bool, device=flat.device)
        for graph in graphs:
            if graph.head_mask is not None:
                head_mask &= graph.head_mask[torch.searchsorted(_flat_index(graph), flat)]
        used = head_mask.any(1)
        flat, head_mask = flat[used], head_mask[used]
    out = _from_flat(flat, n_q, n_k, head_mask)
    out.query_ptr, out.key_ptr = _shared_block_offsets(graphs, subset=True)
    return out


def difference(graph: AttentionGraph, *removed: AttentionGraph | Sequence[AttentionGraph]) -> AttentionGraph:
    """Edges of ``graph`` that are in none of ``removed`` (``a & ~b`` on dense masks).

    Per-head patterns: per head ``graph_h & ~removed_h``; a removed graph without a head mask
    removes its edges from every head. Edges that no head keeps are dropped.

    Example:
        >>> from graphattn.patterns import local
        >>> difference(local(3, 1), local(3, 0)).to_dense().int()
        tensor([[0, 1, 0],
                [1, 0, 1],
                [0, 1, 0]], dtype=torch.int32)
    """
    graphs = _collect((graph,), "difference") + (_collect(removed, "difference", minimum=0) if removed else [])
    n_q, n_k = _check_same_size(graphs, "difference")
    _check_same_device(graphs, "difference")
    num_heads = _num_heads(graphs, "difference")
    flat = _flat_index(graphs[0])
    keep_heads = None if num_heads is None else _head_mask_or_all(graphs[0], num_heads).clone()
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    for other in graphs[1:]:
        other_flat = _flat_index(other)
        hit = torch.isin(flat, other_flat)
        if keep_heads is None or other.head_mask is None:
            keep &= ~hit
        else:
            keep_heads[hit] &= ~other.head_mask[torch.searchsorted(other_flat, flat[hit])]
    if keep_heads is not None:
        keep &= keep_heads.any(1)
        keep_heads = keep_heads[keep]
    out = _from_flat(flat[keep], n_q, n_k, keep_heads)
    out.query_ptr, out.key_ptr = graphs[0].query_ptr, graphs[0].key_ptr
    return out


def per_head(*graphs: AttentionGraph | Sequence[AttentionGraph]) -> AttentionGraph:
    """A different pattern per attention head: head ``h`` uses ``graphs[h]``.

    Args:
        *graphs: ``H`` graphs of the same size ``[Nq, Nk]`` without head masks (or one list).

    Returns:
        The union graph with ``head_mask[e, h] = edge e is in graphs[h]`` (``[E, H]``);
        ``out.head(h)`` gives back ``graphs[h]``.

    Example:
        >>> from graphattn.patterns import local, strided
        >>> g = per_head([local(8, 1), strided(8, 4)])
        >>> g.num_heads, g.to_dense().shape
        (2, torch.Size([2, 8, 8]))
    """
    graphs = _collect(graphs, "per_head")
    n_q, n_k = _check_same_size(graphs, "per_head")
    device = _check_same_device(graphs, "per_head")
    for position, graph in enumerate(graphs):
        if graph.head_mask is not None:
            raise ValueError(
                f"Expected graphs without a head mask in per_head() (graph {position} is already "
                f"a per-head pattern with {graph.num_heads} heads); pass its heads separately, "
                f"e.g. [g.head(h) for h in range(g.num_heads)]"
            )
    edge_index = torch.cat([g.edge_index for g in graphs], dim=1)
    head_of_edge = torch.repeat_interleave(
        torch.arange(len(graphs), device=device),
        torch.tensor([g.num_edges for g in graphs], device=device),
        output_size=edge_index.size(1),
    )
    head_mask = torch.nn.functional.one_hot(head_of_edge, len(graphs)).bool()
    return _merge(edge_index, n_q, n_k, head_mask, graphs)


def batch(*graphs: AttentionGraph | Sequence[AttentionGraph]) -> AttentionGraph:
    """Block-diagonal batch: graph ``g``'s queries/keys are offset by the sizes before it.

    Delegates to :meth:`AttentionGraph.batch`; the offsets are kept in ``query_ptr`` /
    ``key_ptr`` (``[G + 1]``), and batching the same graph object ``B`` times lets the dense
    backend run one ``[B, L]`` attention.

    Example:
        >>> from graphattn.patterns import causal
        >>> g = batch(causal(2), causal(3))
        >>> g.num_queries, g.query_ptr.tolist()
        (5, [0, 2, 5])
    """
    return AttentionGraph.batch(_collect(graphs, "batch"))
