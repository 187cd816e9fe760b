"""Attention patterns from graph structure (molecules, meshes, citation graphs, ...).

Edges follow PyTorch Geometric's direction: ``edge_index[0]`` is the source ``j`` (key),
``edge_index[1]`` the target ``i`` (query); query ``i`` attends over its in-edges ``j -> i``.
Graphs are **not** symmetrized unless ``symmetric=True`` (PyG datasets of undirected graphs
already store both directions).

* :func:`adjacency`: attention only along graph edges (GAT / TransformerConv style).
* :func:`k_hop`: attention to every node within ``k`` hops.
* :func:`full_per_graph`: every node attends every node of its own graph in a batch of graphs
  (graph transformers on batched molecules).
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from graphattn.graph import AttentionGraph, _as_index_tensor
from graphattn.patterns.sequence import _check_int, _progression_graph

__all__ = ["adjacency", "k_hop", "full_per_graph"]

SelfLoops = Literal[True, False, "keep"]


def _check_edge_index(edge_index: Any, num_nodes: int | None) -> tuple[Tensor, int]:
    edge_index = _as_index_tensor(edge_index, "edge_index")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(
            f"Expected 'edge_index' of shape [2, E] (row 0 = sources/keys, row 1 = "
            f"targets/queries), got shape {list(edge_index.shape)}; a list of (source, target) "
            f"pairs of shape [E, 2] must be transposed with edge_index.t()"
        )
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
    else:
        num_nodes = _check_int(num_nodes, "num_nodes")
    if edge_index.numel():
        low, high = int(edge_index.min()), int(edge_index.max())
        if low < 0 or high >= num_nodes:
            raise ValueError(
                f"Expected node indices in 'edge_index' in [0, {num_nodes - 1}] (num_nodes = "
                f"{num_nodes}), but found {low if low < 0 else high}; pass a larger num_nodes "
                f"or fix the indices"
            )
    return edge_index, num_nodes


def adjacency(
    edge_index: Tensor,
    num_nodes: int | None = None,
    *,
    self_loops: SelfLoops = True,
    symmetric: bool = False,
) -> AttentionGraph:
    """Attention only along the edges of a graph: query ``i`` attends ``j`` iff ``j -> i``.

    Duplicate edges are merged. The graph's :attr:`~AttentionGraph.input_edge_map` maps the
    *given* edges to CSR positions, so per-edge features (bond types, distances) given in the
    ``edge_index`` order become ``[E, H]`` biases with ``graph.align_edge_values(values)``;
    edges that were only added here (self loops, reversed edges) get zeros there. When
    ``self_loops=False`` removes given self loops there is no such map (``None``).

    Args:
        edge_index: ``[2, E]`` integer tensor, PyG direction (row 0 source/key, row 1
            target/query).
        num_nodes: ``N``; defaults to ``max index + 1`` (pass it when trailing nodes may be
            isolated).
        self_loops: ``True`` (default, as in GAT): every node also attends itself. ``False``:
            given self loops are removed. ``"keep"``: the edges as given.
        symmetric: also add every reversed edge ``i -> j`` (for an undirected graph stored
            one direction only).

    Returns:
        ``AttentionGraph`` of size ``[N, N]``.

    Example:
        >>> edge_index = torch.tensor([[0, 1], [1, 2]])  # 0 -> 1 -> 2
        >>> adjacency(edge_index, self_loops=False).to_dense().int()
        tensor([[0, 0, 0],
                [1, 0, 0],
                [0, 1, 0]], dtype=torch.int32)
    """
    if self_loops not in (True, False, "keep") or not isinstance(self_loops, (bool, str)):
        raise ValueError(f"Expected 'self_loops' to be True, False or 'keep' (got {self_loops!r})")
    edge_index, num_nodes = _check_edge_index(edge_index, num_nodes)
    num_given = edge_index.size(1)
    parts = [edge_index]
    if symmetric:
        parts.append(edge_index.flip(0))
    if self_loops is True:
        nodes = torch.arange(num_nodes, device=edge_index.device)
        parts.append(torch.stack([nodes, nodes]))
    edges = torch.cat(parts, dim=1)
    removed_given = False
    if self_loops is False:
        keep = edges[0] != edges[1]
        removed_given = not bool(keep[:num_given].all())
        edges = edges[:, keep]
    graph = AttentionGraph.from_edge_index(edges, num_nodes, num_nodes)
    graph.input_edge_map = None if removed_given else graph.input_edge_map[:num_given]
    return graph


def k_hop(
    edge_index: Tensor,
    num_nodes: int | None,
    k: int,
    *,
    self_loops: bool = True,
    symmetric: bool = False,
) -> AttentionGraph:
    """Attention to every node within ``k`` hops: ``i`` attends ``j`` iff a directed path
    ``j -> ... -> i`` of at most ``k`` edges exists.

    Computed as the sparsity of ``(I + A)^k`` with scipy.sparse (``A[i, j] = 1`` for an edge
    ``j -> i``), clipped to 0/1 after every product; on the CPU, then moved to the device of
    ``edge_index``. The result can be dense for large ``k`` on well-connected graphs.

    Args:
        edge_index: ``[2, E]`` integer tensor, PyG direction.
        num_nodes: ``N``, or ``None`` for ``max index + 1``.
        k: hop count ``>= 0`` (``k = 1`` equals :func:`adjacency`).
        self_loops: whether a node attends itself (distance 0). ``False`` removes the diagonal
            even where a cycle leads back within ``k`` hops.
        symmetric: treat every edge as undirected.

    Example:
        >>> path = torch.tensor([[0, 1, 2], [1, 2, 3]])  # 0 -> 1 -> 2 -> 3
        >>> k_hop(path, 4, 2).to_dense().int()
        tensor([[1, 0, 0, 0],
                [1, 1, 0, 0],
                [1, 1, 1, 0],
                [0, 1, 1, 1]], dtype=torch.int32)
    """
    import numpy as np
    import scipy.sparse as sp

    if not isinstance(self_loops, bool):
        raise TypeError(f"Expected 'self_loops' to be True or False (got {self_loops!r})")
    edge_index, num_nodes = _check_edge_index(edge_index, num_nodes)
    k = _check_int(k, "k", fix="k = 0 is self attention only")
    source, target = edge_index.cpu().numpy()
    if symmetric:
        source, target = np.concatenate([source, target]), np.concatenate([target, source])
    step = sp.csr_array(
        (np.ones(source.size, dtype=np.int64), (target, source)), shape=(num_nodes, num_nodes)
    )
    step = step + sp.eye_array(num_nodes, dtype=np.int64, format="csr")
    step.data[:] = 1
    reach = sp.eye_array(num_nodes, dtype=np.int64, format="csr")
    for _ in range(k):
        grown = (step @ reach).tocsr()
        grown.data[:] = 1
        if grown.nnz == reach.nnz:  # nothing new: the closure is complete
            break
        reach = grown
    if not self_loops:
        reach = reach - sp.eye_array(num_nodes, dtype=np.int64, format="csr")
    reach = sp.csr_array(reach)
    reach.eliminate_zeros()
    reach.sum_duplicates()
    reach.sort_indices()
    device = edge_index.device
    return AttentionGraph(
        torch.from_numpy(reach.indptr.astype(np.int64)).to(device),
        torch.from_numpy(reach.indices.astype(np.int64)).to(device),
        num_nodes,
        num_nodes,
        validate=False,
    )


def full_per_graph(batch: Tensor | None = None, *, ptr: Tensor | None = None) -> AttentionGraph:
    """Each node attends every node of its own graph (block-diagonal full attention).

    Give exactly one of ``batch`` (PyG's ``[N]`` graph id of every node) or ``ptr``
    (``[G + 1]`` node offsets, PyG's ``Batch.ptr``). When the nodes of each graph are
    contiguous (always the case for ``ptr`` and for PyG batches) the result carries
    ``query_ptr = key_ptr = ptr``, which lets the dense backend run padded per-graph attention.

    Args:
        batch: ``[N]`` non-negative graph ids (need not be sorted).
        ptr: ``[G + 1]`` non-decreasing offsets starting at 0.

    Example:
        >>> full_per_graph(torch.tensor([0, 0, 1])).to_dense().int()
        tensor([[1, 1, 0],
                [1, 1, 0],
                [0, 0, 1]], dtype=torch.int32)
    """
    if (batch is None) == (ptr is None):
        raise ValueError(
            "Expected exactly one of 'batch' ([N] graph id per node) or 'ptr' ([G + 1] node "
            f"offsets) (got {'both' if batch is not None else 'neither'})"
        )
    if ptr is not None:
        ptr = _as_index_tensor(ptr, "ptr")
        if ptr.dim() != 1 or ptr.numel() < 1 or int(ptr[0]) != 0 or bool((ptr.diff() < 0).any()):
            raise ValueError(
                f"Expected 'ptr' to be a 1-D [G + 1] tensor of non-decreasing node offsets "
                f"starting at 0 (got {ptr.tolist() if ptr.numel() <= 10 else list(ptr.shape)})"
            )
        sizes = ptr.diff()
        graph_of_node = torch.repeat_interleave(
            torch.arange(sizes.numel(), device=ptr.device), sizes, output_size=int(ptr[-1])
        )
        order = None
    else:
        graph_of_node = _as_index_tensor(batch, "batch")
        if graph_of_node.dim() != 1:
            raise ValueError(
                f"Expected 'batch' of shape [N] (graph id per node), got {list(graph_of_node.shape)}"
            )
        if graph_of_node.numel() and int(graph_of_node.min()) < 0:
            raise ValueError(
                f"Expected non-negative graph ids in 'batch' (got {int(graph_of_node.min())})"
            )
        num_graphs = int(graph_of_node.max()) + 1 if graph_of_node.numel() else 0
        sizes = torch.bincount(graph_of_node, minlength=num_graphs)
        ptr = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
        is_sorted = bool((graph_of_node.diff() >= 0).all())
        order = None if is_sorted else torch.argsort(graph_of_node, stable=True)
    n = graph_of_node.numel()
    # Query i attends positions ptr[g] .. ptr[g + 1] - 1 of the nodes grouped by graph.
    graph = _progression_graph(ptr[:-1][graph_of_node], sizes[graph_of_node], n, n)
    if order is None:
        graph.query_ptr, graph.key_ptr = ptr, ptr
    else:
        # Nodes of a graph are scattered: map grouped positions back to node ids (a stable sort
        # keeps them increasing within each row).
        graph.col = order[graph.col]
    return graph
