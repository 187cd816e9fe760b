"""Clustered attention mechanisms: Reformer's LSH attention and the Routing Transformer.

Both build their edge set from the data on every forward pass
(:mod:`graphattn.patterns.clustered`) and run :func:`graphattn.attention` on it. Heads are
folded into the batch: head ``h`` of sequence ``b`` is the node block ``(b * H + h) * L + i``, so
every head has its own buckets / clusters and the sparse core sees one head over ``B * H``
sequences.

Example:
    >>> import torch
    >>> from graphattn.nn.clustered import LSHAttention
    >>> from graphattn.nn.mechanism import SequenceLayout
    >>> lsh = LSHAttention(num_buckets=4, chunk_size=4, num_rounds=2, seed=0).eval()
    >>> qk, v = torch.randn(2, 16, 3, 8), torch.randn(2, 16, 3, 8)     # [B, L, H, D]
    >>> layout = SequenceLayout(torch.tensor([16, 12]), torch.tensor([16, 12]))
    >>> lsh(qk, qk, v, layout).shape
    torch.Size([2, 16, 3, 8])
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.graph import AttentionGraph
from graphattn.nn.mechanism import AttentionMechanism, SequenceLayout
from graphattn.ops import attention
from graphattn.patterns.clustered import kmeans_routing_graph, lsh_buckets, lsh_graph, lsh_rotations
from graphattn.patterns.sequence import _check_int

__all__ = ["LSHAttention", "RoutingAttention"]

# odd 64-bit constant (the golden ratio's) spreading (seed, step) pairs over generator seeds
_SEED_MIX = 0x9E3779B97F4A7C15


def _fold_heads(x: Tensor) -> Tensor:
    """``[B, L, H, D]`` -> ``[B * H * L, 1, D]`` (node ``(b * H + h) * L + i``)."""
    batch, length, heads, dim = x.shape
    return x.permute(0, 2, 1, 3).reshape(batch * heads * length, 1, dim)


def _unfold_heads(x: Tensor, batch: int, length: int, heads: int) -> Tensor:
    """``[B * H * L, 1, Dv]`` -> ``[B, L, H, Dv]``."""
    return x.view(batch, heads, length, -1).permute(0, 2, 1, 3)


def _check_probability(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"Expected 0 <= {name} < 1, got {value}")
    return value


class LSHAttention(AttentionMechanism):
    """Reformer's LSH self-attention (Kitaev et al. 2020) on the sparse core.

    Queries and keys share one projection (``shared_query_key``: the layer passes ``k = q``).
    Each head hashes its vectors with angular LSH into ``num_buckets`` buckets, ``num_rounds``
    times with independent random rotations; per round the bucket-sorted sequence is cut into
    chunks of ``chunk_size`` and each query attends its own and the previous chunk, never itself
    unless it has nothing else (:func:`~graphattn.patterns.clustered.lsh_graph`). The rounds
    are merged by log-sum-exp with Reformer's duplicate-count correction, which is exactly
    softmax over the union of the rounds' keys: that union graph is what runs, in one call.

    Keys are the shared vectors divided by their root mean square (Reformer), so with the
    default scale ``1 / sqrt(D)`` the score is ``q_i . k_j / |k_j|``.

    Randomness: in training every forward draws new rotations from a generator seeded with
    ``(seed, step)`` and then increments the ``step`` buffer (saved in checkpoints, so a resumed
    run hashes as the uninterrupted one would); in eval the rotations are fixed (drawn from
    ``seed`` alone). Causal attention uses ``chunking="bucket"`` (chunks restart at every
    bucket), the variant whose key sets depend only on earlier tokens.

    Args:
        num_buckets: ``nb``, even (or 1: no hashing). Default: ``2 * ceil(L / chunk_size)`` per
            forward (Reformer's advice of about two chunks per bucket) for the padded length
            ``L``, so a sequence's buckets then depend on the batch it is padded in; give it
            explicitly for batch-invariant outputs (the Transformer configs derive it from
            ``max_positions``).
        chunk_size: ``C``; a query attends at most ``2 C`` keys per round.
        num_rounds: hash rounds ``R``.
        seed: seeds the rotations.
        dropout: attention dropout (training only).
        backend: :func:`graphattn.attention` backend.

    Shapes: ``q = k [B, L, H, D]``, ``v [B, L, H, Dv]`` -> ``[B, L, H, Dv]``.
    """

    supports_causal = True
    supports_cross = False
    shared_query_key = True

    def __init__(
        self,
        num_buckets: int | None = None,
        chunk_size: int = 64,
        num_rounds: int = 2,
        *,
        seed: int = 0,
        dropout: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if num_buckets is not None:
            num_buckets = _check_int(num_buckets, "num_buckets", 1)
            if num_buckets > 1 and num_buckets % 2:
                raise ValueError(f"Expected an even 'num_buckets' (or 1), got {num_buckets}; use {num_buckets + 1}")
        self.num_buckets = num_buckets
        self.chunk_size = _check_int(chunk_size, "chunk_size", 1)
        self.num_rounds = _check_int(num_rounds, "num_rounds", 1)
        self.seed = _check_int(seed, "seed")
        self.dropout = _check_probability(dropout, "dropout")
        self.backend = backend
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def buckets_for(self, length: int) -> int:
        """The number of buckets used for sequences of ``length`` slots."""
        if self.num_buckets is not None:
            return self.num_buckets
        return max(2, 2 * math.ceil(length / self.chunk_size))

    def rotations(self, num_heads: int, head_dim: int, length: int, device: torch.device | None = None) -> Tensor:
        """``[H, R, D, nb / 2]`` float32 rotations this forward would use (does not advance ``step``)."""
        seed = self.seed if not self.training else (self.seed * _SEED_MIX + int(self.step) + 1) % 2**63
        generator = torch.Generator().manual_seed(seed)
        rotations = lsh_rotations(head_dim, max(self.buckets_for(length), 2), self.num_rounds,
                                  batch_shape=(num_heads,), generator=generator)
        return rotations.to(device) if device is not None else rotations

    def graph(self, qk: Tensor, layout: SequenceLayout) -> AttentionGraph:
        """The union graph over ``B * H * L`` folded nodes for shared query/keys ``[B, L, H, D]``."""
        batch, length, heads, dim = qk.shape
        num_buckets = self.buckets_for(length)
        x = qk.detach().permute(0, 2, 1, 3)  # [B, H, L, D]
        if num_buckets == 1:
            buckets = torch.zeros(batch, heads, self.num_rounds, length, dtype=torch.long, device=qk.device)
        else:
            buckets = lsh_buckets(x, num_buckets, self.num_rounds,
                                  rotations=self.rotations(heads, dim, length, qk.device))  # [B, H, R, L]
        lengths = layout.query_lengths.to(qk.device).repeat_interleave(heads)
        return lsh_graph(buckets.flatten(0, 1), self.chunk_size, lengths=lengths, causal=layout.causal,
                         keep_rounds=False).union

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout) -> Tensor:
        self.check_inputs(q, k, v, layout)
        if q.shape != k.shape:
            raise ValueError(
                f"LSHAttention shares queries and keys: expected k = q of one shape, got {list(q.shape)} and "
                f"{list(k.shape)}; it is self-attention only (pass the query projection as keys)"
            )
        if not torch.equal(layout.query_lengths, layout.key_lengths):
            raise ValueError("LSHAttention is self-attention: expected query_lengths == key_lengths")
        batch, length, heads, _ = q.shape
        graph = self.graph(q, layout)
        keys = k * torch.rsqrt(k.pow(2).mean(dim=-1, keepdim=True) + 1e-6)  # unit RMS (Reformer)
        out = attention(
            _fold_heads(q), _fold_heads(keys), _fold_heads(v), graph,
            dropout=self.dropout if self.training else 0.0, backend=self.backend,
        )
        if self.training:
            with torch.no_grad():
                self.step += 1
        return _unfold_heads(out, batch, length, heads)

    def extra_repr(self) -> str:
        return (
            f"num_buckets={self.num_buckets}, chunk_size={self.chunk_size}, num_rounds={self.num_rounds}, "
            f"seed={self.seed}, dropout={self.dropout}, backend={self.backend!r}"
        )


class RoutingAttention(AttentionMechanism):
    """Routing Transformer attention (Roy et al. 2021): online spherical k-means routes queries
    to keys of the same cluster, on the sparse core.

    Queries and keys are layer-normalized (no affine) and scaled to unit length; their cosine
    similarity to each head's centroids (``centroids`` buffer ``[H, C, D]``) routes them.
    Non-causal: balanced top-``w`` membership (each centroid takes its ``window`` nearest
    queries and ``window`` nearest keys; a token may be in several clusters or in none, and a
    query in none outputs zeros). Causal: each token joins its nearest centroid and attends the
    ``window`` latest keys ``j <= i`` of its cluster (top-``w`` would leak later tokens; see
    :func:`~graphattn.patterns.clustered.kmeans_routing_graph`). Scores are the usual
    ``q . k / sqrt(D)`` of the unnormalized vectors.

    In training, after the output is computed, every centroid moves toward the mean of the
    normalized real queries and keys whose nearest centroid it is:
    ``mu_c <- decay * mu_c + (1 - decay) * mean_c`` (no gradient; clusters without members stay).
    Eval leaves the centroids alone. Under DDP each rank updates its own copy and DDP's buffer
    broadcast keeps rank 0's.

    The paper mixes routing heads with local-attention heads. Do that with
    :class:`~graphattn.nn.mechanism.HeadGroups` on a layer whose pattern is ``local(window)``:
    ``HeadGroups([SoftmaxAttention(), RoutingAttention(...)])`` (spec
    ``"heads(softmax, routing(num_clusters=4))"``) runs the layer's local pattern in the first
    half of the heads and routing in the second half.

    Args:
        num_clusters: ``C`` centroids per head.
        window: ``w`` members per centroid (causal: keys per query); default ``ceil(L / C)``.
        num_heads: ``H`` (routing heads this mechanism receives).
        head_dim: ``D``.
        ema_decay: centroid EMA decay.
        seed: seeds the initial centroids.
        dropout: attention dropout (training only).
        backend: :func:`graphattn.attention` backend.

    Shapes: ``q [B, Lq, H, D]``, ``k [B, Lk, H, D]``, ``v [B, Lk, H, Dv]`` -> ``[B, Lq, H, Dv]``.
    """

    supports_causal = True
    supports_cross = True

    def __init__(
        self,
        num_clusters: int,
        window: int | None = None,
        *,
        num_heads: int,
        head_dim: int,
        ema_decay: float = 0.999,
        seed: int = 0,
        dropout: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.num_clusters = _check_int(num_clusters, "num_clusters", 1)
        self.window = None if window is None else _check_int(window, "window", 1)
        self.num_heads = _check_int(num_heads, "num_heads", 1)
        self.head_dim = _check_int(head_dim, "head_dim", 1)
        if not 0.0 <= float(ema_decay) <= 1.0:
            raise ValueError(f"Expected 0 <= ema_decay <= 1, got {ema_decay}")
        self.ema_decay = float(ema_decay)
        self.seed = _check_int(seed, "seed")
        self.dropout = _check_probability(dropout, "dropout")
        self.backend = backend
        self.register_buffer("centroids", torch.empty(self.num_heads, self.num_clusters, self.head_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random unit centroids drawn from ``seed``."""
        generator = torch.Generator().manual_seed(self.seed)
        init = torch.randn(self.centroids.shape, generator=generator)
        with torch.no_grad():
            self.centroids.copy_(F.normalize(init, dim=-1))

    @staticmethod
    def normalize(x: Tensor) -> Tensor:
        """Layer norm without affine, then unit length: ``[..., D]`` -> ``[..., D]``."""
        return F.normalize(F.layer_norm(x, x.shape[-1:]), dim=-1)

    def scores(self, x: Tensor) -> Tensor:
        """``[B, L, H, D]`` -> ``[B * H, C, L]`` cosine similarity of every slot to every centroid."""
        batch, length, heads, _ = x.shape
        unit = self.normalize(x.detach()).permute(0, 2, 1, 3)  # [B, H, L, D]
        centroids = F.normalize(self.centroids, dim=-1).to(unit.dtype)
        return torch.einsum("bhld,hcd->bhcl", unit, centroids).reshape(batch * heads, self.num_clusters, length)

    def graph(self, q: Tensor, k: Tensor, layout: SequenceLayout) -> AttentionGraph:
        """The routing graph over ``B * H * Lq`` query and ``B * H * Lk`` key nodes."""
        heads = q.size(2)
        return kmeans_routing_graph(
            self.scores(q), self.scores(k), self.window,
            query_lengths=layout.query_lengths.to(q.device).repeat_interleave(heads),
            key_lengths=layout.key_lengths.to(q.device).repeat_interleave(heads),
            causal=layout.causal,
        )

    @torch.no_grad()
    def update_centroids(self, q: Tensor, k: Tensor, layout: SequenceLayout) -> None:
        """One EMA step toward the mean of the real normalized queries and keys nearest each centroid."""
        sums = torch.zeros_like(self.centroids)  # [H, C, D]
        counts = torch.zeros(self.num_heads, self.num_clusters, dtype=self.centroids.dtype,
                             device=self.centroids.device)
        for x, lengths in ((q, layout.query_lengths), (k, layout.key_lengths)):
            unit = self.normalize(x).to(self.centroids.dtype)  # [B, L, H, D]
            real = torch.arange(x.size(1), device=x.device) < lengths.to(x.device)[:, None]  # [B, L]
            nearest = torch.einsum("blhd,hcd->blhc", unit, F.normalize(self.centroids, dim=-1)).argmax(-1)
            unit, nearest = unit[real], nearest[real]  # [M, H, D], [M, H]
            onehot = F.one_hot(nearest, self.num_clusters).to(unit.dtype)  # [M, H, C]
            sums += torch.einsum("mhc,mhd->hcd", onehot, unit)
            counts += onehot.sum(0)
        mean = sums / counts.clamp_min(1).unsqueeze(-1)
        moved = self.ema_decay * self.centroids + (1.0 - self.ema_decay) * mean
        self.centroids.copy_(torch.where(counts.unsqueeze(-1) > 0, moved, self.centroids))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout) -> Tensor:
        self.check_inputs(q, k, v, layout)
        batch, q_len, heads, dim = q.shape
        if heads != self.num_heads or dim != self.head_dim:
            raise ValueError(
                f"RoutingAttention was built for {self.num_heads} heads of size {self.head_dim}, got q with "
                f"{heads} heads of size {dim}; build it with num_heads={heads}, head_dim={dim}"
            )
        graph = self.graph(q, k, layout)
        out = attention(
            _fold_heads(q), _fold_heads(k), _fold_heads(v), graph,
            dropout=self.dropout if self.training else 0.0, backend=self.backend,
        )
        if self.training and self.ema_decay < 1.0:
            self.update_centroids(q, k, layout)
        return _unfold_heads(out, batch, q_len, heads)

    def extra_repr(self) -> str:
        return (
            f"num_clusters={self.num_clusters}, window={self.window}, num_heads={self.num_heads}, "
            f"head_dim={self.head_dim}, ema_decay={self.ema_decay}, dropout={self.dropout}, backend={self.backend!r}"
        )
