"""Transformer models whose every attention runs on the graphattn core, with any pattern.

One config, :class:`TransformerConfig`, describes every model here; each model reads the
fields it needs:

* :class:`Encoder` -- ``N x (self-attention + feed-forward)``; token ids ``[B, L]`` -> hidden
  states ``[B, L, E]``. With ``input_features=F`` it reads vectors instead of ids --
  :class:`Vectors` ``(features [B, L, F], lengths [B])``: speech frames, pixels, precomputed
  word features -- through a linear map to ``E``.
* :class:`Decoder` -- ``N x (causal self-attention + cross-attention + feed-forward)`` and the
  output layer; ``(tgt_in [B, T], memory [B, S, E]) -> logits [B, T, V]``.
* :class:`EncoderDecoder` -- encoder + decoder with cross-attention; ``forward(src, tgt_in)`` ->
  logits ``[B, T, V]``; optional copy mechanism (pointer-generator, ``copy=True``).
* :class:`CausalLM` -- decoder-only (GPT-like) language model from the same blocks.
* :class:`MaskedLM` -- encoder-only (BERT-like) masked language model; see :func:`mask_tokens`.

Patterns come from the config as :class:`~graphattn.patterns.PatternSpec` (or their strings),
one for all layers or one per layer, and may be per-head (``per_head(...)``). Every batch is a
set of right-padded sequences (``pad_id`` after the last real token); each sequence attends with
its pattern built for its own length (:func:`~graphattn.patterns.sequence_batch`), so a
sequence's result does not depend on the batch it is in.

:class:`EncoderDecoder` and :class:`CausalLM` implement :class:`graphattn.decoding.Decodable`
with a key/value cache: pass them to :func:`graphattn.decoding.generate`. Cached decoding gives
the logits of a full forward pass for every causal pattern (the pattern is built once for the
longest sequence and its rows are used as the sequence grows).

Example:
    >>> import torch
    >>> from graphattn.models import TransformerConfig, EncoderDecoder
    >>> config = TransformerConfig(vocab_size=20, d_model=32, num_heads=4, num_layers=2,
    ...                            encoder_pattern="local(window=2)")
    >>> model = EncoderDecoder(config)
    >>> src = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])      # right-padded with pad_id = 0
    >>> tgt_in = torch.tensor([[1, 5, 6], [1, 9, 10]])          # BOS = 1, then the target
    >>> model(src, tgt_in).shape
    torch.Size([2, 3, 20])
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.graph import AttentionGraph
from graphattn.models.decodable import DecodingStart
from graphattn.nn.attention import MultiheadAttention
from graphattn.nn.mechanism import MechanismDims, MechanismSpec, SequenceLayout, as_mechanism_spec
from graphattn.nn.positional import (
    ALiBi,
    LearnedPositionalEmbedding,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionalEmbedding,
)
from graphattn.nn.transformer import ACTIVATIONS, AttentionContext, KeyValueCache, LayerCache, TransformerLayer
from graphattn.patterns.spec import PatternSpec, as_pattern_spec, embed, gather_rows, sequence_batch

__all__ = [
    "TransformerConfig",
    "Vectors",
    "Encoder",
    "Decoder",
    "DecoderPass",
    "EncoderDecoder",
    "CausalLM",
    "MaskedLM",
    "mask_tokens",
    "POSITIONS",
]

POSITIONS = ("sinusoidal", "learned", "relative", "rotary", "alibi", "none")
"""Ways of giving the model positions (``TransformerConfig.position``)."""

PatternLike = Union[PatternSpec, str]
MechanismLike = Union[MechanismSpec, str]


def _mechanisms(value: MechanismLike | Sequence[MechanismLike], name: str) -> MechanismSpec | tuple[MechanismSpec, ...]:
    if isinstance(value, (MechanismSpec, str)):
        return as_mechanism_spec(value)
    if isinstance(value, (list, tuple)) and value:
        return tuple(as_mechanism_spec(v) for v in value)
    raise TypeError(
        f"Expected '{name}' to be an attention mechanism (MechanismSpec or a string like 'softmax' or "
        f"'performer(num_features=128)') or a non-empty list of them, one per layer; got {value!r}"
    )


def _patterns(value: PatternLike | Sequence[PatternLike], name: str) -> PatternSpec | tuple[PatternSpec, ...]:
    if isinstance(value, (PatternSpec, str)):
        return as_pattern_spec(value)
    if isinstance(value, (list, tuple)) and value:
        return tuple(as_pattern_spec(v) for v in value)
    raise TypeError(
        f"Expected '{name}' to be a pattern (PatternSpec or a string like 'local(window=8)') or a "
        f"non-empty list of them, one per layer; got {value!r}"
    )


@dataclass(frozen=True)
class TransformerConfig:
    """Everything that defines a Transformer model here (frozen; pass it whole).

    Attributes:
        vocab_size: target (or only) vocabulary size ``V``; ids ``0 .. V-1``.
        source_vocab_size: encoder vocabulary of :class:`EncoderDecoder` (default ``vocab_size``).
        input_features: ``F``: the encoder (of :class:`Encoder`, :class:`EncoderDecoder` and the
            models built on the encoder) reads :class:`Vectors` of ``F`` values per node instead
            of token ids -- speech frames, pixels -- through ``Linear(F, E)`` in place of the
            token embedding (positions are added as for ids). ``None``: token ids.
        input_kernel: with ``input_features``, the width ``k`` (odd) of a 1-D convolution along
            the sequence that replaces ``Linear(F, E)`` (``k = 1``: the linear map): each node's
            input vector is computed from it and its ``k // 2`` neighbours on each side -- the
            local front-end of speech models. Padded slots count as zeros, so a sequence's
            result does not depend on its batch.
        d_model: ``E``.
        num_heads: ``H``.
        num_layers: encoder layers (and decoder layers of a decoder-only model).
        num_decoder_layers: decoder layers of :class:`EncoderDecoder` (default ``num_layers``).
        ff_dim: feed-forward hidden size (default ``4 * d_model``).
        dropout: on embeddings, sub-layer outputs and inside the feed-forward.
        attention_dropout: on attention weights.
        activation: ``"relu"`` or ``"gelu"``.
        norm_first: pre-norm (with a final LayerNorm after the stack) if True, post-norm if False.
        position: one of :data:`POSITIONS`: absolute ``"sinusoidal"`` / ``"learned"`` embeddings
            added to the tokens, T5 ``"relative"`` bias or ``"alibi"`` on the self-attention edges,
            ``"rotary"`` (RoPE) on self-attention queries/keys, or ``"none"``.
        max_positions: longest sequence for ``"learned"`` positions.
        relative_buckets, relative_max_distance: T5 bucketing for ``"relative"``.
        encoder_pattern: self-attention pattern of the encoder (one, or one per layer).
        decoder_pattern: self-attention pattern of the decoder / causal LM; must be causal for
            autoregressive models (checked).
        cross_pattern: decoder-to-encoder pattern over (target, source) positions; ``"full"``.
        encoder_attention: self-attention mechanism of the encoder (one, or one per layer):
            ``"softmax"`` over the pattern (default), or an efficient-attention mechanism such as
            ``"lsh(...)"``, ``"linear"``, ``"performer(...)"`` (names:
            :data:`graphattn.nn.mechanism.MECHANISM_NAMES`), or ``"heads(softmax, lsh(...))"`` for
            a mechanism per group of heads. A layer whose mechanism is not softmax must have the
            pattern ``"full"`` (or ``"causal"``: the mechanism then runs causally), since only
            softmax heads use a sparse pattern.
        decoder_attention: the same for the decoder / causal LM self-attention (training and
            teacher forcing; :func:`~graphattn.decoding.generate` needs ``"softmax"``).
        tie_embeddings: share the decoder's (or LM's) input embedding with its output layer.
        share_embeddings: share the encoder and decoder embeddings (same vocabulary needed).
        scale_embeddings: multiply token embeddings by ``sqrt(d_model)`` (Vaswani et al.).
        copy: add the copy mechanism (pointer-generator) to :class:`EncoderDecoder`.
        pad_id, bos_id, eos_id, unk_id: special token ids; ``mask_id`` for :class:`MaskedLM`.
        score: attention scoring function (see :class:`~graphattn.nn.MultiheadAttention`).
        backend: :func:`graphattn.attention` backend of every attention.
        layer_norm_eps: LayerNorm epsilon.
    """

    vocab_size: int
    source_vocab_size: int | None = None
    input_features: int | None = None
    input_kernel: int = 1
    d_model: int = 256
    num_heads: int = 4
    num_layers: int = 3
    num_decoder_layers: int | None = None
    ff_dim: int | None = None
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation: str = "relu"
    norm_first: bool = True
    position: str = "sinusoidal"
    max_positions: int = 1024
    relative_buckets: int = 32
    relative_max_distance: int = 128
    encoder_pattern: PatternLike | tuple[PatternLike, ...] = "full"
    decoder_pattern: PatternLike | tuple[PatternLike, ...] = "causal"
    cross_pattern: PatternLike = "full"
    encoder_attention: MechanismLike | tuple[MechanismLike, ...] = "softmax"
    decoder_attention: MechanismLike | tuple[MechanismLike, ...] = "softmax"
    tie_embeddings: bool = True
    share_embeddings: bool = False
    scale_embeddings: bool = True
    copy: bool = False
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 3
    mask_id: int | None = None
    score: str = "scaled_dot"
    backend: str = "auto"
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "num_heads", "num_layers", "max_positions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"Expected '{name}' to be a positive int, got {value!r}")
        if isinstance(self.input_kernel, bool) or not isinstance(self.input_kernel, int) or self.input_kernel < 1 or self.input_kernel % 2 == 0:
            raise ValueError(f"Expected 'input_kernel' to be an odd positive int, got {self.input_kernel!r}")
        if self.input_kernel > 1 and self.input_features is None:
            raise ValueError("input_kernel > 1 convolves input vectors; set input_features too (token ids have no convolution)")
        for name in ("source_vocab_size", "input_features", "num_decoder_layers", "ff_dim"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"Expected '{name}' to be None or a positive int, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"Expected d_model divisible by num_heads, got d_model={self.d_model}, num_heads={self.num_heads}"
            )
        if self.position not in POSITIONS:
            raise ValueError(f"Unknown position {self.position!r}; expected one of {', '.join(POSITIONS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {self.activation!r}; expected one of {', '.join(ACTIVATIONS)}")
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"Expected 0 <= {name} < 1, got {value}")
        specials = {"pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id, "unk_id": self.unk_id}
        if self.mask_id is not None:
            specials["mask_id"] = self.mask_id
        for name, value in specials.items():
            if not 0 <= value < min(self.vocab_size, self.source_vocab_size or self.vocab_size):
                raise ValueError(f"Expected {name} in [0, vocab_size), got {value} (vocab_size = {self.vocab_size})")
        if self.input_features is not None and (self.copy or self.share_embeddings):
            option = "copy" if self.copy else "share_embeddings"
            raise ValueError(
                f"{option}=True needs source token ids, but input_features={self.input_features} makes the "
                f"encoder read vectors; set {option}=False or input_features=None"
            )
        if self.share_embeddings and self.source_vocab_size not in (None, self.vocab_size):
            raise ValueError(
                "share_embeddings=True needs one vocabulary: source_vocab_size must be None or "
                f"equal to vocab_size, got {self.source_vocab_size} and {self.vocab_size}"
            )
        object.__setattr__(self, "encoder_pattern", _patterns(self.encoder_pattern, "encoder_pattern"))
        object.__setattr__(self, "decoder_pattern", _patterns(self.decoder_pattern, "decoder_pattern"))
        cross = _patterns(self.cross_pattern, "cross_pattern")
        if isinstance(cross, tuple):
            raise TypeError("Expected one 'cross_pattern' for all layers")
        object.__setattr__(self, "cross_pattern", cross)
        object.__setattr__(self, "encoder_attention", _mechanisms(self.encoder_attention, "encoder_attention"))
        object.__setattr__(self, "decoder_attention", _mechanisms(self.decoder_attention, "decoder_attention"))
        for name, count in (
            ("encoder_pattern", self.num_layers),
            ("decoder_pattern", self.decoder_layers),
            ("encoder_attention", self.num_layers),
            ("decoder_attention", self.decoder_layers),
        ):
            value = getattr(self, name)
            if isinstance(value, tuple) and len(value) not in (count, self.num_layers):
                raise ValueError(f"Expected one '{name}' per layer ({count}), got {len(value)}")
        for kind in ("encoder", "decoder"):
            count = self.num_layers if kind == "encoder" else self.decoder_layers
            for layer, (pattern, mechanism) in enumerate(zip(self.layer_patterns(kind, count), self.layer_attention(kind, count))):
                kinds = {part.name for part in mechanism.parts} if mechanism.name == "heads" else {mechanism.name}
                uses_pattern = "softmax" in kinds
                if not uses_pattern and pattern.name not in ("full", "causal"):
                    raise ValueError(
                        f"{kind} layer {layer}: attention mechanism {mechanism} does not use the pattern {pattern}; "
                        f"give that layer the pattern 'full' (or 'causal'), or use heads(softmax, ...) to combine them"
                    )
                if kinds != {"softmax"} and self.position in ("relative", "alibi"):
                    raise ValueError(
                        f"{kind} layer {layer}: position={self.position!r} is a per-edge bias that only softmax "
                        f"attention uses, but the layer runs {mechanism}; use sinusoidal, learned or rotary positions"
                    )
                if mechanism.name == "heads" and self.num_heads % len(mechanism.parts):
                    raise ValueError(f"{kind} layer {layer}: {mechanism} needs num_heads divisible by {len(mechanism.parts)}, "
                                     f"got {self.num_heads}")

    @property
    def decoder_layers(self) -> int:
        return self.num_decoder_layers or self.num_layers

    @property
    def feed_forward_dim(self) -> int:
        return self.ff_dim or 4 * self.d_model

    def layer_patterns(self, kind: str, num_layers: int) -> tuple[PatternSpec, ...]:
        """The self-attention pattern of each of ``num_layers`` layers (``kind``: ``"encoder"`` or
        ``"decoder"``)."""
        value = self.encoder_pattern if kind == "encoder" else self.decoder_pattern
        if isinstance(value, PatternSpec):
            return (value,) * num_layers
        if len(value) != num_layers:
            raise ValueError(f"Expected one {kind} pattern per layer ({num_layers}), got {len(value)}")
        return value

    def layer_attention(self, kind: str, num_layers: int) -> tuple[MechanismSpec, ...]:
        """The self-attention mechanism of each of ``num_layers`` layers (``kind``: ``"encoder"``
        or ``"decoder"``)."""
        value = self.encoder_attention if kind == "encoder" else self.decoder_attention
        if isinstance(value, MechanismSpec):
            return (value,) * num_layers
        if len(value) != num_layers:
            raise ValueError(f"Expected one {kind} attention mechanism per layer ({num_layers}), got {len(value)}")
        return value

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (patterns and mechanisms as strings); :meth:`from_dict` inverts it."""
        out = dataclasses.asdict(self)
        for name in ("encoder_pattern", "decoder_pattern", "cross_pattern", "encoder_attention", "decoder_attention"):
            value = getattr(self, name)
            out[name] = str(value) if isinstance(value, (PatternSpec, MechanismSpec)) else [str(v) for v in value]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TransformerConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"Unknown TransformerConfig fields {sorted(unknown)}")
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**data)


# ---------------------------------------------------------------------- shared pieces
def _lengths(ids: Tensor, pad_id: int, name: str) -> Tensor:
    """``[B]`` real lengths of right-padded ``ids`` ``[B, L]``; raises if padding is not at the end."""
    if not isinstance(ids, Tensor):
        raise TypeError(f"Expected '{name}' to be an int64 tensor [B, L] of token ids, got {type(ids).__name__}")
    if ids.dim() != 2:
        raise ValueError(f"Expected '{name}' of shape [B, L] (token ids), got {list(ids.shape)}")
    if ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"Expected '{name}' to hold integer token ids, got '{ids.dtype}'")
    real = ids != pad_id
    lengths = real.sum(1)
    if ids.size(1) and not bool((real == (torch.arange(ids.size(1), device=ids.device) < lengths[:, None])).all()):
        row = int((real != (torch.arange(ids.size(1), device=ids.device) < lengths[:, None])).any(1).nonzero()[0])
        raise ValueError(
            f"Expected '{name}' right-padded (pad_id = {pad_id} only after the last real token), but row "
            f"{row} is {ids[row].tolist()}; move the padding to the end"
        )
    return lengths


def _check_ids(ids: Tensor, vocab_size: int, name: str) -> None:
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(
            f"Expected '{name}' ids in [0, {vocab_size - 1}] (vocab_size = {vocab_size}), got values in "
            f"[{int(ids.min())}, {int(ids.max())}]"
        )


class _InputEmbedding(nn.Module):
    """What every input embedding shares: its values embedded (:meth:`embed_values`), absolute
    positions added (sinusoidal or learned, as configured), dropout. Subclasses build their own
    modules first and then call :meth:`_add_positions` (so their random initialization comes
    first, as it always did)."""

    def _add_positions(self, config: TransformerConfig) -> None:
        self.positions: nn.Module | None = None
        if config.position == "sinusoidal":
            self.positions = SinusoidalPositionalEmbedding(config.d_model)
        elif config.position == "learned":
            self.positions = LearnedPositionalEmbedding(config.max_positions, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def embed_values(self, values: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, values: Tensor, positions: Tensor) -> Tensor:
        """``values`` (ids ``[...]`` or vectors ``[..., F]``), ``positions`` ``[...]`` -> ``[..., E]``."""
        x = self.embed_values(values)
        if self.positions is not None:
            x = x + self.positions(positions).to(x.dtype)
        return self.dropout(x)


class _Embedding(_InputEmbedding):
    """Token embedding (times ``sqrt(E)`` if configured) + absolute positions + dropout."""

    def __init__(self, config: TransformerConfig, vocab_size: int, shared: nn.Embedding | None = None) -> None:
        super().__init__()
        self.tokens = shared if shared is not None else nn.Embedding(vocab_size, config.d_model)
        if shared is None:
            std = config.d_model**-0.5 if config.scale_embeddings else 0.02
            nn.init.normal_(self.tokens.weight, std=std)
        self.scale = math.sqrt(config.d_model) if config.scale_embeddings else 1.0
        self._add_positions(config)

    def embed_values(self, ids: Tensor) -> Tensor:
        return self.tokens(ids) * self.scale


class Vectors(NamedTuple):
    """A batch of right-padded vector sequences, the input of an encoder with ``input_features``:
    ``features`` float ``[B, L, F]`` (node ``b * L + i`` is ``features[b, i]``; values at padded
    slots are ignored) and ``lengths`` int ``[B]`` (real vectors per row, ``1 <= lengths <= L``).

    Example:
        >>> Vectors(torch.zeros(2, 5, 3), torch.tensor([5, 2])).features.shape
        torch.Size([2, 5, 3])
    """

    features: Tensor
    lengths: Tensor


def _check_vectors(inputs: Vectors | Tensor, num_features: int, what: str = "vector features") -> tuple[Tensor, Tensor]:
    """``(features [B, L, F] with padded slots zeroed, lengths [B] int64)``; a bare float tensor
    ``[B, L, F]`` is a batch of full rows. ``what`` names the input in error messages."""
    if isinstance(inputs, Tensor):
        features, lengths = inputs, None
    else:
        features, lengths = inputs
    if not isinstance(features, Tensor) or features.dim() != 3 or not features.dtype.is_floating_point:
        got = f"{features.dtype} {list(features.shape)}" if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"Expected {what} as a float tensor [B, L, F = {num_features}], got {got}")
    batch, slots, width = features.shape
    if width != num_features:
        raise ValueError(
            f"Expected {num_features} features per vector (config.input_features) in {what}, got {width} "
            f"(shape {list(features.shape)})"
        )
    if lengths is None:
        lengths = torch.full((batch,), slots, dtype=torch.long, device=features.device)
    if not isinstance(lengths, Tensor) or lengths.shape != (batch,) or lengths.dtype.is_floating_point:
        got = f"{lengths.dtype} {list(lengths.shape)}" if isinstance(lengths, Tensor) else type(lengths).__name__
        raise ValueError(f"Expected lengths as an integer tensor [B] with B = {batch}, got {got}")
    lengths = lengths.to(device=features.device, dtype=torch.long)
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > slots):
        raise ValueError(
            f"Expected every length in [1, {slots}] (L = features.size(1)), got values in "
            f"[{int(lengths.min())}, {int(lengths.max())}]; drop empty sequences from the batch"
        )
    real = torch.arange(slots, device=features.device) < lengths[:, None]  # [B, L]
    return features.masked_fill(~real[..., None], 0.0), lengths


class _VectorEmbedding(_InputEmbedding):
    """``Linear(F, E)`` of input vectors (or a 1-D convolution along the sequence with
    ``input_kernel > 1``) + absolute positions + dropout (the token embedding of an encoder that
    reads :class:`Vectors`)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.project: nn.Linear | None = None
        self.conv: nn.Conv1d | None = None
        if config.input_kernel == 1:
            self.project = nn.Linear(config.input_features, config.d_model)
        else:
            self.conv = nn.Conv1d(config.input_features, config.d_model, config.input_kernel,
                                  padding=config.input_kernel // 2)
        self._add_positions(config)

    def embed_values(self, features: Tensor) -> Tensor:
        """``[B, L, F]`` (padded slots zero) -> ``[B, L, E]``."""
        if self.conv is None:
            return self.project(features)
        return self.conv(features.transpose(1, 2)).transpose(1, 2)


class _Stack(nn.Module):
    """Layers + final LayerNorm (pre-norm) + the position biases / rotary of their self-attention."""

    def __init__(
        self,
        config: TransformerConfig,
        patterns: tuple[PatternSpec, ...],
        *,
        cross: bool,
        bidirectional: bool,
        mechanisms: tuple[MechanismSpec, ...] | None = None,
    ) -> None:
        super().__init__()
        self.patterns = patterns
        head_dim = config.d_model // config.num_heads
        dims = MechanismDims(config.num_heads, head_dim, head_dim, config.max_positions, config.attention_dropout, config.backend)
        modules = [None] * len(patterns) if mechanisms is None else [spec.build(dims) for spec in mechanisms]
        for index, (pattern, module) in enumerate(zip(patterns, modules)):
            if module is not None and pattern.is_causal and not module.supports_causal:
                raise ValueError(
                    f"Layer {index} has the causal pattern {pattern} but its attention mechanism "
                    f"{mechanisms[index]} has no causal variant; use it in an encoder, or pick a causal one"
                )
        self.layers = nn.ModuleList(
            TransformerLayer(
                config.d_model,
                config.num_heads,
                config.feed_forward_dim,
                dropout=config.dropout,
                attention_dropout=config.attention_dropout,
                activation=config.activation,
                norm_first=config.norm_first,
                cross_attention=cross,
                score=config.score,
                backend=config.backend,
                layer_norm_eps=config.layer_norm_eps,
                mechanism=module,
            )
            for module in modules
        )
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if config.norm_first else None
        self.position_bias: nn.Module | None = None
        self.rotary: nn.Module | None = None
        if config.position == "relative":
            self.position_bias = RelativePositionBias(
                config.num_heads, config.relative_buckets, config.relative_max_distance, bidirectional=bidirectional
            )
        elif config.position == "alibi":
            self.position_bias = ALiBi(config.num_heads)
        elif config.position == "rotary":
            self.rotary = RotaryEmbedding(config.d_model // config.num_heads)

    def context(self, graph: AttentionGraph, query_positions: Tensor, key_positions: Tensor) -> AttentionContext:
        bias = None
        if self.position_bias is not None:
            bias = self.position_bias(graph, query_positions, key_positions)
        return AttentionContext(graph, bias, query_positions)

    def full_contexts(self, lengths: Tensor, slots: int, positions: Tensor | None = None) -> list[AttentionContext]:
        """Self-attention contexts of right-padded sequences ``[B]`` lengths in ``slots``;
        ``positions`` ``[B * L]`` position ids of the nodes (default ``0..L-1`` in every row) feed
        the relative / ALiBi biases and rotary."""
        if positions is None:
            positions = torch.arange(slots, device=lengths.device).repeat(lengths.numel())  # [B * L]
        made: dict[PatternSpec, AttentionContext] = {}
        for spec in self.patterns:
            if spec not in made:
                graph = sequence_batch(spec, lengths, query_slots=slots, device=lengths.device)
                made[spec] = self.context(graph, positions, positions)
                made[spec].layout = SequenceLayout(lengths, lengths, causal=spec.is_causal)
        return [made[spec] for spec in self.patterns]

    def cached_contexts(self, state: "_DecodingState", positions: Tensor, active: Tensor, row_of: Tensor) -> list[AttentionContext]:
        """Self-attention contexts for new query nodes at ``positions`` ``[R]`` of rows ``row_of``
        ``[R]`` attending the cache slots (inactive nodes -- padding -- attend nothing)."""
        slots = state.slots
        key_positions = torch.arange(slots, device=positions.device).repeat(state.batch)  # [B * T]
        made: dict[PatternSpec, AttentionContext] = {}
        for spec in self.patterns:
            if spec not in made:
                pattern = spec.build(slots, device=positions.device)
                rows = torch.where(active, positions, 0)
                graph = gather_rows(pattern, rows, row_of * slots, state.batch * slots)
                if not bool(active.all()):
                    graph = _drop_queries(graph, ~active)
                made[spec] = self.context(graph, positions, key_positions)
        return [made[spec] for spec in self.patterns]

    def forward(
        self,
        x: Tensor,
        contexts: list[AttentionContext],
        *,
        memory: Tensor | None = None,
        cross_context: AttentionContext | None = None,
        caches: list[LayerCache] | None = None,
        cache_slots: Tensor | None = None,
    ) -> Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(
                x,
                contexts[index],
                memory=memory,
                cross_context=cross_context,
                rotary=self.rotary,
                cache=None if caches is None else caches[index],
                cache_slots=cache_slots,
            )
        return self.final_norm(x) if self.final_norm is not None else x

    def check_causal(self, what: str) -> None:
        for index, spec in enumerate(self.patterns):
            if not spec.is_causal:
                raise ValueError(
                    f"{what} needs a causal self-attention pattern (no query may attend a later "
                    f"position), but layer {index} uses {str(spec)!r}; add causal=True to it"
                )


def _drop_queries(graph: AttentionGraph, drop: Tensor) -> AttentionGraph:
    """Remove every edge of the queries with ``drop[query]`` (``[Nq]`` bool)."""
    keep = ~drop[graph.row]
    counts = torch.where(drop, 0, graph.degrees)
    crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    rows = graph.row[keep]
    out = AttentionGraph(
        crow, graph.col[keep], graph.num_queries, graph.num_keys,
        head_mask=None if graph.head_mask is None else graph.head_mask[keep], validate=False,
    )
    out.cached("row", lambda: rows)
    return out


@dataclass
class _DecodingState:
    """Key/value caches and bookkeeping of incremental decoding (opaque to generate())."""

    caches: list[LayerCache]
    lengths: Tensor  # [B] tokens already in each row's cache (= position of the next token)
    slots: int  # T: cache slots per row
    source_lengths: Tensor | None = None  # [B] encoder-decoder only
    source_slots: int = 0
    source_ids: Tensor | None = None  # [B, S] (copy mechanism)
    output_size: int = 0  # logits width
    memory: Tensor | None = None  # [B * S, E] encoder output (copy mechanism)

    @property
    def batch(self) -> int:
        return self.lengths.numel()

    def reorder(self, index: Tensor) -> "_DecodingState":
        index = index.to(self.lengths.device)
        for cache in self.caches:
            cache.reorder(index)
        self.lengths = self.lengths.index_select(0, index)
        if self.source_lengths is not None:
            self.source_lengths = self.source_lengths.index_select(0, index)
        if self.source_ids is not None:
            self.source_ids = self.source_ids.index_select(0, index)
        if self.memory is not None:
            memory = self.memory.view(-1, self.source_slots, self.memory.size(-1))
            self.memory = memory.index_select(0, index).flatten(0, 1)
        return self


def _new_caches(stack: _Stack, batch: int, slots: int, like: Tensor, source_slots: int = 0) -> list[LayerCache]:
    caches = []
    for layer in stack.layers:
        attn = layer.self_attn
        kv = KeyValueCache(batch, slots, attn.num_heads, attn.head_dim, attn.value_head_dim, like)
        caches.append(LayerCache(kv, source_slots=source_slots))
    return caches


def _output_layer(config: TransformerConfig, embedding: nn.Embedding) -> nn.Linear:
    head = nn.Linear(config.d_model, config.vocab_size, bias=False)
    if config.tie_embeddings:
        head.weight = embedding.weight
    else:
        nn.init.normal_(head.weight, std=config.d_model**-0.5)
    return head


# ---------------------------------------------------------------------- models
class Encoder(nn.Module):
    """Token ids ``[B, L]`` -- or, with ``config.input_features``, :class:`Vectors` -- -> hidden
    states ``[B, L, E]`` through ``num_layers`` blocks with the ``encoder_pattern``
    self-attention (bidirectional positions).

    Args:
        config: the model config (reads ``source_vocab_size`` when ``source=True``, else
            ``vocab_size``; ``input_features`` for vector inputs).
        source: embed with the source vocabulary (the encoder of an encoder-decoder).
        embedding: an existing token embedding to share.
    """

    def __init__(self, config: TransformerConfig, *, source: bool = False, embedding: nn.Embedding | None = None) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = (config.source_vocab_size or config.vocab_size) if source else config.vocab_size
        if config.input_features is not None:
            if embedding is not None:
                raise ValueError("An encoder that reads vectors (input_features) has no token embedding to share")
            self.embedding: nn.Module = _VectorEmbedding(config)
        else:
            self.embedding = _Embedding(config, self.vocab_size, embedding)
        self.stack = _Stack(
            config, config.layer_patterns("encoder", config.num_layers), cross=False, bidirectional=True,
            mechanisms=config.layer_attention("encoder", config.num_layers),
        )

    @property
    def reads_vectors(self) -> bool:
        """True when the inputs are :class:`Vectors` (``config.input_features`` is set)."""
        return self.config.input_features is not None

    def forward(self, inputs: Tensor | Vectors, positions: Tensor | None = None) -> Tensor:
        """``inputs`` -- ids ``[B, L]`` int64, right-padded with ``pad_id``, or :class:`Vectors` --
        -> ``[B, L, E]`` (rows at padded slots are not meaningful); ``positions``: optional
        position ids, see :meth:`encode`."""
        return self.encode(inputs, positions=positions)[0]

    def encode(
        self, inputs: Tensor | Vectors, *, positions: Tensor | None = None, unknown_to_unk: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``(hidden [B, L, E], lengths [B])``.

        ``inputs``: token ids ``[B, L]`` right-padded with ``pad_id``; ids ``>= vocab`` become
        ``unk_id`` if ``unknown_to_unk`` (the copy mechanism's extended source ids), else raise.
        With ``config.input_features = F``: :class:`Vectors` ``(features [B, L, F], lengths [B])``,
        or a float tensor ``[B, L, F]`` of full rows.

        ``positions``: ``[B, L]`` non-negative int64 position ids (as Hugging Face's
        ``position_ids``), e.g. restarting in every segment or giving each digit its place value
        (Abacus embeddings, McLeish et al. 2024); they replace ``0..L-1`` in the absolute
        embedding, the relative / ALiBi biases and rotary. Values at padded slots are ignored.
        """
        x, lengths, positions = self.embed(inputs, positions=positions, unknown_to_unk=unknown_to_unk)
        batch, length = positions.shape
        contexts = self.stack.full_contexts(lengths, length, positions.reshape(-1))
        return self.stack(x, contexts).view(batch, length, -1), lengths

    def embed(
        self, inputs: Tensor | Vectors, *, positions: Tensor | None = None, unknown_to_unk: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The embedded inputs as nodes ``[B * L, E]``, ``lengths [B]`` and the position ids
        ``[B, L]`` (arguments as :meth:`encode`)."""
        if self.reads_vectors:
            if isinstance(inputs, Tensor) and not inputs.dtype.is_floating_point:
                raise TypeError(
                    f"This encoder reads vectors (input_features={self.config.input_features}), got token ids "
                    f"{inputs.dtype} {list(inputs.shape)}; pass Vectors(features [B, L, F], lengths [B])"
                )
            values, lengths = _check_vectors(inputs, self.config.input_features)
            batch, length = values.shape[:2]
        else:
            if isinstance(inputs, Vectors) or (isinstance(inputs, Tensor) and inputs.dtype.is_floating_point):
                raise TypeError(
                    "This encoder reads token ids [B, L]; for vector inputs set input_features in the "
                    "TransformerConfig"
                )
            lengths = _lengths(inputs, self.config.pad_id, "ids")
            values = torch.where(inputs >= self.vocab_size, self.config.unk_id, inputs) if unknown_to_unk else inputs
            _check_ids(values, self.vocab_size, "ids")
            batch, length = values.shape
        if positions is None:
            positions = torch.arange(length, device=lengths.device).expand(batch, length)
        else:
            positions = _check_positions(positions, lengths, length, self.config)
        return self.embedding(values, positions).reshape(batch * length, -1), lengths, positions

    @torch.no_grad()
    def attention_weights(self, inputs: Tensor | Vectors, *, positions: Tensor | None = None) -> list[tuple[AttentionGraph, Tensor]]:
        """The self-attention of every layer, for plots: one ``(graph, weights [num_edges, H])``
        per layer, the graph over the ``B * L`` nodes (node ``b * L + i``) and each edge's
        softmax weight per head (every query's weights sum to 1). Softmax layers only."""
        x, lengths, positions = self.embed(inputs, positions=positions)
        contexts = self.stack.full_contexts(lengths, positions.size(1), positions.reshape(-1))
        out = []
        for layer, context in zip(self.stack.layers, contexts):
            out.append((context.graph, layer.self_attention_weights(x, context, self.stack.rotary)))
            x = layer(x, context, rotary=self.stack.rotary)
        return out


def _check_positions(positions: Tensor, lengths: Tensor, slots: int, config: TransformerConfig) -> Tensor:
    """Validated position ids ``[B, L]`` of sequences of ``lengths`` ``[B]`` in ``L = slots``
    (padded slots set to 0)."""
    shape = (lengths.numel(), slots)
    if not isinstance(positions, Tensor) or tuple(positions.shape) != shape or positions.dtype not in (torch.int32, torch.int64):
        got = f"{positions.dtype} {list(positions.shape)}" if isinstance(positions, Tensor) else type(positions).__name__
        raise ValueError(f"Expected positions as an integer tensor of the inputs' shape {list(shape)}, got {got}")
    positions = positions.to(device=lengths.device, dtype=torch.long)
    real = torch.arange(slots, device=lengths.device) < lengths[:, None]
    positions = torch.where(real, positions, 0)
    low, high = (int(positions.min()), int(positions.max())) if positions.numel() else (0, 0)
    if (low < 0 or (config.position == "learned" and high >= config.max_positions)):
        limit = f"[0, {config.max_positions - 1}] (max_positions)" if config.position == "learned" else ">= 0"
        raise ValueError(f"Expected positions {limit}, got values in [{low}, {high}]")
    return positions


@dataclass
class DecoderPass:
    """A teacher-forced pass of :class:`Decoder` over ``B`` sequences of ``T`` slots, as nodes.

    Attributes:
        hidden: ``[B * T, E]`` final decoder states (after the final norm of a pre-norm stack).
        inputs: ``[B * T, E]`` embedded decoder inputs.
        memory: ``[B * S, E]`` encoder states as nodes, or None without cross-attention.
        cross: the cross-attention context (graph from target slots to source slots), or None.
    """

    hidden: Tensor
    inputs: Tensor
    memory: Tensor | None
    cross: AttentionContext | None


class Decoder(nn.Module):
    """Token embedding + ``N`` blocks of causal self-attention (the ``decoder_pattern``), optional
    cross-attention to an encoder output, feed-forward + output layer (tied to the embedding with
    ``tie_embeddings``).

    ``forward(tgt_in [B, T], memory [B, S, E], source_lengths [B]) -> logits [B, T, V]``; without
    cross-attention (``cross=False``, a decoder-only LM) ``forward(tgt_in)``.

    Args:
        config: the model config (reads ``vocab_size``, ``decoder_pattern``, ...).
        num_layers: number of blocks (default ``config.decoder_layers``).
        cross: whether the blocks cross-attend to an encoder output.
        embedding: an existing token embedding to share.
    """

    def __init__(
        self,
        config: TransformerConfig,
        num_layers: int | None = None,
        *,
        cross: bool = True,
        embedding: nn.Embedding | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.cross = cross
        self.embedding = _Embedding(config, config.vocab_size, embedding)
        layers = config.decoder_layers if num_layers is None else num_layers
        self.stack = _Stack(
            config, config.layer_patterns("decoder", layers), cross=cross, bidirectional=False,
            mechanisms=config.layer_attention("decoder", layers),
        )
        self.output = _output_layer(config, self.embedding.tokens)

    def forward(self, tgt_in: Tensor, memory: Tensor | None = None, source_lengths: Tensor | None = None) -> Tensor:
        """Teacher-forced logits ``[B, T, V]``.

        Args:
            tgt_in: ``[B, T]`` decoder input ids, right-padded.
            memory: ``[B, S, E]`` encoder output (with cross-attention).
            source_lengths: ``[B]`` real source lengths (default: all ``S``).
        """
        batch, slots = tgt_in.shape
        return self.output(self.run(tgt_in, memory, source_lengths).hidden).view(batch, slots, -1)

    def run(
        self,
        tgt_in: Tensor,
        memory: Tensor | None = None,
        source_lengths: Tensor | None = None,
        *,
        unknown_to_unk: bool = False,
    ) -> DecoderPass:
        """The teacher-forced pass, returning states as nodes (see :class:`DecoderPass`)."""
        target_lengths = _lengths(tgt_in, self.config.pad_id, "tgt_in")
        batch, slots = tgt_in.shape
        positions = torch.arange(slots, device=tgt_in.device)
        x = self.embed_ids(tgt_in, positions.expand(batch, slots), unknown_to_unk=unknown_to_unk).reshape(batch * slots, -1)
        contexts = self.stack.full_contexts(target_lengths, slots)
        if not self.cross:
            if memory is not None:
                raise ValueError("This decoder has no cross-attention; do not pass 'memory'")
            return DecoderPass(self.stack(x, contexts), x, None, None)
        if not isinstance(memory, Tensor) or memory.dim() != 3 or memory.size(0) != batch:
            got = list(memory.shape) if isinstance(memory, Tensor) else type(memory).__name__
            raise ValueError(f"Expected 'memory' of shape [B, S, E] with B = {batch} (the encoder output), got {got}")
        source_slots = memory.size(1)
        if source_lengths is None:
            source_lengths = torch.full((batch,), source_slots, dtype=torch.long, device=tgt_in.device)
        cross_graph = sequence_batch(
            self.config.cross_pattern, target_lengths, source_lengths,
            query_slots=slots, key_slots=source_slots, device=tgt_in.device,
        )
        cross = AttentionContext(cross_graph)
        memory = memory.reshape(batch * source_slots, -1)
        hidden = self.stack(x, contexts, memory=memory, cross_context=cross)
        return DecoderPass(hidden, x, memory, cross)

    def embed_ids(self, ids: Tensor, positions: Tensor, *, unknown_to_unk: bool) -> Tensor:
        """Token + position embedding of ``ids`` at ``positions`` (same shape) -> ``[..., E]``;
        ids ``>= vocab_size`` become ``unk_id`` if ``unknown_to_unk``, else raise."""
        if unknown_to_unk:
            ids = torch.where(ids >= self.config.vocab_size, self.config.unk_id, ids)
        _check_ids(ids, self.config.vocab_size, "target ids")
        return self.embedding(ids, positions)


class EncoderDecoder(nn.Module):
    """Sequence-to-sequence Transformer (Vaswani et al. 2017) on the graphattn core.

    ``forward(src [B, S], tgt_in [B, T]) -> logits [B, T, V]``: teacher-forced next-token scores
    for ``tgt_in = [BOS, y1, ..., y_{T-1}]`` (both right-padded with ``pad_id``).

    With ``config.copy`` (pointer-generator, See et al. 2017), source ids may be **extended**:
    a source word outside the target vocabulary gets an id ``V + k`` (the ``k``-th unknown word
    of that example; the encoder and decoder embed such ids as ``unk_id``), and the output is
    ``log P(w)`` over ``V_ext = max(V, max source id + 1)`` words, where
    ``P(w) = p_gen * P_vocab(w) + (1 - p_gen) * sum_{j: src_j = w} a_j`` mixes generating from the
    vocabulary with copying source position ``j`` by a dedicated copy attention ``a``; ``p_gen``
    is a sigmoid of the decoder state, the copy context and the decoder input. Unknown source
    words can so be reproduced.

    Decoding: :func:`graphattn.decoding.generate(model, src, ...) <graphattn.decoding.generate>`.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config, source=True)
        shared = self.encoder.embedding.tokens if config.share_embeddings else None
        self.decoder = Decoder(config, cross=True, embedding=shared)
        self.decoder.stack.check_causal("An autoregressive decoder")
        if config.copy:
            self.copy_attention = MultiheadAttention(config.d_model, 1, backend=config.backend)
            self.copy_gate = nn.Linear(3 * config.d_model, 1)
        else:
            self.copy_attention, self.copy_gate = None, None

    bos_id = property(lambda self: self.config.bos_id)
    eos_id = property(lambda self: self.config.eos_id)
    pad_id = property(lambda self: self.config.pad_id)

    # ------------------------------------------------------------------ training
    def forward(self, src: Tensor | Vectors | tuple, tgt_in: Tensor, source_positions: Tensor | None = None) -> Tensor:
        """Teacher-forced scores.

        Args:
            src: ``[B, S]`` source ids (extended ids allowed with ``copy``), right-padded, or
                :class:`Vectors` with ``config.input_features``; or the pair ``(source,
                source position ids)`` (as ``generate`` takes it).
            tgt_in: ``[B, T]`` decoder inputs ``[BOS, y1, ...]``, right-padded.
            source_positions: optional ``[B, S]`` position ids of the source tokens
                (see :meth:`Encoder.encode`); the decoder's positions stay ``0..T-1``.

        Returns:
            ``[B, T, V]`` logits; with ``copy``, ``[B, T, V_ext]`` log-probabilities.
        """
        if not isinstance(src, (Tensor, Vectors)):
            if source_positions is not None:
                raise ValueError("Give source position ids either in the src pair or as source_positions, not both")
            src, source_positions = _source_inputs(src)
        memory, source_lengths = self.encoder.encode(src, positions=source_positions, unknown_to_unk=self.config.copy)
        if tgt_in.dim() != 2 or tgt_in.size(0) != memory.size(0):
            raise ValueError(
                f"Expected the source and tgt_in [B, T] with one B, got B = {memory.size(0)} sources and "
                f"tgt_in {list(tgt_in.shape)}"
            )
        run = self.decoder.run(tgt_in, memory, source_lengths, unknown_to_unk=self.config.copy)
        scores = self._scores(run.hidden, run.inputs, run.memory, run.cross, src, _extended_size(self.config, src))
        return scores.view(tgt_in.size(0), tgt_in.size(1), -1)

    def _scores(self, hidden: Tensor, inputs: Tensor, memory: Tensor, cross: AttentionContext, src: Tensor, output_size: int) -> Tensor:
        """Decoder states ``[Nq, E]`` -> logits ``[Nq, V]`` (log-probabilities ``[Nq, V_ext]`` with copy)."""
        logits = self.decoder.output(hidden)
        if self.copy_attention is None:
            return logits
        attn = self.copy_attention
        q = attn.project_query(hidden)
        k, v = attn.project_key_value(memory, memory)
        heads_out, weights = attn.attend(q, k, v, cross.graph, need_weights=True)  # weights [E, 1]
        context = attn.project_output(heads_out, cross.graph)  # [Nq, E]
        gate = self.copy_gate(torch.cat([hidden, context, inputs], -1))  # [Nq, 1]
        graph = cross.graph
        source_words = src.reshape(-1)[graph.col]  # [E] the word each edge points at
        copy = hidden.new_zeros(hidden.size(0), output_size).index_put_(
            (graph.row, source_words), weights[:, 0], accumulate=True
        )  # [Nq, V_ext]
        generate = F.log_softmax(logits, -1)
        if output_size > logits.size(-1):
            generate = F.pad(generate, (0, output_size - logits.size(-1)), value=float("-inf"))
        copy_log = torch.log(copy.clamp_min(1e-30))
        return torch.logaddexp(F.logsigmoid(gate) + generate, F.logsigmoid(-gate) + copy_log)

    # ------------------------------------------------------------------ decoding
    def start_decoding(self, inputs: Tensor | Vectors | tuple, *, max_new_tokens: int) -> DecodingStart:
        """Encode ``inputs`` -- source ids ``[B, S]`` (or :class:`Vectors` with
        ``input_features``), or the pair ``(source, source position ids [B, S])`` -- and score
        the first target token after BOS."""
        src, source_positions = _source_inputs(inputs)
        memory, source_lengths = self.encoder.encode(src, positions=source_positions, unknown_to_unk=self.config.copy)
        batch, source_slots = memory.shape[:2]
        device = memory.device
        slots = 1 + max_new_tokens
        state = _DecodingState(
            caches=_new_caches(self.decoder.stack, batch, slots, memory, source_slots),
            lengths=torch.zeros(batch, dtype=torch.long, device=device),
            slots=slots,
            source_lengths=source_lengths,
            source_slots=source_slots,
            source_ids=src if self.config.copy else None,
            output_size=_extended_size(self.config, src),
            memory=memory.reshape(batch * source_slots, -1) if self.config.copy else None,
        )
        bos = torch.full((batch,), self.config.bos_id, dtype=torch.long, device=device)
        logits = self._step(bos, state, memory.reshape(batch * source_slots, -1))
        return DecodingStart(logits, state, bos[:, None], torch.ones(batch, dtype=torch.long, device=device))

    def decode_step(self, tokens: Tensor, state: _DecodingState) -> tuple[Tensor, _DecodingState]:
        """``tokens`` ``[B]`` (the last chosen token of every row) -> scores ``[B, V]`` of the next."""
        return self._step(tokens, state, None), state

    def reorder_state(self, state: _DecodingState, index: Tensor) -> _DecodingState:
        return state.reorder(index)

    def _step(self, tokens: Tensor, state: _DecodingState, memory: Tensor | None) -> Tensor:
        batch, slots = state.batch, state.slots
        if bool((state.lengths >= slots).any()):
            raise ValueError(f"Decoding ran past its {slots} cache slots; raise max_new_tokens in start_decoding")
        positions = state.lengths
        rows = torch.arange(batch, device=tokens.device)
        x = self.decoder.embed_ids(tokens, positions, unknown_to_unk=self.config.copy)  # [B, E]
        active = torch.ones(batch, dtype=torch.bool, device=tokens.device)
        contexts = self.decoder.stack.cached_contexts(state, positions, active, rows)
        cross = AttentionContext(self._cross_rows(state, positions, rows))
        hidden = self.decoder.stack(
            x, contexts, memory=memory, cross_context=cross, caches=state.caches, cache_slots=rows * slots + positions
        )
        state.lengths = state.lengths + 1
        if self.copy_attention is None:
            return self.decoder.output(hidden)
        return self._scores(hidden, x, state.memory, cross, state.source_ids, state.output_size)

    def _cross_rows(self, state: _DecodingState, positions: Tensor, rows: Tensor) -> AttentionGraph:
        """Cross-attention graph for new decoder tokens at ``positions`` of ``rows`` over the
        ``B * S`` encoder outputs: row ``b``'s pattern built for ``(T, S_b)``."""
        spec, source_slots = self.config.cross_pattern, state.source_slots
        lengths = state.source_lengths[rows]
        if spec == PatternSpec("full"):
            counts = lengths
            crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            new_row = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), counts)
            col = torch.arange(new_row.numel(), device=rows.device) - crow[:-1][new_row] + (rows * source_slots)[new_row]
            graph = AttentionGraph(crow, col, rows.numel(), state.batch * source_slots, validate=False)
            graph.cached("row", lambda: new_row)
            return graph
        pieces = [embed(spec.build(state.slots, int(s), device=rows.device), state.slots, source_slots) for s in lengths.tolist()]
        table = AttentionGraph.batch(pieces)  # row r's pattern in block r
        index = torch.arange(rows.numel(), device=rows.device)
        graph = gather_rows(table, index * state.slots + positions, (rows - index) * source_slots, state.batch * source_slots)
        return graph


def _source_inputs(inputs) -> tuple[Tensor | Vectors, Tensor | None]:
    if isinstance(inputs, (Tensor, Vectors)):
        return inputs, None
    if (
        isinstance(inputs, (tuple, list)) and len(inputs) == 2 and isinstance(inputs[0], (Tensor, Vectors))
        and isinstance(inputs[1], Tensor)
    ):
        return inputs[0], inputs[1]
    raise TypeError(
        "Expected the encoder-decoder's inputs as source ids [B, S] (or Vectors), or a pair (source, "
        f"source position ids [B, S]), got {type(inputs).__name__}"
    )


def _needs_token_ids(config: TransformerConfig, model: str) -> None:
    if config.input_features is not None:
        raise ValueError(
            f"{model} predicts its own input tokens, so it reads token ids; input_features="
            f"{config.input_features} is for encoders of vectors (Encoder, EncoderDecoder, SequenceClassifier)"
        )


def _extended_size(config: TransformerConfig, src: Tensor | Vectors) -> int:
    if not config.copy:
        return config.vocab_size
    return max(config.vocab_size, int(src.max()) + 1 if src.numel() else 0)


class CausalLM(nn.Module):
    """Decoder-only (GPT-like) language model: ``num_layers`` blocks with the causal
    ``decoder_pattern`` and no cross-attention.

    ``forward(ids [B, L]) -> logits [B, L, V]`` (next-token scores at every position).
    Decoding: ``generate(model, prompts [B, L], ...)`` with right-padded prompts of any lengths;
    every prompt continues at its own length.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        _needs_token_ids(config, "CausalLM")
        self.config = config
        self.decoder = Decoder(config, config.num_layers, cross=False)
        self.decoder.stack.check_causal("A causal language model")

    bos_id = property(lambda self: self.config.bos_id)
    eos_id = property(lambda self: self.config.eos_id)
    pad_id = property(lambda self: self.config.pad_id)

    def forward(self, ids: Tensor) -> Tensor:
        """``ids`` ``[B, L]`` right-padded -> logits ``[B, L, V]``."""
        return self.decoder(ids)

    def start_decoding(self, inputs: Tensor, *, max_new_tokens: int) -> DecodingStart:
        """Run the prompts ``[B, L]`` (right-padded, each at least one token) into the cache and
        score each one's next token."""
        prompts = inputs
        lengths = _lengths(prompts, self.config.pad_id, "prompts")
        if bool((lengths == 0).any()):
            raise ValueError("Every prompt needs at least one token (e.g. BOS); got an empty row")
        batch, prompt_slots = prompts.shape
        slots = prompt_slots + max_new_tokens
        x = self.decoder.embedding.tokens.weight  # for dtype / device
        state = _DecodingState(
            caches=_new_caches(self.decoder.stack, batch, slots, x),
            lengths=torch.zeros(batch, dtype=torch.long, device=prompts.device),
            slots=slots,
            output_size=self.config.vocab_size,
        )
        positions = torch.arange(prompt_slots, device=prompts.device).repeat(batch)  # [B * L]
        rows = torch.arange(batch, device=prompts.device).repeat_interleave(prompt_slots)
        active = positions < lengths[rows]
        hidden = self._run(prompts.reshape(-1), positions, active, rows, state)
        state.lengths = lengths.clone()
        last = torch.arange(batch, device=prompts.device) * prompt_slots + lengths - 1
        logits = self.decoder.output(hidden[last])
        return DecodingStart(logits, state, prompts, lengths)

    def decode_step(self, tokens: Tensor, state: _DecodingState) -> tuple[Tensor, _DecodingState]:
        """``tokens`` ``[B]`` -> next-token logits ``[B, V]``."""
        if bool((state.lengths >= state.slots).any()):
            raise ValueError(f"Decoding ran past its {state.slots} cache slots; raise max_new_tokens")
        rows = torch.arange(state.batch, device=tokens.device)
        active = torch.ones_like(rows, dtype=torch.bool)
        hidden = self._run(tokens, state.lengths, active, rows, state)
        state.lengths = state.lengths + 1
        return self.decoder.output(hidden), state

    def reorder_state(self, state: _DecodingState, index: Tensor) -> _DecodingState:
        return state.reorder(index)

    def _run(self, ids: Tensor, positions: Tensor, active: Tensor, rows: Tensor, state: _DecodingState) -> Tensor:
        """New nodes (``ids``, ``positions``, ``rows`` ``[R]``) through the stack with the cache."""
        ids = torch.where(active, ids, self.config.pad_id)
        x = self.decoder.embed_ids(ids, positions, unknown_to_unk=False)
        contexts = self.decoder.stack.cached_contexts(state, positions, active, rows)
        slots = rows * state.slots + positions
        # inactive (padding) nodes write into slots that real tokens overwrite before anyone reads them
        return self.decoder.stack(x, contexts, caches=state.caches, cache_slots=slots)


class MaskedLM(nn.Module):
    """Encoder-only (BERT-like) masked language model: :class:`Encoder` + a tied output layer.

    ``forward(ids [B, L]) -> logits [B, L, V]``; train on :func:`mask_tokens` output with
    ``F.cross_entropy(..., ignore_index=-100)``. Needs ``config.mask_id``.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if config.mask_id is None:
            raise ValueError("MaskedLM needs config.mask_id (the [MASK] token id)")
        _needs_token_ids(config, "MaskedLM")
        self.config = config
        self.encoder = Encoder(config)
        self.transform = nn.Sequential(nn.Linear(config.d_model, config.d_model), nn.GELU(), nn.LayerNorm(config.d_model))
        self.output = _output_layer(config, self.encoder.embedding.tokens)

    def forward(self, ids: Tensor) -> Tensor:
        return self.output(self.transform(self.encoder(ids)))


def mask_tokens(
    ids: Tensor,
    config: TransformerConfig,
    *,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
    special_ids: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masking: choose ``probability`` of the real tokens; of those 80% become
    ``mask_id``, 10% a random token, 10% stay.

    Args:
        ids: ``[B, L]`` right-padded token ids.
        config: reads ``pad_id``, ``mask_id``, ``vocab_size``.
        probability: share of real (non-special) tokens to predict.
        generator: random source (default: torch's global RNG).
        special_ids: ids never chosen (default pad, bos, eos, mask).

    Returns:
        ``(inputs [B, L], labels [B, L])`` with ``labels = -100`` where nothing is predicted.
    """
    if config.mask_id is None:
        raise ValueError("mask_tokens needs config.mask_id")
    if not 0.0 < probability < 1.0:
        raise ValueError(f"Expected 0 < probability < 1, got {probability}")
    special = special_ids if special_ids is not None else (config.pad_id, config.bos_id, config.eos_id, config.mask_id)
    candidate = torch.ones_like(ids, dtype=torch.bool)
    for token in special:
        candidate &= ids != token
    draw = torch.rand(ids.shape, generator=generator, device=ids.device)
    chosen = candidate & (draw < probability)
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    kind = torch.rand(ids.shape, generator=generator, device=ids.device)
    random_ids = torch.randint(config.vocab_size, ids.shape, generator=generator, device=ids.device)
    inputs = torch.where(chosen & (kind < 0.8), config.mask_id, ids)
    inputs = torch.where(chosen & (kind >= 0.8) & (kind < 0.9), random_ids, inputs)
    return inputs, labels
