"""An attention-based speech recognizer with guided (location-aware, monotonic) attention.

:class:`AttentionRecognizer` reads speech frames and writes characters, in the style of
Chorowski et al. (2015) and "Listen, Attend and Spell" (Chan et al. 2016):

* **Encoder**: the graphattn :class:`~graphattn.models.Encoder` over :class:`~graphattn.models.Vectors`
  (log-mel frames), any self-attention pattern on the sparse core; optionally every ``stack``
  consecutive frames are concatenated first (a shorter sequence: ``ceil(L / stack)`` vectors;
  the last group of a row is completed with zero frames, so a row's result does not depend on
  its batch).
* **Decoder**: an LSTM cell over characters with input feeding. Step ``i`` reads the embedding
  of the previous character ``y_{i-1}`` and the previous context ``c_{i-1}``:
  ``s_i = LSTM([E y_{i-1}; c_{i-1}], s_{i-1})``, attends with
  :class:`~graphattn.nn.guided.LocationAwareAttention` (query ``s_i``; ``attention="location"``
  adds the convolutional features of the previous alignment, ``"content"`` is plain additive
  attention) to get ``c_i`` and the alignment ``alpha_i``, and scores the next character with
  ``Linear(tanh(Linear([s_i; c_i])))``. The alignment "before" the first step is a one-hot at
  frame 0.
* **Monotonic window** (``window=(back, ahead)``, also settable later through ``model.window``):
  every step attends only around the previous alignment's peak
  (:func:`~graphattn.nn.guided.monotonic_window_graph`), in training, teacher forcing and
  decoding alike. ``None``: every frame of the utterance.
* **Training**: :meth:`AttentionRecognizer.loss` = cross-entropy + ``guide_weight`` x
  :func:`~graphattn.nn.guided.diagonal_guide_loss` (Tachibana et al. 2017).

Decoding: :meth:`AttentionRecognizer.greedy_decode` (also returns the alignments, for plots), or
:func:`graphattn.decoding.generate` (greedy, beam, sampling): the model implements
:class:`~graphattn.models.decodable.Decodable`. Rows never interact.

Example:
    >>> import torch
    >>> from graphattn.models import TransformerConfig, Vectors
    >>> encoder = TransformerConfig(vocab_size=12, input_features=8, d_model=16, num_heads=2,
    ...                             num_layers=1, encoder_pattern="local(window=2)")
    >>> model = AttentionRecognizer(RecognizerConfig(encoder, stack=2, decoder_dim=16, attention_dim=8))
    >>> inputs = Vectors(torch.randn(2, 9, 4), torch.tensor([9, 5]))         # 4 values per frame, 2 stacked
    >>> targets = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])                # BOS .. EOS, padded with 0
    >>> out = model(inputs, targets[:, :-1])
    >>> out.logits.shape, out.alignments.shape                              # [B, S, V], [B, S, T / stack]
    (torch.Size([2, 3, 12]), torch.Size([2, 3, 5]))
    >>> loss = model.loss(inputs, targets, guide_weight=1.0)
    >>> bool(torch.isfinite(loss.loss)), loss.guide.item() >= 0
    (True, True)
    >>> model.greedy_decode(inputs, max_length=4).tokens.shape
    torch.Size([2, 4])
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.models.decodable import DecodingStart
from graphattn.models.transformer import Encoder, TransformerConfig, Vectors
from graphattn.nn.guided import (
    WINDOW_CENTERS,
    AlignmentStep,
    EncodedMemory,
    LocationAwareAttention,
    diagonal_guide_loss,
    monotonic_window_graph,
)

__all__ = [
    "RECOGNIZER_ATTENTION",
    "RecognizerConfig",
    "AttentionRecognizer",
    "RecognizerOutput",
    "RecognizerLoss",
    "Transcription",
    "RecognizerState",
    "stack_vectors",
]

RECOGNIZER_ATTENTION = ("location", "content")
"""The decoder's attention: location-aware (Chorowski et al. 2015) or content-only additive."""


@dataclass(frozen=True)
class RecognizerConfig:
    """Everything that defines an :class:`AttentionRecognizer`.

    Attributes:
        encoder: the encoder's :class:`~graphattn.models.TransformerConfig`; its
            ``input_features`` must be ``stack * F`` for frames of ``F`` values. Its ``pad_id``,
            ``bos_id`` and ``eos_id`` are the decoder's special tokens.
        vocab_size: output characters (ids ``0 .. V-1``); default ``encoder.vocab_size``.
        stack: concatenate every ``stack`` consecutive frames into one encoder input vector.
        embed_dim: size of the character embedding.
        decoder_dim: LSTM state size (also the context size).
        attention: one of :data:`RECOGNIZER_ATTENTION`.
        attention_dim: size of the additive attention's hidden layer (over all heads).
        num_heads: attention heads.
        location_channels, location_kernel: the location convolution (``attention="location"``).
        window: ``(back, ahead)`` monotonic window of every step, or None (every frame).
        window_center: ``"argmax"`` or ``"mean"`` of the previous alignment.
        dropout: on the decoder's inputs and before the output layer.
    """

    encoder: TransformerConfig
    vocab_size: int | None = None
    stack: int = 1
    embed_dim: int = 64
    decoder_dim: int = 128
    attention: str = "location"
    attention_dim: int = 128
    num_heads: int = 1
    location_channels: int = 10
    location_kernel: int = 15
    window: tuple[int, int] | None = None
    window_center: str = "argmax"
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, TransformerConfig):
            raise TypeError(f"Expected 'encoder' to be a TransformerConfig, got {type(self.encoder).__name__}")
        if self.encoder.input_features is None:
            raise ValueError(
                "The recognizer's encoder reads speech frames: set input_features (stack * values per frame) in "
                "its TransformerConfig"
            )
        for name in ("stack", "embed_dim", "decoder_dim", "attention_dim", "num_heads", "location_channels",
                     "location_kernel"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected '{name}' to be a positive int, got {value!r}")
        if self.vocab_size is not None and (isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int)
                                            or self.vocab_size < 1):
            raise ValueError(f"Expected 'vocab_size' to be None or a positive int, got {self.vocab_size!r}")
        vocab = self.output_size
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self.encoder, name)
            if not 0 <= value < vocab:
                raise ValueError(f"Expected encoder.{name} in [0, {vocab}) (the output vocabulary), got {value}")
        if self.encoder.input_features % self.stack:
            raise ValueError(
                f"Expected encoder.input_features ({self.encoder.input_features}) to be stack ({self.stack}) times "
                f"the values per frame"
            )
        if self.attention not in RECOGNIZER_ATTENTION:
            raise ValueError(f"Expected attention to be one of {RECOGNIZER_ATTENTION}, got {self.attention!r}")
        if self.location_kernel % 2 == 0:
            raise ValueError(f"Expected an odd 'location_kernel', got {self.location_kernel}")
        if self.window is not None:
            object.__setattr__(self, "window", _check_window(self.window))
        if self.window_center not in WINDOW_CENTERS:
            raise ValueError(f"Expected window_center to be one of {WINDOW_CENTERS}, got {self.window_center!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"Expected 0 <= dropout < 1, got {self.dropout!r}")

    @property
    def output_size(self) -> int:
        """``V``, the number of output characters."""
        return self.vocab_size if self.vocab_size is not None else self.encoder.vocab_size

    @property
    def frame_features(self) -> int:
        """Values per input frame (``encoder.input_features / stack``)."""
        return self.encoder.input_features // self.stack

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["encoder"] = self.encoder.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "RecognizerConfig":
        data = dict(data)
        data["encoder"] = TransformerConfig.from_dict(data["encoder"])
        if data.get("window") is not None:
            data["window"] = tuple(data["window"])
        return cls(**data)


def _check_window(window: object) -> tuple[int, int]:
    if (not isinstance(window, (tuple, list)) or len(window) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in window)):
        raise ValueError(f"Expected 'window' to be None or (back, ahead), two non-negative ints, got {window!r}")
    return int(window[0]), int(window[1])


def stack_vectors(features: Tensor, lengths: Tensor, stack: int) -> tuple[Tensor, Tensor]:
    """Concatenate every ``stack`` consecutive frames: ``[B, L, F]``, ``[B]`` ->
    ``[B, ceil(L / stack), stack * F]``, ``ceil(lengths / stack)``. Padded frames are zeroed first,
    so a row's last group is completed with zeros whatever its batch."""
    batch, slots, width = features.shape
    real = torch.arange(slots, device=features.device) < lengths[:, None]
    features = features.masked_fill(~real[..., None], 0.0)
    if stack == 1:
        return features, lengths
    groups = -(-slots // stack)
    if groups * stack != slots:
        features = F.pad(features, (0, 0, 0, groups * stack - slots))
    return features.reshape(batch, groups, stack * width), torch.div(lengths + stack - 1, stack, rounding_mode="floor")


class RecognizerOutput(NamedTuple):
    """Teacher-forced outputs: ``logits [B, S, V]``, ``alignments [B, S, T]`` (heads averaged;
    ``T`` encoder vectors after stacking) and ``memory_lengths [B]`` (real encoder vectors)."""

    logits: Tensor
    alignments: Tensor
    memory_lengths: Tensor


class RecognizerLoss(NamedTuple):
    """``loss = cross_entropy + guide_weight * guide`` (scalars)."""

    loss: Tensor
    cross_entropy: Tensor
    guide: Tensor


class Transcription(NamedTuple):
    """Greedy decoding: ``tokens [B, L]`` (the first EOS included, ``pad_id`` after it),
    ``lengths [B]`` (tokens up to and including EOS, or ``L``), ``alignments [B, L, T]`` (zero
    after a row's end) and ``memory_lengths [B]``."""

    tokens: Tensor
    lengths: Tensor
    alignments: Tensor
    memory_lengths: Tensor


class RecognizerState(NamedTuple):
    """The decoder state of a batch: the encoded ``memory``, LSTM ``hidden`` and ``cell``
    ``[B, decoder_dim]``, the last ``context`` ``[B, decoder_dim]`` and ``alignment`` ``[B, H, T]``."""

    memory: EncodedMemory
    hidden: Tensor
    cell: Tensor
    context: Tensor
    alignment: Tensor

    def select(self, index: Tensor) -> "RecognizerState":
        index = index.to(self.hidden.device).long()
        return RecognizerState(self.memory.select(index), self.hidden[index], self.cell[index], self.context[index],
                               self.alignment[index])


class AttentionRecognizer(nn.Module):
    """Speech frames -> characters: graphattn encoder + LSTM decoder with location-aware (or
    content-only) attention and an optional monotonic window. See the module docstring.

    Attributes:
        window: ``(back, ahead)`` or None; may be changed between calls (e.g. a window only at
            inference).
        eos_id, pad_id, bos_id: special tokens (from ``config.encoder``).
    """

    def __init__(self, config: RecognizerConfig) -> None:
        super().__init__()
        if not isinstance(config, RecognizerConfig):
            raise TypeError(f"Expected a RecognizerConfig, got {type(config).__name__}")
        self.config = config
        vocab = config.output_size
        self.encoder = Encoder(config.encoder)
        self.embedding = nn.Embedding(vocab, config.embed_dim)
        self.cell = nn.LSTMCell(config.embed_dim + config.decoder_dim, config.decoder_dim)
        self.attend = LocationAwareAttention(
            config.decoder_dim, config.encoder.d_model, config.attention_dim, num_heads=config.num_heads,
            location=config.attention == "location", location_channels=config.location_channels,
            location_kernel=config.location_kernel, backend=config.encoder.backend,
        )
        self.hidden_proj = nn.Linear(2 * config.decoder_dim, config.decoder_dim)
        self.output = nn.Linear(config.decoder_dim, vocab)
        self.dropout = nn.Dropout(config.dropout)
        self.window = config.window
        self.pad_id, self.bos_id, self.eos_id = config.encoder.pad_id, config.encoder.bos_id, config.encoder.eos_id

    # ------------------------------------------------------------------ encoding
    def encode(self, inputs: Vectors | tuple) -> EncodedMemory:
        """:class:`~graphattn.models.Vectors` ``(features [B, L, F], lengths [B])`` (``F`` =
        values per frame, before stacking) -> the projected encoder states
        (:class:`~graphattn.nn.guided.EncodedMemory`, ``T = ceil(L / stack)`` vectors)."""
        features, lengths = self._check_inputs(inputs)
        features, lengths = stack_vectors(features, lengths, self.config.stack)
        memory, lengths = self.encoder.encode(Vectors(features, lengths))
        return self.attend.prepare(memory, lengths)

    def _check_inputs(self, inputs: Vectors | tuple) -> tuple[Tensor, Tensor]:
        if isinstance(inputs, Tensor):
            inputs = Vectors(inputs, torch.full((inputs.size(0),), inputs.size(1), dtype=torch.long, device=inputs.device)) \
                if inputs.dim() == 3 else inputs
        if not isinstance(inputs, tuple) or len(inputs) != 2:
            raise TypeError(
                f"Expected Vectors(features [B, L, F], lengths [B]) or a float tensor [B, L, F], got "
                f"{type(inputs).__name__}"
            )
        features, lengths = inputs
        width = self.config.frame_features
        if not isinstance(features, Tensor) or features.dim() != 3 or not features.is_floating_point():
            got = f"{features.dtype} {list(features.shape)}" if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(f"Expected frame features as a float tensor [B, L, F] with F = {width}, got {got}")
        if features.size(-1) != width:
            raise ValueError(
                f"Expected {width} values per frame (encoder.input_features {self.config.encoder.input_features} / "
                f"stack {self.config.stack}), got features {list(features.shape)}"
            )
        if not isinstance(lengths, Tensor) or lengths.shape != (features.size(0),) or lengths.is_floating_point():
            got = f"{lengths.dtype} {list(lengths.shape)}" if isinstance(lengths, Tensor) else type(lengths).__name__
            raise ValueError(f"Expected lengths as an integer tensor [B] with B = {features.size(0)}, got {got}")
        lengths = lengths.to(features.device).long()
        if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > features.size(1)):
            raise ValueError(
                f"Expected every length in [1, {features.size(1)}] (L = features.size(1)), got values in "
                f"[{int(lengths.min())}, {int(lengths.max())}]"
            )
        return features, lengths

    def initial_state(self, memory: EncodedMemory) -> RecognizerState:
        """Zero LSTM state and context, the alignment on frame 0."""
        zeros = memory.keys.new_zeros(memory.batch, self.config.decoder_dim)
        return RecognizerState(memory, zeros, zeros, zeros, self.attend.initial_alignment(memory))

    # ------------------------------------------------------------------ one decoder step
    def step(self, tokens: Tensor, state: RecognizerState) -> tuple[Tensor, RecognizerState, AlignmentStep]:
        """Read ``tokens [B]`` (the previous character) -> ``(logits [B, V], new state, the step's
        attention)``."""
        x = torch.cat([self.embedding(tokens), state.context], dim=-1)
        hidden, cell = self.cell(self.dropout(x), (state.hidden, state.cell))
        memory = state.memory
        graph = None
        if self.window is not None:
            back, ahead = _check_window(self.window)
            graph = monotonic_window_graph(state.alignment, memory.lengths, back, ahead, center=self.config.window_center)
        attended = self.attend(hidden, memory, state.alignment if self.attend.location else None, graph=graph)
        features = torch.tanh(self.hidden_proj(torch.cat([hidden, attended.context], dim=-1)))
        logits = self.output(self.dropout(features))
        return logits, RecognizerState(memory, hidden, cell, attended.context, attended.alignment), attended

    # ------------------------------------------------------------------ teacher forcing
    def forward(self, inputs: Vectors | tuple, tgt_in: Tensor) -> RecognizerOutput:
        """Teacher forcing: ``inputs`` (frames) and ``tgt_in [B, S]`` (BOS + the target without
        its last token) -> :class:`RecognizerOutput` ``(logits [B, S, V], alignments [B, S, T],
        memory_lengths [B])``."""
        memory = self.encode(inputs)
        tgt_in = self._check_tokens(tgt_in, memory.batch, "tgt_in")
        state = self.initial_state(memory)
        logits, alignments = [], []
        for position in range(tgt_in.size(1)):
            step_logits, state, attended = self.step(tgt_in[:, position], state)
            logits.append(step_logits)
            alignments.append(attended.alignment.mean(1))
        if not logits:
            raise ValueError("Expected at least one decoder input token (tgt_in [B, S] with S >= 1)")
        return RecognizerOutput(torch.stack(logits, 1), torch.stack(alignments, 1), memory.lengths)

    def _check_tokens(self, tokens: Tensor, batch: int, name: str) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.is_floating_point() or tokens.dtype == torch.bool:
            got = f"{tokens.dtype} {list(tokens.shape)}" if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"Expected '{name}' to be int64 token ids [B, S], got {got}")
        if tokens.size(0) != batch:
            raise ValueError(f"Expected '{name}' with B = {batch} rows (as the inputs), got {list(tokens.shape)}")
        vocab = self.config.output_size
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
            raise ValueError(
                f"Expected '{name}' ids in [0, {vocab}), got values in [{int(tokens.min())}, {int(tokens.max())}]"
            )
        return tokens.long()

    def loss(
        self,
        inputs: Vectors | tuple,
        targets: Tensor,
        *,
        guide_weight: float = 0.0,
        guide_width: float = 0.2,
        label_smoothing: float = 0.0,
    ) -> RecognizerLoss:
        """Cross-entropy of ``targets [B, S + 1]`` (``BOS, characters, EOS``, right-padded with
        ``pad_id``) plus ``guide_weight`` x :func:`~graphattn.nn.guided.diagonal_guide_loss` (width
        ``guide_width`` = Tachibana's ``g``) of the teacher-forced alignments."""
        if isinstance(guide_weight, bool) or not isinstance(guide_weight, (int, float)) or guide_weight < 0:
            raise ValueError(f"Expected guide_weight >= 0, got {guide_weight!r}")
        if not isinstance(targets, Tensor) or targets.dim() != 2 or targets.size(1) < 2:
            got = list(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
            raise ValueError(f"Expected 'targets' [B, S + 1] with S >= 1 (BOS, characters, EOS), got {got}")
        tgt_in, tgt_out = targets[:, :-1], targets[:, 1:]
        out = self(inputs, tgt_in)
        cross_entropy = F.cross_entropy(
            out.logits.reshape(-1, out.logits.size(-1)), tgt_out.reshape(-1), ignore_index=self.pad_id,
            label_smoothing=label_smoothing,
        )
        out_lengths = (tgt_out != self.pad_id).sum(1).clamp_min(1)
        guide = diagonal_guide_loss(out.alignments, out_lengths, out.memory_lengths, g=guide_width)
        total = cross_entropy + guide_weight * guide if guide_weight else cross_entropy
        return RecognizerLoss(total, cross_entropy, guide.detach() if not guide_weight else guide)

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def greedy_decode(self, inputs: Vectors | tuple, max_length: int = 20) -> Transcription:
        """Greedy decoding (the arg-max character each step) for at most ``max_length`` tokens,
        keeping the alignments: :class:`Transcription`."""
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"Expected max_length to be a positive int, got {max_length!r}")
        memory = self.encode(inputs)
        state = self.initial_state(memory)
        batch = memory.batch
        device = memory.keys.device
        tokens = torch.full((batch,), self.bos_id, dtype=torch.long, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        lengths = torch.full((batch,), max_length, dtype=torch.long, device=device)
        out, alignments = [], []
        for position in range(max_length):
            logits, state, attended = self.step(tokens, state)
            tokens = logits.argmax(-1)
            tokens = torch.where(finished, torch.full_like(tokens, self.pad_id), tokens)
            alignments.append(attended.alignment.mean(1).masked_fill(finished[:, None], 0.0))
            out.append(tokens)
            ended = ~finished & (tokens == self.eos_id)
            lengths = torch.where(ended, torch.full_like(lengths, position + 1), lengths)
            finished = finished | ended
            if bool(finished.all()):
                break
        return Transcription(torch.stack(out, 1), lengths, torch.stack(alignments, 1), memory.lengths)

    # the Decodable protocol of graphattn.decoding.generate
    def start_decoding(self, inputs: Vectors | tuple, *, max_new_tokens: int) -> DecodingStart:
        """Encode ``inputs`` and read BOS: the scores of the first character."""
        memory = self.encode(inputs)
        state = self.initial_state(memory)
        bos = torch.full((memory.batch,), self.bos_id, dtype=torch.long, device=memory.keys.device)
        logits, state, _ = self.step(bos, state)
        return DecodingStart(logits, state, bos[:, None], torch.ones_like(bos))

    def decode_step(self, tokens: Tensor, state: RecognizerState) -> tuple[Tensor, RecognizerState]:
        """``tokens [B']`` -> ``(logits [B', V], new state)``."""
        logits, state, _ = self.step(tokens.to(state.hidden.device).long(), state)
        return logits, state

    def reorder_state(self, state: RecognizerState, index: Tensor) -> RecognizerState:
        """Keep / duplicate / reorder rows: row ``r`` of the result is old row ``index[r]``."""
        return state.select(index)
