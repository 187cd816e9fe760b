"""Pointer networks (Vinyals, Fortunato & Jaitly, 2015): the output vocabulary is the input
positions, and the attention over the encoded inputs *is* the output distribution.

A batch holds ``B`` point sets ``points [B, N, F]`` (right-padded, ``lengths [B]`` real points
per row). The model prepends an extra input ``x0``, the END symbol, so there are ``N + 1``
positions: position ``0`` is END and position ``i + 1`` is point ``i`` (the convention of
:mod:`graphattn.data.geometry`). Every decoder step scores the positions with additive
attention, ``u_j = v . tanh(W1 e_j + W2 d_i)`` over the encoder outputs ``e_j`` and the decoder
state ``d_i``, and ``softmax(u)`` is the distribution of the next output.

* **Encoder** ``"lstm"`` (the original): ``x0`` (a learned vector) and ``Linear(F, E)`` of
  every point read by an LSTM. ``"transformer"``: the graphattn
  :class:`~graphattn.models.Encoder` on the sparse core with any self-attention pattern
  (``config.pattern``) over ``N + 1`` vectors ``[x, 0]`` for the points and ``[0, 1]`` for
  ``x0`` (so ``x0``'s embedding is learned), with sinusoidal positions ``0..N`` (the tasks'
  answers depend on the input order: the hull starts at the lowest index, the tour at point 0).
* **Decoder** ``"lstm"`` (the original): an LSTM whose first input is a learned GO vector and
  whose next inputs are the embedded coordinates of the point just chosen, started from the
  LSTM encoder's final state (or, after a Transformer encoder, from a projection of the mean
  encoder output). ``"transformer"``: causal self-attention over the steps so far and
  cross-attention to the encoder outputs (graphattn's Transformer blocks), fed the encoder
  output of the point just chosen plus sinusoidal step positions; incremental decoding reruns
  the (short) prefix, so it needs no cache.
* **Masks** (``config.mask``), applied to the scores in training and decoding alike (the
  teacher-forced log-probabilities equal those of step-by-step decoding): ``"tsp"`` -- every
  point exactly once, END only after all of them; ``"hull"`` -- every point at most once except
  the first, which may be repeated to close the polygon once at least three points (or all, if
  fewer) are chosen, and END only after closing; ``None`` -- any real position any time. Padded
  positions can never be chosen. Every state leaves at least one position allowed.

:class:`PointerNetwork` implements :class:`graphattn.decoding.Decodable`, so
``generate(model, points, max_new_tokens=N + 2, num_beams=k)`` decodes it greedily or by beam
search (``eos_id`` = END = 0, ``pad_id`` = -1); pass ``(points, lengths)`` for padded batches.
Rows never interact, so an example decodes the same alone or in any batch.

Example:
    >>> import torch
    >>> from graphattn.decoding import generate
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = PointerNetwork(PointerConfig(hidden_size=16, mask="tsp"))
    >>> points = torch.rand(2, 5, 2)
    >>> targets = torch.tensor([[1, 3, 2, 5, 4, 0], [1, 2, 3, 4, 5, 0]])
    >>> model(points, targets).shape                      # log-probabilities over END + 5 points
    torch.Size([2, 6, 6])
    >>> bool(torch.isfinite(model.loss(points, targets)))
    True
    >>> out = generate(model, points, max_new_tokens=6)
    >>> sorted(out.sequences[0, :5].tolist()), out.sequences[0, 5].item()   # a permutation, then END
    ([1, 2, 3, 4, 5], 0)
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.models.decodable import DecodingStart
from graphattn.models.transformer import Encoder, TransformerConfig, Vectors, _check_vectors, _Stack
from graphattn.nn.positional import SinusoidalPositionalEmbedding
from graphattn.nn.transformer import AttentionContext
from graphattn.patterns.spec import sequence_batch

__all__ = ["PointerConfig", "PointerNetwork", "pointer_loss", "pointer_mask", "POINTER_MASKS", "POINTER_ENCODERS", "END", "PAD"]

END = 0
"""The END position (the extra input ``x0``); point ``i`` is position ``i + 1``."""
PAD = -1
"""Padding of target and output sequences."""
POINTER_MASKS = ("tsp", "hull", None)
"""Values of ``PointerConfig.mask``."""
POINTER_ENCODERS = ("lstm", "transformer")
"""Values of ``PointerConfig.encoder`` / ``PointerConfig.decoder``."""
_POSITIONS = ("sinusoidal", "learned", "none")


@dataclass(frozen=True)
class PointerConfig:
    """Everything that defines a :class:`PointerNetwork`.

    Attributes:
        encoder: ``"lstm"`` (Vinyals et al.) or ``"transformer"`` (graphattn's encoder).
        decoder: ``"lstm"`` or ``"transformer"``; None: the same kind as the encoder.
        input_features: ``F``, values per input point (2 for planar points).
        hidden_size: ``E``, the LSTM size / ``d_model``, also the attention size.
        num_layers: LSTM layers, or Transformer layers (encoder and decoder each).
        num_heads: attention heads of the Transformer parts.
        ff_dim: feed-forward size of the Transformer parts (default ``4 * E``).
        dropout: on input embeddings, between LSTM layers, inside the Transformer blocks.
        pattern: the Transformer encoder's self-attention pattern over the ``N + 1`` positions
            (a :class:`~graphattn.patterns.PatternSpec` string such as ``"full"`` or
            ``"local(window=4)"``).
        position: the Transformer encoder's absolute positions: ``"sinusoidal"``,
            ``"learned"`` or ``"none"`` (then the encoder sees a set: fine for tasks whose answer
            does not depend on the input order).
        norm_first: pre-norm Transformer blocks.
        mask: ``"tsp"``, ``"hull"`` or None (see the module docstring).
        logit_clip: if set, scores become ``C * tanh(u)`` (Bello et al. 2016); None: raw ``u``.
        backend: the graphattn attention backend of the Transformer parts.
    """

    encoder: str = "lstm"
    decoder: str | None = None
    input_features: int = 2
    hidden_size: int = 128
    num_layers: int = 1
    num_heads: int = 4
    ff_dim: int | None = None
    dropout: float = 0.0
    pattern: str = "full"
    position: str = "sinusoidal"
    norm_first: bool = True
    mask: str | None = None
    logit_clip: float | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.encoder not in POINTER_ENCODERS:
            raise ValueError(f"Unknown encoder {self.encoder!r}; expected one of {', '.join(POINTER_ENCODERS)}")
        if self.decoder is not None and self.decoder not in POINTER_ENCODERS:
            raise ValueError(f"Unknown decoder {self.decoder!r}; expected one of {', '.join(POINTER_ENCODERS)} or None")
        if self.mask not in POINTER_MASKS:
            raise ValueError(f"Unknown mask {self.mask!r}; expected 'tsp', 'hull' or None")
        for name in ("input_features", "hidden_size", "num_layers", "num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"Expected '{name}' to be a positive int, got {value!r}")
        if self.position not in _POSITIONS:
            raise ValueError(f"Unknown position {self.position!r}; expected one of {', '.join(_POSITIONS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Expected 0 <= dropout < 1, got {self.dropout}")
        if self.logit_clip is not None and not (isinstance(self.logit_clip, (int, float)) and self.logit_clip > 0):
            raise ValueError(f"Expected logit_clip to be None or a positive number, got {self.logit_clip!r}")
        if "transformer" in (self.encoder, self.decoder_kind):
            self.transformer_config()  # validates heads, pattern, ...

    @property
    def decoder_kind(self) -> str:
        """The decoder actually built (``decoder``, or the encoder's kind)."""
        return self.decoder or self.encoder

    def transformer_config(self) -> TransformerConfig:
        """The :class:`TransformerConfig` of the Transformer parts (``vocab_size`` is unused:
        the encoder reads ``F + 1`` features per position, the last one marking ``x0``)."""
        return TransformerConfig(
            vocab_size=4,
            input_features=self.input_features + 1,
            d_model=self.hidden_size,
            num_heads=self.num_heads,
            num_layers=self.num_layers,
            ff_dim=self.ff_dim,
            dropout=self.dropout,
            norm_first=self.norm_first,
            position=self.position,
            max_positions=4096,
            encoder_pattern=self.pattern,
            decoder_pattern="causal",
            backend=self.backend,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PointerConfig":
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Unknown PointerConfig fields {sorted(unknown)}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------
def pointer_mask(mode: str | None, visited: Tensor, first: Tensor, closed: Tensor, num_points: Tensor) -> Tensor:
    """Which positions may come next, given what was chosen so far.

    Args:
        mode: ``"tsp"``, ``"hull"`` or None.
        visited: ``[..., N + 1]`` bool, position already chosen (column 0, END, is ignored).
        first: ``[...]`` int64, the first point chosen (its position), ``-1`` before any.
        closed: ``[...]`` bool, the first point was chosen again (``"hull"``: the polygon is
            closed).
        num_points: ``[...]`` int64, real points of the row (positions ``1..n``).

    Returns:
        ``[..., N + 1]`` bool, True = allowed. Never all False.

    Example:
        >>> visited = torch.tensor([[False, True, False, False]])
        >>> pointer_mask("tsp", visited, torch.tensor([1]), torch.tensor([False]), torch.tensor([3])).tolist()
        [[False, False, True, True]]
        >>> pointer_mask("hull", torch.tensor([[False, True, True, True]]), torch.tensor([1]),
        ...              torch.tensor([False]), torch.tensor([3])).tolist()    # only the closing point
        [[False, True, False, False]]
    """
    positions = torch.arange(visited.shape[-1], device=visited.device)
    real = (positions >= 1) & (positions <= num_points[..., None])
    is_end = positions == END
    if mode is None:
        return real | is_end
    unvisited = real & ~visited
    count = (visited & (positions >= 1)).sum(-1)
    if mode == "tsp":
        return unvisited | (is_end & (count >= num_points)[..., None])
    if mode == "hull":
        can_close = (first >= 1) & (count >= num_points.clamp(max=3))
        allowed = unvisited | ((positions == first[..., None]) & can_close[..., None])
        return torch.where(closed[..., None], is_end, allowed)
    raise ValueError(f"Unknown mask {mode!r}; expected 'tsp', 'hull' or None")


def _prefix_state(tokens: Tensor, slots: int) -> tuple[Tensor, Tensor, Tensor]:
    """The mask state before every step of teacher forcing.

    ``tokens [B, T]`` (pointer positions, PAD = -1) -> ``visited [B, T, slots]``, ``first
    [B, T]``, ``closed [B, T]``: what :meth:`PointerNetwork._advance` gives after the tokens
    ``tokens[:, :t]``.
    """
    batch, steps = tokens.shape
    is_point = tokens >= 1
    one_hot = F.one_hot(tokens.clamp(min=0), slots).bool() & is_point[..., None]  # [B, T, slots]
    seen = one_hot.long().cumsum(1) - one_hot.long()  # chosen strictly before t
    visited = seen > 0
    step = torch.arange(steps, device=tokens.device)
    first_step = torch.where(is_point, step, steps).amin(1)  # [B], steps if none
    first_token = tokens.gather(1, first_step.clamp(max=steps - 1)[:, None]).squeeze(1)
    has_first = step[None, :] > first_step[:, None]  # [B, T] the first point lies before t
    first = torch.where(has_first, first_token[:, None], -1)
    again = (tokens == first_token[:, None]) & (step[None, :] > first_step[:, None])  # [B, T]
    closed = (again.long().cumsum(1) - again.long()) > 0
    return visited, first, closed


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
@dataclass
class _PointerState:
    """Decoding state (opaque to :func:`graphattn.decoding.generate`); row ``r`` of every
    tensor belongs to row ``r`` of the decoding batch."""

    memory: Tensor  # [R, N + 1, E] encoder outputs
    keys: Tensor  # [R, N + 1, E] W1 e_j
    inputs: Tensor  # [R, N + 1, E] decoder input of each position
    num_points: Tensor  # [R]
    visited: Tensor  # [R, N + 1] bool
    first: Tensor  # [R]
    closed: Tensor  # [R] bool
    hidden: tuple[Tensor, Tensor] | None  # LSTM decoder (h, c), each [layers, R, E]
    history: Tensor  # [R, t] positions chosen so far

    def reorder(self, index: Tensor) -> "_PointerState":
        index = index.to(self.memory.device)
        pick = lambda t: t.index_select(0, index)  # noqa: E731
        hidden = None
        if self.hidden is not None:
            hidden = (self.hidden[0].index_select(1, index), self.hidden[1].index_select(1, index))
        return _PointerState(
            pick(self.memory), pick(self.keys), pick(self.inputs), pick(self.num_points), pick(self.visited),
            pick(self.first), pick(self.closed), hidden, pick(self.history),
        )


class PointerNetwork(nn.Module):
    """A pointer network: points ``[B, N, F]`` -> a sequence of input positions (see the module
    docstring for the conventions, encoders, decoders and masks).

    Args:
        config: a :class:`PointerConfig`.

    Attributes:
        eos_id: END (0), for :func:`graphattn.decoding.generate`.
        pad_id: -1, written after END in generated sequences.

    Shapes:
        ``forward(points [B, N, F], targets [B, T], lengths [B]) -> log_probs [B, T, N + 1]``.
    """

    eos_id = END
    pad_id = PAD

    def __init__(self, config: PointerConfig | None = None) -> None:
        super().__init__()
        config = PointerConfig() if config is None else config
        if not isinstance(config, PointerConfig):
            raise TypeError(f"Expected a PointerConfig, got {type(config).__name__}")
        self.config = config
        size = config.hidden_size
        lstm_dropout = config.dropout if config.num_layers > 1 else 0.0
        self.dropout = nn.Dropout(config.dropout)
        self.embed: nn.Linear | None = None  # point coordinates -> E (the LSTM parts read them)
        if "lstm" in (config.encoder, config.decoder_kind):
            self.embed = nn.Linear(config.input_features, size)
        self.go = nn.Parameter(torch.empty(size).uniform_(-0.1, 0.1))  # the decoder's first input
        self.encoder_lstm: nn.LSTM | None = None
        self.encoder_transformer: Encoder | None = None
        if config.encoder == "lstm":
            self.end = nn.Parameter(torch.empty(size).uniform_(-0.1, 0.1))  # x0
            self.encoder_lstm = nn.LSTM(size, size, config.num_layers, batch_first=True, dropout=lstm_dropout)
        else:
            self.encoder_transformer = Encoder(config.transformer_config())
        self.decoder_lstm: nn.LSTM | None = None
        self.decoder_stack: _Stack | None = None
        if config.decoder_kind == "lstm":
            self.decoder_lstm = nn.LSTM(size, size, config.num_layers, batch_first=True, dropout=lstm_dropout)
            if config.encoder != "lstm":
                self.initial_state = nn.Linear(size, 2 * size)
        else:
            tconfig = config.transformer_config()
            self.decoder_input = nn.Linear(size, size)
            self.step_positions = SinusoidalPositionalEmbedding(size)
            self.decoder_stack = _Stack(
                tconfig, tconfig.layer_patterns("decoder", config.num_layers), cross=True, bidirectional=False,
                mechanisms=tconfig.layer_attention("decoder", config.num_layers),
            )
            self.cross_pattern = tconfig.cross_pattern
        self.w_memory = nn.Linear(size, size, bias=False)  # W1
        self.w_query = nn.Linear(size, size)  # W2
        self.v = nn.Linear(size, 1, bias=False)

    # ------------------------------------------------------------------ checks
    def _check_points(self, points: Any, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(points [B, N, F] with padded slots zeroed, lengths [B])``, checked as the encoders'
        vector inputs are (:func:`~graphattn.models.transformer._check_vectors`), plus: at least
        one point, finite coordinates."""
        if isinstance(points, Tensor) and points.dim() == 3 and 0 in points.shape[:2]:
            raise ValueError(f"Expected at least one row and one point, got points of shape {list(points.shape)}")
        if isinstance(lengths, Tensor) and lengths.dtype == torch.bool:
            raise ValueError(f"Expected lengths as an integer tensor [B] (points per row), got {lengths.dtype}")
        points, lengths = _check_vectors(points if lengths is None else Vectors(points, lengths), self.config.input_features,
                                        "points")
        real = torch.arange(points.size(1), device=points.device) < lengths[:, None]
        if not bool(torch.isfinite(points[real]).all()):
            raise ValueError("Expected finite point coordinates, got NaN or infinity")
        return points, lengths

    @staticmethod
    def _check_targets(targets: Any, lengths: Tensor) -> Tensor:
        batch = lengths.numel()
        if not isinstance(targets, Tensor) or targets.dim() != 2 or targets.dtype.is_floating_point or targets.dtype == torch.bool:
            got = f"{targets.dtype} {list(targets.shape)}" if isinstance(targets, Tensor) else type(targets).__name__
            raise ValueError(f"Expected targets as an integer tensor [B, T] of pointer positions (0 = END, PAD = -1), got {got}")
        if targets.shape[0] != batch or targets.shape[1] == 0:
            raise ValueError(f"Expected targets of shape [B, T] with B = {batch} and T >= 1, got {list(targets.shape)}")
        targets = targets.to(device=lengths.device, dtype=torch.long)
        real = targets != PAD
        target_lengths = real.sum(1)
        steps = torch.arange(targets.shape[1], device=targets.device)
        if not bool((real == (steps < target_lengths[:, None])).all()) or int(target_lengths.min()) == 0:
            row = int(((real != (steps < target_lengths[:, None])).any(1) | (target_lengths == 0)).nonzero()[0])
            raise ValueError(
                f"Expected every target row to be non-empty and right-padded with PAD = -1, but row {row} is "
                f"{targets[row].tolist()}"
            )
        bad = real & ((targets < 0) | (targets > lengths[:, None]))
        if bool(bad.any()):
            row = int(bad.any(1).nonzero()[0])
            raise ValueError(
                f"Expected target positions in [0, n] (0 = END, i + 1 = point i) with n the row's point count, but row "
                f"{row} has n = {int(lengths[row])} and targets {targets[row].tolist()}"
            )
        return targets

    @staticmethod
    def _decoding_inputs(inputs: Any) -> tuple[Tensor, Tensor | None]:
        if isinstance(inputs, Tensor):
            return inputs, None
        if isinstance(inputs, (tuple, list)) and len(inputs) >= 2:
            return inputs[0], inputs[1]
        raise TypeError(
            f"Expected points [B, N, F] or a (points, lengths) pair (e.g. a geometry.PointerBatch), got "
            f"{type(inputs).__name__}"
        )

    # ------------------------------------------------------------------ parts
    def encode(self, points: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """Encode ``points [B, N, F]`` (``lengths [B]``) with ``x0`` prepended.

        Returns:
            ``(memory [B, N + 1, E], lengths [B], final LSTM state or None)``; row ``b`` of
            ``memory`` is meaningful at positions ``0..lengths[b]``.
        """
        points, lengths = self._check_points(points, lengths)
        memory, state = self._encode(points, lengths)
        return memory, lengths, state

    def _encode(self, points: Tensor, lengths: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Checked points (padded slots zero) -> (memory, final LSTM state or None)."""
        batch, slots, _ = points.shape
        if self.encoder_lstm is not None:
            x = torch.cat([self.end.expand(batch, 1, -1), self.embed(points)], dim=1)  # [B, N + 1, E]
            packed = nn.utils.rnn.pack_padded_sequence(
                self.dropout(x), (lengths + 1).cpu(), batch_first=True, enforce_sorted=False
            )
            out, state = self.encoder_lstm(packed)
            memory, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=slots + 1)
            return memory, state
        marker = torch.zeros(batch, slots + 1, 1, dtype=points.dtype, device=points.device)
        marker[:, 0] = 1.0
        features = torch.cat([torch.cat([points.new_zeros(batch, 1, points.shape[-1]), points], 1), marker], -1)
        memory, _ = self.encoder_transformer.encode(Vectors(features, lengths + 1))
        return memory, None

    def _input_table(self, points: Tensor, memory: Tensor) -> Tensor:
        """``[B, N + 1, E]``: the decoder input that follows choosing each position."""
        if self.decoder_lstm is not None:
            return self.dropout(torch.cat([memory.new_zeros(memory.shape[0], 1, memory.shape[-1]), self.embed(points)], 1))
        return self.decoder_input(memory)

    def _initial_hidden(self, memory: Tensor, lengths: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor] | None:
        if self.decoder_lstm is None:
            return None
        if state is not None:
            return state
        real = (torch.arange(memory.shape[1], device=memory.device) <= lengths[:, None]).to(memory.dtype)
        mean = (memory * real[..., None]).sum(1) / real.sum(1, keepdim=True)
        h, c = torch.tanh(self.initial_state(mean)).chunk(2, dim=-1)
        layers = self.config.num_layers
        return h.unsqueeze(0).repeat(layers, 1, 1).contiguous(), c.unsqueeze(0).repeat(layers, 1, 1).contiguous()

    def _transformer_decode(self, steps_in: Tensor, memory: Tensor, lengths: Tensor, step_lengths: Tensor) -> Tensor:
        """Causal Transformer decoder over ``steps_in [B, T, E]`` (``step_lengths [B]`` real
        steps) cross-attending ``memory [B, N + 1, E]`` -> ``[B, T, E]``."""
        batch, steps, size = steps_in.shape
        slots = memory.shape[1]
        positions = torch.arange(steps, device=steps_in.device)
        x = self.dropout(steps_in + self.step_positions(positions, dtype=steps_in.dtype))
        contexts = self.decoder_stack.full_contexts(step_lengths, steps)
        cross = sequence_batch(
            self.cross_pattern, step_lengths, lengths + 1, query_slots=steps, key_slots=slots, device=steps_in.device
        )
        hidden = self.decoder_stack(
            x.reshape(batch * steps, size), contexts,
            memory=memory.reshape(batch * slots, size), cross_context=AttentionContext(cross),
        )
        return hidden.view(batch, steps, size)

    def _scores(self, queries: Tensor, keys: Tensor) -> Tensor:
        """Additive pointer scores: ``queries [B, T, E]``, ``keys [B, N + 1, E]`` (= W1 e) ->
        ``[B, T, N + 1]``."""
        u = self.v(torch.tanh(keys[:, None, :, :] + self.w_query(queries)[:, :, None, :])).squeeze(-1)
        if self.config.logit_clip is not None:
            u = self.config.logit_clip * torch.tanh(u)
        return u

    # ------------------------------------------------------------------ training
    def forward(self, points: Tensor, targets: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Teacher-forced log-probabilities.

        Args:
            points: ``[B, N, F]`` float, right-padded.
            targets: ``[B, T]`` int64 pointer positions (0 = END, ``i + 1`` = point ``i``),
                right-padded with PAD = -1; the decoder reads ``GO, targets[:, :-1]``.
            lengths: ``[B]`` points per row (default: all ``N``).

        Returns:
            ``[B, T, N + 1]`` log-probabilities of the next position before every step (masked
            positions ``-inf``; rows past a target's end are not meaningful).
        """
        points, lengths = self._check_points(points, lengths)
        memory, state = self._encode(points, lengths)
        targets = self._check_targets(targets, lengths)
        points = points.to(memory.dtype)
        batch, steps = targets.shape
        slots = memory.shape[1]
        table = self._input_table(points, memory)
        previous = targets[:, :-1].clamp(min=0)  # PAD -> any position (never read for real steps)
        steps_in = torch.cat(
            [self.go.expand(batch, 1, -1), table.gather(1, previous[..., None].expand(-1, -1, table.shape[-1]))], 1
        )  # [B, T, E]
        if self.decoder_lstm is not None:
            queries, _ = self.decoder_lstm(steps_in, self._initial_hidden(memory, lengths, state))
        else:
            queries = self._transformer_decode(steps_in, memory, lengths, (targets != PAD).sum(1))
        scores = self._scores(queries, self.w_memory(memory))
        visited, first, closed = _prefix_state(targets, slots)
        allowed = pointer_mask(self.config.mask, visited, first, closed, lengths[:, None].expand(batch, steps))
        return scores.masked_fill(~allowed, -math.inf).log_softmax(-1)

    def loss(self, points: Tensor, targets: Tensor, lengths: Tensor | None = None, *, reduction: str = "mean") -> Tensor:
        """Cross-entropy of the targets under teacher forcing (:func:`pointer_loss` of
        :meth:`forward`); raises ValueError when the mask forbids a target."""
        return pointer_loss(self(points, targets, lengths), targets, reduction=reduction)

    # ------------------------------------------------------------------ decoding
    def start_decoding(self, inputs: Any, *, max_new_tokens: int) -> DecodingStart:
        """``inputs``: points ``[B, N, F]``, or ``(points, lengths)`` (any sequence whose first
        two items are those, e.g. a :class:`graphattn.data.geometry.PointerBatch`). Returns the
        scores of the first position; the prefix is empty."""
        points, lengths = self._check_points(*self._decoding_inputs(inputs))
        memory, state = self._encode(points, lengths)
        batch, slots = memory.shape[:2]
        device = memory.device
        decoding = _PointerState(
            memory=memory,
            keys=self.w_memory(memory),
            inputs=self._input_table(points.to(memory.dtype), memory),
            num_points=lengths,
            visited=torch.zeros(batch, slots, dtype=torch.bool, device=device),
            first=torch.full((batch,), -1, dtype=torch.long, device=device),
            closed=torch.zeros(batch, dtype=torch.bool, device=device),
            hidden=self._initial_hidden(memory, lengths, state),
            history=torch.zeros(batch, 0, dtype=torch.long, device=device),
        )
        logits, decoding = self._step(self.go.expand(batch, -1), decoding)
        empty = torch.zeros(batch, 0, dtype=torch.long, device=device)
        return DecodingStart(logits, decoding, empty, torch.zeros(batch, dtype=torch.long, device=device))

    def decode_step(self, tokens: Tensor, state: _PointerState) -> tuple[Tensor, _PointerState]:
        """``tokens [R]`` the positions just chosen -> ``(scores [R, N + 1], new state)``."""
        tokens = tokens.to(state.memory.device).long()
        rows = torch.arange(tokens.numel(), device=tokens.device)
        is_point = tokens >= 1
        visited = state.visited.clone()
        visited[rows[is_point], tokens[is_point]] = True
        started = state.first >= 1
        closed = state.closed | (started & (tokens == state.first))
        first = torch.where(started | ~is_point, state.first, tokens)
        state = _PointerState(
            state.memory, state.keys, state.inputs, state.num_points, visited, first, closed, state.hidden,
            torch.cat([state.history, tokens[:, None]], 1),
        )
        step_input = state.inputs[rows, tokens.clamp(min=0)]
        return self._step(step_input, state)

    def reorder_state(self, state: _PointerState, index: Tensor) -> _PointerState:
        return state.reorder(index)

    def _step(self, step_input: Tensor, state: _PointerState) -> tuple[Tensor, _PointerState]:
        """Run the decoder on ``step_input [R, E]`` (the newest input) and score the positions."""
        if self.decoder_lstm is not None:
            out, hidden = self.decoder_lstm(step_input[:, None, :], state.hidden)
            query = out[:, 0]
            state.hidden = hidden
        else:
            rows = state.memory.shape[0]
            history = state.history
            table = state.inputs.gather(1, history[..., None].expand(-1, -1, state.inputs.shape[-1]))
            steps_in = torch.cat([self.go.expand(rows, 1, -1), table], 1)  # [R, t + 1, E]
            step_lengths = torch.full((rows,), steps_in.shape[1], dtype=torch.long, device=steps_in.device)
            query = self._transformer_decode(steps_in, state.memory, state.num_points, step_lengths)[:, -1]
        scores = self._scores(query[:, None, :], state.keys)[:, 0]
        allowed = pointer_mask(self.config.mask, state.visited, state.first, state.closed, state.num_points)
        return scores.masked_fill(~allowed, -math.inf), state


def pointer_loss(log_probs: Tensor, targets: Tensor, *, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of pointer targets, ignoring PAD.

    Args:
        log_probs: ``[B, T, N + 1]`` (from :meth:`PointerNetwork.forward`).
        targets: ``[B, T]`` positions, PAD = -1 after each row's end.
        reduction: ``"mean"`` (per real target position), ``"sum"``, or ``"none"`` (``[B]``
            summed per sequence).

    Example:
        >>> log_probs = torch.log(torch.tensor([[[0.5, 0.5], [1.0, 0.0]]]))
        >>> round(float(pointer_loss(log_probs, torch.tensor([[1, 0]]))), 4)
        0.3466
    """
    if not isinstance(log_probs, Tensor) or log_probs.dim() != 3:
        raise ValueError(f"Expected log_probs [B, T, N + 1], got {getattr(log_probs, 'shape', type(log_probs).__name__)}")
    if not isinstance(targets, Tensor) or targets.shape != log_probs.shape[:2]:
        raise ValueError(
            f"Expected targets of shape {list(log_probs.shape[:2])} (= log_probs' [B, T]), got "
            f"{getattr(targets, 'shape', type(targets).__name__)}"
        )
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"Unknown reduction {reduction!r}; expected 'mean', 'sum' or 'none'")
    targets = targets.to(log_probs.device).long()
    real = targets != PAD
    picked = log_probs.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    if bool((real & torch.isinf(picked)).any()):
        row, step = (real & torch.isinf(picked)).nonzero()[0].tolist()
        raise ValueError(
            f"Target {int(targets[row, step])} at row {row}, step {step} has probability 0: the model's mask "
            f"forbids it (targets {targets[row].tolist()}); check the targets against config.mask"
        )
    nll = -torch.where(real, picked, torch.zeros_like(picked))
    if reduction == "none":
        return nll.sum(1)
    if reduction == "sum":
        return nll.sum()
    return nll.sum() / real.sum().clamp(min=1)
