"""Data-dependent edge sets: LSH buckets (Reformer) and k-means routing (Routing Transformer).

Unlike the fixed patterns of :mod:`graphattn.patterns.sequence`, these graphs are built from the
data on every forward pass: a token's bucket or cluster decides which keys it may attend. The
builders are still pure functions of their tensor arguments, vectorized (sorting, gathers,
``torch.unique``; the only Python loops run over hash rounds), and return ordinary
:class:`~graphattn.graph.AttentionGraph` objects over ``B`` right-padded sequences: sequence
``b``'s slot ``i`` is node ``b * L + i``, slots ``i >= lengths[b]`` are padding and have no edges,
and ``query_ptr`` / ``key_ptr`` mark the sequences.

====================================  ==========================================================
``lsh_rotations(dim, buckets, R)``    Gaussian random rotations ``[..., R, D, buckets / 2]``
``lsh_buckets(x, buckets, R)``        angular LSH: ``argmax([x W; -x W])`` per round ``[..., R, L]``
``lsh_graph(buckets, chunk_size)``    Reformer's chunked attention per round, and the union
``round_union(graphs)``               union of per-round graphs with duplicate counts
``merge_rounds(outputs, lse)``        combine per-round outputs by their log-sum-exp
``routing_members(scores, w)``        balanced top-``w`` membership of every centroid
``kmeans_routing_graph(sq, sk, w)``   Routing Transformer: attend keys that share a cluster
====================================  ==========================================================

Multi-round LSH, precisely. Round ``r`` gives query ``i`` a key set ``P_r(i)``; a key ``j`` may
appear in several rounds, ``n_ij = |{r : j in P_r(i)}|`` times. Reformer computes each round with
the scores ``s_ij - log n_ij`` (its duplicate-count correction), getting an output ``o_r`` and a
log-sum-exp ``lse_r``, and merges ``o = sum_r exp(lse_r - logsumexp_r lse_r) o_r``
(:func:`merge_rounds`). Because ``sum_r exp(lse_r) = sum_{j in U} exp(s_ij)`` over the union
``U = P_1(i) | ... | P_R(i)``, the merged output is **exactly** softmax attention over the union
graph, each key counted once. :func:`lsh_graph` therefore returns the union graph (one call of
:func:`graphattn.attention`) together with the per-round graphs and the counts ``n_ij`` of their
edges (:meth:`RoundGraphs.duplicate_bias` gives the ``-log n_ij`` bias) for callers that compute
rounds separately.

Example:
    >>> import torch
    >>> from graphattn.patterns import clustered
    >>> x = torch.randn(2, 16, 8)                          # [B, L, D]
    >>> rot = clustered.lsh_rotations(8, num_buckets=4, num_rounds=2,
    ...                               generator=torch.Generator().manual_seed(0))
    >>> buckets = clustered.lsh_buckets(x, 4, 2, rotations=rot)   # [B, R, L]
    >>> graphs = clustered.lsh_graph(buckets, chunk_size=4, lengths=torch.tensor([16, 11]))
    >>> graphs.union.num_queries, len(graphs.rounds)
    (32, 2)
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor

from graphattn.graph import AttentionGraph, _as_index_tensor, _rows_to_crow
from graphattn.patterns.sequence import _check_device, _check_int

__all__ = [
    "RoundGraphs",
    "lsh_rotations",
    "lsh_buckets",
    "lsh_graph",
    "round_union",
    "merge_rounds",
    "routing_members",
    "kmeans_routing_graph",
]

CHUNKINGS = ("sorted", "bucket")


class RoundGraphs(NamedTuple):
    """The graphs of a multi-round edge set (LSH hash rounds) and their union.

    Attributes:
        union: every (query, key) pair of any round, once; ``softmax`` over it equals the
            log-sum-exp merge of the rounds with the duplicate-count correction.
        rounds: one graph per round (empty tuple when the builder was asked not to keep them).
        counts: per round, ``[E_r]`` int64 in that round's CSR edge order: in how many rounds
            the edge appears (``n_ij >= 1``).
    """

    union: AttentionGraph
    rounds: tuple[AttentionGraph, ...]
    counts: tuple[Tensor, ...]

    def duplicate_bias(self, round_index: int, num_heads: int = 1, dtype: torch.dtype = torch.float32) -> Tensor:
        """Reformer's correction for round ``round_index``: ``-log n_ij`` per edge, ``[E_r, H]``.

        Pass it as ``bias=`` when attending over ``rounds[round_index]``; merging the rounds'
        outputs with :func:`merge_rounds` then gives softmax attention over :attr:`union`.
        """
        if not self.rounds:
            raise ValueError("These RoundGraphs were built with keep_rounds=False; rebuild with keep_rounds=True")
        counts = self.counts[round_index]
        return (-counts.to(dtype).log()).unsqueeze(1).expand(-1, num_heads).contiguous()


# ---------------------------------------------------------------------------- LSH
def lsh_rotations(
    dim: int,
    num_buckets: int,
    num_rounds: int = 1,
    *,
    batch_shape: Sequence[int] = (),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Random Gaussian projections for angular LSH (Reformer, Andoni et al. 2015).

    The numbers are drawn in float32 on the generator's device and then converted, so the same
    generator state gives the same rotations (and the same buckets) in every dtype.

    Args:
        dim: ``D``, the vector size.
        num_buckets: even number of buckets ``nb`` (each rotation has ``nb / 2`` columns).
        num_rounds: hash rounds ``R``.
        batch_shape: leading dims, e.g. ``(H,)`` for independent rotations per head.
        generator: a ``torch.Generator`` for reproducibility (default: the global RNG).
        device / dtype: of the result.

    Returns:
        ``[*batch_shape, R, D, nb / 2]``.
    """
    dim = _check_int(dim, "dim", 1)
    num_buckets = _check_int(num_buckets, "num_buckets", 2)
    if num_buckets % 2:
        raise ValueError(
            f"Expected an even 'num_buckets' (angular LSH takes the argmax over [xW, -xW]), got {num_buckets}; "
            f"use {num_buckets + 1}"
        )
    num_rounds = _check_int(num_rounds, "num_rounds", 1)
    shape = (*tuple(batch_shape), num_rounds, dim, num_buckets // 2)
    source = generator.device if generator is not None else torch.device("cpu")
    rotations = torch.randn(shape, generator=generator, device=source, dtype=torch.float32)
    return rotations.to(device=_check_device(device) if device is not None else source, dtype=dtype)


def lsh_buckets(
    x: Tensor,
    num_buckets: int,
    num_rounds: int = 1,
    *,
    rotations: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Angular LSH bucket of every vector, per round: ``argmax([x W_r ; -x W_r])``.

    Vectors pointing in similar directions share a bucket with high probability; the bucket of
    a vector depends on that vector alone (so permuting the tokens permutes the buckets) and not
    on its norm. ``num_buckets = 1`` puts everything in bucket 0.

    Args:
        x: ``[..., L, D]`` vectors (not differentiated through).
        num_buckets: ``nb``, even, or 1.
        num_rounds: ``R``.
        rotations: ``[..., R, D, nb / 2]`` from :func:`lsh_rotations`, broadcast against ``x``'s
            leading dims (``[R, D, nb/2]`` shares them; ``[H, R, D, nb/2]`` with ``x`` of shape
            ``[B, H, L, D]`` gives each head its own). Drawn with ``generator`` when omitted.
        generator: used only when ``rotations`` is None.

    Returns:
        ``[..., R, L]`` int64 buckets in ``[0, nb)``.
    """
    if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
        got = f"{x.dtype} {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"Expected 'x' to be a floating point tensor [..., L, D], got {got}")
    num_buckets = _check_int(num_buckets, "num_buckets", 1)
    num_rounds = _check_int(num_rounds, "num_rounds", 1)
    *lead, length, dim = x.shape
    if num_buckets == 1:
        return torch.zeros(*lead, num_rounds, length, dtype=torch.long, device=x.device)
    if rotations is None:
        rotations = lsh_rotations(dim, num_buckets, num_rounds, generator=generator, device=x.device, dtype=x.dtype)
    if num_buckets % 2:
        raise ValueError(f"Expected an even 'num_buckets' (or 1), got {num_buckets}")
    if not isinstance(rotations, Tensor) or rotations.dim() < 3 or tuple(rotations.shape[-3:]) != (
        num_rounds, dim, num_buckets // 2
    ):
        got = list(rotations.shape) if isinstance(rotations, Tensor) else type(rotations).__name__
        raise ValueError(
            f"Expected 'rotations' of shape [..., R, D, nb / 2] = [..., {num_rounds}, {dim}, {num_buckets // 2}], "
            f"got {got}; make them with lsh_rotations(D, num_buckets, num_rounds)"
        )
    with torch.no_grad():
        projected = torch.matmul(x.detach().unsqueeze(-3), rotations.to(device=x.device, dtype=x.dtype))
        # [..., R, L, nb/2]
        return torch.cat([projected, -projected], dim=-1).argmax(dim=-1)


def _lengths_tensor(lengths: Any, batch: int, slots: int, device: torch.device, name: str) -> Tensor:
    """``[B]`` int64 lengths in ``[0, slots]`` on ``device`` (all ``slots`` when None)."""
    if lengths is None:
        return torch.full((batch,), slots, dtype=torch.long, device=device)
    lengths = _as_index_tensor(lengths, name).to(device)
    if lengths.shape != (batch,):
        raise ValueError(f"Expected '{name}' of shape [B] = [{batch}], got {list(lengths.shape)}")
    if batch and (int(lengths.min()) < 0 or int(lengths.max()) > slots):
        raise ValueError(
            f"Expected every entry of '{name}' in [0, {slots}] (the padded length), got "
            f"min {int(lengths.min())}, max {int(lengths.max())}"
        )
    return lengths


def _graph(rows: Tensor, cols: Tensor, num_queries: int, num_keys: int, query_ptr: Tensor | None,
           key_ptr: Tensor | None) -> AttentionGraph:
    """Graph from edges already sorted by (row, col) without duplicates."""
    graph = AttentionGraph(
        _rows_to_crow(rows, num_queries), cols, num_queries, num_keys,
        query_ptr=query_ptr, key_ptr=key_ptr, validate=False,
    )
    graph.cached("row", lambda: rows)
    return graph


def _assemble_rounds(
    query_node: Tensor,
    key_node: Tensor,
    round_id: Tensor,
    num_rounds: int,
    num_queries: int,
    num_keys: int,
    query_ptr: Tensor | None,
    key_ptr: Tensor | None,
    exclude_self: bool,
    keep_rounds: bool,
) -> RoundGraphs:
    """Union and per-round graphs of edges ``key_node -> query_node`` tagged with ``round_id``.

    No edge may repeat within a round. With ``exclude_self`` a self edge ``i -> i`` survives
    (in the union and in every round holding it) only when ``i`` has no other key in the union.
    """
    cells = num_queries * max(num_keys, 1)
    flat = query_node * max(num_keys, 1) + key_node
    unique, inverse, counts = torch.unique(flat, sorted=True, return_inverse=True, return_counts=True)
    rows = torch.div(unique, max(num_keys, 1), rounding_mode="floor")
    cols = unique - rows * max(num_keys, 1)
    keep = None
    if exclude_self:
        is_self = rows == cols
        others = torch.bincount(rows[~is_self], minlength=num_queries)
        keep = ~is_self | (others[rows] == 0)
        rows, cols = rows[keep], cols[keep]
    union = _graph(rows, cols, num_queries, num_keys, query_ptr, key_ptr)
    if not keep_rounds:
        return RoundGraphs(union, (), ())
    edge_counts = counts[inverse]
    if keep is not None:
        kept = keep[inverse]
        flat, round_id, edge_counts = flat[kept], round_id[kept], edge_counts[kept]
    order = torch.argsort(round_id * cells + flat)
    flat, edge_counts = flat[order], edge_counts[order]
    sizes = torch.bincount(round_id, minlength=num_rounds).tolist()
    rounds, round_counts = [], []
    for part_flat, part_counts in zip(flat.split(sizes), edge_counts.split(sizes)):
        part_rows = torch.div(part_flat, max(num_keys, 1), rounding_mode="floor")
        rounds.append(_graph(part_rows, part_flat - part_rows * max(num_keys, 1), num_queries, num_keys,
                             query_ptr, key_ptr))
        round_counts.append(part_counts)
    return RoundGraphs(union, tuple(rounds), tuple(round_counts))


def lsh_graph(
    buckets: Tensor,
    chunk_size: int,
    *,
    lengths: Tensor | Sequence[int] | None = None,
    causal: bool = False,
    exclude_self: bool = True,
    chunking: str | None = None,
    keep_rounds: bool = True,
) -> RoundGraphs:
    """Reformer's LSH attention pattern: chunks of the bucket-sorted sequence, per hash round.

    For every sequence and round, positions are sorted by ``(bucket, position)`` and the sorted
    order is cut into chunks of ``chunk_size``; a query attends every key of its own chunk and
    of the previous chunk (no wrap-around from the first chunk to the last). Keys are restricted
    to the query's own sequence, to real tokens (``< lengths[b]``), to ``j <= i`` when
    ``causal``, and (``exclude_self``, Reformer's shared query/key rule) never to the query
    itself unless it has no other key in the union of the rounds.

    ``chunking`` says where chunks are cut:

    * ``"sorted"`` (Reformer, the default without ``causal``): chunks of the whole sorted order,
      so a chunk may span the end of one bucket and the start of the next;
    * ``"bucket"`` (the default, and the only choice, with ``causal``): chunks restart at every
      bucket, so a query attends only keys of its own bucket: the ``chunk_size``-aligned group of
      its bucket's tokens it falls in, and the group before. A query's key set then depends
      only on the buckets of the tokens up to it, so causal attention leaks nothing about later
      tokens. (With ``"sorted"`` chunking a later token's bucket moves the chunk boundaries of
      earlier ones, which is why it is refused with ``causal``.)

    Args:
        buckets: ``[B, R, L]`` int bucket of every slot per round (``[R, L]`` for one sequence),
            e.g. from :func:`lsh_buckets`. Buckets of padded slots are ignored.
        chunk_size: ``C >= 1``; each query has at most ``2 C`` keys per round.
        lengths: ``[B]`` real tokens per sequence (default: all ``L``).
        causal: only keys ``j <= i``.
        exclude_self: drop ``i -> i`` unless ``i`` has no other key.
        chunking: ``"sorted"``, ``"bucket"`` or None (see above).
        keep_rounds: also build the per-round graphs and duplicate counts; ``False`` builds the
            union only (what :class:`~graphattn.nn.LSHAttention` runs).

    Returns:
        :class:`RoundGraphs` over ``B * L`` query and key nodes (node ``b * L + i``), with
        ``query_ptr = key_ptr = [0, L, 2L, ...]`` for a ``[B, R, L]`` input.
    """
    if not isinstance(buckets, Tensor) or buckets.dim() not in (2, 3) or buckets.is_floating_point() \
            or buckets.dtype == torch.bool:
        got = f"{buckets.dtype} {list(buckets.shape)}" if isinstance(buckets, Tensor) else type(buckets).__name__
        raise ValueError(
            f"Expected 'buckets' to be an integer tensor [B, R, L] (or [R, L] for one sequence), got {got}; "
            f"compute them with lsh_buckets(x, num_buckets, num_rounds)"
        )
    batched = buckets.dim() == 3
    buckets = (buckets if batched else buckets.unsqueeze(0)).long()
    chunk_size = _check_int(chunk_size, "chunk_size", 1)
    if chunking is None:
        chunking = "bucket" if causal else "sorted"
    if chunking not in CHUNKINGS:
        raise ValueError(f"Expected chunking in {CHUNKINGS} or None, got {chunking!r}")
    if causal and chunking == "sorted":
        raise ValueError(
            "chunking='sorted' cannot be causal: the chunk a query falls in depends on the buckets of later "
            "tokens, which would leak them; use chunking='bucket' (the default with causal=True)"
        )
    batch, num_rounds, length = buckets.shape
    device = buckets.device
    lengths = _lengths_tensor(lengths, batch, length, device, "lengths")
    if buckets.numel() and int(buckets.min()) < 0:
        raise ValueError(f"Expected non-negative bucket ids, found {int(buckets.min())}")
    num_nodes = batch * length
    ptr = torch.arange(batch + 1, device=device) * length if batched else None
    if buckets.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return _assemble_rounds(empty, empty, empty, num_rounds, num_nodes, num_nodes, ptr, ptr, exclude_self,
                                keep_rounds)

    position = torch.arange(length, device=device)
    real = position < lengths[:, None]  # [B, L]
    padding_bucket = int(buckets.max()) + 1
    bucket = torch.where(real[:, None, :], buckets, padding_bucket)  # [B, R, L]
    # (bucket, position) order; padding sorts last, so the n_b real tokens fill slots [0, n_b)
    order = torch.argsort(bucket * length + position, dim=-1)  # [B, R, L] position at each sorted slot
    sorted_bucket = bucket.gather(-1, order)
    slot = position  # sorted slot index
    if chunking == "sorted":
        group_start = torch.zeros_like(sorted_bucket)
    else:
        is_start = torch.ones_like(sorted_bucket, dtype=torch.bool)
        is_start[..., 1:] = sorted_bucket[..., 1:] != sorted_bucket[..., :-1]
        group_start = torch.where(is_start, slot, 0).cummax(dim=-1).values  # first slot of the bucket run
    chunk_start = group_start + torch.div(slot - group_start, chunk_size, rounding_mode="floor") * chunk_size
    offsets = torch.arange(-chunk_size, chunk_size, device=device)  # previous chunk and own chunk
    candidate = chunk_start.unsqueeze(-1) + offsets  # [B, R, L, 2C] key slots
    n_real = lengths.view(batch, 1, 1, 1)
    valid = (candidate >= group_start.unsqueeze(-1)) & (candidate < n_real) & (slot.view(1, 1, length, 1) < n_real)
    candidate = candidate.clamp(0, length - 1)
    if chunking == "bucket":
        same = sorted_bucket.unsqueeze(-1) == sorted_bucket.gather(-1, candidate.flatten(2)).view_as(candidate)
        valid &= same
    query_pos = order.unsqueeze(-1).expand_as(candidate)
    key_pos = order.gather(-1, candidate.flatten(2)).view_as(candidate)
    if causal:
        valid &= key_pos <= query_pos
    base = (torch.arange(batch, device=device) * length).view(batch, 1, 1, 1)
    round_id = torch.arange(num_rounds, device=device).view(1, num_rounds, 1, 1).expand_as(candidate)
    return _assemble_rounds(
        (base + query_pos)[valid], (base + key_pos)[valid], round_id[valid], num_rounds, num_nodes, num_nodes,
        ptr, ptr, exclude_self, keep_rounds,
    )


def round_union(rounds: Sequence[AttentionGraph]) -> RoundGraphs:
    """The union of per-round graphs (all of one size), with each round edge's duplicate count.

    Args:
        rounds: graphs without head masks, all ``Nq x Nk``.

    Returns:
        :class:`RoundGraphs` whose ``rounds`` are the inputs (in CSR order, unchanged) and whose
        ``counts[r][e]`` says in how many rounds edge ``e`` of round ``r`` appears.
    """
    rounds = list(rounds)
    if not rounds or not all(isinstance(g, AttentionGraph) for g in rounds):
        raise ValueError("Expected a non-empty sequence of AttentionGraph rounds")
    first = rounds[0]
    if any(g.num_queries != first.num_queries or g.num_keys != first.num_keys for g in rounds):
        sizes = [(g.num_queries, g.num_keys) for g in rounds]
        raise ValueError(f"Expected rounds of one size, got (num_queries, num_keys) = {sizes}")
    if any(g.head_mask is not None for g in rounds):
        raise ValueError("round_union takes graphs without head masks; split per-head patterns with graph.head(h)")
    device = first.device
    query_node = torch.cat([g.row.to(device) for g in rounds])
    key_node = torch.cat([g.col.to(device) for g in rounds])
    round_id = torch.cat([torch.full((g.num_edges,), r, dtype=torch.long, device=device) for r, g in enumerate(rounds)])
    merged = _assemble_rounds(query_node, key_node, round_id, len(rounds), first.num_queries, first.num_keys,
                              first.query_ptr, first.key_ptr, exclude_self=False, keep_rounds=True)
    return RoundGraphs(merged.union, tuple(rounds), merged.counts)


def merge_rounds(outputs: Tensor, log_sum_exp: Tensor) -> Tensor:
    """Combine per-round attention outputs by their log-sum-exp (Reformer's multi-round merge).

    ``out = sum_r softmax_r(lse)[r] * outputs[r]``. With rounds computed over
    ``RoundGraphs.rounds[r]`` with ``bias=RoundGraphs.duplicate_bias(r)``, the result is softmax
    attention over ``RoundGraphs.union``. A row whose every round is empty (``lse = -inf``)
    gives zeros.

    Args:
        outputs: ``[R, N, H, Dv]`` per-round outputs.
        log_sum_exp: ``[R, N, H]`` per-round ``log sum_j exp(score_ij)`` (``-inf`` for an empty row).

    Returns:
        ``[N, H, Dv]``.
    """
    if not isinstance(outputs, Tensor) or not isinstance(log_sum_exp, Tensor) or outputs.dim() != 4 \
            or tuple(log_sum_exp.shape) != tuple(outputs.shape[:3]):
        got = [list(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (outputs, log_sum_exp)]
        raise ValueError(f"Expected outputs [R, N, H, Dv] and log_sum_exp [R, N, H], got {got[0]} and {got[1]}")
    top = log_sum_exp.amax(dim=0, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    weight = torch.exp(log_sum_exp - top)  # -inf -> 0
    total = weight.sum(dim=0, keepdim=True)
    weight = weight / torch.where(total > 0, total, torch.ones_like(total))
    return (weight.unsqueeze(-1) * outputs).sum(dim=0)


# ---------------------------------------------------------------------------- k-means routing
def _check_scores(scores: Any, name: str) -> Tensor:
    if not isinstance(scores, Tensor) or scores.dim() != 3 or not scores.is_floating_point():
        got = f"{scores.dtype} {list(scores.shape)}" if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(
            f"Expected '{name}' to be a floating point tensor [B, C, L] (affinity of every token to every "
            f"centroid, higher = nearer), got {got}"
        )
    return scores


def routing_members(scores: Tensor, window: int, *, lengths: Tensor | Sequence[int] | None = None) -> Tensor:
    """Balanced membership: every centroid takes its ``window`` nearest real tokens.

    Args:
        scores: ``[B, C, L]`` affinity of every slot to every centroid (e.g. cosine similarity).
        window: ``w >= 1`` members per centroid (fewer when a sequence has fewer real tokens).
        lengths: ``[B]`` real tokens per sequence (default: all ``L``).

    Returns:
        ``[B, C, min(w, L)]`` int64 slot indices in decreasing affinity, ``-1`` where a sequence
        has fewer than ``w`` real tokens. A token may belong to several centroids, or to none.
    """
    scores = _check_scores(scores, "scores")
    window = _check_int(window, "window", 1)
    batch, _, length = scores.shape
    lengths = _lengths_tensor(lengths, batch, length, scores.device, "lengths")
    real = torch.arange(length, device=scores.device) < lengths[:, None]  # [B, L]
    masked = scores.detach().masked_fill(~real[:, None, :], float("-inf"))
    count = min(window, length)
    index = masked.topk(count, dim=-1).indices  # [B, C, w]; padding (-inf) comes last
    taken = torch.arange(count, device=scores.device) < lengths.view(batch, 1, 1)
    return torch.where(taken, index, -1)


def kmeans_routing_graph(
    query_scores: Tensor,
    key_scores: Tensor | None = None,
    window: int | None = None,
    *,
    query_lengths: Tensor | Sequence[int] | None = None,
    key_lengths: Tensor | Sequence[int] | None = None,
    causal: bool = False,
) -> AttentionGraph:
    """Routing Transformer pattern (Roy et al. 2021): query ``i`` attends keys sharing a cluster.

    Non-causal (balanced top-``w``): each centroid takes its ``w`` nearest queries and its ``w``
    nearest keys (:func:`routing_members`), and every member query attends every member key of
    the same centroid; a token may be in several clusters (keys are merged) or in none (its row
    is empty and outputs zeros).

    Causal: top-``w`` membership depends on the whole sequence (a later token can push an
    earlier one out of a centroid), which would leak later tokens. Instead every token joins its
    nearest centroid (argmax of its scores), and query ``i`` attends the (up to) ``w`` most
    recent keys ``j <= i`` of its own cluster, which depends only on tokens up to ``i``.

    Args:
        query_scores: ``[B, C, Lq]`` affinity of every query slot to every centroid.
        key_scores: ``[B, C, Lk]`` likewise for keys (default: ``query_scores``, shared q/k).
        window: ``w``; default ``ceil(L / C)`` (per side), i.e. balanced clusters cover a sequence.
        query_lengths / key_lengths: ``[B]`` real tokens (default: all slots; ``key_lengths``
            defaults to ``query_lengths`` when the scores are shared).
        causal: only keys ``j <= i`` (needs ``Lq == Lk``).

    Returns:
        AttentionGraph over ``B * Lq`` queries and ``B * Lk`` keys (node ``b * L + i``) with
        ``query_ptr`` / ``key_ptr`` marking the sequences.
    """
    query_scores = _check_scores(query_scores, "query_scores")
    shared = key_scores is None
    key_scores = query_scores if shared else _check_scores(key_scores, "key_scores")
    batch, clusters, q_len = query_scores.shape
    k_len = key_scores.size(2)
    if key_scores.shape[:2] != query_scores.shape[:2]:
        raise ValueError(
            f"Expected query_scores [B, C, Lq] and key_scores [B, C, Lk] with the same B and C, got "
            f"{list(query_scores.shape)} and {list(key_scores.shape)}"
        )
    device = query_scores.device
    q_lengths = _lengths_tensor(query_lengths, batch, q_len, device, "query_lengths")
    if key_lengths is None and shared:
        k_lengths = q_lengths
    else:
        k_lengths = _lengths_tensor(key_lengths, batch, k_len, device, "key_lengths")
    if window is not None:
        window = _check_int(window, "window", 1)
    q_ptr = torch.arange(batch + 1, device=device) * q_len
    k_ptr = torch.arange(batch + 1, device=device) * k_len
    num_queries, num_keys = batch * q_len, batch * k_len
    if causal:
        if q_len != k_len:
            raise ValueError(f"Causal routing needs Lq == Lk (self-attention), got {q_len} and {k_len}")
        return _causal_routing(query_scores, key_scores, window or math.ceil(q_len / max(clusters, 1)),
                               q_lengths, k_lengths, q_ptr)
    if clusters == 0 or q_len == 0 or k_len == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return _graph(empty, empty, num_queries, num_keys, q_ptr, k_ptr)
    q_members = routing_members(query_scores, window or math.ceil(q_len / clusters), lengths=q_lengths)
    k_members = routing_members(key_scores, window or math.ceil(k_len / clusters), lengths=k_lengths)
    q_node = q_members + (torch.arange(batch, device=device) * q_len).view(batch, 1, 1)  # [B, C, wq]
    k_node = k_members + (torch.arange(batch, device=device) * k_len).view(batch, 1, 1)  # [B, C, wk]
    valid = (q_members >= 0).unsqueeze(-1) & (k_members >= 0).unsqueeze(-2)  # [B, C, wq, wk]
    flat = (q_node.unsqueeze(-1) * num_keys + k_node.unsqueeze(-2))[valid]
    unique = torch.unique(flat, sorted=True)
    rows = torch.div(unique, num_keys, rounding_mode="floor")
    return _graph(rows, unique - rows * num_keys, num_queries, num_keys, q_ptr, k_ptr)


def _causal_routing(query_scores: Tensor, key_scores: Tensor, window: int, q_lengths: Tensor, k_lengths: Tensor,
                    ptr: Tensor) -> AttentionGraph:
    """Nearest-centroid clusters; query ``i`` attends the ``window`` latest keys ``j <= i`` of its cluster."""
    batch, clusters, length = query_scores.shape
    device = query_scores.device
    num_nodes = batch * length
    if clusters == 0 or length == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return _graph(empty, empty, num_nodes, num_nodes, ptr, ptr)
    position = torch.arange(length, device=device)
    sequence = torch.arange(batch, device=device)[:, None]
    q_cluster = query_scores.detach().argmax(dim=1)  # [B, L]
    k_cluster = torch.where(position < k_lengths[:, None], key_scores.detach().argmax(dim=1), clusters)
    # keys sorted by (sequence, cluster, position); padded keys form a cluster of their own (C)
    key_code = ((sequence * (clusters + 1) + k_cluster) * length + position).flatten()
    sorted_code, key_order = torch.sort(key_code)  # key_order: node b * L + j at each sorted slot
    group = (sequence * (clusters + 1) + q_cluster) * length  # [B, L] code of the query's group start
    end = torch.searchsorted(sorted_code, (group + position).flatten(), right=True)
    start = torch.maximum(torch.searchsorted(sorted_code, group.flatten()), end - window)
    count = torch.where((position < q_lengths[:, None]).flatten(), end - start, 0)
    crow = torch.cat([count.new_zeros(1), count.cumsum(0)])
    num_edges = int(crow[-1])
    rows = torch.repeat_interleave(torch.arange(num_nodes, device=device), count, output_size=num_edges)
    slots = torch.arange(num_edges, device=device) + (start - crow[:-1])[rows]
    graph = AttentionGraph(crow, key_order[slots], num_nodes, num_nodes, query_ptr=ptr, key_ptr=ptr, validate=False)
    graph.cached("row", lambda: rows)
    return graph
