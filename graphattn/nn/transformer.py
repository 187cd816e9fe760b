"""Transformer blocks on the graphattn core: one layer class for encoders, decoders and
decoder-only models, working on node features with an attention graph.

A batch of ``B`` right-padded sequences of ``L`` slots is ``N = B * L`` nodes ``[N, E]``; which
node attends which is an :class:`~graphattn.AttentionGraph` (see
:func:`graphattn.patterns.sequence_batch`), so the same block runs full, causal, local, BigBird
or any graph pattern, and graph transformers use it unchanged on molecules.

* :class:`TransformerLayer`: self-attention, optional cross-attention, feed-forward; residual
  connections with LayerNorm before (``norm_first=True``, pre-norm) or after (post-norm) each
  sub-layer, exactly as ``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer``.
* :class:`AttentionContext`: what one kind of attention (encoder self, decoder self, cross)
  needs for one forward -- the graph, per-edge position biases, node positions for rotary
  embeddings -- computed once by the model and shared by every layer with that pattern.
* :class:`KeyValueCache` / :class:`LayerCache`: keys and values of earlier positions for
  incremental decoding, laid out as ``[B, T, H, D]`` slots.

Example:
    >>> import torch
    >>> from graphattn import patterns
    >>> from graphattn.nn import TransformerLayer, AttentionContext
    >>> layer = TransformerLayer(16, num_heads=2, ff_dim=32, dropout=0.0)
    >>> x = torch.randn(2 * 5, 16)                     # 2 sequences of 5 tokens, as nodes [N, E]
    >>> graph = patterns.sequence_batch(patterns.PatternSpec.parse("causal"), [5, 3], query_slots=5)
    >>> layer(x, AttentionContext(graph)).shape
    torch.Size([10, 16])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.graph import AttentionGraph
from graphattn.nn.attention import MultiheadAttention
from graphattn.nn.mechanism import AttentionMechanism, SequenceLayout

__all__ = ["TransformerLayer", "FeedForward", "AttentionContext", "KeyValueCache", "LayerCache", "ACTIVATIONS"]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu}
"""Feed-forward activations by name."""


@dataclass
class AttentionContext:
    """One attention kind's inputs for one forward, shared by the layers that use its pattern.

    Attributes:
        graph: edges from key nodes to query nodes (``num_queries = Nq``, ``num_keys = Nk``; with
            a cache the keys are the cache slots ``B * T``).
        bias: optional per-edge score bias ``[E, H]`` (relative positions, ALiBi).
        positions: ``[Nq]`` int64 position of every query node, for rotary embeddings (the keys
            computed from the same nodes share these positions; cached keys were rotated when
            they were written).
        layout: the nodes as ``B`` right-padded sequences (lengths, causality), which layers
            with an :class:`~graphattn.nn.mechanism.AttentionMechanism` need; ``Nq = B * L``.
    """

    graph: AttentionGraph
    bias: Tensor | None = None
    positions: Tensor | None = None
    layout: SequenceLayout | None = None


class KeyValueCache:
    """Keys and values of ``B`` sequences in ``T`` slots each, written as decoding advances.

    Args:
        batch: ``B``.
        slots: ``T``, the longest sequence (prompt plus new tokens).
        num_heads, head_dim, value_head_dim: as in the attention layer.
        like: a tensor whose dtype and device the cache takes.

    Attributes:
        key: ``[B, T, H, D]``; value: ``[B, T, H, Dv]``. Slots not yet written hold zeros and
        are never attended (the graph has no edges to them).
    """

    def __init__(self, batch: int, slots: int, num_heads: int, head_dim: int, value_head_dim: int, like: Tensor) -> None:
        self.key = like.new_zeros(batch, slots, num_heads, head_dim)
        self.value = like.new_zeros(batch, slots, num_heads, value_head_dim)

    @property
    def slots(self) -> int:
        return self.key.size(1)

    def store(self, flat_slots: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``key`` ``[N, H, D]`` / ``value`` ``[N, H, Dv]`` at ``flat_slots`` ``[N]``
        (``b * T + position``) and return the whole cache flattened: ``[B * T, H, D]``,
        ``[B * T, H, Dv]``."""
        flat_key = self.key.view(-1, *self.key.shape[2:])
        flat_value = self.value.view(-1, *self.value.shape[2:])
        flat_key.index_copy_(0, flat_slots, key.to(flat_key.dtype))
        flat_value.index_copy_(0, flat_slots, value.to(flat_value.dtype))
        return flat_key, flat_value

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` ``[B']`` of the batch (beam search, dropping finished rows)."""
        self.key = self.key.index_select(0, index)
        self.value = self.value.index_select(0, index)


@dataclass
class LayerCache:
    """A layer's decoding cache: self-attention keys/values by slot, and the cross-attention
    keys/values of the encoder output (``[B * S, H, D]``), computed at the first step.

    ``self_attention=None`` caches the cross-attention keys/values alone: iterative parallel
    decoders (Mask-Predict, Imputer) recompute their self-attention at every pass but attend the
    same encoder output each time."""

    self_attention: KeyValueCache | None
    cross_key: Tensor | None = None
    cross_value: Tensor | None = None
    source_slots: int = 0

    def reorder(self, index: Tensor) -> None:
        if self.self_attention is not None:
            self.self_attention.reorder(index)
        if self.cross_key is not None:
            s = self.source_slots
            self.cross_key = self.cross_key.view(-1, s, *self.cross_key.shape[1:]).index_select(0, index).flatten(0, 1)
            self.cross_value = self.cross_value.view(-1, s, *self.cross_value.shape[1:]).index_select(0, index).flatten(0, 1)


class FeedForward(nn.Module):
    """Position-wise feed-forward ``linear2(dropout(activation(linear1(x))))``: ``[..., E] -> [..., E]``."""

    def __init__(
        self,
        d_model: int,
        ff_dim: int,
        *,
        dropout: float = 0.0,
        activation: str = "relu",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")
        factory = {"device": device, "dtype": dtype}
        self.linear1 = nn.Linear(d_model, ff_dim, **factory)
        self.linear2 = nn.Linear(ff_dim, d_model, **factory)
        self.dropout = nn.Dropout(dropout)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(ACTIVATIONS[self.activation](self.linear1(x))))

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"


class TransformerLayer(nn.Module):
    """Self-attention, optional cross-attention and feed-forward over node features.

    Post-norm (``norm_first=False``, Vaswani et al.)::

        x = norm1(x + drop(self_attn(x)));  x = norm2(x + drop(cross_attn(x, memory)));  x = norm3(x + drop(ff(x)))

    Pre-norm (``norm_first=True``)::

        x = x + drop(self_attn(norm1(x)));  x = x + drop(cross_attn(norm2(x), memory));  x = x + drop(ff(norm3(x)))

    (without cross-attention the feed-forward norm is ``norm2``), matching
    ``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer`` with ``batch_first`` node
    layout. Attention runs on :func:`graphattn.attention` over the context's graph.

    Args:
        d_model: ``E``.
        num_heads: ``H``.
        ff_dim: hidden size of the feed-forward.
        dropout: dropout on the sub-layer outputs and inside the feed-forward.
        attention_dropout: dropout on the attention weights.
        activation: ``"relu"`` or ``"gelu"``.
        norm_first: pre-norm if True.
        cross_attention: add a cross-attention sub-layer (a decoder layer).
        score: attention scoring function (see :class:`MultiheadAttention`).
        backend: the :func:`graphattn.attention` backend.
        layer_norm_eps: LayerNorm epsilon.
        mechanism: an :class:`~graphattn.nn.mechanism.AttentionMechanism` run by the
            self-attention instead of softmax over the context's graph (LSH, linear, Performer,
            ...); the layer keeps its query / key / value / output projections. Needs
            ``self_context.layout``; no incremental decoding.

    Shapes:
        ``forward(x [Nq, E], self_context, memory=[Nk, E], cross_context=...) -> [Nq, E]``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ff_dim: int,
        *,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = True,
        cross_attention: bool = False,
        score: str = "scaled_dot",
        backend: str = "auto",
        layer_norm_eps: float = 1e-5,
        mechanism: AttentionMechanism | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        attention = dict(dropout=attention_dropout, score=score, backend=backend, **factory)
        self.norm_first = bool(norm_first)
        self.self_attn = MultiheadAttention(d_model, num_heads, **attention)
        if mechanism is not None and not isinstance(mechanism, AttentionMechanism):
            raise TypeError(f"Expected 'mechanism' to be an AttentionMechanism or None, got {type(mechanism).__name__}")
        if mechanism is not None and score != "scaled_dot":
            raise ValueError(f"An attention mechanism replaces the scoring; use score='scaled_dot', got {score!r}")
        self.mechanism = mechanism
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, **factory)
        if cross_attention:
            self.cross_attn: MultiheadAttention | None = MultiheadAttention(d_model, num_heads, **attention)
            self.norm_cross: nn.LayerNorm | None = nn.LayerNorm(d_model, eps=layer_norm_eps, **factory)
        else:
            self.cross_attn, self.norm_cross = None, None
        self.feed_forward = FeedForward(d_model, ff_dim, dropout=dropout, activation=activation, **factory)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, **factory)
        self.dropout = nn.Dropout(dropout)

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}"

    def forward(
        self,
        x: Tensor,
        self_context: AttentionContext,
        *,
        memory: Tensor | None = None,
        cross_context: AttentionContext | None = None,
        rotary: nn.Module | None = None,
        cache: LayerCache | None = None,
        cache_slots: Tensor | None = None,
    ) -> Tensor:
        """One block.

        Args:
            x: ``[Nq, E]`` query node features.
            self_context: the self-attention graph (keys = the nodes of ``x``, or the cache
                slots when ``cache`` is given), bias and positions.
            memory: ``[Nk, E]`` encoder output for cross-attention (not needed when the cache
                already holds its keys/values).
            cross_context: the cross-attention graph and bias.
            rotary: a :class:`~graphattn.nn.RotaryEmbedding` applied to self-attention queries
                and keys at ``self_context.positions``.
            cache: this layer's :class:`LayerCache` for incremental decoding; new keys/values are
                written at ``cache_slots`` ``[Nq]`` (``b * T + position``).

        Returns:
            ``[Nq, E]``.
        """
        if self.norm_first:
            x = x + self.dropout(self._self_attention(self.norm1(x), self_context, rotary, cache, cache_slots))
            if self.cross_attn is not None:
                x = x + self.dropout(self._cross_attention(self.norm_cross(x), memory, cross_context, cache))
            return x + self.dropout(self.feed_forward(self.norm2(x)))
        x = self.norm1(x + self.dropout(self._self_attention(x, self_context, rotary, cache, cache_slots)))
        if self.cross_attn is not None:
            x = self.norm_cross(x + self.dropout(self._cross_attention(x, memory, cross_context, cache)))
        return self.norm2(x + self.dropout(self.feed_forward(x)))

    def _self_attention(
        self,
        h: Tensor,
        context: AttentionContext,
        rotary: nn.Module | None,
        cache: LayerCache | None,
        cache_slots: Tensor | None,
    ) -> Tensor:
        attn = self.self_attn
        if self.mechanism is not None:
            self_cache = cache if cache is not None and cache.self_attention is not None else None
            return self._mechanism_attention(h, context, rotary, self_cache)
        q, k, v = attn.project(h, h, h)  # [Nq, H, D] each (one fused product)
        if rotary is not None:
            if context.positions is None:
                raise ValueError("Rotary embeddings need node positions in the AttentionContext")
            q, k = rotary(q, context.positions), rotary(k, context.positions)
        if cache is not None and cache.self_attention is not None:
            if cache_slots is None:
                raise ValueError("Decoding with a cache needs 'cache_slots' (where the new keys go)")
            k, v = cache.self_attention.store(cache_slots, k, v)  # the whole cache [B * T, H, D]
        out, _ = attn.attend(q, k, v, context.graph, context.bias)
        return attn.project_output(out, context.graph)

    def _mechanism_attention(
        self, h: Tensor, context: AttentionContext, rotary: nn.Module | None, cache: LayerCache | None
    ) -> Tensor:
        """Self-attention through ``self.mechanism`` over the context's sequences."""
        mechanism, attn = self.mechanism, self.self_attn
        if cache is not None:
            raise NotImplementedError(
                f"Incremental decoding with the {type(mechanism).__name__} mechanism is not supported; "
                "decode with softmax attention in the decoder (decoder_attention='softmax')"
            )
        layout = context.layout
        if layout is None:
            raise ValueError("A layer with an attention mechanism needs self_context.layout (a SequenceLayout)")
        batch = layout.query_lengths.numel()
        if batch == 0 or h.size(0) % batch:
            raise ValueError(f"Expected {h.size(0)} nodes to be B * L for B = {batch} sequences")
        slots = h.size(0) // batch
        if mechanism.shared_query_key:  # Reformer: one projection for queries and keys
            q = attn.project_query(h)
            k, v = q, attn.v_proj(h).unflatten(-1, (attn.num_heads, attn.value_head_dim))
        else:
            q, k, v = attn.project(h, h, h)
        if rotary is not None:
            if context.positions is None:
                raise ValueError("Rotary embeddings need node positions in the AttentionContext")
            q = rotary(q, context.positions)
            k = q if mechanism.shared_query_key else rotary(k, context.positions)
        full = SequenceLayout(layout.query_lengths, layout.key_lengths, layout.causal, context.graph, context.bias)
        out = mechanism(
            q.view(batch, slots, *q.shape[1:]), k.view(batch, slots, *k.shape[1:]), v.view(batch, slots, *v.shape[1:]), full
        )  # [B, L, H, Dv]
        out = attn.out_proj(out.reshape(batch * slots, -1))
        return out * layout.query_mask(slots).reshape(-1, 1).to(out.dtype)  # padded slots: exactly zero

    def _cross_attention(
        self, h: Tensor, memory: Tensor | None, context: AttentionContext | None, cache: LayerCache | None
    ) -> Tensor:
        attn = self.cross_attn
        if context is None:
            raise ValueError("A decoder layer needs the cross-attention context (graph from queries to memory)")
        q = attn.project_query(h)
        if cache is not None and cache.cross_key is not None:
            k, v = cache.cross_key, cache.cross_value
        else:
            if memory is None:
                raise ValueError("A decoder layer needs 'memory' (the encoder output [Nk, E]) for cross-attention")
            k, v = attn.project_key_value(memory, memory)
            if cache is not None:
                cache.cross_key, cache.cross_value = k, v
        out, _ = attn.attend(q, k, v, context.graph, context.bias)
        return attn.project_output(out, context.graph)

    def self_attention_weights(self, x: Tensor, context: AttentionContext, rotary: nn.Module | None = None) -> Tensor:
        """Per-edge self-attention weights ``[E, H]`` of this layer for its input ``x`` ``[N, E]``
        (the layer normalizes it first when pre-norm, as :meth:`forward` does), e.g. for
        attention-map plots. Softmax attention over the pattern only."""
        if self.mechanism is not None:
            raise ValueError(
                f"Attention weights per edge exist for softmax attention only; this layer runs "
                f"{type(self.mechanism).__name__}"
            )
        h = self.norm1(x) if self.norm_first else x
        attn = self.self_attn
        q, k, v = attn.project(h, h, h)
        if rotary is not None:
            q, k = rotary(q, context.positions), rotary(k, context.positions)
        return attn.attend(q, k, v, context.graph, context.bias, need_weights=True)[1]

    def cross_attention_weights(self, h: Tensor, memory: Tensor, context: AttentionContext) -> Tensor:
        """Per-edge cross-attention weights ``[E, H]`` for inputs ``h`` (already normalized as the
        layer would), e.g. for alignment plots."""
        attn = self.cross_attn
        if attn is None:
            raise ValueError("This layer has no cross-attention")
        q = attn.project_query(h)
        k, v = attn.project_key_value(memory, memory)
        return attn.attend(q, k, v, context.graph, context.bias, need_weights=True)[1]
