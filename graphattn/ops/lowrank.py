"""Softmax attention over fewer keys: Linformer projections and compressed (strided-conv) keys.

Both shrink the key axis before an ordinary softmax, so the score matrix is ``[Lq, P]`` with
``P << Lk``:

* **Linformer** (Wang et al. 2020): ``K' = E K``, ``V' = F V`` with learned ``[P, Lk]`` matrices
  mixing positions; ``out = softmax(q K'^T / sqrt(D)) V'`` (:func:`linformer_project`,
  :func:`linformer_attention`).
* **Memory-compressed attention** (Liu et al. 2018, "Generating Wikipedia by Summarizing Long
  Sequences"): a strided 1-D convolution over the sequence axis of keys and values
  (:func:`compress`), then softmax over the compressed keys; :func:`compress_mask` carries the
  key padding mask to the compressed length.

:func:`softmax_attention` (dense scaled-dot softmax attention over padded batches, empty rows
zero) runs after either, and is the oracle the tests compare with; :func:`masked_softmax` is its
row normalization.

All tensors are padded batches: ``q [B, Lq, H, D]``, ``k [B, Lk, H, D]``, ``v [B, Lk, H, Dv]``,
``key_mask [B, Lk]`` (True = real key).

Example:
    >>> import torch
    >>> from graphattn.ops.lowrank import linformer_attention
    >>> q, k, v = torch.randn(2, 10, 4, 8), torch.randn(2, 10, 4, 8), torch.randn(2, 10, 4, 8)
    >>> e, f = torch.randn(3, 10) / 10**0.5, torch.randn(3, 10) / 10**0.5
    >>> linformer_attention(q, k, v, e, f).shape
    torch.Size([2, 10, 4, 8])
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from graphattn.ops._common import stats_dtype

__all__ = [
    "softmax_attention",
    "masked_softmax",
    "linformer_project",
    "linformer_attention",
    "compress",
    "compress_mask",
    "compressed_length",
]


def masked_softmax(scores: Tensor, allowed: Tensor) -> Tensor:
    """Softmax over the last axis restricted to ``allowed`` entries; rows with none are zeros.

    Args:
        scores: ``[..., Lk]`` logits (any float dtype; computed in float32 for half inputs).
        allowed: bool, broadcastable to ``scores``; True where the entry may get weight.

    Returns:
        ``scores``' shape and dtype: each row sums to 1 over its allowed entries (0 elsewhere),
        or is all zeros when nothing is allowed (never NaN).
    """
    compute = stats_dtype(scores.dtype)
    masked = scores.to(compute).masked_fill(~allowed, float("-inf"))
    row_max = masked.amax(-1, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exp = torch.exp(masked - row_max)
    total = exp.sum(-1, keepdim=True)
    return (exp / torch.where(total > 0, total, torch.ones_like(total))).to(scores.dtype)


def softmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    key_mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout: float = 0.0,
) -> Tensor:
    """Dense softmax attention ``softmax(q k^T * scale) v`` over padded batches.

    Args:
        q: ``[B, Lq, H, D]``.
        k: ``[B, Lk, H, D]``.
        v: ``[B, Lk, H, Dv]``.
        key_mask: ``[B, Lk]`` bool, True at real keys; padded keys (and their values, even
            non-finite ones) are ignored.
        causal: query ``i`` uses keys ``j <= i`` only.
        scale: default ``1 / sqrt(D)``.
        dropout: probability of dropping an attention weight (the caller passes 0.0 in eval mode).

    Returns:
        ``[B, Lq, H, Dv]``; a query without keys outputs zeros. Builds ``[B, H, Lq, Lk]`` scores,
        so use it where ``Lk`` is small (after projection or compression) or as a test oracle.
    """
    _check_attention_inputs(q, k, v, key_mask, "softmax_attention")
    _check_dropout(dropout, "softmax_attention")
    if scale is None:
        scale = 1.0 / math.sqrt(q.size(-1)) if q.size(-1) else 1.0
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * scale  # [B, H, Lq, Lk]
    allowed = torch.ones(1, 1, 1, k.size(1), dtype=torch.bool, device=q.device)
    if key_mask is not None:
        allowed = key_mask[:, None, None, :]
        v = v.masked_fill(~key_mask[..., None, None], 0.0)
    if causal:
        allowed = allowed & torch.ones(q.size(1), k.size(1), dtype=torch.bool, device=q.device).tril()
    weights = masked_softmax(scores, allowed)
    if dropout > 0.0:
        weights = F.dropout(weights, p=dropout, training=True)
    return torch.einsum("bhij,bjhd->bihd", weights, v)


# ---------------------------------------------------------------------------------- Linformer
def linformer_project(
    k: Tensor,
    v: Tensor,
    e_proj: Tensor,
    f_proj: Tensor,
    key_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Linformer's projections of the key axis: ``K' = E K``, ``V' = F V``.

    Args:
        k: ``[B, L, H, D]`` keys.
        v: ``[B, L, H, Dv]`` values.
        e_proj: ``E`` ``[P, L]``, mixes the ``L`` keys into ``P`` (shared by all heads).
        f_proj: ``F`` ``[P, L]`` for the values (pass ``e_proj`` again to share them).
        key_mask: ``[B, L]`` bool, True at real keys; padded keys and values are zeroed first,
            so they contribute nothing to any projected slot.

    Returns:
        ``(K' [B, P, H, D], V' [B, P, H, Dv])``.
    """
    shapes_ok = isinstance(k, Tensor) and isinstance(v, Tensor) and k.dim() == v.dim() == 4
    if not shapes_ok or k.shape[:3] != v.shape[:3]:
        got = [list(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (k, v)]
        raise ValueError(f"linformer_project: expected k [B, L, H, D] and v [B, L, H, Dv], got {got[0]} and {got[1]}")
    length = k.size(1)
    for label, proj in (("e_proj", e_proj), ("f_proj", f_proj)):
        if not isinstance(proj, Tensor) or proj.dim() != 2 or proj.size(1) != length:
            got = list(proj.shape) if isinstance(proj, Tensor) else type(proj).__name__
            raise ValueError(
                f"linformer_project: expected '{label}' of shape [P, L] with L = {length} (the key length), got "
                f"{got}; for shorter sequences pass the first L columns, proj[:, :L]"
            )
    if key_mask is not None:
        _check_key_mask(key_mask, k, "linformer_project")
        k = k.masked_fill(~key_mask[..., None, None], 0.0)
        v = v.masked_fill(~key_mask[..., None, None], 0.0)
    k_projected = torch.einsum("pl,blhd->bphd", e_proj.to(k.dtype), k)
    v_projected = torch.einsum("pl,blhd->bphd", f_proj.to(v.dtype), v)
    return k_projected, v_projected


def linformer_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    e_proj: Tensor,
    f_proj: Tensor,
    *,
    key_mask: Tensor | None = None,
    scale: float | None = None,
    dropout: float = 0.0,
) -> Tensor:
    """``softmax(q (E K)^T * scale) (F V)``: Linformer attention (Wang et al. 2020).

    Args:
        q: ``[B, Lq, H, D]``.
        k, v, e_proj, f_proj, key_mask: as in :func:`linformer_project` (``e_proj``, ``f_proj``
            ``[P, Lk]``).
        scale: default ``1 / sqrt(D)``.
        dropout: probability of dropping an attention weight (the caller passes 0.0 in eval mode).

    Returns:
        ``[B, Lq, H, Dv]``. Every query sees all ``P`` projected slots; a sequence without real
        keys has ``K' = V' = 0`` and outputs zeros.
    """
    k_projected, v_projected = linformer_project(k, v, e_proj, f_proj, key_mask)
    return softmax_attention(q, k_projected, v_projected, scale=scale, dropout=dropout)


# ---------------------------------------------------------------------------------- compression
def compressed_length(length: int, kernel_size: int, stride: int) -> int:
    """Slots after :func:`compress`: ``ceil(max(L - kernel, 0) / stride) + 1`` (0 when ``L = 0``).

    The sequence is zero-padded on the right so that every key falls in some window; with
    ``kernel_size == stride`` this is ``ceil(L / stride)``.
    """
    if length <= 0:
        return 0
    return -(-max(length - kernel_size, 0) // stride) + 1


def compress(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: int,
    key_mask: Tensor | None = None,
) -> Tensor:
    """Strided 1-D convolution over the sequence axis (memory-compressed keys / values).

    Slot ``s`` sees tokens ``s * stride ... s * stride + kernel_size - 1`` (``kernel_size =
    weight.size(-1)``); the sequence is zero-padded on the right to fill the last window (see
    :func:`compressed_length`). The same kernel is applied to every head.

    Args:
        x: ``[B, L, H, D]`` keys or values.
        weight: ``[D_out, D, kernel_size]`` (``torch.nn.Conv1d`` layout).
        bias: ``[D_out]`` or None.
        stride: step between windows, at most ``kernel_size`` (so that every key falls in a
            window; Liu et al. 2018 use kernel 3, stride 3).
        key_mask: ``[B, L]`` bool, True at real tokens; padded tokens are zeroed before the
            convolution, so they contribute nothing.

    Returns:
        ``[B, Lc, H, D_out]`` with ``Lc = compressed_length(L, kernel_size, stride)``; which slots
        are real is :func:`compress_mask`.
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"compress: expected 'x' of shape [B, L, H, D], got {got}")
    if not isinstance(weight, Tensor) or weight.dim() != 3 or weight.size(1) != x.size(-1):
        got = list(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(
            f"compress: expected 'weight' of shape [D_out, D, kernel_size] with D = {x.size(-1)}, got {got}"
        )
    if bias is not None and (not isinstance(bias, Tensor) or bias.shape != (weight.size(0),)):
        got = list(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
        raise ValueError(f"compress: expected 'bias' of shape [D_out] = [{weight.size(0)}], got {got}")
    stride = _positive_int(stride, "stride")
    batch, length, heads, dim = x.shape
    kernel_size = _check_window(weight.size(-1), stride, "compress")
    slots = compressed_length(length, kernel_size, stride)
    if slots == 0:
        return x.new_zeros(batch, 0, heads, weight.size(0))
    if key_mask is not None:
        _check_key_mask(key_mask, x, "compress")
        x = x.masked_fill(~key_mask[..., None, None], 0.0)
    padded_length = (slots - 1) * stride + kernel_size
    channels = x.permute(0, 2, 3, 1).reshape(batch * heads, dim, length)  # [B*H, D, L]
    channels = F.pad(channels, (0, padded_length - length))
    out = F.conv1d(channels, weight.to(x.dtype), None if bias is None else bias.to(x.dtype), stride=stride)
    return out.view(batch, heads, weight.size(0), slots).permute(0, 3, 1, 2)  # [B, Lc, H, D_out]


def compress_mask(key_mask: Tensor, kernel_size: int, stride: int) -> Tensor:
    """The key mask after :func:`compress`: a slot is real if any real key fell in its window.

    Args:
        key_mask: ``[B, L]`` bool, True at real keys.
        kernel_size, stride: of the compression.

    Returns:
        ``[B, Lc]`` bool.
    """
    if not isinstance(key_mask, Tensor) or key_mask.dtype != torch.bool or key_mask.dim() != 2:
        got = f"{list(key_mask.shape)} {key_mask.dtype}" if isinstance(key_mask, Tensor) else type(key_mask).__name__
        raise ValueError(f"compress_mask: expected bool 'key_mask' of shape [B, L], got {got}")
    stride = _positive_int(stride, "stride")
    kernel_size = _check_window(_positive_int(kernel_size, "kernel_size"), stride, "compress_mask")
    length = key_mask.size(1)
    slots = compressed_length(length, kernel_size, stride)
    if slots == 0:
        return key_mask.new_zeros(key_mask.size(0), 0)
    padded = F.pad(key_mask, (0, (slots - 1) * stride + kernel_size - length), value=False)
    return padded.unfold(1, kernel_size, stride).any(-1)  # [B, Lc]


# ---------------------------------------------------------------------------------- checks
def _check_attention_inputs(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, name: str) -> None:
    for label, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            got = list(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected '{label}' of shape [B, L, H, D], got {got}")
    if q.size(0) != k.size(0) or k.shape[:3] != v.shape[:3] or q.size(2) != k.size(2) or q.size(3) != k.size(3):
        raise ValueError(
            f"{name}: expected q [B, Lq, H, D], k [B, Lk, H, D], v [B, Lk, H, Dv], got "
            f"{list(q.shape)}, {list(k.shape)}, {list(v.shape)}"
        )
    if key_mask is not None:
        _check_key_mask(key_mask, k, name)


def _check_key_mask(key_mask: Tensor, k: Tensor, name: str) -> None:
    expected = [k.size(0), k.size(1)]
    if not isinstance(key_mask, Tensor) or key_mask.dtype != torch.bool or list(key_mask.shape) != expected:
        got = f"{list(key_mask.shape)} {key_mask.dtype}" if isinstance(key_mask, Tensor) else type(key_mask).__name__
        raise ValueError(f"{name}: expected bool 'key_mask' of shape [B, L] = {expected} (True = real key), got {got}")


def _check_dropout(dropout: float, name: str) -> None:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"{name}: expected 0 <= dropout < 1, got {dropout!r}")


def _check_window(kernel_size: int, stride: int, name: str) -> int:
    if kernel_size < stride:
        raise ValueError(
            f"{name}: expected kernel_size >= stride so that every key falls in a window, got kernel_size="
            f"{kernel_size} and stride={stride}; lower the stride or widen the kernel"
        )
    return kernel_size


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected '{name}' to be a positive int, got {value!r}")
    return value
