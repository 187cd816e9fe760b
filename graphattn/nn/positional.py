"""Positional information for Transformers and graph transformers, on sparse patterns.

Sequence positions enter a model in one of three places:

* **added to the inputs**: :class:`SinusoidalPositionalEmbedding` (Vaswani et al. 2017) and
  :class:`LearnedPositionalEmbedding` map integer positions ``[...]`` to vectors ``[..., dim]``;
* **rotating queries and keys**: :class:`RotaryEmbedding` (RoPE, Su et al. 2021, in the
  GPT-NeoX / Llama "rotate half" layout) turns ``[N, H, D]`` into ``[N, H, D]``;
* **biasing the scores of attention edges**: :class:`RelativePositionBias` (T5 buckets) and
  :class:`ALiBi` (Press et al. 2022) return one value per edge and head, ``[E, H]`` in the CSR
  order of an :class:`~graphattn.AttentionGraph` (``graph.row`` = query, ``graph.col`` = key),
  ready for ``graphattn.attention(..., bias=...)``. Nothing ``Nq x Nk`` is ever built.

The edge biases take query and key positions explicitly, because the node index is not the
position: in a block-diagonal batch the positions restart in every sequence
(:func:`graph_positions` gives them), and in incremental decoding the single query sits at
position ``t``.

For graphs, whose nodes have no order, :func:`laplacian_eigenvector_pe` and
:func:`random_walk_pe` compute structural encodings for a batch of graphs (PyG's ``batch``
vector), and :class:`LaplacianPositionalEncoding` / :class:`RandomWalkPositionalEncoding` embed
them (Dwivedi et al. 2020; 2022).

Example:
    >>> import torch
    >>> from graphattn import patterns
    >>> from graphattn.nn.positional import ALiBi, RotaryEmbedding, graph_positions
    >>> graph = patterns.causal(4)
    >>> query_positions, key_positions = graph_positions(graph)
    >>> ALiBi(2)(graph, query_positions, key_positions)[:3]       # edges (0,0), (1,0), (1,1)
    tensor([[ 0.0000,  0.0000],
            [-0.0625, -0.0039],
            [ 0.0000,  0.0000]])
    >>> q = torch.randn(4, 2, 8)                                  # [N, H, D]
    >>> RotaryEmbedding(8)(q, query_positions).shape
    torch.Size([4, 2, 8])
"""
from __future__ import annotations

import math
import operator
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.graph import AttentionGraph

__all__ = [
    "SinusoidalPositionalEmbedding",
    "LearnedPositionalEmbedding",
    "RelativePositionBias",
    "RotaryEmbedding",
    "ALiBi",
    "alibi_slopes",
    "graph_positions",
    "laplacian_eigenvector_pe",
    "random_walk_pe",
    "LaplacianPositionalEncoding",
    "RandomWalkPositionalEncoding",
]

DENSE_EIGEN_MAX_NODES = 1000
"""Graphs with at most this many nodes get a dense eigendecomposition in
:func:`laplacian_eigenvector_pe` (batched over graphs of equal size); larger graphs use
``scipy.sparse.linalg.eigsh`` (``eigs`` for directed graphs) for the ``k + 1`` smallest."""


# ====================================================================== sequence positions
class SinusoidalPositionalEmbedding(nn.Module):
    """The fixed sinusoidal position encoding of "Attention Is All You Need".

    ``PE[p, 2i] = sin(p / base^(2i / dim))`` and ``PE[p, 2i + 1] = cos(p / base^(2i / dim))``:
    sines and cosines **interleaved**, as in the paper (not the ``[sin..., cos...]`` halves of
    some implementations). Every column ``c`` uses the frequency of its pair ``2 * (c // 2)``, so
    an odd ``dim`` simply ends with a sine column whose cosine partner would be column ``dim``.

    The module has no parameters and no buffers; any integer position works (no maximum
    length; negative positions, e.g. relative distances, follow the same formula). Angles are
    computed in float64 (float32 on MPS, which has no float64) and the result cast to ``dtype``.

    Args:
        dim: size of the embedding.
        base: the wavelength base (10000 in the paper).

    Shapes:
        ``positions [...]`` (integer) -> ``[..., dim]``.

    Example:
        >>> embed = SinusoidalPositionalEmbedding(4)
        >>> embed(torch.tensor([0, 1]))
        tensor([[0.0000, 1.0000, 0.0000, 1.0000],
                [0.8415, 0.5403, 0.0100, 0.9999]])
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        self.dim = _positive_int(dim, "dim")
        self.base = _positive_float(base, "base")

    def forward(self, positions: Tensor, *, dtype: torch.dtype | None = None) -> Tensor:
        """Embed integer ``positions [...]`` as ``[..., dim]`` in ``dtype`` (default float32)."""
        _check_integer(positions, "positions", "[...]")
        dtype = torch.float32 if dtype is None else dtype
        if not dtype.is_floating_point:
            raise TypeError(f"Expected a floating point 'dtype' for the embedding, got {dtype}")
        compute = torch.float32 if positions.device.type == "mps" else torch.float64
        column = torch.arange(self.dim, device=positions.device)
        exponent = (2 * torch.div(column, 2, rounding_mode="floor")).to(compute) / self.dim
        inverse_frequency = self.base ** -exponent                          # [dim]
        angles = positions.to(compute).unsqueeze(-1) * inverse_frequency    # [..., dim]
        embedding = torch.where(column % 2 == 0, angles.sin(), angles.cos())
        return embedding.to(dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base:g}"


class LearnedPositionalEmbedding(nn.Module):
    """One learned vector per absolute position ``0 .. max_positions - 1`` (BERT / GPT-2 style).

    Like ``nn.Embedding(max_positions, dim)`` (the table is :attr:`weight`
    ``[max_positions, dim]``), but a position outside the table is a ``ValueError`` that says
    to raise ``max_positions``, instead of an index error deep inside ``F.embedding``.
    :meth:`reset_parameters` draws the table from ``N(0, 0.02^2)`` (the GPT-2 / BERT
    initialization), not ``nn.Embedding``'s ``N(0, 1)``.

    Args:
        max_positions: number of positions the table holds.
        dim: size of the embedding.
        device, dtype: where and in which dtype to create the table.

    Shapes:
        ``positions [...]`` (integer, in ``[0, max_positions)``) -> ``[..., dim]``.

    Example:
        >>> embed = LearnedPositionalEmbedding(16, 8)
        >>> embed(torch.arange(5)).shape
        torch.Size([5, 8])
    """

    def __init__(
        self,
        max_positions: int,
        dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.max_positions = _positive_int(max_positions, "max_positions")
        self.dim = _positive_int(dim, "dim")
        self.weight = nn.Parameter(torch.empty(self.max_positions, self.dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the table from a normal distribution with mean 0 and std 0.02."""
        nn.init.normal_(self.weight, mean=0.0, std=0.02)

    def forward(self, positions: Tensor) -> Tensor:
        """Look up integer ``positions [...]`` -> ``[..., dim]``."""
        _check_integer(positions, "positions", "[...]")
        if positions.numel():
            low, high = int(positions.min()), int(positions.max())
            if high >= self.max_positions:
                raise ValueError(
                    f"Expected positions below max_positions={self.max_positions}, got position "
                    f"{high}; raise max_positions in the model config (the longest sequence must "
                    f"fit) or truncate the input"
                )
            if low < 0:
                raise ValueError(f"Expected non-negative positions, got position {low}")
        return F.embedding(positions.to(self.weight.device), self.weight)

    def extra_repr(self) -> str:
        return f"max_positions={self.max_positions}, dim={self.dim}"


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021) in the "rotate half" layout.

    Feature ``i`` is paired with feature ``i + D/2`` (the GPT-NeoX / Hugging Face Llama layout,
    not the interleaved ``(2i, 2i+1)`` pairs of the paper), and each pair is rotated by the angle
    ``position * theta_i`` with ``theta_i = base^(-2i / D)``::

        out[..., i]       = x[..., i] cos(p theta_i) - x[..., i + D/2] sin(p theta_i)
        out[..., i + D/2] = x[..., i + D/2] cos(p theta_i) + x[..., i] sin(p theta_i)

    so that ``rot(q, m) . rot(k, n)`` depends on ``m - n`` only. Apply it to queries and keys
    (after the projections, before the scores) with each one's own positions. The angles,
    cosines and sines are computed in float32 (float64 for float64 inputs) and cast to
    ``x.dtype`` before the rotation. No parameters, no buffers.

    Args:
        head_dim: ``D``, the per-head size of queries and keys; must be even.
        base: the wavelength base (10000 in RoPE and Llama 1/2).

    Shapes:
        ``x [N, H, D]`` with ``positions [N]``, or ``x [B, L, H, D]`` with ``positions [B, L]``
        (or ``[L]``, shared by the batch): ``positions`` broadcasts against ``x.shape[:-2]``.
        Returns a tensor shaped like ``x``.

    Example:
        >>> rope = RotaryEmbedding(8)
        >>> q = torch.randn(2, 5, 4, 8)                           # [B, L, H, D]
        >>> rope(q, torch.arange(5)).shape
        torch.Size([2, 5, 4, 8])
        >>> torch.equal(rope(q, torch.zeros(5, dtype=torch.long)), q)   # position 0: identity
        True
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        head_dim = _positive_int(head_dim, "head_dim")
        if head_dim % 2:
            raise ValueError(
                f"Expected an even head_dim for rotary embeddings (features are rotated in pairs "
                f"(i, i + head_dim/2)), got head_dim={head_dim}; choose an even head size"
            )
        self.head_dim = head_dim
        self.base = _positive_float(base, "base")

    def cos_sin(self, positions: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """``cos`` and ``sin`` of the rotation angles, each ``[..., D]`` for ``positions [...]``.

        Computed in ``dtype`` (float32 or float64); the two halves of the last dimension repeat
        the ``D/2`` frequencies, matching the "rotate half" pairing.
        """
        exponent = torch.arange(0, self.head_dim, 2, device=positions.device).to(dtype) / self.head_dim
        inverse_frequency = 1.0 / (self.base ** exponent)                    # [D/2]
        angles = positions.to(dtype).unsqueeze(-1) * inverse_frequency      # [..., D/2]
        angles = torch.cat([angles, angles], dim=-1)                        # [..., D]
        return angles.cos(), angles.sin()

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate ``x [..., H, D]`` by ``positions`` (broadcast against ``x.shape[:-2]``)."""
        if not isinstance(x, Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"Expected 'x' to be a floating point tensor [N, H, D] or [B, L, H, D], got {got}")
        if x.dim() < 3 or x.size(-1) != self.head_dim:
            raise ValueError(
                f"Expected 'x' of shape [N, H, D] or [B, L, H, D] with D = head_dim = {self.head_dim}, "
                f"got {list(x.shape)}"
            )
        _check_integer(positions, "positions", "[N] or [B, L]")
        leading = x.shape[:-2]
        try:
            broadcast = torch.broadcast_shapes(positions.shape, leading)
        except RuntimeError:
            broadcast = None
        if broadcast != leading:
            raise ValueError(
                f"Expected 'positions' broadcastable to x.shape[:-2] = {list(leading)} (one position "
                f"per query/key node), got shape {list(positions.shape)}"
            )
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        cos, sin = self.cos_sin(positions.to(x.device), compute)
        cos = cos.unsqueeze(-2).to(x.dtype)                                  # [..., 1, D]
        sin = sin.unsqueeze(-2).to(x.dtype)
        return x * cos + _rotate_half(x) * sin

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base:g}"


def _rotate_half(x: Tensor) -> Tensor:
    """``[x1, x2] -> [-x2, x1]`` along the last dimension (halves of size ``D/2``)."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


# ====================================================================== per-edge biases
def graph_positions(graph: AttentionGraph) -> tuple[Tensor, Tensor]:
    """Position of every query and key node inside its own sequence.

    For a block-diagonal batch (:meth:`AttentionGraph.batch`, which records
    ``query_ptr`` / ``key_ptr``) the positions restart at 0 in every sequence; for a single
    graph they are ``arange(num_queries)`` and ``arange(num_keys)``.

    Returns:
        ``(query_positions [Nq], key_positions [Nk])``, int64 on the graph's device.

    Example:
        >>> from graphattn import patterns
        >>> g = AttentionGraph.batch([patterns.causal(3), patterns.causal(2)])
        >>> graph_positions(g)
        (tensor([0, 1, 2, 0, 1]), tensor([0, 1, 2, 0, 1]))
    """
    if not isinstance(graph, AttentionGraph):
        raise TypeError(f"Expected an AttentionGraph, got {type(graph).__name__}")
    return (
        _positions_from_ptr(graph.query_ptr, graph.num_queries, graph.device),
        _positions_from_ptr(graph.key_ptr, graph.num_keys, graph.device),
    )


def _positions_from_ptr(ptr: Tensor | None, size: int, device: torch.device) -> Tensor:
    index = torch.arange(size, device=device)
    if ptr is None:
        return index
    ptr = ptr.to(device)
    lengths = ptr.diff()
    return index - torch.repeat_interleave(ptr[:-1], lengths, output_size=size)


class RelativePositionBias(nn.Module):
    """T5's learned relative position bias, one value per attention edge and head.

    The relative position of an edge is ``key_position - query_position`` (T5's
    ``memory_position - query_position``); it is mapped to one of ``num_buckets`` buckets by
    :meth:`bucket` (exactly T5's / Hugging Face's ``_relative_position_bucket``) and the bias
    is a learned table ``[num_buckets, num_heads]`` (:attr:`relative_attention_bias`, an
    ``nn.Embedding``) looked up per edge. :meth:`reset_parameters` draws the table from
    ``N(0, 0.02^2)`` (T5 uses ``N(0, d_model^-1)``; the layer does not know ``d_model``).

    T5 computes this bias in the first layer of a stack and shares it with the others; build
    one module per stack and pass its output to every layer to do the same.

    Args:
        num_heads: ``H``.
        num_buckets: size of the table (32 in T5).
        max_distance: distances at or beyond it share the last bucket of their direction
            (128 in T5).
        bidirectional: ``True`` for encoders (half of the buckets per direction), ``False``
            for causal decoders (keys after the query all fall into bucket 0, with distance 0).
        device, dtype: where and in which dtype to create the table.

    Shapes:
        ``forward(graph, query_positions [Nq], key_positions [Nk]) -> [E, H]`` in the graph's
        CSR edge order, dtype of the table.

    Example:
        >>> from graphattn import patterns
        >>> bias = RelativePositionBias(num_heads=4)
        >>> graph = patterns.causal(6)
        >>> bias(graph, torch.arange(6), torch.arange(6)).shape       # E = 21 edges
        torch.Size([21, 4])
        >>> RelativePositionBias.bucket(torch.tensor([-20, -1, 0, 1, 20]))
        tensor([10,  1,  0, 17, 26])
    """

    def __init__(
        self,
        num_heads: int,
        num_buckets: int = 32,
        max_distance: int = 128,
        bidirectional: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = _positive_int(num_heads, "num_heads")
        _check_bucket_settings(num_buckets, max_distance, bidirectional)
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bool(bidirectional)
        self.relative_attention_bias = nn.Embedding(num_buckets, self.num_heads, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the table from a normal distribution with mean 0 and std 0.02."""
        nn.init.normal_(self.relative_attention_bias.weight, mean=0.0, std=0.02)

    @staticmethod
    def bucket(
        relative_position: Tensor,
        bidirectional: bool = True,
        num_buckets: int = 32,
        max_distance: int = 128,
    ) -> Tensor:
        """T5's bucket of every relative position ``key - query`` (any shape, integer).

        With ``bidirectional``, half of the buckets serve each direction: keys at or before the
        query use buckets ``0 .. num_buckets/2 - 1``, keys after it the upper half. Without it,
        keys after the query count as distance 0. Within a direction's ``n`` buckets, distances
        ``0 .. n/2 - 1`` have a bucket each; larger distances ``d`` get
        ``n/2 + floor(log(d / (n/2)) / log(max_distance / (n/2)) * (n - n/2))``, clamped to
        ``n - 1``. The logarithm is taken in float32, as in T5 and Hugging Face, so the buckets
        match theirs exactly.

        Returns:
            int64 buckets in ``[0, num_buckets)``, shaped like ``relative_position``.
        """
        _check_integer(relative_position, "relative_position", "[...]")
        _check_bucket_settings(num_buckets, max_distance, bidirectional)
        relative_position = relative_position.long()
        buckets = torch.zeros_like(relative_position)
        if bidirectional:
            num_buckets //= 2
            buckets = buckets + (relative_position > 0).long() * num_buckets
            distance = relative_position.abs()
        else:
            distance = (-relative_position).clamp(min=0)
        max_exact = num_buckets // 2
        is_small = distance < max_exact
        # log of a small distance is masked out below; clamping avoids log(0) = -inf casts
        scaled = (
            torch.log(distance.clamp(min=max_exact).float() / max_exact)
            / math.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        )
        if_large = (max_exact + scaled.long()).clamp(max=num_buckets - 1)
        return buckets + torch.where(is_small, distance, if_large)

    def forward(self, graph: AttentionGraph, query_positions: Tensor, key_positions: Tensor) -> Tensor:
        """Bias ``[E, H]`` of every edge: ``table[bucket(key_pos[col] - query_pos[row])]``."""
        relative = _edge_relative_positions(graph, query_positions, key_positions)
        buckets = self.bucket(relative, self.bidirectional, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets.to(self.relative_attention_bias.weight.device))

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, num_buckets={self.num_buckets}, "
            f"max_distance={self.max_distance}, bidirectional={self.bidirectional}"
        )


def _check_bucket_settings(num_buckets: object, max_distance: object, bidirectional: object) -> None:
    smallest = 4 if bidirectional else 2
    if isinstance(num_buckets, bool) or not isinstance(num_buckets, int) or num_buckets < smallest:
        raise ValueError(
            f"Expected num_buckets >= {smallest} (bidirectional={bool(bidirectional)}: at least one "
            f"exact and one logarithmic bucket per direction), got {num_buckets!r}"
        )
    max_exact = (num_buckets // 2 if bidirectional else num_buckets) // 2
    if isinstance(max_distance, bool) or not isinstance(max_distance, int) or max_distance <= max_exact:
        raise ValueError(
            f"Expected an int max_distance > {max_exact} (the largest exactly-bucketed distance + 1 "
            f"for num_buckets={num_buckets}), got {max_distance!r}; raise max_distance or lower num_buckets"
        )


def alibi_slopes(num_heads: int) -> Tensor:
    """The ALiBi head slopes of Press et al. (2022), float64 ``[num_heads]``.

    For ``n`` a power of two: the geometric sequence ``2^(-8h/n)``, ``h = 1 .. n``. Otherwise
    (the paper's reference recipe): the slopes of the closest smaller power of two ``m``,
    followed by every other slope (the 1st, 3rd, ...) of the ``2m`` sequence, ``n - m`` of them.

    Example:
        >>> alibi_slopes(4)
        tensor([0.2500, 0.0625, 0.0156, 0.0039], dtype=torch.float64)
    """
    num_heads = _positive_int(num_heads, "num_heads")

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    closest = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = power_of_two(closest)
    if closest != num_heads:
        slopes += power_of_two(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float64)


class ALiBi(nn.Module):
    """Attention with Linear Biases (Press et al. 2022): ``-slope_h * |query_pos - key_pos|``.

    For a causal pattern (keys at or before the query) this is exactly the paper's bias
    ``-m_h * (i - j)``. For keys after the query (bidirectional use) the same penalty applies to
    the distance in either direction, i.e. the symmetric form; use a causal graph to get the
    paper's setting. The slopes (:func:`alibi_slopes`) are a non-persistent buffer
    :attr:`slopes` ``[H]`` (float32 unless the module is cast), so they follow ``.to()`` but do
    not appear in the ``state_dict``. No parameters.

    Args:
        num_heads: ``H``.

    Shapes:
        ``forward(graph, query_positions [Nq], key_positions [Nk]) -> [E, H]`` in the graph's
        CSR edge order, dtype of :attr:`slopes`.

    Example:
        >>> from graphattn import patterns
        >>> alibi = ALiBi(8)
        >>> alibi.slopes[:3]
        tensor([0.5000, 0.2500, 0.1250])
        >>> graph = patterns.causal(3)
        >>> alibi(graph, torch.arange(3), torch.arange(3))[:, 0]      # edges in CSR order
        tensor([ 0.0000, -0.5000,  0.0000, -1.0000, -0.5000,  0.0000])
    """

    slopes: Tensor

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = _positive_int(num_heads, "num_heads")
        self.register_buffer("slopes", alibi_slopes(self.num_heads).float(), persistent=False)

    def forward(self, graph: AttentionGraph, query_positions: Tensor, key_positions: Tensor) -> Tensor:
        """Bias ``[E, H]`` of every edge: ``-slopes[h] * |query_pos[row] - key_pos[col]|``."""
        relative = _edge_relative_positions(graph, query_positions, key_positions)
        distance = relative.abs().to(device=self.slopes.device, dtype=self.slopes.dtype)
        return 0.0 - distance.unsqueeze(1) * self.slopes    # [E, H]; "0 -" gives +0, not -0, at d = 0

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"


def _edge_relative_positions(graph: AttentionGraph, query_positions: Tensor, key_positions: Tensor) -> Tensor:
    """``[E]`` int64 ``key_positions[col] - query_positions[row]`` after checking the inputs."""
    if not isinstance(graph, AttentionGraph):
        raise TypeError(
            f"Expected 'graph' to be an AttentionGraph, got {type(graph).__name__}; build one with "
            f"graphattn.patterns or AttentionGraph.from_edge_index"
        )
    _check_integer(query_positions, "query_positions", "[Nq]")
    _check_integer(key_positions, "key_positions", "[Nk]")
    for positions, name, size, size_name in (
        (query_positions, "query_positions", graph.num_queries, "Nq"),
        (key_positions, "key_positions", graph.num_keys, "Nk"),
    ):
        if positions.shape != (size,):
            raise ValueError(
                f"Expected '{name}' of shape [{size_name}] = [{size}] (one position per node of the "
                f"graph), got {list(positions.shape)}; graph_positions(graph) gives the positions "
                f"within each sequence of a batch"
            )
    device = graph.device
    return key_positions.to(device).long()[graph.col] - query_positions.to(device).long()[graph.row]


# ====================================================================== graph encodings
def laplacian_eigenvector_pe(
    edge_index: Tensor,
    num_nodes: int,
    k: int,
    *,
    batch: Tensor | None = None,
    is_undirected: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Laplacian eigenvector positional encodings of a batch of graphs (Dwivedi et al. 2020).

    For every graph, the eigenvectors of the symmetric normalized Laplacian
    ``L = I - D^-1/2 A D^-1/2`` (PyG's ``get_laplacian(normalization="sym")``: self-loops
    removed, duplicate edges add up, ``A[i, j]`` for an edge ``i -> j``, ``D`` the out-degrees,
    an isolated node has ``L[i, i] = 1``) with the ``k`` smallest eigenvalues after the first,
    trivial one, which is dropped as in PyG's ``AddLaplacianEigenvectorPE``. A disconnected graph
    keeps its further zero eigenvalues.

    Differences from PyG's transform:

    * it works on a whole batch (PyG ``batch`` vector): every graph gets its own
      decomposition; graphs of equal size are decomposed together (one batched dense
      ``eigh``), graphs above :data:`DENSE_EIGEN_MAX_NODES` nodes with ARPACK;
    * a graph with fewer than ``k + 1`` nodes has fewer than ``k`` non-trivial eigenvectors;
      its missing columns are **zero** (PyG raises);
    * no random sign: each column's sign is fixed so that its first entry larger than ``1e-6``
      times the column's largest magnitude is positive (deterministic).
      :class:`LaplacianPositionalEncoding` flips signs at random during training.

    Eigenvectors of a repeated eigenvalue are any orthonormal basis of its eigenspace.

    Args:
        edge_index: ``[2, E]`` integer edges ``source -> target``; edges must not connect
            different graphs of the batch.
        num_nodes: ``N``, the total number of nodes.
        k: number of eigenvectors per node.
        batch: ``[N]`` graph id of every node (PyG convention); ``None``: one graph.
        is_undirected: the graph is undirected (every edge present in both directions,
            checked), so ``L`` is symmetric and ``eigh`` applies. ``False`` uses the general
            eigensolver and the real parts, ordered by the eigenvalues' real parts, as PyG.
        dtype: dtype of the result (the decomposition runs in float64).

    Returns:
        ``[N, k]`` on ``edge_index``'s device.

    Example:
        >>> path = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])     # 0 - 1 - 2: eigenvalues 0, 1, 2
        >>> pe = laplacian_eigenvector_pe(path, 3, k=2)
        >>> pe.shape
        torch.Size([3, 2])
        >>> pe[:, 1]                                  # eigenvalue 2: (1, -sqrt(2), 1) / 2
        tensor([ 0.5000, -0.7071,  0.5000])
    """
    from torch_geometric.utils import get_laplacian

    num_nodes = _nonnegative_int(num_nodes, "num_nodes")
    edge_index = _check_edge_index(edge_index, num_nodes)
    k = _positive_int(k, "k")
    if not dtype.is_floating_point:
        raise TypeError(f"Expected a floating point 'dtype', got {dtype}")
    device = edge_index.device
    edge_index = edge_index.cpu()
    batch = _check_batch(batch, num_nodes, edge_index)
    if is_undirected:
        _check_undirected(edge_index, num_nodes)

    lap_index, lap_weight = get_laplacian(edge_index, normalization="sym", dtype=torch.float64, num_nodes=num_nodes)
    out = torch.zeros(num_nodes, k, dtype=torch.float64)
    if num_nodes == 0:
        return out.to(device=device, dtype=dtype)
    sizes = torch.bincount(batch)
    local = _local_index(batch, sizes)
    lap_graph = batch[lap_index[0]]
    for size in sorted(set(sizes.tolist())):
        if size <= 1:
            continue  # no non-trivial eigenvector: zeros
        graphs = (sizes == size).nonzero().flatten()
        if size <= DENSE_EIGEN_MAX_NODES:
            _dense_eigenvectors(out, size, graphs, batch, local, lap_index, lap_weight, lap_graph, k, is_undirected)
        else:
            for graph in graphs.tolist():
                _sparse_eigenvectors(out, size, graph, batch, local, lap_index, lap_weight, lap_graph, k, is_undirected)
    return out.to(device=device, dtype=dtype)


def _dense_eigenvectors(
    out: Tensor, size: int, graphs: Tensor, batch: Tensor, local: Tensor,
    lap_index: Tensor, lap_weight: Tensor, lap_graph: Tensor, k: int, is_undirected: bool,
) -> None:
    """Fill ``out`` for the graphs of ``size`` nodes, decomposed together in chunks."""
    slot = torch.full((int(batch.max()) + 1,), -1, dtype=torch.long)
    chunk = max(1, (1 << 22) // (size * size))                 # at most 4M float64 per chunk
    for start in range(0, graphs.numel(), chunk):
        part = graphs[start:start + chunk]
        slot.fill_(-1)
        slot[part] = torch.arange(part.numel())
        entry_slot = slot[lap_graph]
        keep = entry_slot >= 0
        rows, cols = lap_index[0][keep], lap_index[1][keep]
        dense = torch.zeros(part.numel(), size, size, dtype=torch.float64)   # [G, n, n]
        dense.index_put_((entry_slot[keep], local[rows], local[cols]), lap_weight[keep], accumulate=True)
        vectors = _smallest_eigenvectors(dense, k + 1, is_undirected)[..., 1:]   # [G, n, <=k]
        nodes = (slot[batch] >= 0).nonzero().flatten()
        out[nodes, : vectors.size(-1)] = _fix_signs(vectors)[slot[batch[nodes]], local[nodes]]


def _smallest_eigenvectors(dense: Tensor, count: int, is_undirected: bool) -> Tensor:
    """Eigenvectors ``[G, n, min(count, n)]`` of ``dense [G, n, n]`` by ascending eigenvalue."""
    if is_undirected:
        _, vectors = torch.linalg.eigh(dense)
    else:
        values, vectors = torch.linalg.eig(dense)
        order = values.real.argsort(dim=-1, stable=True)
        vectors = vectors.real.gather(-1, order.unsqueeze(-2).expand_as(dense))
    return vectors[..., :count]


def _sparse_eigenvectors(
    out: Tensor, size: int, graph: int, batch: Tensor, local: Tensor,
    lap_index: Tensor, lap_weight: Tensor, lap_graph: Tensor, k: int, is_undirected: bool,
) -> None:
    """Fill ``out`` for one large graph with ARPACK (``k + 1`` smallest eigenpairs)."""
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigs, eigsh

    keep = lap_graph == graph
    rows, cols = local[lap_index[0][keep]], local[lap_index[1][keep]]
    matrix = sp.coo_matrix(
        (lap_weight[keep].numpy(), (rows.numpy(), cols.numpy())), shape=(size, size)
    ).tocsr()
    count = min(k + 1, size - 2)                               # ARPACK needs count < n - 1
    start = np.random.default_rng(0).standard_normal(size)     # fixed start: reproducible
    if is_undirected:
        values, vectors = eigsh(matrix, k=count, which="SA", v0=start)
    else:
        values, vectors = eigs(matrix, k=count, which="SR", v0=start)
        values, vectors = values.real, vectors.real
    vectors = torch.from_numpy(np.ascontiguousarray(vectors[:, np.argsort(values, kind="stable")]))
    vectors = _fix_signs(vectors[:, 1:].unsqueeze(0))[0]
    nodes = (batch == graph).nonzero().flatten()
    out[nodes, : vectors.size(-1)] = vectors[local[nodes]]


def _fix_signs(vectors: Tensor) -> Tensor:
    """Flip columns of ``[G, n, c]`` so each one's first clearly non-zero entry is positive."""
    magnitude = vectors.abs()
    significant = magnitude > 1e-6 * magnitude.amax(dim=-2, keepdim=True)
    first = significant.to(torch.uint8).argmax(dim=-2, keepdim=True)        # first True per column
    sign = vectors.gather(-2, first).sign()
    return vectors * torch.where(sign == 0, torch.ones_like(sign), sign)


def random_walk_pe(
    edge_index: Tensor,
    num_nodes: int,
    walk_length: int,
    *,
    batch: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Random walk positional encodings (Dwivedi et al. 2022), as PyG's ``AddRandomWalkPE``.

    Column ``t - 1`` holds the probability that a random walk from a node is back at it after
    ``t`` steps, ``diag(P^t)`` for ``t = 1 .. walk_length``, with the transition matrix
    ``P = D^-1 A`` (``A[i, j]`` = number of edges ``i -> j``, ``D`` = out-degrees, a node without
    out-edges keeps a zero row). Self-loops count as edges, as in PyG. Duplicate edges weigh as
    many times as they occur (PyG's dense path keeps one of them but still counts them in the
    degree; both agree on graphs without duplicates).

    The powers are sparse matrix products over the whole batch: the transition matrix of a
    batch is block-diagonal, so the result is the per-graph one; ``batch`` is only used to
    check that no edge connects two graphs. The work grows with the number of node pairs within
    ``walk_length`` steps of each other.

    Args:
        edge_index: ``[2, E]`` integer edges ``source -> target``.
        num_nodes: ``N``.
        walk_length: number of steps (columns).
        batch: optional ``[N]`` graph id of every node (PyG convention).
        dtype: dtype of the result (the products run in float64).

    Returns:
        ``[N, walk_length]`` on ``edge_index``'s device.

    Example:
        >>> square = torch.tensor([[0, 1, 2, 3, 1, 2, 3, 0], [1, 2, 3, 0, 0, 1, 2, 3]])
        >>> random_walk_pe(square, 4, walk_length=4)[0]      # an even cycle: odd steps never return
        tensor([0.0000, 0.5000, 0.0000, 0.5000])
    """
    num_nodes = _nonnegative_int(num_nodes, "num_nodes")
    edge_index = _check_edge_index(edge_index, num_nodes)
    walk_length = _positive_int(walk_length, "walk_length")
    if not dtype.is_floating_point:
        raise TypeError(f"Expected a floating point 'dtype', got {dtype}")
    _check_batch(batch, num_nodes, edge_index)
    source, target = edge_index
    degree = torch.bincount(source, minlength=num_nodes).clamp(min=1).to(torch.float64)
    transition = torch.sparse_coo_tensor(
        edge_index, 1.0 / degree[source], (num_nodes, num_nodes), check_invariants=False
    ).coalesce()                                                           # sums duplicates
    out = torch.zeros(num_nodes, walk_length, dtype=torch.float64, device=edge_index.device)
    power = transition
    for step in range(walk_length):
        if step:
            with warnings.catch_warnings():
                # torch.sparse.mm goes through CSR internally and warns that CSR is "beta"
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                power = torch.sparse.mm(power, transition).coalesce()
        index, values = power.indices(), power.values()
        on_diagonal = index[0] == index[1]
        out[index[0][on_diagonal], step] = values[on_diagonal]
    return out.to(dtype)


class LaplacianPositionalEncoding(nn.Module):
    """Embed Laplacian eigenvectors with a linear map, flipping their signs at random in training.

    An eigenvector's sign is arbitrary, so during training every graph of the batch and every
    eigenvector gets an independent random sign (Dwivedi et al. 2020, "Benchmarking GNNs"):
    the signs are ``2 * torch.randint(0, 2, (num_graphs, k)) - 1`` drawn on the CPU from
    torch's global generator (``torch.manual_seed`` makes them reproducible) and moved to the
    input's device. In eval mode there is no flip, so the output is deterministic.

    Args:
        k: number of eigenvectors (:func:`laplacian_eigenvector_pe`'s ``k``).
        dim: output size.
        device, dtype: where and in which dtype to create the linear layer.

    Shapes:
        ``forward(eigvecs [N, k], batch [N] or None) -> [N, dim]``; ``num_graphs`` is
        ``batch.max() + 1`` (1 without ``batch``).

    Example:
        >>> encode = LaplacianPositionalEncoding(k=3, dim=8).eval()
        >>> encode(torch.randn(5, 3), torch.tensor([0, 0, 0, 1, 1])).shape
        torch.Size([5, 8])
    """

    def __init__(
        self,
        k: int,
        dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.k = _positive_int(k, "k")
        self.dim = _positive_int(dim, "dim")
        self.linear = nn.Linear(self.k, self.dim, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        """Re-initialize the linear layer (PyTorch's default ``nn.Linear`` initialization)."""
        self.linear.reset_parameters()

    def forward(self, eigvecs: Tensor, batch: Tensor | None = None) -> Tensor:
        """Embed ``eigvecs [N, k]`` (random sign flips per graph and column in training)."""
        _check_features(eigvecs, "eigvecs", self.k, "k")
        if self.training:
            num_nodes = eigvecs.size(0)
            batch = _check_batch(batch, num_nodes, None)
            num_graphs = int(batch.max()) + 1 if num_nodes else 1
            signs = 2 * torch.randint(0, 2, (num_graphs, self.k)) - 1       # global CPU generator
            signs = signs.to(device=eigvecs.device, dtype=eigvecs.dtype)
            eigvecs = eigvecs * signs[batch.to(eigvecs.device)]
        elif batch is not None:
            _check_batch(batch, eigvecs.size(0), None)
        return self.linear(eigvecs)

    def extra_repr(self) -> str:
        return f"k={self.k}, dim={self.dim}"


class RandomWalkPositionalEncoding(nn.Module):
    """Embed random walk encodings (:func:`random_walk_pe`) with a linear map.

    Args:
        walk_length: number of random walk steps (input size).
        dim: output size.
        device, dtype: where and in which dtype to create the linear layer.

    Shapes:
        ``forward(encoding [N, walk_length]) -> [N, dim]``.

    Example:
        >>> encode = RandomWalkPositionalEncoding(walk_length=4, dim=8)
        >>> encode(torch.rand(5, 4)).shape
        torch.Size([5, 8])
    """

    def __init__(
        self,
        walk_length: int,
        dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.walk_length = _positive_int(walk_length, "walk_length")
        self.dim = _positive_int(dim, "dim")
        self.linear = nn.Linear(self.walk_length, self.dim, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        """Re-initialize the linear layer (PyTorch's default ``nn.Linear`` initialization)."""
        self.linear.reset_parameters()

    def forward(self, encoding: Tensor) -> Tensor:
        """Embed ``encoding [N, walk_length]`` -> ``[N, dim]``."""
        _check_features(encoding, "encoding", self.walk_length, "walk_length")
        return self.linear(encoding)

    def extra_repr(self) -> str:
        return f"walk_length={self.walk_length}, dim={self.dim}"


# ====================================================================== input checks
def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected '{name}' to be a positive int, got {value!r}")
    return value


def _nonnegative_int(value: object, name: str) -> int:
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value)
    try:
        if isinstance(value, bool):
            raise TypeError
        count = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"Expected '{name}' to be a non-negative int, got {type(value).__name__}: {value!r}") from None
    if count < 0:
        raise ValueError(f"Expected '{name}' to be a non-negative int, got {count}")
    return count


def _positive_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise ValueError(f"Expected '{name}' to be a positive finite number, got {value!r}")
    return float(value)


def _check_integer(value: object, name: str, shape: str) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(
            f"Expected '{name}' to be an integer tensor {shape}, got {type(value).__name__}; "
            f"wrap it with torch.as_tensor(...)"
        )
    if value.dtype == torch.bool or value.is_floating_point() or value.is_complex():
        raise TypeError(
            f"Expected '{name}' to be of integer type (got '{value.dtype}'); positions are indices, "
            f"convert them with {name}.long()"
        )


def _check_features(value: object, name: str, size: int, size_name: str) -> None:
    if not isinstance(value, Tensor) or not value.is_floating_point():
        got = value.dtype if isinstance(value, Tensor) else type(value).__name__
        raise TypeError(f"Expected '{name}' to be a floating point tensor [N, {size_name}], got {got}")
    if value.dim() != 2 or value.size(1) != size:
        raise ValueError(
            f"Expected '{name}' of shape [N, {size_name}] = [N, {size}], got {list(value.shape)}; "
            f"the module was built for {size_name}={size}"
        )


def _check_edge_index(edge_index: object, num_nodes: int) -> Tensor:
    _check_integer(edge_index, "edge_index", "[2, E]")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(
            f"Expected 'edge_index' of shape [2, E] (row 0 = sources, row 1 = targets), got "
            f"{list(edge_index.shape)}; a list of pairs [E, 2] must be transposed with edge_index.t()"
        )
    edge_index = edge_index.long()
    if edge_index.numel():
        low, high = int(edge_index.min()), int(edge_index.max())
        if low < 0 or high >= num_nodes:
            raise ValueError(
                f"Expected node indices in [0, {num_nodes - 1}] (num_nodes = {num_nodes}), found "
                f"{low if low < 0 else high}; pass the right num_nodes or fix edge_index"
            )
    return edge_index


def _check_batch(batch: object, num_nodes: int, edge_index: Tensor | None) -> Tensor:
    """``[N]`` int64 graph ids (on ``edge_index``'s device if given); zeros when ``None``."""
    device = edge_index.device if edge_index is not None else None
    if batch is None:
        return torch.zeros(num_nodes, dtype=torch.long, device=device)
    _check_integer(batch, "batch", "[N]")
    if batch.shape != (num_nodes,):
        raise ValueError(
            f"Expected 'batch' of shape [N] = [{num_nodes}] (the graph id of every node, as in a "
            f"PyG Batch), got {list(batch.shape)}"
        )
    batch = batch.long()
    if num_nodes and int(batch.min()) < 0:
        raise ValueError(f"Expected non-negative graph ids in 'batch', found {int(batch.min())}")
    if edge_index is not None:
        batch = batch.to(edge_index.device)
        if edge_index.numel():
            crossing = batch[edge_index[0]] != batch[edge_index[1]]
            if bool(crossing.any()):
                where = int(crossing.nonzero()[0])
                raise ValueError(
                    f"Expected every edge inside one graph of the batch, but edge {where} "
                    f"({int(edge_index[0, where])} -> {int(edge_index[1, where])}) connects graphs "
                    f"{int(batch[edge_index[0, where]])} and {int(batch[edge_index[1, where]])}; "
                    f"check that 'batch' belongs to this edge_index"
                )
    return batch


def _check_undirected(edge_index: Tensor, num_nodes: int) -> None:
    forward = edge_index[0] * num_nodes + edge_index[1]
    backward = edge_index[1] * num_nodes + edge_index[0]
    if not torch.equal(forward.sort().values, backward.sort().values):
        raise ValueError(
            "Expected an undirected graph (every edge i -> j also as j -> i, equally often) for "
            "is_undirected=True; symmetrize it with torch_geometric.utils.to_undirected, or pass "
            "is_undirected=False for the eigenvectors of the non-symmetric Laplacian"
        )


def _local_index(batch: Tensor, sizes: Tensor) -> Tensor:
    """``[N]`` rank of every node among the nodes of its graph (in node order)."""
    order = torch.argsort(batch, stable=True)
    starts = torch.cumsum(sizes, 0) - sizes
    local = torch.empty_like(batch)
    local[order] = torch.arange(batch.numel()) - starts[batch[order]]
    return local
