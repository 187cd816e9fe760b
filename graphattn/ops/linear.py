"""Kernelized linear attention: softmax replaced by a dot product of feature maps, in O(L).

Softmax attention weighs key ``j`` for query ``i`` by ``exp(q_i . k_j / sqrt(D))``. Kernelized
attention replaces that weight by ``phi(q_i) . phi(k_j)`` for a feature map ``phi: R^D -> R^M``
with non-negative values, so the normalized output can be computed keys-first::

    out_i = sum_j (phi(q_i) . phi(k_j)) v_j / sum_j phi(q_i) . phi(k_j)
          = phi(q_i)^T S / phi(q_i)^T z,    S = sum_j phi(k_j) v_j^T  [M, Dv],   z = sum_j phi(k_j)  [M]

in ``O(L M Dv)`` time and memory, never forming the ``[L, L]`` kernel matrix.

Feature maps:

* :func:`elu_feature_map`: ``elu(x) + 1`` (Katharopoulos et al. 2020, "Transformers are RNNs").
* :func:`favor_features`: FAVOR+ positive random features (Choromanski et al. 2021, "Rethinking
  Attention with Performers"), an unbiased estimate of the softmax kernel ``exp(x . y)``, with
  projections from :func:`orthogonal_random_matrix`.

:func:`linear_attention` takes features that are already computed (``phi(q)``, ``phi(k)``), for
padded batches ``[B, L, H, M]`` (``key_mask``), causal prefix sums (``causal=True``), and node
lists of batched graphs ``[N, H, M]`` (``segments=ptr``). :func:`linear_attention_reference`
materializes the kernel matrix and is the test oracle.

Example:
    >>> import torch
    >>> from graphattn.ops.linear import elu_feature_map, linear_attention
    >>> q, k, v = torch.randn(2, 7, 4, 16), torch.randn(2, 7, 4, 16), torch.randn(2, 7, 4, 8)
    >>> linear_attention(elu_feature_map(q), elu_feature_map(k), v, causal=True).shape
    torch.Size([2, 7, 4, 8])
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from graphattn.ops._common import stats_dtype

__all__ = [
    "elu_feature_map",
    "favor_features",
    "orthogonal_random_matrix",
    "linear_attention",
    "linear_attention_reference",
]

# Segment (graph-batch) attention builds [chunk, H, M, Dv] tensors; this bounds one chunk.
_SEGMENT_CHUNK_ELEMENTS = 1 << 22


# ---------------------------------------------------------------------------------- feature maps
def elu_feature_map(x: Tensor) -> Tensor:
    """``elu(x) + 1``, the positive feature map of Katharopoulos et al. (2020).

    Args:
        x: ``[..., D]`` queries or keys.

    Returns:
        ``[..., D]``, every entry ``> 0``.
    """
    return F.elu(x) + 1.0


def orthogonal_random_matrix(
    num_features: int,
    dim: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Random projection of FAVOR+: orthogonal rows, each with the norm of a Gaussian vector.

    Rows are drawn in blocks of ``dim``: each block is the transposed ``Q`` factor of the QR
    decomposition of a ``[dim, dim]`` standard Gaussian matrix, with the signs fixed so that ``Q``
    is uniformly (Haar) distributed (so the rows of one block are orthonormal and each is uniform
    on the sphere); the last block keeps only the rows still needed. Every row is then rescaled by
    the norm of an independent standard Gaussian vector in ``R^dim``, so each row has the
    marginal distribution of a Gaussian vector (the "regularized" orthogonal random features of
    Choromanski et al. 2021) while rows within a block stay orthogonal.

    Args:
        num_features: ``M``, the number of rows (random features).
        dim: ``D``, the dimension of the vectors projected.
        generator: a CPU ``torch.Generator`` (the draw is made on the CPU in float64 so that the
            result is the same for every target device and dtype).
        dtype, device: of the result (default dtype: ``torch.get_default_dtype()``).

    Returns:
        ``[M, D]``.

    Example:
        >>> w = orthogonal_random_matrix(6, 4, generator=torch.Generator().manual_seed(0))
        >>> w.shape
        torch.Size([6, 4])
    """
    num_features = _positive_int(num_features, "num_features")
    dim = _positive_int(dim, "dim")
    blocks = []
    remaining = num_features
    while remaining > 0:
        gaussian = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
        orthogonal, triangular = torch.linalg.qr(gaussian)  # columns orthonormal
        # signs of R's diagonal make Q Haar-distributed (LAPACK's Q alone is not: its rows are biased)
        orthogonal = orthogonal * torch.sign(torch.diagonal(triangular))
        blocks.append(orthogonal.t()[: min(remaining, dim)])  # rows orthonormal
        remaining -= dim
    norms = torch.randn(num_features, dim, generator=generator, dtype=torch.float64).norm(dim=1)
    matrix = torch.cat(blocks) * norms[:, None]
    return matrix.to(dtype=dtype or torch.get_default_dtype(), device=device)


def favor_features(
    x: Tensor,
    projection: Tensor,
    *,
    is_query: bool,
    segments: Tensor | None = None,
) -> Tensor:
    """FAVOR+ positive random features: ``phi(x) = exp(w^T x - |x|^2 / 2 - c) / sqrt(M)``.

    For ``w`` with Gaussian marginals, ``E[exp(w.x - |x|^2/2) exp(w.y - |y|^2/2)] = exp(x . y)``,
    so ``phi(x) . phi(y)`` estimates the softmax kernel. Pass ``x = q * D**-0.25`` (and the same
    for keys) to estimate ``exp(q . k / sqrt(D))``.

    The constant ``c`` keeps the exponent ``<= 0`` (numerical stability, as in the paper's code):

    * queries (``is_query=True``): ``c`` is each row's maximum of ``w^T x`` over the ``M``
      features; a per-query factor, so it cancels in the normalized attention output;
    * keys: ``c`` is the maximum over all tokens and features of one sequence and head (the
      paper's code takes one maximum over the whole tensor); a factor common to every key a
      query sees, so it cancels too. With ``segments``, one maximum per segment and head. Zero
      the rows of padded keys first, so that padding cannot set the maximum.

    ``c`` is detached from autograd (the normalized output does not depend on it).

    Note:
        With ``causal=True`` attention, the key constant includes later tokens. It changes no
        output mathematically, but a later key whose exponent exceeds the others' by more than the
        dtype's range (about 87 in float32) underflows the earlier keys' features.

    Args:
        x: ``[..., L, H, D]`` queries or keys (batched ``[B, L, H, D]`` or node lists
            ``[N, H, D]``), already scaled by ``D**-0.25``.
        projection: ``[M, D]`` random projection (:func:`orthogonal_random_matrix`, or i.i.d.
            Gaussian rows).
        is_query: which stabilizer to use (see above).
        segments: for keys of node lists ``[N, H, D]``: ``ptr [G + 1]``, nodes
            ``ptr[g]:ptr[g+1]`` form graph ``g`` (the same ``ptr`` given to
            :func:`linear_attention`).

    Returns:
        ``[..., L, H, M]`` in ``x.dtype``, except float32 for half-precision ``x`` (the features
        span a range float16 cannot hold; :func:`linear_attention` accepts them with half ``v``).
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 3:
        got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"favor_features: expected floating point 'x' of shape [..., L, H, D], got {got}")
    if not isinstance(projection, Tensor) or projection.dim() != 2 or projection.size(1) != x.size(-1):
        got = list(projection.shape) if isinstance(projection, Tensor) else type(projection).__name__
        raise ValueError(
            f"favor_features: expected 'projection' of shape [M, D] with D = {x.size(-1)} (the last axis "
            f"of x), got {got}; draw it with orthogonal_random_matrix(M, {x.size(-1)})"
        )
    compute = stats_dtype(x.dtype)
    x_c = x.to(compute)
    projected = torch.matmul(x_c, projection.to(device=x.device, dtype=compute).t())  # [..., L, H, M]
    half_square_norm = x_c.square().sum(-1, keepdim=True) / 2  # [..., L, H, 1]
    if is_query:
        stabilizer = projected.amax(dim=-1, keepdim=True)  # [..., L, H, 1]
    elif segments is None:
        stabilizer = projected.amax(dim=(-3, -1), keepdim=True)  # [..., 1, H, 1]
    else:
        if x.dim() != 3:
            raise ValueError(f"favor_features: 'segments' needs node-list keys [N, H, D], got {list(x.shape)}")
        batch, num_segments = _segment_index(segments, x.size(0), "favor_features", x.device)
        row_max = projected.amax(dim=-1)  # [N, H]
        per_segment = row_max.new_full((num_segments, x.size(1)), float("-inf"))
        per_segment = per_segment.scatter_reduce(0, batch[:, None].expand_as(row_max), row_max, "amax")
        stabilizer = per_segment[batch].unsqueeze(-1)  # [N, H, 1]
    return torch.exp(projected - half_square_norm - stabilizer.detach()) / math.sqrt(projection.size(0))


# ---------------------------------------------------------------------------------- attention
def linear_attention(
    q_features: Tensor,
    k_features: Tensor,
    v: Tensor,
    *,
    key_mask: Tensor | None = None,
    causal: bool = False,
    segments: Tensor | None = None,
    eps: float = 1e-6,
    chunk_size: int = 64,
) -> Tensor:
    """Normalized kernelized attention ``phi(q_i)^T S / (phi(q_i)^T z + eps)``, in O(L).

    ``S = sum_j phi(k_j) v_j^T`` and ``z = sum_j phi(k_j)`` run over the keys query ``i`` may use:
    the real keys of its sequence (``key_mask``), only ``j <= i`` when ``causal``, only its own
    graph with ``segments``. The features must be non-negative (as :func:`elu_feature_map` and
    :func:`favor_features` are). A query without keys (normalizer 0) outputs zeros, never NaN.

    Layouts:

    * **padded batches**: ``q_features [B, Lq, H, M]``, ``k_features [B, Lk, H, M]``,
      ``v [B, Lk, H, Dv]``, optional ``key_mask [B, Lk]`` (True = real key) -> ``[B, Lq, H, Dv]``.
    * **node lists of batched graphs** (``segments = ptr [G + 1]``, int64, ``ptr[0] = 0``,
      non-decreasing, ``ptr[-1] = N``): ``q_features, k_features [N, H, M]``, ``v [N, H, Dv]``,
      optional ``key_mask [N]`` -> ``[N, H, Dv]``; node ``i`` of graph ``g`` attends only to the
      nodes ``ptr[g]:ptr[g+1]``. Sums run per graph (``index_add``), in chunks of nodes so that no
      ``[N, H, M, Dv]`` tensor is formed. With ``causal=True`` node order within a graph is the
      sequence order; the graphs are then padded to ``[G, max graph size]`` and run as a batch
      (cost grows with ``G * max size``).

    Causal prefix sums run over chunks of ``chunk_size`` tokens: within a chunk a masked
    ``[C, C]`` block of kernel values, across chunks the running state ``(S, z)``. Forward memory
    is ``O(B H (C^2 + C M + M Dv))`` instead of the ``O(B H L M Dv)`` of a cumulative sum of outer
    products; backward keeps one ``[B, H, M, Dv]`` state and one ``[B, H, C, C]`` block per
    chunk, ``O(B H (L/C M Dv + L C))``.

    Args:
        q_features: ``phi(q)``, see the layouts.
        k_features: ``phi(k)``.
        v: values.
        key_mask: bool, True at keys that may be used; excluded keys' features and values are
            ignored (even non-finite ones).
        causal: query ``i`` uses keys ``j <= i`` only (needs ``Lq == Lk``).
        segments: ``ptr [G + 1]`` for node lists, see the layouts.
        eps: added to every non-zero normalizer (Katharopoulos et al. use ``1e-6``); pass 0 for
            features whose scale is arbitrary (FAVOR+ with stabilizers).
        chunk_size: tokens per chunk of the causal prefix sums.

    Returns:
        ``[B, Lq, H, Dv]`` or ``[N, H, Dv]``, in ``v``'s dtype. Sums run in the widest of the
        inputs' dtypes, at least float32 for half-precision inputs.
    """
    _check_linear_inputs(q_features, k_features, v, key_mask, causal, segments, eps, chunk_size)
    out_dtype = v.dtype
    compute = stats_dtype(torch.promote_types(torch.promote_types(q_features.dtype, k_features.dtype), v.dtype))
    q_features, k_features, v = q_features.to(compute), k_features.to(compute), v.to(compute)
    if key_mask is not None:
        k_features = k_features.masked_fill(~key_mask[..., None, None], 0.0)
        v = v.masked_fill(~key_mask[..., None, None], 0.0)
    if segments is None:
        if causal:
            out = _causal_batched(q_features, k_features, v, eps, chunk_size)
        else:
            out = _noncausal_batched(q_features, k_features, v, eps)
    elif causal:
        out = _causal_segments(q_features, k_features, v, segments, eps, chunk_size)
    else:
        out = _noncausal_segments(q_features, k_features, v, segments, eps)
    return out.to(out_dtype)


def linear_attention_reference(
    q_features: Tensor,
    k_features: Tensor,
    v: Tensor,
    *,
    key_mask: Tensor | None = None,
    causal: bool = False,
    segments: Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """:func:`linear_attention` computed densely: the test oracle.

    Materializes the kernel matrix ``phi(q_i) . phi(k_j)`` (``[B, H, Lq, Lk]``, or ``[H, N, N]``
    for node lists), zeroes the pairs that may not attend (masked keys, ``j > i`` when causal,
    different graphs), and normalizes each row. Same arguments, shapes and empty-row rule as
    :func:`linear_attention`; only for small inputs.
    """
    _check_linear_inputs(q_features, k_features, v, key_mask, causal, segments, eps, 1)
    if segments is not None:
        n = q_features.size(0)
        batch, _ = _segment_index(segments, n, "linear_attention_reference", q_features.device)
        allowed = batch[:, None] == batch[None, :]  # [N, N]
        if key_mask is not None:
            allowed = allowed & key_mask[None, :]
        if causal:
            allowed = allowed & torch.ones(n, n, dtype=torch.bool, device=allowed.device).tril()
        v = v.masked_fill(~key_mask[:, None, None], 0.0) if key_mask is not None else v
        out = _dense_kernel_attention(q_features[None], k_features[None], v[None], allowed[None], eps)
        return out[0]
    batch_size, length_q, length_k = q_features.size(0), q_features.size(1), k_features.size(1)
    allowed = torch.ones(batch_size, length_q, length_k, dtype=torch.bool, device=q_features.device)
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, :]
        v = v.masked_fill(~key_mask[..., None, None], 0.0)
    if causal:
        allowed = allowed & torch.ones(length_q, length_k, dtype=torch.bool, device=allowed.device).tril()
    return _dense_kernel_attention(q_features, k_features, v, allowed, eps)


# ---------------------------------------------------------------------------------- kernels
def _normalize(numerator: Tensor, normalizer: Tensor, eps: float) -> Tensor:
    """``numerator [..., Dv] / (normalizer [...] + eps)``, zero where the normalizer is 0."""
    has_keys = normalizer > 0
    safe = torch.where(has_keys, normalizer + eps, torch.ones_like(normalizer))
    return (numerator / safe.unsqueeze(-1)).masked_fill(~has_keys.unsqueeze(-1), 0.0)


def _dense_kernel_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, eps: float) -> Tensor:
    kernel = torch.einsum("bihm,bjhm->bhij", q, k)  # [B, H, Lq, Lk]
    kernel = kernel.masked_fill(~allowed[:, None], 0.0)
    numerator = torch.einsum("bhij,bjhd->bihd", kernel, v)  # [B, Lq, H, Dv]
    normalizer = kernel.sum(-1).transpose(1, 2)  # [B, Lq, H]
    return _normalize(numerator, normalizer, eps)


def _noncausal_batched(q: Tensor, k: Tensor, v: Tensor, eps: float) -> Tensor:
    state = torch.einsum("bjhm,bjhd->bhmd", k, v)  # S: [B, H, M, Dv]
    key_sum = k.sum(1)  # z: [B, H, M]
    numerator = torch.einsum("bihm,bhmd->bihd", q, state)  # [B, Lq, H, Dv]
    normalizer = torch.einsum("bihm,bhm->bih", q, key_sum)  # [B, Lq, H]
    return _normalize(numerator, normalizer, eps)


def _causal_batched(q: Tensor, k: Tensor, v: Tensor, eps: float, chunk_size: int) -> Tensor:
    batch, length, heads, features = q.shape
    state = q.new_zeros(batch, heads, features, v.size(-1))  # S over the previous chunks
    key_sum = q.new_zeros(batch, heads, features)  # z over the previous chunks
    lower = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
    outputs = []
    for start in range(0, length, chunk_size):
        end = min(start + chunk_size, length)
        q_c, k_c, v_c = q[:, start:end], k[:, start:end], v[:, start:end]  # [B, C, H, .]
        size = end - start
        block = torch.einsum("bihm,bjhm->bhij", q_c, k_c).masked_fill(~lower[:size, :size], 0.0)  # [B, H, C, C]
        numerator = torch.einsum("bihm,bhmd->bihd", q_c, state) + torch.einsum("bhij,bjhd->bihd", block, v_c)
        normalizer = torch.einsum("bihm,bhm->bih", q_c, key_sum) + block.sum(-1).transpose(1, 2)
        outputs.append(_normalize(numerator, normalizer, eps))
        if end < length:
            state = state + torch.einsum("bjhm,bjhd->bhmd", k_c, v_c)
            key_sum = key_sum + k_c.sum(1)
    if not outputs:
        return q.new_zeros(batch, 0, heads, v.size(-1))
    return torch.cat(outputs, dim=1)


def _noncausal_segments(q: Tensor, k: Tensor, v: Tensor, segments: Tensor, eps: float) -> Tensor:
    nodes, heads, features = q.shape
    value_dim = v.size(-1)
    batch, num_segments = _segment_index(segments, nodes, "linear_attention", q.device)
    chunk = max(1, _SEGMENT_CHUNK_ELEMENTS // max(1, heads * features * value_dim))
    # S_g = sum over graph g of phi(k_j) v_j^T, z_g = sum of phi(k_j): [G, H, M, Dv], [G, H, M]
    state = q.new_zeros(num_segments, heads, features, value_dim)
    for start in range(0, nodes, chunk):
        end = min(start + chunk, nodes)
        outer = torch.einsum("nhm,nhd->nhmd", k[start:end], v[start:end])  # [chunk, H, M, Dv]
        state = state.index_add(0, batch[start:end], outer)
    key_sum = q.new_zeros(num_segments, heads, features).index_add(0, batch, k)
    normalizer = torch.einsum("nhm,nhm->nh", q, key_sum[batch])  # [N, H]
    if nodes <= chunk:
        numerator = _apply_state(q, state, batch)
    else:
        # gathered [chunk, H, M, Dv] states are recomputed in backward instead of kept
        needs_grad = torch.is_grad_enabled() and (q.requires_grad or state.requires_grad)
        parts = []
        for start in range(0, nodes, chunk):
            end = min(start + chunk, nodes)
            if needs_grad:
                parts.append(checkpoint(_apply_state, q[start:end], state, batch[start:end], use_reentrant=False))
            else:
                parts.append(_apply_state(q[start:end], state, batch[start:end]))
        numerator = torch.cat(parts)
    return _normalize(numerator, normalizer, eps)


def _apply_state(q: Tensor, state: Tensor, index: Tensor) -> Tensor:
    """``phi(q_i)^T S_{g(i)}``: ``[n, H, M]``, ``[G, H, M, Dv]``, ``[n]`` -> ``[n, H, Dv]``."""
    return torch.einsum("nhm,nhmd->nhd", q, state.index_select(0, index))


def _causal_segments(q: Tensor, k: Tensor, v: Tensor, segments: Tensor, eps: float, chunk_size: int) -> Tensor:
    nodes, heads, features = q.shape
    batch, num_segments = _segment_index(segments, nodes, "linear_attention", q.device)
    if nodes == 0:
        return q.new_zeros(0, heads, v.size(-1))
    starts = segments.to(q.device, torch.long)
    position = torch.arange(nodes, device=q.device) - starts[batch]  # index within its graph
    longest = int((starts[1:] - starts[:-1]).max())

    def padded(x: Tensor) -> Tensor:  # [N, H, X] -> [G, longest, H, X]
        dense = x.new_zeros(num_segments, longest, *x.shape[1:])
        return dense.index_put((batch, position), x)

    # padding slots have zero features: they add nothing to the prefix sums
    out = _causal_batched(padded(q), padded(k), padded(v), eps, chunk_size)
    return out[batch, position]


# ---------------------------------------------------------------------------------- checks
def _segment_index(segments: Tensor, nodes: int, name: str, device: torch.device | None = None) -> tuple[Tensor, int]:
    """``ptr [G + 1]`` -> (graph index of every node ``[N]``, ``G``), after checking ``ptr``."""
    if not isinstance(segments, Tensor) or segments.dim() != 1 or segments.numel() < 1:
        got = list(segments.shape) if isinstance(segments, Tensor) else type(segments).__name__
        raise ValueError(f"{name}: expected 'segments' = ptr of shape [G + 1], got {got}")
    if segments.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name}: expected 'segments' of an integer dtype (int64), got {segments.dtype}")
    ptr = segments.to(device=device, dtype=torch.long)
    bad = (ptr[0] != 0) | (ptr[-1] != nodes) | (ptr[1:] < ptr[:-1]).any()
    if bool(bad):
        raise ValueError(
            f"{name}: expected 'segments' = ptr with ptr[0] = 0, non-decreasing, ptr[-1] = N = {nodes}, got "
            f"{ptr.tolist() if ptr.numel() <= 12 else ptr}; PyG batches carry it as batch.ptr"
        )
    num_segments = ptr.numel() - 1
    counts = ptr[1:] - ptr[:-1]
    batch = torch.repeat_interleave(torch.arange(num_segments, device=ptr.device), counts, output_size=nodes)
    return batch, num_segments


def _check_linear_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None,
    causal: bool,
    segments: Tensor | None,
    eps: float,
    chunk_size: int,
) -> None:
    name = "linear_attention"
    for label, t in (("q_features", q), ("k_features", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected '{label}' to be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected '{label}' to be floating point, got {t.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(
            f"{name}: expected q_features, k_features, v on one device, got {q.device}, {k.device}, {v.device}"
        )
    layout = "[N, H, M] / [N, H, M] / [N, H, Dv] (node lists with segments)" if segments is not None else (
        "[B, Lq, H, M] / [B, Lk, H, M] / [B, Lk, H, Dv]"
    )
    dims = 3 if segments is not None else 4
    shapes_ok = q.dim() == k.dim() == v.dim() == dims and q.size(-1) == k.size(-1) and k.shape[:-1] == v.shape[:-1]
    shapes_ok = shapes_ok and q.size(-2) == k.size(-2) and q.size(0) == k.size(0)
    if not shapes_ok:
        hint = "" if segments is not None else "; node lists [N, H, M] need segments=ptr"
        raise ValueError(
            f"{name}: expected q_features, k_features, v of shapes {layout}, got {list(q.shape)}, "
            f"{list(k.shape)}, {list(v.shape)}{hint}"
        )
    if causal and segments is None and q.size(1) != k.size(1):
        raise ValueError(f"{name}: causal attention needs Lq == Lk, got {q.size(1)} and {k.size(1)}")
    if key_mask is not None:
        expected = list(k.shape[:-2])
        if not isinstance(key_mask, Tensor) or key_mask.dtype != torch.bool or list(key_mask.shape) != expected:
            got = (
                f"{list(key_mask.shape)} {key_mask.dtype}" if isinstance(key_mask, Tensor) else type(key_mask).__name__
            )
            raise ValueError(f"{name}: expected bool 'key_mask' of shape {expected} (True = real key), got {got}")
        if key_mask.device != k.device:
            raise ValueError(f"{name}: expected 'key_mask' on {k.device}, got {key_mask.device}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"{name}: expected eps >= 0, got {eps!r}")
    _positive_int(chunk_size, "chunk_size")


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected '{name}' to be a positive int, got {value!r}")
    return value
