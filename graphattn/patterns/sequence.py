"""Attention patterns over a sequence of positions ``0 .. n-1``.

Every builder returns an :class:`~graphattn.graph.AttentionGraph` whose rows are queries: the
dense picture ``graph.to_dense()[i, j]`` says whether query ``i`` may attend key ``j``. The
builders are vectorized (no Python loop over positions) and build the sorted CSR directly, so
even ``n = 16384`` patterns take milliseconds.

Summary (``i`` = query, ``j`` = key):

====================================  ==========================================================
``full(nq, nk)``                      every pair (also cross attention, ``nq != nk``)
``causal(n)``                         ``j <= i``
``local(n, window)``                  ``|i - j| <= window`` (``causal=True``: ``0 <= i - j <= window``)
``strided(n, stride)``                ``(i - j) % stride == 0`` (dilated); optional ``window``
``block(n, size)``                    ``i // size == j // size`` (block diagonal)
``global_tokens(n, positions)``       ``i`` or ``j`` in ``positions`` (only those rows/columns)
``add_global_tokens(graph, g)``       appends ``g`` new all-to-all nodes at the end
``random(n, k, seed)``                ``k`` distinct random keys per query
``bigbird(n, window, g, r, seed)``    local + first ``g`` positions global + ``r`` random
``longformer(n, window, positions)``  local + global ``positions``
====================================  ==========================================================

Combine them with :func:`graphattn.patterns.union` and friends.
"""
from __future__ import annotations

import operator
from typing import Any, Sequence

import torch
from torch import Tensor

from graphattn.graph import AttentionGraph, _as_index_tensor, _rows_to_crow

__all__ = [
    "full",
    "causal",
    "local",
    "strided",
    "block",
    "global_tokens",
    "add_global_tokens",
    "random",
    "bigbird",
    "longformer",
]


# ---------------------------------------------------------------------------- shared helpers
def _check_int(value: Any, name: str, minimum: int = 0, fix: str = "") -> int:
    """Return ``value`` as a Python int ``>= minimum`` or raise TypeError/ValueError."""
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(
            f"Expected '{name}' to be an int >= {minimum} (got {value!r} of type "
            f"{type(value).__name__}); pass an integer, e.g. int({name})"
        )
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(
            f"Expected '{name}' to be an int >= {minimum} (got {value!r} of type "
            f"{type(value).__name__}); pass an integer"
        ) from None
    if value < minimum:
        raise ValueError(
            f"Expected '{name}' to be an int >= {minimum} (got {value})" + (f"; {fix}" if fix else "")
        )
    return value


def _check_device(device: Any) -> torch.device:
    if device is None:
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (TypeError, RuntimeError) as error:
        raise TypeError(
            f"Expected 'device' to be a torch.device, a string like 'cpu'/'cuda' or None "
            f"(got {device!r}: {error})"
        ) from None


def _check_positions(positions: Any, n: int, name: str = "positions") -> Tensor:
    """Sorted unique ``[P]`` int64 positions, each in ``[0, n)``."""
    positions = _as_index_tensor(positions, name)
    if positions.dim() == 0:  # a single position
        positions = positions.reshape(1)
    if positions.dim() != 1:
        raise ValueError(
            f"Expected '{name}' to be a 1-D list or tensor of indices, got shape "
            f"{list(positions.shape)}; flatten it with .flatten()"
        )
    if positions.numel():
        low, high = int(positions.min()), int(positions.max())
        if low < 0:
            raise ValueError(
                f"Expected every entry of '{name}' in [0, {n - 1}] (n = {n}), but found {low}; "
                f"negative indices are not wrapped around, use n + index instead"
            )
        if high >= n:
            raise ValueError(
                f"Expected every entry of '{name}' in [0, {n - 1}] (n = {n}), but found {high}; "
                f"drop it or use a longer sequence"
            )
    return torch.unique(positions)


def _progression_graph(
    first: Tensor, count: Tensor, num_queries: int, num_keys: int, step: int = 1
) -> AttentionGraph:
    """Query ``i`` attends keys ``first[i] + step * t`` for ``t in range(count[i])``.

    ``first`` and ``count`` are ``[num_queries]`` int64; ``step >= 1`` so each row comes out
    sorted and duplicate-free and the cheap constructor applies.
    """
    count = count.clamp_min(0)
    crow = _rows_to_crow_from_counts(count)
    if num_queries and bool((count == count[0]).all()):
        # Every row has the same length: a broadcast, no gather (the row index stays lazy).
        offsets = step * torch.arange(int(count[0]), device=count.device)
        col = (first[:, None] + offsets).reshape(-1)
        return AttentionGraph(crow, col, num_queries, num_keys, validate=False)
    num_edges = int(crow[-1])
    rows = torch.repeat_interleave(
        torch.arange(num_queries, device=count.device), count, output_size=num_edges
    )
    # col = first[row] + step * (edge - crow[row]), with a single gather.
    col = step * torch.arange(num_edges, device=count.device) + (first - step * crow[:-1])[rows]
    graph = AttentionGraph(crow, col, num_queries, num_keys, validate=False)
    graph.cached("row", lambda: rows)
    return graph


def _rows_to_crow_from_counts(count: Tensor) -> Tensor:
    return torch.cat([count.new_zeros(1), count.cumsum(0)])


def _from_sorted_rows(rows: Tensor, cols: Tensor, num_queries: int, num_keys: int) -> AttentionGraph:
    """Cheap constructor for edges already sorted by (row, col) without duplicates."""
    graph = AttentionGraph(_rows_to_crow(rows, num_queries), cols, num_queries, num_keys, validate=False)
    graph.cached("row", lambda: rows)
    return graph


def _union(graphs: Sequence[AttentionGraph]) -> AttentionGraph:
    # Local import: combine imports this module for its helpers.
    from graphattn.patterns.combine import union

    return union(*graphs)


# ---------------------------------------------------------------------------- builders
def full(num_queries: int, num_keys: int | None = None, *, device: torch.device | str | None = None) -> AttentionGraph:
    """Every query attends every key (dense attention; cross attention when sizes differ).

    Args:
        num_queries: ``Nq``.
        num_keys: ``Nk``; defaults to ``num_queries``.
        device: where the CSR tensors live (default CPU).

    Returns:
        ``AttentionGraph`` with ``Nq * Nk`` edges.

    Example:
        >>> full(2, 3).to_dense()
        tensor([[True, True, True],
                [True, True, True]])
    """
    num_queries = _check_int(num_queries, "num_queries")
    num_keys = num_queries if num_keys is None else _check_int(num_keys, "num_keys")
    device = _check_device(device)
    first = torch.zeros(num_queries, dtype=torch.long, device=device)
    return _progression_graph(first, torch.full_like(first, num_keys), num_queries, num_keys)


def causal(num_queries: int, num_keys: int | None = None, *, device: torch.device | str | None = None) -> AttentionGraph:
    """Autoregressive mask: query ``i`` attends keys ``j <= i``.

    With ``num_keys > num_queries`` the queries are the *last* ``num_queries`` positions of the
    key sequence (lower-right alignment, as in incremental decoding with a key/value cache):
    query ``i`` attends keys ``j <= i + num_keys - num_queries``. With ``num_keys <
    num_queries`` the first rows are empty (they output zeros).

    Args:
        num_queries: ``Nq`` (``n`` for self attention).
        num_keys: ``Nk``; defaults to ``num_queries``.
        device: where the CSR tensors live (default CPU).

    Example:
        >>> causal(3).to_dense()
        tensor([[ True, False, False],
                [ True,  True, False],
                [ True,  True,  True]])
    """
    num_queries = _check_int(num_queries, "num_queries")
    num_keys = num_queries if num_keys is None else _check_int(num_keys, "num_keys")
    device = _check_device(device)
    query = torch.arange(num_queries, device=device)
    count = (query + (num_keys - num_queries) + 1).clamp(0, num_keys)
    return _progression_graph(torch.zeros_like(query), count, num_queries, num_keys)


def local(n: int, window: int, causal: bool = False, *, device: torch.device | str | None = None) -> AttentionGraph:
    """Sliding window: query ``i`` attends keys with ``|i - j| <= window``.

    Args:
        n: sequence length.
        window: how far each side a query sees (``0`` = only itself); rows have up to
            ``2 * window + 1`` keys.
        causal: only look back: ``0 <= i - j <= window`` (up to ``window + 1`` keys).
        device: where the CSR tensors live (default CPU).

    Example:
        >>> local(4, 1).to_dense().int()
        tensor([[1, 1, 0, 0],
                [1, 1, 1, 0],
                [0, 1, 1, 1],
                [0, 0, 1, 1]], dtype=torch.int32)
    """
    n = _check_int(n, "n")
    window = _check_int(window, "window", fix="window = 0 means each position sees only itself")
    device = _check_device(device)
    query = torch.arange(n, device=device)
    first = (query - window).clamp_min(0)
    last = query if causal else (query + window).clamp_max(n - 1)
    return _progression_graph(first, last - first + 1, n, n)


def strided(
    n: int, stride: int, causal: bool = False, *, window: int | None = None, device: torch.device | str | None = None
) -> AttentionGraph:
    """Dilated pattern: query ``i`` attends keys ``j`` with ``(i - j) % stride == 0``.

    ``stride = 1`` is :func:`full` (or :func:`causal`). Union it with :func:`local` for the
    Sparse Transformer's strided pattern.

    Args:
        n: sequence length.
        stride: the dilation, ``>= 1``.
        causal: keep only ``j <= i``.
        window: if given, also require ``|i - j| <= window`` (Longformer's dilated sliding
            window: ``strided(n, d, window=w * d)`` gives ``w`` steps of ``d`` each side).
        device: where the CSR tensors live (default CPU).

    Example:
        >>> strided(5, 2).to_dense().int()
        tensor([[1, 0, 1, 0, 1],
                [0, 1, 0, 1, 0],
                [1, 0, 1, 0, 1],
                [0, 1, 0, 1, 0],
                [1, 0, 1, 0, 1]], dtype=torch.int32)
    """
    n = _check_int(n, "n")
    stride = _check_int(stride, "stride", minimum=1, fix="stride = 1 attends every position")
    if window is not None:
        window = _check_int(window, "window", fix="window = None means no distance limit")
    device = _check_device(device)
    query = torch.arange(n, device=device)
    residue, step_index = query % stride, torch.div(query, stride, rounding_mode="floor")
    # Keys are residue + stride * m for m in [m_low, m_high].
    m_low = torch.zeros_like(query)
    m_high = torch.div(n - 1 - residue, stride, rounding_mode="floor")
    if causal:
        m_high = step_index
    if window is not None:
        m_low = (step_index - window // stride).clamp_min(0)
        m_high = torch.minimum(m_high, step_index + window // stride)
    return _progression_graph(residue + stride * m_low, m_high - m_low + 1, n, n, step=stride)


def block(n: int, size: int, causal: bool = False, *, device: torch.device | str | None = None) -> AttentionGraph:
    """Block diagonal: positions are cut into chunks of ``size``; each attends its own chunk.

    The last chunk is shorter when ``size`` does not divide ``n``.

    Args:
        n: sequence length.
        size: chunk length, ``>= 1``.
        causal: within a chunk only look back (``j <= i``).
        device: where the CSR tensors live (default CPU).

    Example:
        >>> block(5, 2).to_dense().int()
        tensor([[1, 1, 0, 0, 0],
                [1, 1, 0, 0, 0],
                [0, 0, 1, 1, 0],
                [0, 0, 1, 1, 0],
                [0, 0, 0, 0, 1]], dtype=torch.int32)
    """
    n = _check_int(n, "n")
    size = _check_int(size, "size", minimum=1, fix="use size = 1 for self-only attention")
    device = _check_device(device)
    query = torch.arange(n, device=device)
    first = torch.div(query, size, rounding_mode="floor") * size
    last = query if causal else (first + size - 1).clamp_max(n - 1)
    return _progression_graph(first, last - first + 1, n, n)


def global_tokens(n: int, positions: Sequence[int] | Tensor | int, *, device: torch.device | str | None = None) -> AttentionGraph:
    """Global positions: each chosen position attends all, and all attend it.

    Only the global rows and columns are edges: a non-global position attends *just* the
    global ones (not even itself). Combine with another pattern for the rest, e.g.
    ``union(local(n, w), global_tokens(n, [0]))`` (that is :func:`longformer`).

    Args:
        n: sequence length.
        positions: ``[P]`` indices in ``[0, n)`` (list, tensor or a single int); duplicates are
            merged, negative indices are rejected.
        device: where the CSR tensors live (default CPU).

    Example:
        >>> global_tokens(4, [1]).to_dense().int()
        tensor([[0, 1, 0, 0],
                [1, 1, 1, 1],
                [0, 1, 0, 0],
                [0, 1, 0, 0]], dtype=torch.int32)
    """
    n = _check_int(n, "n")
    device = _check_device(device)
    positions = _check_positions(positions, n).to(device)
    num_global = positions.numel()
    is_global = torch.zeros(n, dtype=torch.bool, device=device)
    is_global[positions] = True
    count = torch.where(is_global, n, num_global)
    crow = _rows_to_crow_from_counts(count)
    num_edges = int(crow[-1])
    rows = torch.repeat_interleave(torch.arange(n, device=device), count, output_size=num_edges)
    offset_in_row = torch.arange(num_edges, device=device) - crow[:-1][rows]
    if num_global:
        global_key = positions[offset_in_row.clamp_max(num_global - 1)]
        col = torch.where(is_global[rows], offset_in_row, global_key)
    else:
        col = offset_in_row
    graph = AttentionGraph(crow, col, n, n, validate=False)
    graph.cached("row", lambda: rows)
    return graph


def add_global_tokens(graph: AttentionGraph, num_global: int) -> AttentionGraph:
    """Append ``num_global`` new global nodes that attend to and are attended by every node.

    The new nodes are the **last** indices: queries ``Nq .. Nq + g - 1`` and keys
    ``Nk .. Nk + g - 1`` (so for self attention, concatenate the global token embeddings
    *after* the sequence). They see each other too. The old edges keep their relative order;
    a per-head pattern gives the new edges to every head. Block offsets
    (``query_ptr``/``key_ptr``) are dropped because the result is no longer block diagonal.

    Args:
        graph: the pattern over the existing ``[Nq, Nk]`` nodes.
        num_global: ``g >= 0`` how many tokens to append.

    Returns:
        ``AttentionGraph`` of size ``[Nq + g, Nk + g]``.

    Example:
        >>> add_global_tokens(local(3, 0), 1).to_dense().int()
        tensor([[1, 0, 0, 1],
                [0, 1, 0, 1],
                [0, 0, 1, 1],
                [1, 1, 1, 1]], dtype=torch.int32)
    """
    if not isinstance(graph, AttentionGraph):
        raise TypeError(
            f"Expected 'graph' to be an AttentionGraph (got {type(graph).__name__}); build one "
            f"with graphattn.patterns or AttentionGraph.from_edge_index"
        )
    num_global = _check_int(num_global, "num_global")
    n_q, n_k, device = graph.num_queries, graph.num_keys, graph.device
    new_q, new_k = n_q + num_global, n_k + num_global
    # Old row r keeps its keys and gains the g new keys after them (they sort last), so its
    # edges move by r * g; the g new rows attend every key and come last.
    count = torch.cat(
        [graph.degrees + num_global, torch.full((num_global,), new_k, dtype=torch.long, device=device)]
    )
    crow = _rows_to_crow_from_counts(count)
    col = torch.empty(int(crow[-1]), dtype=torch.long, device=device)
    old_edge_position = torch.arange(graph.num_edges, device=device) + graph.row * num_global
    col[old_edge_position] = graph.col
    new_keys = torch.arange(n_k, new_k, device=device)
    appended_position = crow[1 : n_q + 1, None] - num_global + torch.arange(num_global, device=device)
    col[appended_position.reshape(-1)] = new_keys.repeat(n_q)
    col[int(crow[n_q]):] = torch.arange(new_k, device=device).repeat(num_global)
    head_mask = None
    if graph.head_mask is not None:
        head_mask = torch.ones(col.numel(), graph.head_mask.size(1), dtype=torch.bool, device=device)
        head_mask[old_edge_position] = graph.head_mask
    return AttentionGraph(crow, col, new_q, new_k, head_mask=head_mask, validate=False)


def random(
    num_queries: int,
    k: int,
    seed: int = 0,
    *,
    num_keys: int | None = None,
    causal: bool = False,
    device: torch.device | str | None = None,
) -> AttentionGraph:
    """Each query attends ``k`` distinct keys drawn uniformly at random.

    Reproducible: the keys depend only on ``(num_queries, num_keys, k, seed)`` (drawn on the
    CPU with a ``torch.Generator`` seeded with ``seed``, then moved to ``device``), not on the
    global RNG.

    ``causal=True`` (self attention only): query ``i`` attends ``min(k, i + 1)`` distinct keys
    drawn uniformly from ``0 .. i``. These draws come from a counter-based hash of
    ``(seed, i, draw)``, so row ``i`` is the same for every sequence length ``n`` (the pattern of
    a prefix is the prefix of the pattern), which incremental decoding with a key/value cache
    relies on.

    Args:
        num_queries: ``Nq`` (``n`` for self attention).
        k: keys per query, ``0 <= k <= num_keys`` (any ``k >= 0`` when causal).
        seed: generator seed.
        num_keys: ``Nk``; defaults to ``num_queries``.
        causal: draw only among earlier keys (see above).
        device: where the CSR tensors live (default CPU).

    Example:
        >>> g = random(6, 2, seed=1)
        >>> g.degrees.tolist()
        [2, 2, 2, 2, 2, 2]
        >>> random(6, 2, seed=1, causal=True).degrees.tolist()
        [1, 2, 2, 2, 2, 2]
    """
    num_queries = _check_int(num_queries, "num_queries")
    num_keys = num_queries if num_keys is None else _check_int(num_keys, "num_keys")
    k = _check_int(k, "k")
    if causal:
        if num_keys != num_queries:
            raise ValueError(
                f"Expected num_keys == num_queries for causal=True (got {num_queries} queries and "
                f"{num_keys} keys); causal random attention is self attention over one sequence"
            )
        return _causal_random(num_queries, k, _check_int(seed, "seed"), _check_device(device))
    if k > num_keys:
        raise ValueError(
            f"Expected k <= num_keys = {num_keys} distinct random keys per query (got k = {k}); "
            f"pass k = min(k, {num_keys})"
        )
    seed = _check_int(seed, "seed")
    device = _check_device(device)
    generator = torch.Generator().manual_seed(seed)
    if k * k <= 8 * num_keys:
        # Floyd's sampling without replacement, vectorized over queries: k steps of O(Nq * k).
        keys = torch.empty(num_queries, k, dtype=torch.long)
        for step, upper in enumerate(range(num_keys - k, num_keys)):
            candidate = torch.randint(0, upper + 1, (num_queries,), generator=generator)
            taken = (keys[:, :step] == candidate[:, None]).any(1)
            keys[:, step] = torch.where(taken, upper, candidate)
    else:
        # Many keys per query: the k largest of Nk uniform scores per row, a chunk of rows at a time.
        rows_per_chunk = max(1, (1 << 22) // num_keys)
        chunks = [torch.empty(0, k, dtype=torch.long)]
        for start in range(0, num_queries, rows_per_chunk):
            scores = torch.rand(min(rows_per_chunk, num_queries - start), num_keys, generator=generator)
            chunks.append(scores.topk(k, dim=1, sorted=False).indices)
        keys = torch.cat(chunks)
    keys = keys.sort(dim=1).values.to(device)
    rows = torch.arange(num_queries, device=device).repeat_interleave(k)
    return _from_sorted_rows(rows, keys.reshape(-1), num_queries, num_keys)


# splitmix64 constants as signed int64 (torch multiplies int64 with wrap-around)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 values (``>>`` is arithmetic on signed integers)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix64(x: Tensor) -> Tensor:
    x = x + _GOLDEN
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


def _hash_uniform(seed: int, rows: Tensor, draw: int) -> Tensor:
    """``[R]`` float64 in [0, 1), a function of ``(seed, row, draw)`` only (counter-based)."""
    key = _splitmix64(_splitmix64(rows * 0x632BE5AB + seed) + draw)
    return _shift_right(key, 11).double() / float(1 << 53)


def _causal_random(n: int, k: int, seed: int, device: torch.device) -> AttentionGraph:
    """Row ``i``: ``min(k, i + 1)`` distinct keys from ``0 .. i`` by Floyd's algorithm, vectorized
    over rows, each draw from :func:`_hash_uniform` (so rows do not depend on ``n``)."""
    rows = torch.arange(n)
    size = rows + 1  # keys available to each row
    count = size.clamp(max=k)
    keys = torch.full((n, k), -1, dtype=torch.long)
    for step in range(k):
        # Floyd: for t = size - count + step, draw c in [0, t]; take t if c was already taken
        upper = size - count + step  # [n]
        active = step < count
        candidate = (_hash_uniform(seed, rows, step) * (upper + 1).double()).long().clamp(max=upper)
        taken = (keys[:, :step] == candidate[:, None]).any(1)
        keys[:, step] = torch.where(active, torch.where(taken, upper, candidate), -1)
    keys = keys.sort(dim=1).values  # the unused slots (-1) come first
    valid = keys >= 0
    return _from_sorted_rows(rows[:, None].expand(n, k)[valid].to(device), keys[valid].to(device), n, n)


def bigbird(
    n: int,
    window: int,
    num_global: int,
    num_random: int,
    seed: int = 0,
    *,
    causal: bool = False,
    device: torch.device | str | None = None,
) -> AttentionGraph:
    """BigBird (token level): sliding window + the first ``num_global`` positions global + random.

    The union of :func:`local` ``(n, window)``, :func:`global_tokens` ``(n, range(num_global))``
    and :func:`random` ``(n, num_random, seed)``. Random keys that are already in the window or
    global are merged, so a row has *at most* ``2 * window + 1 + num_global + num_random`` keys.

    ``causal=True`` keeps only keys ``j <= i`` of the window and the global part and draws the
    random keys among earlier positions (:func:`random` with ``causal=True``), so that every row
    keeps ``num_random`` random keys and the pattern of a prefix is the prefix of the pattern.

    Args:
        n: sequence length.
        window: local window each side (``|i - j| <= window``).
        num_global: positions ``0 .. num_global - 1`` are global (``<= n``).
        num_random: random keys per query (``<= n``).
        seed: seed of the random part (same seed, same graph).
        causal: the decoder form described above.
        device: where the CSR tensors live (default CPU).
    """
    n = _check_int(n, "n")
    num_global = _check_int(num_global, "num_global")
    if num_global > n:
        raise ValueError(
            f"Expected num_global <= n = {n} (got {num_global}); the global tokens are existing "
            f"positions 0 .. num_global - 1, use add_global_tokens to append new ones"
        )
    if causal:
        from graphattn.patterns.combine import intersect

        return _union(
            [
                local(n, window, causal=True, device=device),
                intersect(global_tokens(n, torch.arange(num_global), device=device), causal_pattern(n, device=device)),
                random(n, num_random, seed, causal=True, device=device),
            ]
        )
    return _union(
        [
            local(n, window, device=device),
            global_tokens(n, torch.arange(num_global), device=device),
            random(n, num_random, seed, device=device),
        ]
    )


def longformer(
    n: int, window: int, positions: Sequence[int] | Tensor | int = (), *, device: torch.device | str | None = None
) -> AttentionGraph:
    """Longformer: sliding window ``|i - j| <= window`` plus global ``positions``.

    Args:
        n: sequence length.
        window: local window each side (Longformer's ``w`` is ``2 * window``).
        positions: global positions (e.g. ``[0]`` for a [CLS] token), see :func:`global_tokens`.
        device: where the CSR tensors live (default CPU).

    Example:
        >>> longformer(4, 0, [0]).to_dense().int()
        tensor([[1, 1, 1, 1],
                [1, 1, 0, 0],
                [1, 0, 1, 0],
                [1, 0, 0, 1]], dtype=torch.int32)
    """
    return _union([local(n, window, device=device), global_tokens(n, positions, device=device)])


causal_pattern = causal  # the builder, under a name that functions with a 'causal' flag can use
