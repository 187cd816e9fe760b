"""Sparse Sinkhorn attention (Tay et al. 2020): a learned, differentiable sorting of key buckets.

The sequence is cut into buckets of ``bucket_size``. A sorting network maps each bucket's key
summary to a row of logits over buckets; Sinkhorn normalization (log space, a fixed number of
iterations, Gumbel noise in training) turns them into a (nearly) doubly stochastic matrix
``S [nb, nb]``, a relaxed permutation. Bucket ``i``'s *sorted* keys and values are
``sum_j S_ij (bucket j)``; each query of bucket ``i`` attends the keys of its own bucket and of
its sorted bucket. The pattern is a graph over ``2 * B * H * L`` key nodes (the keys, then the
sorted keys) run on :func:`graphattn.attention`, so the result is differentiable end to end:
gradients reach the sorting network through the sorted keys and values.

Example:
    >>> import torch
    >>> from graphattn.nn.sinkhorn import SinkhornAttention
    >>> from graphattn.nn.mechanism import SequenceLayout
    >>> sinkhorn = SinkhornAttention(bucket_size=4, max_length=16, num_heads=2, head_dim=8)
    >>> q, k, v = (torch.randn(3, 16, 2, 8) for _ in range(3))
    >>> sinkhorn(q, k, v, SequenceLayout.full(3, 16)).shape
    torch.Size([3, 16, 2, 8])
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.graph import AttentionGraph, _rows_to_crow
from graphattn.nn.mechanism import AttentionMechanism, SequenceLayout
from graphattn.ops import attention
from graphattn.patterns.sequence import _check_int

__all__ = ["SinkhornAttention", "sinkhorn", "sorting_mask", "sorted_bucket_attention"]


def sinkhorn(logits: Tensor, iterations: int) -> Tensor:
    """Sinkhorn normalization in log space: alternately normalize columns, then rows.

    Args:
        logits: ``[..., n, n]``; ``-inf`` entries are forbidden cells (every row and column needs
            at least one finite entry).
        iterations: number of (column, row) rounds, ``>= 1``. The last step normalizes rows, so
            rows sum to 1 exactly and columns approximately (closer with more iterations).

    Returns:
        ``[..., n, n]`` nonnegative matrix ``exp(log_alpha)``, (nearly) doubly stochastic.
    """
    iterations = _check_int(iterations, "iterations", 1)
    if not isinstance(logits, Tensor) or logits.dim() < 2 or logits.size(-1) != logits.size(-2):
        got = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"Expected square 'logits' [..., n, n], got {got}")
    log_alpha = logits
    for _ in range(iterations):
        log_alpha = log_alpha - torch.logsumexp(log_alpha, dim=-2, keepdim=True)
        log_alpha = log_alpha - torch.logsumexp(log_alpha, dim=-1, keepdim=True)
    return log_alpha.exp()


def sorting_mask(num_buckets: int, real_buckets: Tensor) -> Tensor:
    """Which cells of the sorting matrix may be nonzero: ``[B, nb, nb]`` bool.

    Sequence ``b`` sorts its ``real_buckets[b]`` buckets (those holding a real key) among
    themselves; every other bucket maps to itself (identity), so each row and column keeps one
    allowed cell and the matrix stays doubly stochastic.
    """
    index = torch.arange(num_buckets, device=real_buckets.device)
    real = index < real_buckets[:, None]  # [B, nb]
    return (real[:, :, None] & real[:, None, :]) | (~real[:, :, None] & torch.eye(
        num_buckets, dtype=torch.bool, device=real_buckets.device))


def _bucket_graph(query_real: Tensor, key_real: Tensor, sorted_real: Tensor, bucket_size: int) -> AttentionGraph:
    """Graph of query node ``(g, p)`` -> its bucket's keys ``(g, b*bs + t)`` and sorted keys.

    Shapes: ``query_real`` / ``key_real`` ``[G, Lp]`` bool, ``sorted_real`` ``[G, nb, bs]`` bool
    (sorted slot holds a real key). Key node ``g * Lp + p`` is a key, ``G * Lp + g * Lp + p`` a
    sorted key.
    """
    groups, padded = query_real.shape
    nodes = groups * padded
    device = query_real.device
    position = torch.arange(padded, device=device)
    bucket_start = torch.div(position, bucket_size, rounding_mode="floor") * bucket_size  # [Lp]
    slots = bucket_start[:, None] + torch.arange(bucket_size, device=device)  # [Lp, bs] key slots of the bucket
    base = (torch.arange(groups, device=device) * padded).view(groups, 1, 1)
    local = base + slots  # [G, Lp, bs]
    candidates = torch.cat([local, local + nodes], dim=-1)  # [G, Lp, 2 bs], increasing per row
    key_ok = key_real.gather(1, slots.flatten().expand(groups, -1)).view(groups, padded, bucket_size)
    sorted_ok = sorted_real.flatten(1).gather(1, slots.flatten().expand(groups, -1)).view(groups, padded, bucket_size)
    valid = torch.cat([key_ok, sorted_ok], dim=-1) & query_real.unsqueeze(-1)
    rows = torch.arange(nodes, device=device).view(groups, padded, 1).expand_as(candidates)[valid]
    graph = AttentionGraph(_rows_to_crow(rows, nodes), candidates[valid], nodes, 2 * nodes, validate=False)
    graph.cached("row", lambda: rows)
    return graph


def sorted_bucket_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    sort_matrix: Tensor,
    bucket_size: int,
    layout: SequenceLayout,
    *,
    scale: float | None = None,
    dropout: float = 0.0,
    backend: str = "auto",
) -> Tensor:
    """Each query attends its own bucket's keys and its sorted bucket ``sum_j S_ij (bucket j)``.

    Padded keys are left out of the mixtures: sorted slot ``(i, t)`` is
    ``sum_j S_ij m_jt k_jt / sum_j S_ij m_jt`` with ``m_jt`` = slot ``t`` of bucket ``j`` is a
    real key, a convex combination of real keys (plain ``S @ K`` when no bucket has padding, as
    rows of ``S`` sum to 1); a sorted slot mixing no real key is not attended. Padded queries
    output zeros.

    Args:
        q, k: ``[B, L, H, D]``; v: ``[B, L, H, Dv]``.
        sort_matrix: ``[B, H, nb, nb]`` with ``nb = ceil(L / bucket_size)`` (the identity gives
            block-local attention).
        bucket_size: ``bs``.
        layout: real query / key lengths (``causal`` must be False).
        scale / dropout / backend: as in :func:`graphattn.attention`.

    Returns:
        ``[B, L, H, Dv]``.
    """
    if layout.causal:
        raise ValueError("sorted_bucket_attention has no causal variant: sorted buckets mix later tokens in; "
                         "use it with causal=False")
    bucket_size = _check_int(bucket_size, "bucket_size", 1)
    batch, length, heads, dim = q.shape
    num_buckets = max(1, math.ceil(length / bucket_size))
    padded = num_buckets * bucket_size
    if sort_matrix.shape != (batch, heads, num_buckets, num_buckets):
        raise ValueError(
            f"Expected 'sort_matrix' of shape [B, H, nb, nb] = [{batch}, {heads}, {num_buckets}, {num_buckets}], "
            f"got {list(sort_matrix.shape)}"
        )
    extra = padded - length
    if extra:
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, extra)) for t in (q, k, v))
    position = torch.arange(padded, device=q.device)
    query_real = position < layout.query_lengths.to(q.device)[:, None]  # [B, Lp]
    key_real = position < layout.key_lengths.to(q.device)[:, None]
    key_weight = key_real.to(k.dtype).view(batch, num_buckets, bucket_size)  # m_jt
    k_blocks = (k * key_real[:, :, None, None]).view(batch, num_buckets, bucket_size, heads, dim)
    v_blocks = (v * key_real[:, :, None, None]).view(batch, num_buckets, bucket_size, heads, v.size(-1))
    sort_matrix = sort_matrix.to(k.dtype)
    mass = torch.einsum("bhij,bjt->bhit", sort_matrix, key_weight)  # [B, H, nb, bs]
    inverse = 1.0 / mass.clamp_min(torch.finfo(mass.dtype).tiny)
    sorted_k = torch.einsum("bhij,bjthd->bhitd", sort_matrix, k_blocks) * inverse.unsqueeze(-1)  # [B, H, nb, bs, D]
    sorted_v = torch.einsum("bhij,bjthd->bhitd", sort_matrix, v_blocks) * inverse.unsqueeze(-1)
    graph = _bucket_graph(
        query_real.repeat_interleave(heads, dim=0), key_real.repeat_interleave(heads, dim=0),
        (mass.detach() > 0).flatten(0, 1), bucket_size,
    )
    fold = lambda x: x.permute(0, 2, 1, 3).reshape(batch * heads * padded, 1, x.size(-1))  # noqa: E731
    keys = torch.cat([fold(k), sorted_k.reshape(batch * heads * padded, 1, dim)])
    values = torch.cat([fold(v), sorted_v.reshape(batch * heads * padded, 1, v.size(-1))])
    out = attention(fold(q), keys, values, graph, scale=scale if scale is not None else 1.0 / math.sqrt(dim),
                    dropout=dropout, backend=backend)
    return out.view(batch, heads, padded, -1).permute(0, 2, 1, 3)[:, :length]


class SinkhornAttention(AttentionMechanism):
    """Sparse Sinkhorn attention (Tay et al. 2020) as a mechanism.

    The sorting network is a per-head two-layer MLP (``D -> D -> max_buckets``, ReLU, no output
    bias since Sinkhorn cancels per-column constants) applied to the mean of each bucket's real
    keys; its logits for the ``nb`` buckets of the input
    (masked so only buckets holding real keys are sorted, :func:`sorting_mask`) plus Gumbel
    noise in training, divided by ``temperature``, go through ``sinkhorn_iterations`` rounds of
    :func:`sinkhorn`. Then :func:`sorted_bucket_attention`.

    No causal variant (``supports_causal = False``): a bucket's sort row depends on its own
    keys' summary, and Sinkhorn's column normalization mixes every row into every other, so
    early queries would see later tokens. Use it in encoders.

    Args:
        bucket_size: tokens per bucket ``bs``.
        max_length: longest sequence (``L`` slots) it will see; sets the sorting network's
            output size ``ceil(max_length / bucket_size)``.
        num_heads: ``H``.
        head_dim: ``D`` of the keys.
        sinkhorn_iterations: column/row normalization rounds.
        temperature: divides the logits (lower = closer to a hard permutation).
        dropout: attention dropout (training only).
        backend: :func:`graphattn.attention` backend.

    Shapes: ``q [B, L, H, D]``, ``k [B, L, H, D]``, ``v [B, L, H, Dv]`` -> ``[B, L, H, Dv]``.
    """

    supports_causal = False
    supports_cross = False

    def __init__(
        self,
        bucket_size: int,
        max_length: int,
        *,
        num_heads: int,
        head_dim: int,
        sinkhorn_iterations: int = 8,
        temperature: float = 0.75,
        dropout: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.bucket_size = _check_int(bucket_size, "bucket_size", 1)
        self.max_length = _check_int(max_length, "max_length", 1)
        self.num_heads = _check_int(num_heads, "num_heads", 1)
        self.head_dim = _check_int(head_dim, "head_dim", 1)
        self.sinkhorn_iterations = _check_int(sinkhorn_iterations, "sinkhorn_iterations", 1)
        if not float(temperature) > 0.0:
            raise ValueError(f"Expected temperature > 0, got {temperature}")
        self.temperature = float(temperature)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"Expected 0 <= dropout < 1, got {dropout}")
        self.dropout = float(dropout)
        self.backend = backend
        self.max_buckets = math.ceil(self.max_length / self.bucket_size)
        h, d, n = self.num_heads, self.head_dim, self.max_buckets
        self.hidden_weight = nn.Parameter(torch.empty(h, d, d))
        self.hidden_bias = nn.Parameter(torch.empty(h, d))
        # no output bias: a per-column constant is cancelled exactly by the column normalization
        self.output_weight = nn.Parameter(torch.empty(h, d, n))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s default: uniform in ``+-1/sqrt(fan_in)``, weights and biases."""
        bound = 1.0 / math.sqrt(self.head_dim)
        for parameter in (self.hidden_weight, self.hidden_bias, self.output_weight):
            nn.init.uniform_(parameter, -bound, bound)

    def sorting_logits(self, k: Tensor, key_lengths: Tensor) -> Tensor:
        """``[B, L, H, D]`` keys -> ``[B, H, nb, nb]`` masked logits (``-inf`` off :func:`sorting_mask`)."""
        batch, length, heads, dim = k.shape
        num_buckets = max(1, math.ceil(length / self.bucket_size))
        padded = num_buckets * self.bucket_size
        key_lengths = key_lengths.to(k.device)
        real = (torch.arange(padded, device=k.device) < key_lengths[:, None]).to(k.dtype)  # [B, Lp]
        blocks = F.pad(k, (0, 0, 0, 0, 0, padded - length)).view(batch, num_buckets, self.bucket_size, heads, dim)
        weight = real.view(batch, num_buckets, self.bucket_size)
        summary = torch.einsum("bjthd,bjt->bhjd", blocks, weight) / weight.sum(-1).clamp_min(1).view(
            batch, 1, num_buckets, 1)  # [B, H, nb, D] mean of real keys
        hidden = torch.relu(torch.einsum("bhjd,hde->bhje", summary, self.hidden_weight) + self.hidden_bias[:, None])
        logits = torch.einsum("bhje,hen->bhjn", hidden, self.output_weight[..., :num_buckets])
        real_buckets = torch.div(key_lengths + self.bucket_size - 1, self.bucket_size, rounding_mode="floor")
        allowed = sorting_mask(num_buckets, real_buckets).unsqueeze(1)  # [B, 1, nb, nb]
        return logits.masked_fill(~allowed, float("-inf"))

    def sorting_matrix(self, k: Tensor, key_lengths: Tensor) -> Tensor:
        """``[B, H, nb, nb]`` relaxed permutation: Sinkhorn of (logits + Gumbel noise in training) / temperature."""
        logits = self.sorting_logits(k, key_lengths)
        if self.training:
            uniform = torch.rand_like(logits)
            tiny = torch.finfo(logits.dtype).tiny
            gumbel = -torch.log((-torch.log(uniform.clamp_min(tiny))).clamp_min(tiny))
            logits = logits + gumbel
        return sinkhorn(logits / self.temperature, self.sinkhorn_iterations)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout) -> Tensor:
        self.check_inputs(q, k, v, layout)
        batch, length, heads, dim = q.shape
        if k.size(1) != length:
            raise ValueError(
                f"SinkhornAttention is self-attention: expected q and k with one length, got {length} and "
                f"{k.size(1)}"
            )
        if heads != self.num_heads or dim != self.head_dim:
            raise ValueError(
                f"SinkhornAttention was built for {self.num_heads} heads of size {self.head_dim}, got q with "
                f"{heads} heads of size {dim}; build it with num_heads={heads}, head_dim={dim}"
            )
        if length > self.max_buckets * self.bucket_size:
            raise ValueError(
                f"SinkhornAttention was built for max_length={self.max_length}, got sequences of {length} slots; "
                f"build it with max_length >= {length}"
            )
        sort_matrix = self.sorting_matrix(k, layout.key_lengths)
        return sorted_bucket_attention(
            q, k, v, sort_matrix, self.bucket_size, layout,
            dropout=self.dropout if self.training else 0.0, backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"bucket_size={self.bucket_size}, max_length={self.max_length}, num_heads={self.num_heads}, "
            f"head_dim={self.head_dim}, sinkhorn_iterations={self.sinkhorn_iterations}, "
            f"temperature={self.temperature}, dropout={self.dropout}, backend={self.backend!r}"
        )
