"""Efficient attention mechanisms without an edge set: kernels, projections, compression, synthesis.

Each class is an :class:`~graphattn.nn.mechanism.AttentionMechanism`: it takes the projected
heads of ``B`` right-padded sequences, ``q [B, Lq, H, D]``, ``k [B, Lk, H, D]``,
``v [B, Lk, H, Dv]``, and a :class:`~graphattn.nn.mechanism.SequenceLayout`, and returns
``[B, Lq, H, Dv]`` with zeros at padded query rows. Padded keys never contribute.

================================  ======  =====  =============================================
mechanism                         causal  cross  cost (per head)
================================  ======  =====  =============================================
:class:`LinearAttention`          yes     yes    ``O(L D Dv)``, elu+1 features
:class:`PerformerAttention`       yes     yes    ``O(L M (D + Dv))``, FAVOR+ random features
:class:`LinformerAttention`       no      yes    ``O(Lq P D)``, keys projected to ``P`` slots
:class:`CompressedAttention`      no      yes    ``O(Lq Lk / stride D)``, strided-conv keys
:class:`SynthesizerAttention`     yes     yes    ``O(Lq Lk)``, weights synthesized, no ``q.k``
================================  ======  =====  =============================================

Example:
    >>> import torch
    >>> from graphattn.nn.efficient import PerformerAttention
    >>> from graphattn.nn.mechanism import SequenceLayout
    >>> attn = PerformerAttention(head_dim=16, num_features=64)
    >>> q = k = v = torch.randn(2, 10, 4, 16)
    >>> attn(q, k, v, SequenceLayout.full(2, 10, causal=True)).shape
    torch.Size([2, 10, 4, 16])
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.nn.mechanism import AttentionMechanism, SequenceLayout
from graphattn.ops.linear import elu_feature_map, favor_features, linear_attention, orthogonal_random_matrix
from graphattn.ops.lowrank import (
    compress,
    compress_mask,
    linformer_attention,
    masked_softmax,
    softmax_attention,
)

__all__ = [
    "LinearAttention",
    "PerformerAttention",
    "LinformerAttention",
    "CompressedAttention",
    "SynthesizerAttention",
    "FEATURE_MAPS",
    "SYNTHESIZER_KINDS",
]

FEATURE_MAPS = ("elu",)
"""Feature maps :class:`LinearAttention` accepts as ``feature_map=``."""

SYNTHESIZER_KINDS = ("dense", "random")
"""Kinds :class:`SynthesizerAttention` accepts as ``kind=``."""


class LinearAttention(AttentionMechanism):
    """Kernelized linear attention with ``phi(x) = elu(x) + 1`` (Katharopoulos et al. 2020).

    ``out_i = phi(q_i)^T S / (phi(q_i)^T z + eps)`` with ``S = sum_j phi(k_j) v_j^T`` and
    ``z = sum_j phi(k_j)`` over the real keys (``j <= i`` when causal), computed keys-first in
    ``O(L)`` by :func:`graphattn.ops.linear.linear_attention`. No ``1/sqrt(D)`` scaling is applied
    (the feature map is applied to the projected heads as they are). No parameters.

    Args:
        feature_map: one of :data:`FEATURE_MAPS`.
        eps: added to every non-zero normalizer.
        chunk_size: tokens per chunk of the causal prefix sums (memory ``O(chunk^2 + D Dv)`` per
            sequence and head in the forward pass).

    Shapes:
        ``q [B, Lq, H, D]``, ``k [B, Lk, H, D]``, ``v [B, Lk, H, Dv]`` -> ``[B, Lq, H, Dv]``.
    """

    supports_causal = True
    supports_cross = True

    def __init__(self, feature_map: str = "elu", *, eps: float = 1e-6, chunk_size: int = 64) -> None:
        super().__init__()
        if feature_map not in FEATURE_MAPS:
            choices = ", ".join(map(repr, FEATURE_MAPS))
            raise ValueError(f"Unknown feature_map {feature_map!r}; expected one of {choices}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"Expected eps >= 0, got {eps!r}")
        self.feature_map = feature_map
        self.eps = float(eps)
        self.chunk_size = _positive_int(chunk_size, "chunk_size")

    def reset_parameters(self) -> None:
        """Nothing to reset: the mechanism has no parameters."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout) -> Tensor:
        self.check_inputs(q, k, v, layout)
        key_mask = layout.key_mask(k.size(1))
        out = linear_attention(
            elu_feature_map(q),
            elu_feature_map(k),
            v,
            key_mask=key_mask,
            causal=layout.causal,
            eps=self.eps,
            chunk_size=self.chunk_size,
        )
        return _zero_padded_queries(out, layout)

    def extra_repr(self) -> str:
        return f"feature_map={self.feature_map!r}, eps={self.eps}, chunk_size={self.chunk_size}"


class PerformerAttention(AttentionMechanism):
    """Performer attention: FAVOR+ random features estimating softmax attention (Choromanski et al. 2021).

    ``softmax(q k^T / sqrt(D)) v`` is estimated by linear attention with positive random features
    ``phi(x) = exp(w^T x - |x|^2 / 2) / sqrt(M)`` of ``x = q * D**-0.25`` and ``x = k * D**-0.25``
    (:func:`graphattn.ops.linear.favor_features`), which is unbiased for the softmax kernel and
    never negative. Cost ``O(L M (D + Dv))`` per head; the estimate's error shrinks as
    ``num_features`` grows.

    The projection ``w`` (``[M, D]``, shared by heads) is the buffer ``projection``. It is redrawn
    every ``redraw_every`` forward calls in training mode: the ``c``-th training call
    (``c = 0, 1, ...``) uses draw number ``c // redraw_every``, drawn from a generator seeded by
    ``(seed, draw number)``, so the schedule is reproducible and the same on every data-parallel
    rank. The counters are the buffers ``forward_calls`` and ``draws`` and are part of
    ``state_dict``: a model restored from a checkpoint continues the schedule where it stopped.
    Evaluation calls neither count nor redraw. :meth:`redraw_projection` redraws now.

    Rows without keys output zeros (the normalizer gets no ``eps``: the features carry arbitrary
    per-row and per-sequence stabilizer factors, so an absolute ``eps`` would bias rows unequally).

    Note:
        Causal attention uses the paper's stabilizer for keys, one maximum over the whole
        sequence: it cancels exactly in every output, but a later key whose exponent is larger
        than an earlier key's by more than the dtype's range underflows the earlier one's features
        (see :func:`~graphattn.ops.linear.favor_features`).

    Args:
        head_dim: ``D``, the size of query and key heads.
        num_features: ``M``, random features per head.
        redraw_every: training forward calls between redraws; ``None`` or 0 = never redraw.
        orthogonal: orthogonal random rows (:func:`~graphattn.ops.linear.orthogonal_random_matrix`,
            lower variance) instead of i.i.d. Gaussian rows.
        seed: seeds every draw.
        chunk_size: tokens per chunk of the causal prefix sums.

    Shapes:
        ``q [B, Lq, H, D]``, ``k [B, Lk, H, D]``, ``v [B, Lk, H, Dv]`` -> ``[B, Lq, H, Dv]``.
    """

    supports_causal = True
    supports_cross = True

    def __init__(
        self,
        head_dim: int,
        num_features: int = 256,
        redraw_every: int | None = 1000,
        orthogonal: bool = True,
        seed: int = 0,
        *,
        chunk_size: int = 64,
    ) -> None:
        super().__init__()
        self.head_dim = _positive_int(head_dim, "head_dim")
        self.num_features = _positive_int(num_features, "num_features")
        bad_redraw = isinstance(redraw_every, bool) or not isinstance(redraw_every, int) or redraw_every < 0
        if redraw_every is not None and bad_redraw:
            raise ValueError(f"Expected 'redraw_every' to be a non-negative int or None, got {redraw_every!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"Expected 'seed' to be an int, got {seed!r}")
        self.redraw_every = redraw_every or 0
        self.orthogonal = bool(orthogonal)
        self.seed = seed
        self.chunk_size = _positive_int(chunk_size, "chunk_size")
        self.register_buffer("projection", torch.empty(self.num_features, self.head_dim))
        self.register_buffer("forward_calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))
        # Python mirrors of the counters, so deciding to redraw needs no device sync
        self._forward_calls = 0
        self._draws = 0
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Restart the schedule: counters to 0 and the projection to draw number 0."""
        self._set_counters(0, 0)
        self._draw_projection()

    @torch.no_grad()
    def redraw_projection(self) -> None:
        """Replace the projection by the next draw (``draws += 1``)."""
        self._set_counters(self._forward_calls, self._draws + 1)
        self._draw_projection()

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout) -> Tensor:
        self.check_inputs(q, k, v, layout)
        if q.size(3) != self.head_dim:
            raise ValueError(
                f"PerformerAttention: expected heads of size head_dim={self.head_dim}, got q of shape "
                f"{list(q.shape)}; construct it with head_dim={q.size(3)}"
            )
        if self.training:
            if self.redraw_every and self._forward_calls > 0 and self._forward_calls % self.redraw_every == 0:
                self.redraw_projection()
            self._set_counters(self._forward_calls + 1, self._draws)
        scale = self.head_dim ** -0.25
        key_mask = layout.key_mask(k.size(1))
        q_features = favor_features(q * scale, self.projection, is_query=True)
        # zeroed padded keys cannot set the keys' stabilizer
        k_scaled = (k * scale).masked_fill(~key_mask[..., None, None], 0.0)
        k_features = favor_features(k_scaled, self.projection, is_query=False)
        out = linear_attention(
            q_features, k_features, v, key_mask=key_mask, causal=layout.causal, eps=0.0, chunk_size=self.chunk_size
        )
        return _zero_padded_queries(out, layout)

    def extra_repr(self) -> str:
        redraw = self.redraw_every or None
        return (
            f"head_dim={self.head_dim}, num_features={self.num_features}, redraw_every={redraw}, "
            f"orthogonal={self.orthogonal}, seed={self.seed}"
        )

    # ------------------------------------------------------------------ schedule
    @torch.no_grad()
    def _draw_projection(self) -> None:
        generator = torch.Generator().manual_seed(_mix_seed(self.seed, self._draws))
        if self.orthogonal:
            matrix = orthogonal_random_matrix(
                self.num_features, self.head_dim, generator=generator, dtype=torch.float64
            )
        else:
            matrix = torch.randn(self.num_features, self.head_dim, generator=generator, dtype=torch.float64)
        self.projection.copy_(matrix)

    def _set_counters(self, forward_calls: int, draws: int) -> None:
        self._forward_calls, self._draws = forward_calls, draws
        self.forward_calls.fill_(forward_calls)
        self.draws.fill_(draws)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001 - torch's signature
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._forward_calls, self._draws = int(self.forward_calls), int(self.draws)


class LinformerAttention(AttentionMechanism):
    """Linformer attention (Wang et al. 2020): keys and values projected along the sequence axis.

    ``out = softmax(q (E K)^T / sqrt(D)) (F V)`` with learned ``E``, ``F`` of shape
    ``[projected_length, max_length]`` (one pair for all heads, the paper's head-wise sharing;
    ``share_kv=True`` uses ``E`` for both). Padded keys and values are zeroed before the
    projection, so they contribute nothing. Every query attends to all ``P`` slots, also in short
    sequences (a slot is a mixture, it cannot be masked): a slot that happens to mix only padded
    keys is a zero key with a zero value, and still takes its share of the softmax. Cost
    ``O(Lq P D)`` per head.

    A sequence of ``Lk < max_length`` keys uses the first ``Lk`` columns, ``E[:, :Lk]``; longer
    sequences are an error (raise ``max_length``).

    Not causal (``supports_causal = False``): every projected slot mixes all positions, so a query
    would see later tokens; masking cannot undo a mixture. Works for cross attention (the keys are
    projected whatever their source, ``Lk <= max_length``).

    Args:
        max_length: the longest key sequence, ``E``'s number of columns.
        projected_length: ``P``, the number of projected slots.
        share_kv: one matrix for keys and values.
        dropout: probability of dropping an attention weight (training only).

    Parameters: ``key_projection`` ``[P, max_length]``, ``value_projection`` (None with
    ``share_kv``), initialized Xavier-uniform like the fairseq Linformer.

    Shapes:
        ``q [B, Lq, H, D]``, ``k [B, Lk, H, D]``, ``v [B, Lk, H, Dv]`` -> ``[B, Lq, H, Dv]``.
    """

    supports_causal = False
    supports_cross = True

    def __init__(
        self, max_length: int, projected_length: int = 256, share_kv: bool = False, *, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.dropout = _dropout(dropout)
        self.max_length = _positive_int(max_length, "max_length")
        self.projected_length = _positive_int(projected_length, "projected_length")
        self.share_kv = bool(share_kv)
        self.key_projection = nn.Parameter(torch.empty(self.projected_length, self.max_length))
        if self.share_kv:
            self.register_parameter("value_projection", None)
        else:
            self.value_projection = nn.Parameter(torch.empty(self.projected_length, self.max_length))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform ``E`` (and ``F``)."""
        nn.init.xavier_uniform_(self.key_projection)
        if self.value_projection is not None:
            nn.init.xavier_uniform_(self.value_projection)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout) -> Tensor:
        self.check_inputs(q, k, v, layout)
        length = k.size(1)
        if length > self.max_length:
            raise ValueError(
                f"LinformerAttention: got {length} keys but max_length={self.max_length}; construct it with "
                f"max_length >= {length} (E and F have one column per key position)"
            )
        e_proj = self.key_projection[:, :length]
        f_proj = e_proj if self.value_projection is None else self.value_projection[:, :length]
        out = linformer_attention(
            q, k, v, e_proj, f_proj, key_mask=layout.key_mask(length), dropout=self.dropout if self.training else 0.0
        )
        return _zero_padded_queries(out, layout)

    def extra_repr(self) -> str:
        share = ", share_kv=True" if self.share_kv else ""
        dropout = f", dropout={self.dropout}" if self.dropout else ""
        return f"max_length={self.max_length}, projected_length={self.projected_length}{share}{dropout}"


class CompressedAttention(AttentionMechanism):
    """Memory-compressed attention (Liu et al. 2018): softmax over strided-conv compressed keys.

    Keys and values go through their own 1-D convolution over the sequence axis (kernel
    ``kernel_size``, step ``stride``, shared by all heads; :func:`graphattn.ops.lowrank.compress`),
    which leaves ``ceil(Lk / stride)`` slots when ``kernel_size == stride``; then
    ``softmax(q K_c^T / sqrt(D)) V_c``. A compressed slot is real if any real key fell in its
    window; padded keys are zeroed before the convolution. Cost ``O(Lq Lk / stride D)`` per head.

    Not causal (``supports_causal = False``): a slot mixes ``kernel_size`` consecutive tokens, so
    for a query inside a window the slot holds later tokens, and using only slots that end at or
    before the query would hide the query's own window (including itself). Works for cross
    attention.

    Args:
        head_dim: ``D``, the size of query and key heads.
        stride: step between windows.
        kernel_size: window length, at least ``stride`` (default ``stride``: non-overlapping
            windows; Liu et al. use 3 and 3).
        value_head_dim: size of value heads (default ``head_dim``).
        bias: whether the convolutions have biases.
        dropout: probability of dropping an attention weight (training only).

    Parameters: ``key_weight`` ``[D, D, kernel_size]``, ``key_bias`` ``[D]``, ``value_weight``
    ``[Dv, Dv, kernel_size]``, ``value_bias`` ``[Dv]``, initialized like ``torch.nn.Conv1d``.

    Shapes:
        ``q [B, Lq, H, D]``, ``k [B, Lk, H, D]``, ``v [B, Lk, H, Dv]`` -> ``[B, Lq, H, Dv]``.
    """

    supports_causal = False
    supports_cross = True

    def __init__(
        self,
        head_dim: int,
        stride: int = 4,
        *,
        kernel_size: int | None = None,
        value_head_dim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.dropout = _dropout(dropout)
        self.head_dim = _positive_int(head_dim, "head_dim")
        self.stride = _positive_int(stride, "stride")
        self.kernel_size = self.stride if kernel_size is None else _positive_int(kernel_size, "kernel_size")
        if self.kernel_size < self.stride:
            raise ValueError(
                f"CompressedAttention: expected kernel_size >= stride so that every key falls in a window, got "
                f"kernel_size={self.kernel_size} and stride={self.stride}"
            )
        self.value_head_dim = (
            self.head_dim if value_head_dim is None else _positive_int(value_head_dim, "value_head_dim")
        )
        d, dv, width = self.head_dim, self.value_head_dim, self.kernel_size
        self.key_weight = nn.Parameter(torch.empty(d, d, width))
        self.value_weight = nn.Parameter(torch.empty(dv, dv, width))
        if bias:
            self.key_bias = nn.Parameter(torch.empty(d))
            self.value_bias = nn.Parameter(torch.empty(dv))
        else:
            self.register_parameter("key_bias", None)
            self.register_parameter("value_bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As ``torch.nn.Conv1d``: weights and biases uniform in ``+-1/sqrt(D * kernel_size)``."""
        for weight, bias in ((self.key_weight, self.key_bias), (self.value_weight, self.value_bias)):
            bound = 1.0 / math.sqrt(weight.size(1) * weight.size(2))
            nn.init.uniform_(weight, -bound, bound)
            if bias is not None:
                nn.init.uniform_(bias, -bound, bound)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout) -> Tensor:
        self.check_inputs(q, k, v, layout)
        if q.size(3) != self.head_dim or v.size(3) != self.value_head_dim:
            raise ValueError(
                f"CompressedAttention: expected head_dim={self.head_dim} and value_head_dim={self.value_head_dim}, "
                f"got q {list(q.shape)} and v {list(v.shape)}; construct it with head_dim={q.size(3)}, "
                f"value_head_dim={v.size(3)}"
            )
        key_mask = layout.key_mask(k.size(1))
        k_compressed = compress(k, self.key_weight, self.key_bias, self.stride, key_mask)
        v_compressed = compress(v, self.value_weight, self.value_bias, self.stride, key_mask)
        slot_mask = compress_mask(key_mask, self.kernel_size, self.stride)
        out = softmax_attention(
            q, k_compressed, v_compressed, key_mask=slot_mask, dropout=self.dropout if self.training else 0.0
        )
        return _zero_padded_queries(out, layout)

    def extra_repr(self) -> str:
        parts = [f"head_dim={self.head_dim}", f"stride={self.stride}"]
        if self.kernel_size != self.stride:
            parts.append(f"kernel_size={self.kernel_size}")
        if self.value_head_dim != self.head_dim:
            parts.append(f"value_head_dim={self.value_head_dim}")
        if self.key_bias is None:
            parts.append("bias=False")
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        return ", ".join(parts)


class SynthesizerAttention(AttentionMechanism):
    """Synthesizer attention (Tay et al. 2021): attention weights synthesized without ``q . k``.

    * ``kind="dense"``: each query token's row of logits comes from a per-head two-layer MLP,
      ``logits_i = W2_h relu(W1_h x_i + b1_h) + b2_h`` (``max_length`` outputs, one per key
      position; the first ``Lk`` are used). The token features ``x_i`` are the layer's query
      projection of that token, ``q[b, i, h]``: the mechanism receives projected heads, not the
      layer input, and ``q`` plays the role of the paper's per-token input.
    * ``kind="random"``: free logits ``R_h`` ``[max_length, max_length]`` per head, the same for
      every input (only positions matter); ``R_h[:Lq, :Lk]`` is used.

    Logits are masked to real keys (and ``j <= i`` when causal), softmaxed and applied to ``v``.
    The keys' content is not used: ``k`` only has to have the right shape, and gets no gradient.
    Causal attention masks the future columns, so nothing leaks. Cross attention is well
    defined (rows over key positions), ``Lk <= max_length`` (and ``Lq <= max_length`` for
    ``"random"``). Cost ``O(Lq Lk)`` per head, plus ``O(Lq hidden (D + Lk))`` for ``"dense"``.

    Args:
        kind: one of :data:`SYNTHESIZER_KINDS`.
        max_length: longest key sequence (and query sequence for ``"random"``).
        num_heads: ``H``.
        head_dim: ``D``, size of query heads (required for ``"dense"``).
        hidden: width of the dense MLP's hidden layer (default ``head_dim``).
        dropout: probability of dropping an attention weight (training only).

    Parameters: ``"dense"``: ``hidden_weight [H, D, hidden]``, ``hidden_bias [H, hidden]``,
    ``logit_weight [H, hidden, max_length]``, ``logit_bias [H, max_length]`` (initialized like
    ``torch.nn.Linear``); ``"random"``: ``logits [H, max_length, max_length]``, normal with std
    ``1/sqrt(max_length)`` (near-uniform rows at first).

    Shapes:
        ``q [B, Lq, H, D]``, ``k [B, Lk, H, D]`` (unused), ``v [B, Lk, H, Dv]`` -> ``[B, Lq, H, Dv]``.
    """

    supports_causal = True
    supports_cross = True

    def __init__(
        self,
        kind: str,
        max_length: int,
        num_heads: int,
        head_dim: int | None = None,
        hidden: int | None = None,
        *,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.dropout = _dropout(dropout)
        if kind not in SYNTHESIZER_KINDS:
            raise ValueError(f"Unknown kind {kind!r}; expected one of {', '.join(map(repr, SYNTHESIZER_KINDS))}")
        self.kind = kind
        self.max_length = _positive_int(max_length, "max_length")
        self.num_heads = _positive_int(num_heads, "num_heads")
        if kind == "dense":
            if head_dim is None:
                raise ValueError("SynthesizerAttention(kind='dense') needs head_dim, the size of the query heads")
            self.head_dim = _positive_int(head_dim, "head_dim")
            self.hidden = self.head_dim if hidden is None else _positive_int(hidden, "hidden")
            h, d, e, n = self.num_heads, self.head_dim, self.hidden, self.max_length
            self.hidden_weight = nn.Parameter(torch.empty(h, d, e))
            self.hidden_bias = nn.Parameter(torch.empty(h, e))
            self.logit_weight = nn.Parameter(torch.empty(h, e, n))
            self.logit_bias = nn.Parameter(torch.empty(h, n))
        else:
            self.head_dim = None if head_dim is None else _positive_int(head_dim, "head_dim")
            self.hidden = None
            self.logits = nn.Parameter(torch.empty(self.num_heads, self.max_length, self.max_length))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Dense: like ``torch.nn.Linear`` (uniform in ``+-1/sqrt(fan_in)``); random: normal with std
        ``1/sqrt(max_length)``."""
        if self.kind == "dense":
            for weight, bias in ((self.hidden_weight, self.hidden_bias), (self.logit_weight, self.logit_bias)):
                bound = 1.0 / math.sqrt(weight.size(1))
                nn.init.uniform_(weight, -bound, bound)
                nn.init.uniform_(bias, -bound, bound)
        else:
            nn.init.normal_(self.logits, std=1.0 / math.sqrt(self.max_length))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout) -> Tensor:
        self.check_inputs(q, k, v, layout)
        name = "SynthesizerAttention"
        length_q, heads, length_k = q.size(1), q.size(2), k.size(1)
        if heads != self.num_heads:
            raise ValueError(f"{name}: expected {self.num_heads} heads, got q of shape {list(q.shape)}")
        too_long = length_k > self.max_length or (self.kind == "random" and length_q > self.max_length)
        if too_long:
            raise ValueError(
                f"{name}: got {length_q} queries and {length_k} keys but max_length={self.max_length}; construct it "
                f"with max_length >= {max(length_k, length_q) if self.kind == 'random' else length_k}"
            )
        if self.kind == "dense":
            if q.size(3) != self.head_dim:
                raise ValueError(
                    f"{name}: expected query heads of size head_dim={self.head_dim}, got q of shape {list(q.shape)}"
                )
            hidden = torch.einsum("bihd,hde->bihe", q, self.hidden_weight) + self.hidden_bias
            hidden = torch.relu(hidden)  # [B, Lq, H, hidden]
            logits = torch.einsum("bihe,hej->bhij", hidden, self.logit_weight[:, :, :length_k])  # [B, H, Lq, Lk]
            logits = logits + self.logit_bias[None, :, None, :length_k]
        else:
            logits = self.logits[None, :, :length_q, :length_k].to(v.dtype)  # [1, H, Lq, Lk]
        key_mask = layout.key_mask(length_k)
        allowed = key_mask[:, None, None, :]  # [B, 1, 1, Lk]
        if layout.causal:
            allowed = allowed & torch.ones(length_q, length_k, dtype=torch.bool, device=q.device).tril()
        weights = masked_softmax(logits, allowed)  # [B, H, Lq, Lk]
        if self.training and self.dropout > 0.0:
            weights = F.dropout(weights, p=self.dropout, training=True)
        v = v.masked_fill(~key_mask[..., None, None], 0.0)
        out = torch.einsum("bhij,bjhd->bihd", weights.to(v.dtype), v)
        return _zero_padded_queries(out, layout)

    def extra_repr(self) -> str:
        parts = [repr(self.kind), f"max_length={self.max_length}", f"num_heads={self.num_heads}"]
        if self.kind == "dense":
            parts += [f"head_dim={self.head_dim}", f"hidden={self.hidden}"]
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        return ", ".join(parts)


# ---------------------------------------------------------------------------------- helpers
def _zero_padded_queries(out: Tensor, layout: SequenceLayout) -> Tensor:
    """``[B, Lq, H, Dv]`` with the rows of padded queries set to zero."""
    query_mask = layout.query_mask(out.size(1))
    return out.masked_fill(~query_mask[:, :, None, None], 0.0)


def _mix_seed(seed: int, index: int) -> int:
    """A 63-bit generator seed from ``(seed, index)``, different for different pairs in practice."""
    return (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 1) % (1 << 63)


def _dropout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"Expected 0 <= dropout < 1, got {value!r}")
    return float(value)


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected '{name}' to be a positive int, got {value!r}")
    return value
