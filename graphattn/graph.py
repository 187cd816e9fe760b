"""AttentionGraph: which query may attend to which key, as a CSR matrix whose rows are queries.

Conventions (see DESIGN.md):

* Edge direction follows PyTorch Geometric: ``edge_index[0]`` is the source, i.e. the key/value
  node ``j``; ``edge_index[1]`` is the target, i.e. the query node ``i``. Query ``i`` aggregates
  over its in-edges ``j -> i``.
* Dense masks use ``True`` = *may attend*, like ``F.scaled_dot_product_attention``.
* Edges are stored sorted by (query, key) with duplicates merged, so per-edge tensors
  (``bias``, returned attention weights) are ``[E, H]`` in that order. Use
  :meth:`AttentionGraph.align_edge_values` to bring values given in the order of a raw
  ``edge_index`` into the CSR order.
* A per-head pattern is the union graph plus a boolean ``head_mask`` of shape ``[E, H]``.

Example:
    >>> import torch
    >>> from graphattn import AttentionGraph
    >>> g = AttentionGraph.from_edge_index(torch.tensor([[0, 1, 1], [1, 0, 1]]))
    >>> g
    AttentionGraph(num_queries=2, num_keys=2, num_edges=3, density=0.750)
    >>> g.to_dense()
    tensor([[False,  True],
            [ True,  True]])
"""
from __future__ import annotations

import operator
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor

__all__ = ["AttentionGraph", "iter_graph_slices"]


def _as_index_tensor(value: Any, name: str) -> Tensor:
    """Convert ``value`` (tensor, numpy array or nested list) to an int64 tensor, or raise."""
    if not isinstance(value, Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"Expected '{name}' to be a tensor of integer indices (got {type(value).__name__}: {error})"
            ) from None
        if value.numel() == 0:
            # an empty list (e.g. [[], []]) becomes a float tensor; there is nothing to convert
            return value.long()
    if value.dtype == torch.bool or value.is_floating_point() or value.is_complex():
        raise TypeError(
            f"Expected '{name}' to be of integer type (got '{value.dtype}'); "
            f"convert it with {name}.long()"
        )
    return value.long()


def _check_count(value: Any, name: str) -> int | None:
    """``None`` or a non-negative Python int (numpy and 0-dim tensor integers accepted)."""
    if value is None:
        return None
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value)
    try:
        if isinstance(value, bool):
            raise TypeError
        count = operator.index(value)
    except TypeError:
        raise TypeError(
            f"Expected '{name}' to be a non-negative int (got {type(value).__name__}: {value!r})"
        ) from None
    if count < 0:
        raise ValueError(f"Expected '{name}' to be a non-negative int (got {count})")
    return count


class AttentionGraph:
    """The edge set of an attention operation in CSR form (rows = queries).

    Args:
        crow: ``[num_queries + 1]`` int64 row pointer; the keys of query ``i`` are
            ``col[crow[i]:crow[i+1]]``.
        col: ``[E]`` int64 key index of every edge, strictly increasing within a row.
        num_queries: number of query nodes ``Nq``.
        num_keys: number of key/value nodes ``Nk`` (differs from ``Nq`` for cross attention).
        head_mask: optional ``[E, H]`` bool; ``head_mask[e, h]`` says whether edge ``e`` is used by
            head ``h`` (a per-head pattern). ``None`` means every head uses every edge.
        query_ptr / key_ptr: optional ``[G + 1]`` node offsets of the graphs a block-diagonal
            batch was made of (see :meth:`batch`).
        validate: check the invariants (sortedness, ranges). Constructors that build the CSR
            themselves pass ``False``.

    Most users build graphs with :meth:`from_edge_index`, :meth:`from_dense` or the functions in
    :mod:`graphattn.patterns` rather than this constructor.
    """

    def __init__(
        self,
        crow: Tensor,
        col: Tensor,
        num_queries: int,
        num_keys: int,
        *,
        head_mask: Tensor | None = None,
        query_ptr: Tensor | None = None,
        key_ptr: Tensor | None = None,
        validate: bool = True,
    ) -> None:
        self.crow = crow
        self.col = col
        self.num_queries = int(num_queries)
        self.num_keys = int(num_keys)
        self.head_mask = head_mask
        self.query_ptr = query_ptr
        self.key_ptr = key_ptr
        # The single graph a batch replicates, when batch() was given the same graph B times:
        # the dense backend then runs [B, L] attention instead of one block-diagonal mask.
        self.replicated_from: AttentionGraph | None = None
        self.input_edge_map: Tensor | None = None
        self._cache: dict[Any, Any] = {}
        if validate:
            self.validate()

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_edge_index(
        cls,
        edge_index: Tensor,
        num_queries: int | None = None,
        num_keys: int | None = None,
        *,
        head_mask: Tensor | None = None,
    ) -> "AttentionGraph":
        """Build from a PyG-style ``edge_index`` of shape ``[2, E]``.

        Row 0 holds keys (sources), row 1 queries (targets). Unsorted input is sorted and
        duplicate edges are merged; :attr:`input_edge_map` (``[E_in]``) records which CSR edge
        each input edge became, for :meth:`align_edge_values`.

        Args:
            edge_index: ``[2, E]`` integer tensor (or array-like).
            num_queries: ``Nq``; defaults to ``num_keys`` if given, else ``max index + 1``.
            num_keys: ``Nk``; defaults to ``num_queries`` if given, else ``max index + 1``.
            head_mask: optional ``[E, H]`` bool in the *input* order; duplicate edges are merged
                with a logical or.
        """
        edge_index = _as_index_tensor(edge_index, "edge_index")
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(
                f"Expected 'edge_index' of shape [2, E] (row 0 = keys/sources, row 1 = "
                f"queries/targets), got shape {list(edge_index.shape)}; a list of (key, query) "
                f"pairs of shape [E, 2] must be transposed with edge_index.t()"
            )
        num_queries = _check_count(num_queries, "num_queries")
        num_keys = _check_count(num_keys, "num_keys")
        if edge_index.numel() and int(edge_index.min()) < 0:
            raise ValueError(
                f"Expected non-negative node indices in 'edge_index', but found index "
                f"{int(edge_index.min())}; indices count from 0"
            )
        if num_queries is None and num_keys is None:
            n = int(edge_index.max()) + 1 if edge_index.numel() else 0
            num_queries = num_keys = n
        elif num_queries is None:
            num_queries = num_keys
        elif num_keys is None:
            num_keys = num_queries
        assert num_queries is not None and num_keys is not None
        src, dst = edge_index[0], edge_index[1]
        if src.numel():
            _check_range(src, num_keys, "edge_index[0] (keys)", "num_keys")
            _check_range(dst, num_queries, "edge_index[1] (queries)", "num_queries")
        flat = dst * num_keys + src
        unique, inverse = torch.unique(flat, sorted=True, return_inverse=True)
        rows = torch.div(unique, max(num_keys, 1), rounding_mode="floor")
        cols = unique - rows * num_keys
        merged_heads = None
        if head_mask is not None:
            head_mask = _check_head_mask(head_mask, src.numel())
            merged_heads = (
                torch.zeros(unique.numel(), head_mask.size(1), dtype=torch.int32, device=head_mask.device)
                .index_add_(0, inverse.to(head_mask.device), head_mask.int())
                .gt(0)
            )
        graph = cls(
            _rows_to_crow(rows, num_queries),
            cols,
            num_queries,
            num_keys,
            head_mask=merged_heads,
            validate=False,
        )
        graph.input_edge_map = inverse
        return graph

    @classmethod
    def from_csr(
        cls, crow: Tensor, col: Tensor, num_keys: int, *, head_mask: Tensor | None = None
    ) -> "AttentionGraph":
        """Build from CSR arrays (rows = queries). Unsorted or duplicate columns are fixed."""
        crow = _as_index_tensor(crow, "crow")
        col = _as_index_tensor(col, "col")
        if crow.dim() != 1 or crow.numel() < 1:
            raise ValueError(f"Expected 'crow' of shape [num_queries + 1], got {list(crow.shape)}")
        if col.dim() != 1 or int(crow[-1]) != col.numel() or int(crow[0]) != 0:
            raise ValueError(
                f"Expected 'col' of shape [crow[-1]] = [{int(crow[-1])}] with crow[0] = 0, got "
                f"col of shape {list(col.shape)} and crow[0] = {int(crow[0])}"
            )
        if bool((crow.diff() < 0).any()):
            raise ValueError("Expected 'crow' to be non-decreasing")
        num_queries = crow.numel() - 1
        rows = torch.repeat_interleave(torch.arange(num_queries, device=crow.device), crow.diff())
        return cls.from_edge_index(
            torch.stack([col, rows]), num_queries, num_keys, head_mask=head_mask
        )

    @classmethod
    def from_dense(cls, mask: Tensor) -> "AttentionGraph":
        """Build from a boolean mask ``[Nq, Nk]`` (``True`` = may attend).

        A ``[H, Nq, Nk]`` mask gives a per-head pattern: the union graph with a ``head_mask``.
        """
        if not isinstance(mask, Tensor):
            mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool:
            raise TypeError(
                f"Expected 'mask' to be a bool tensor with True = may attend (got '{mask.dtype}'); "
                f"for an additive float mask use mask == 0, for torch.nn.MultiheadAttention's "
                f"bool mask (True = blocked) use ~mask"
            )
        if mask.dim() == 2:
            rows, cols = mask.nonzero(as_tuple=True)
            n_q, n_k = mask.shape
            return cls(_rows_to_crow(rows, n_q), cols, n_q, n_k, validate=False)
        if mask.dim() == 3:
            union = mask.any(0)
            graph = cls.from_dense(union)
            graph.head_mask = mask[:, graph.row, graph.col].t().contiguous()
            return graph
        raise ValueError(f"Expected 'mask' of shape [Nq, Nk] or [H, Nq, Nk], got {list(mask.shape)}")

    @classmethod
    def from_scipy(cls, matrix: Any) -> "AttentionGraph":
        """Build from a scipy.sparse matrix/array of shape ``[Nq, Nk]``.

        Entry ``(i, j)`` means query ``i`` may attend key ``j`` (the dense-mask layout). Every
        *stored* entry is an edge, explicit zeros included: call ``matrix.eliminate_zeros()``
        first if zeros should not count.
        """
        import scipy.sparse as sp

        if not sp.issparse(matrix):
            raise TypeError(f"Expected a scipy.sparse matrix, got {type(matrix).__name__}")
        coo = matrix.tocoo()
        edge_index = torch.stack(
            [torch.from_numpy(coo.col.astype("int64")), torch.from_numpy(coo.row.astype("int64"))]
        )
        return cls.from_edge_index(edge_index, coo.shape[0], coo.shape[1])

    @classmethod
    def from_networkx(cls, graph: Any) -> "AttentionGraph":
        """Build from a networkx graph; nodes are numbered in ``graph.nodes`` order.

        A directed edge ``u -> v`` lets ``v`` (query) attend ``u`` (key), as in PyG's
        ``from_networkx``; an undirected edge gives both directions.
        """
        import networkx as nx

        if not isinstance(graph, nx.Graph):
            raise TypeError(f"Expected a networkx graph, got {type(graph).__name__}")
        index = {node: i for i, node in enumerate(graph.nodes)}
        pairs = [(index[u], index[v]) for u, v in graph.edges]
        if not graph.is_directed():
            pairs += [(v, u) for u, v in pairs]
        edge_index = torch.tensor(pairs, dtype=torch.long).t().reshape(2, -1)
        n = graph.number_of_nodes()
        return cls.from_edge_index(edge_index, n, n)

    @classmethod
    def from_pyg(cls, data: Any) -> "AttentionGraph":
        """Build from a PyTorch Geometric ``Data`` (``data.edge_index``, ``data.num_nodes``)."""
        edge_index = getattr(data, "edge_index", None)
        if edge_index is None:
            raise ValueError("Expected a PyG Data object with an 'edge_index' attribute")
        n = data.num_nodes
        return cls.from_edge_index(edge_index, n, n)

    @classmethod
    def batch(cls, graphs: Sequence["AttentionGraph"]) -> "AttentionGraph":
        """Block-diagonal batch: graph ``g``'s nodes are offset by the sizes of graphs ``< g``.

        The offsets are kept in :attr:`query_ptr` / :attr:`key_ptr` (``[G + 1]``); a graph that
        is itself a batch contributes its own graphs, so the offsets always delimit the original
        graphs. Per-head patterns must agree on ``H``; a graph without a head mask counts as all
        heads. When every entry is the same object, :attr:`replicated_from` is the one graph that
        the result repeats :attr:`num_graphs` times.
        """
        graphs = list(graphs)
        if not graphs:
            raise ValueError("Expected at least one graph to batch, got an empty sequence")
        for i, g in enumerate(graphs):
            if not isinstance(g, AttentionGraph):
                raise TypeError(f"Expected AttentionGraph at position {i}, got {type(g).__name__}")
        device = graphs[0].device
        heads = {g.num_heads for g in graphs if g.num_heads is not None}
        if len(heads) > 1:
            raise ValueError(
                f"Expected per-head patterns with one head count to batch, got head counts "
                f"{sorted(heads)}; build every graph with the same number of heads"
            )
        n_q = torch.tensor([0] + [g.num_queries for g in graphs], device=device).cumsum(0)
        n_k = torch.tensor([0] + [g.num_keys for g in graphs], device=device).cumsum(0)
        query_ptr = torch.cat(
            [n_q[:1]] + [_graph_ptr(g, "query").to(device)[1:] + n_q[i] for i, g in enumerate(graphs)]
        )
        key_ptr = torch.cat(
            [n_k[:1]] + [_graph_ptr(g, "key").to(device)[1:] + n_k[i] for i, g in enumerate(graphs)]
        )
        edge_offsets = torch.tensor([0] + [g.num_edges for g in graphs], device=device).cumsum(0)
        crow = torch.cat(
            [graphs[0].crow[:1].to(device)] + [g.crow[1:].to(device) + edge_offsets[i] for i, g in enumerate(graphs)]
        )
        col = torch.cat([g.col.to(device) + n_k[i] for i, g in enumerate(graphs)])
        head_mask = None
        if heads:
            (h,) = heads
            head_mask = torch.cat(
                [
                    g.head_mask.to(device)
                    if g.head_mask is not None
                    else torch.ones(g.num_edges, h, dtype=torch.bool, device=device)
                    for g in graphs
                ]
            )
        out = cls(
            crow, col, int(n_q[-1]), int(n_k[-1]), head_mask=head_mask,
            query_ptr=query_ptr, key_ptr=key_ptr, validate=False,
        )
        first = graphs[0]
        if all(g is first for g in graphs):
            # a repeated batch repeats what that batch repeats (if anything)
            out.replicated_from = first if first.query_ptr is None else first.replicated_from
        return out

    # ------------------------------------------------------------------ properties
    @property
    def num_edges(self) -> int:
        """Number of (query, key) pairs ``E``."""
        return self.col.numel()

    @property
    def density(self) -> float:
        """``E / (Nq * Nk)``; 0 for an empty graph."""
        cells = self.num_queries * self.num_keys
        return self.num_edges / cells if cells else 0.0

    @property
    def device(self) -> torch.device:
        return self.col.device

    @property
    def num_heads(self) -> int | None:
        """``H`` of a per-head pattern, ``None`` when all heads share the edge set."""
        return None if self.head_mask is None else self.head_mask.size(1)

    @property
    def num_graphs(self) -> int:
        """How many graphs a block-diagonal batch holds (1 if not a batch)."""
        return 1 if self.query_ptr is None else self.query_ptr.numel() - 1

    @property
    def row(self) -> Tensor:
        """``[E]`` query index of every edge (cached)."""
        return self.cached(
            "row",
            lambda: torch.repeat_interleave(
                torch.arange(self.num_queries, device=self.device), self.degrees, output_size=self.num_edges
            ),
        )

    @property
    def degrees(self) -> Tensor:
        """``[Nq]`` number of keys each query attends (in-degree)."""
        return self.crow.diff()

    @property
    def edge_index(self) -> Tensor:
        """``[2, E]`` PyG-style edge index (row 0 keys, row 1 queries) in CSR order."""
        return torch.stack([self.col, self.row])

    @property
    def is_full(self) -> bool:
        """Every query attends every key (and no per-head restriction)."""
        return self.head_mask is None and self.num_edges == self.num_queries * self.num_keys

    @property
    def is_causal(self) -> bool:
        """Square graph whose edges are exactly ``key <= query`` (lower triangle incl. diagonal)."""
        def compute() -> bool:
            n = self.num_queries
            if self.head_mask is not None or n != self.num_keys or self.num_edges != n * (n + 1) // 2:
                return False
            return bool((self.col <= self.row).all())

        return self.cached("is_causal", compute)

    @property
    def uniform_blocks(self) -> tuple[int, int, int] | None:
        """``(B, L, S)`` when this is a batch of ``B`` graphs of ``L`` queries and ``S`` keys each.

        Every edge of a batch lies inside its own graph's block, so such a graph can run as
        ``[B, L, S]`` dense attention. ``None`` for a single graph or unequal sizes.
        """
        def compute() -> tuple[int, int, int] | None:
            if self.query_ptr is None or self.key_ptr is None or self.num_graphs < 2:
                return None
            q_sizes, k_sizes = self.query_ptr.diff(), self.key_ptr.diff()
            if bool((q_sizes != q_sizes[0]).any()) or bool((k_sizes != k_sizes[0]).any()):
                return None
            return self.num_graphs, int(q_sizes[0]), int(k_sizes[0])

        return self.cached("uniform_blocks", compute)

    # ------------------------------------------------------------------ conversions
    def to_dense(self) -> Tensor:
        """Boolean mask ``[Nq, Nk]`` (``[H, Nq, Nk]`` for a per-head pattern), True = may attend."""
        if self.head_mask is None:
            mask = torch.zeros(self.num_queries, self.num_keys, dtype=torch.bool, device=self.device)
            mask[self.row, self.col] = True
            return mask
        h = self.head_mask.size(1)
        mask = torch.zeros(h, self.num_queries, self.num_keys, dtype=torch.bool, device=self.device)
        mask[:, self.row, self.col] = self.head_mask.t()
        return mask

    def to_scipy(self) -> Any:
        """The union pattern as a ``scipy.sparse.csr_array`` of ones, shape ``[Nq, Nk]``."""
        import numpy as np
        import scipy.sparse as sp

        return sp.csr_array(
            (np.ones(self.num_edges, dtype=bool), self.col.cpu().numpy(), self.crow.cpu().numpy()),
            shape=(self.num_queries, self.num_keys),
        )

    def to(self, device: torch.device | str) -> "AttentionGraph":
        """A copy on ``device`` (derived structures are rebuilt there on first use); ``self`` if
        the graph is already there."""
        device = torch.device(device)
        here = self.device
        if device.type == here.type and (device.type == "cpu" or device.index in (None, here.index)):
            return self
        out = AttentionGraph(
            self.crow.to(device),
            self.col.to(device),
            self.num_queries,
            self.num_keys,
            head_mask=None if self.head_mask is None else self.head_mask.to(device),
            query_ptr=None if self.query_ptr is None else self.query_ptr.to(device),
            key_ptr=None if self.key_ptr is None else self.key_ptr.to(device),
            validate=False,
        )
        if self.replicated_from is not None:
            out.replicated_from = self.replicated_from.to(device)
        if self.input_edge_map is not None:
            out.input_edge_map = self.input_edge_map.to(device)
        return out

    def transpose(self) -> "AttentionGraph":
        """The graph with queries and keys swapped (rows = keys), cached.

        Its edge ``t`` is this graph's edge ``transpose_permutation()[t]``; per-edge values move
        along with ``values[perm]``. The csr backend uses it for the key/value gradients.
        """
        return self._transposed()[0]

    def transpose_permutation(self) -> Tensor:
        """``[E]`` map from the transposed graph's edge order to this graph's edge order."""
        return self._transposed()[1]

    def _transposed(self) -> tuple["AttentionGraph", Tensor]:
        def compute() -> tuple[AttentionGraph, Tensor]:
            order = torch.argsort(self.col * max(self.num_queries, 1) + self.row, stable=True)
            head_mask = None if self.head_mask is None else self.head_mask[order]
            t = AttentionGraph(
                _rows_to_crow(self.col[order], self.num_keys),
                self.row[order],
                self.num_keys,
                self.num_queries,
                head_mask=head_mask,
                query_ptr=self.key_ptr,
                key_ptr=self.query_ptr,
                validate=False,
            )
            if self.replicated_from is not None:
                t.replicated_from = self.replicated_from.transpose()
            return t, order

        return self.cached("transpose", compute)

    def head(self, h: int) -> "AttentionGraph":
        """The edge set head ``h`` uses, as a graph without head mask (``self`` if there is none).

        Batch offsets are kept. ``h`` may be negative, counting from the last head.
        """
        if self.head_mask is None:
            return self
        num_heads = self.head_mask.size(1)
        if not -num_heads <= h < num_heads:
            raise ValueError(
                f"Expected a head index in [0, {num_heads - 1}] for this {num_heads}-head pattern, got {h}"
            )
        keep = self.head_mask[:, h]
        out = AttentionGraph(
            _rows_to_crow(self.row[keep], self.num_queries), self.col[keep],
            self.num_queries, self.num_keys, query_ptr=self.query_ptr, key_ptr=self.key_ptr,
            validate=False,
        )
        if self.replicated_from is not None:
            out.replicated_from = self.replicated_from.head(h)
        return out

    def align_edge_values(self, values: Tensor, reduce: str = "sum") -> Tensor:
        """Reorder per-edge values given in the input ``edge_index`` order into CSR order.

        Args:
            values: ``[E_in, ...]`` one row per edge of the ``edge_index`` this graph was built
                from (see :meth:`from_edge_index`).
            reduce: how values of merged duplicate edges combine: ``"sum"``, ``"mean"``,
                ``"amax"`` or ``"amin"``.

        Returns:
            ``[E, ...]`` in the graph's edge order.
        """
        if self.input_edge_map is None:
            raise ValueError(
                "This graph was not built by from_edge_index, so there is no input edge order to "
                "align with; per-edge values must already be in CSR order"
            )
        if not isinstance(values, Tensor):
            raise TypeError(f"Expected 'values' to be a tensor [E_in, ...], got {type(values).__name__}")
        if values.dim() == 0 or values.size(0) != self.input_edge_map.numel():
            raise ValueError(
                f"Expected values with {self.input_edge_map.numel()} rows (one per input edge), "
                f"got shape {list(values.shape)}"
            )
        if reduce not in ("sum", "mean", "amax", "amin"):
            raise ValueError(f"Expected reduce in 'sum', 'mean', 'amax', 'amin', got {reduce!r}")
        out = values.new_zeros((self.num_edges,) + tuple(values.shape[1:]))
        index = self.input_edge_map.to(values.device)
        if reduce == "sum":
            return out.index_add_(0, index, values)
        # every CSR edge has at least one input edge, so include_self=False never leaves the zero
        index = index.view((-1,) + (1,) * (values.dim() - 1)).expand_as(values)
        return out.scatter_reduce_(0, index, values, reduce, include_self=False)

    # ------------------------------------------------------------------ helpers
    def cached(self, key: Any, build: Callable[[], Any]) -> Any:
        """Return ``build()`` computed once per graph (layouts, masks, transposes)."""
        try:
            return self._cache[key]
        except KeyError:
            value = self._cache[key] = build()
            return value

    def validate(self) -> "AttentionGraph":
        """Check every invariant; raises ValueError naming the first one broken."""
        crow, col = self.crow, self.col
        if not isinstance(crow, Tensor) or not isinstance(col, Tensor):
            raise TypeError("Expected 'crow' and 'col' to be tensors")
        if crow.dtype != torch.long or col.dtype != torch.long:
            raise TypeError(f"Expected int64 'crow' and 'col' (got '{crow.dtype}', '{col.dtype}')")
        if crow.shape != (self.num_queries + 1,):
            raise ValueError(f"Expected 'crow' of shape [{self.num_queries + 1}], got {list(crow.shape)}")
        if int(crow[0]) != 0 or int(crow[-1]) != col.numel() or bool((crow.diff() < 0).any()):
            raise ValueError("Expected 'crow' to start at 0, end at E and never decrease")
        if col.numel():
            _check_range(col, self.num_keys, "col (keys)", "num_keys")
            flat = self.row * max(self.num_keys, 1) + col
            if bool((flat.diff() <= 0).any()):
                raise ValueError(
                    "Expected edges sorted by (query, key) without duplicates; build the graph "
                    "with AttentionGraph.from_edge_index to sort and merge them"
                )
        if self.head_mask is not None:
            _check_head_mask(self.head_mask, col.numel())
        return self

    def equals(self, other: "AttentionGraph") -> bool:
        """Same sizes, same edges and same head mask."""
        return (
            self.num_queries == other.num_queries
            and self.num_keys == other.num_keys
            and torch.equal(self.crow.cpu(), other.crow.cpu())
            and torch.equal(self.col.cpu(), other.col.cpu())
            and (self.head_mask is None) == (other.head_mask is None)
            and (self.head_mask is None or torch.equal(self.head_mask.cpu(), other.head_mask.cpu()))
        )

    def __repr__(self) -> str:
        extra = ""
        if self.num_heads is not None:
            extra += f", num_heads={self.num_heads}"
        if self.query_ptr is not None:
            extra += f", num_graphs={self.num_graphs}"
        if self.device.type != "cpu":
            extra += f", device={self.device}"
        return (
            f"AttentionGraph(num_queries={self.num_queries}, num_keys={self.num_keys}, "
            f"num_edges={self.num_edges}, density={self.density:.3f}{extra})"
        )


def _rows_to_crow(rows: Tensor, num_rows: int) -> Tensor:
    """CSR row pointer ``[num_rows + 1]`` from sorted row indices ``[E]``."""
    counts = torch.bincount(rows, minlength=num_rows) if rows.numel() else rows.new_zeros(num_rows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _graph_ptr(graph: AttentionGraph, side: str) -> Tensor:
    """``[G + 1]`` query or key offsets of ``graph``'s parts (``[0, N]`` if not a batch)."""
    ptr = graph.query_ptr if side == "query" else graph.key_ptr
    if ptr is not None:
        return ptr
    size = graph.num_queries if side == "query" else graph.num_keys
    return torch.tensor([0, size], device=graph.device)


def _check_range(index: Tensor, size: int, name: str, size_name: str) -> None:
    low, high = int(index.min()), int(index.max())
    if low < 0 or high >= size:
        raise ValueError(
            f"Expected {name} in [0, {size - 1}] ({size_name} = {size}), but found index "
            f"{low if low < 0 else high}; pass a larger {size_name} or fix the indices"
        )


def _check_head_mask(head_mask: Tensor, num_edges: int) -> Tensor:
    if not isinstance(head_mask, Tensor) or head_mask.dtype != torch.bool:
        got = head_mask.dtype if isinstance(head_mask, Tensor) else type(head_mask).__name__
        raise TypeError(f"Expected 'head_mask' to be a bool tensor [E, H] (got {got})")
    if head_mask.dim() != 2 or head_mask.size(0) != num_edges:
        raise ValueError(
            f"Expected 'head_mask' of shape [E, H] = [{num_edges}, H], got {list(head_mask.shape)}"
        )
    return head_mask


def iter_graph_slices(graph: AttentionGraph) -> Iterable[tuple[slice, slice]]:
    """Yield (query slice, key slice) of every graph in a block-diagonal batch."""
    if graph.query_ptr is None or graph.key_ptr is None:
        yield slice(0, graph.num_queries), slice(0, graph.num_keys)
        return
    q, k = graph.query_ptr.tolist(), graph.key_ptr.tolist()
    for i in range(len(q) - 1):
        yield slice(q[i], q[i + 1]), slice(k[i], k[i + 1])
