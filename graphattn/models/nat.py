"""Non-autoregressive Transformers (NAT): every target token predicted in one parallel pass.

The encoder is :class:`~graphattn.models.Encoder` and the decoder the blocks of
:class:`~graphattn.models.Decoder`, but the decoder's self-attention is **not causal**: every
target position attends every other one (``NATConfig.decoder_pattern``, ``"full"`` by default;
any pattern of :mod:`graphattn.patterns` works, e.g. ``local(window=4)``). What replaces the
autoregressive decoder's inputs ``[BOS, y1, ...]`` -- which a parallel decoder does not have --
and how many target positions there are, is what the variants differ in.

Models:

* :class:`NonAutoregressiveTransformer` (Gu et al. 2018; Ghazvininejad et al. 2019) with
  :class:`NATConfig`:

  - ``length`` -- how the output length ``T`` is chosen (:data:`NAT_LENGTHS`):
    ``"classifier"`` (a classifier over ``0..max_target_length`` on the mean-pooled encoder
    states), ``"offset"`` (the same classifier over ``T - S`` in ``[-max_offset, max_offset]``:
    the offset from the source length), ``"fertility"`` (a fertility ``f_i`` in
    ``0..max_fertility`` per source token, ``T = sum_i f_i``), ``"uniform_copy"`` (``T = S``, no
    prediction) and ``"cut_at_end"`` (a canvas of ``ceil(canvas_ratio * S) + 1`` positions is
    decoded and the output cut at the first EOS).
  - ``decoder_input`` -- what the decoder reads at each target position (:data:`NAT_INPUTS`):
    ``"uniform_copy"`` (position ``t`` of ``T`` reads the embedding of source token
    ``floor((2t + 1) S / 2T)``, Gu et al.'s uniform copy), ``"fertility"`` (source token ``i``'s
    embedding copied ``f_i`` times, in source order) or ``"mask"`` (token ids, ``[MASK]`` where
    unknown: the conditional masked LM of Mask-Predict).

* :class:`CTCNAT` (Libovicky & Helcl 2018; Saharia et al. 2020) with :class:`CTCNATConfig`: the
  encoder states upsampled by a factor ``k`` (``Linear(E, k E)``, every source position becomes
  ``k`` canvas positions), a non-causal decoder over the canvas, a blank symbol, the loss
  ``torch.nn.functional.ctc_loss`` and decoding with :func:`~graphattn.models.ctc_greedy_decode`
  / :func:`~graphattn.models.ctc_beam_search`. With ``imputer=True`` the canvas also reads a
  token per position (a symbol, the blank or ``[MASK]``): Imputer-style refinement, where the
  CTC output is improved by mask-predict iterations over the canvas
  (:func:`graphattn.decoding.ctc_decode` with ``iterations > 1``).
* :class:`LevenshteinTransformer` (Gu et al. 2019, simplified): the same encoder and decoder with
  deletion, placeholder-insertion and token heads, trained against an insert/delete edit-distance
  oracle (:func:`levenshtein_oracle`, pure Python) and decoded by
  :func:`graphattn.decoding.levenshtein_decode` (delete -> insert placeholders -> fill, repeated).

Decoding algorithms live in :mod:`graphattn.decoding`: :func:`~graphattn.decoding.parallel_decode`,
:func:`~graphattn.decoding.mask_predict`, :func:`~graphattn.decoding.noisy_parallel_decode`,
:func:`~graphattn.decoding.ctc_decode`, :func:`~graphattn.decoding.levenshtein_decode`, and
:func:`~graphattn.decoding.distill` (sequence-level knowledge distillation).

Targets: the models here take target tokens **without** BOS and EOS, right-padded with
``pad_id`` (``[B, T]``); :func:`nat_targets` strips them from the ``[BOS, y, EOS]`` format of
:mod:`graphattn.data.algorithmic`, and :class:`NATLoss` does so for
:func:`graphattn.train.fit`.

Fertility targets: the fertility of a source token is the number of target tokens aligned to
it by a hard alignment. By default the **uniform monotone alignment** is used -- target ``t``
aligned to source ``floor((2t + 1) S / 2T)``, the position uniform copy reads
(:func:`uniform_fertilities`), so fertility copy with these fertilities is uniform copy. Any other
hard alignment (an external aligner, the arg-max of a teacher's cross-attention) becomes
fertilities with :func:`fertilities_from_alignment` and is passed to ``loss(fertilities=...)``.

Every row of a batch is computed independently of the others (patterns are built per row,
padding never attended), so a row's outputs do not depend on its batch.

Example:
    >>> import torch
    >>> from graphattn.models import TransformerConfig
    >>> config = TransformerConfig(vocab_size=12, d_model=16, num_heads=2, num_layers=1, mask_id=3)
    >>> model = NonAutoregressiveTransformer(config, NATConfig(length="classifier", decoder_input="mask",
    ...                                                        max_target_length=10))
    >>> src = torch.tensor([[5, 6, 7], [8, 9, 0]])
    >>> target = torch.tensor([[6, 7, 8, 9], [10, 11, 0, 0]])
    >>> loss, metrics = model.loss(src, target)
    >>> bool(torch.isfinite(loss)), sorted(metrics)
    (True, ['length_accuracy', 'token_accuracy'])
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.models.ctc import CTCOutput
from graphattn.models.transformer import (
    Decoder,
    Encoder,
    TransformerConfig,
    Vectors,
    _check_ids,
    _check_vectors,
    _InputEmbedding,
    _lengths,
    _Stack,
)
from graphattn.nn.transformer import AttentionContext, LayerCache
from graphattn.patterns.spec import PatternSpec, sequence_batch

__all__ = [
    "NAT_LENGTHS",
    "NAT_INPUTS",
    "NATConfig",
    "NATEncoding",
    "NATForward",
    "NonAutoregressiveTransformer",
    "NATLoss",
    "nat_targets",
    "uniform_copy_index",
    "fertility_copy_index",
    "uniform_fertilities",
    "fertilities_from_alignment",
    "cmlm_mask",
    "CTCNATConfig",
    "CTCNAT",
    "ctc_best_alignment",
    "LevenshteinTransformer",
    "levenshtein_oracle",
]

NAT_LENGTHS = ("classifier", "offset", "fertility", "uniform_copy", "cut_at_end")
"""How :class:`NonAutoregressiveTransformer` chooses the output length (``NATConfig.length``)."""

NAT_INPUTS = ("uniform_copy", "fertility", "mask")
"""What its decoder reads at each target position (``NATConfig.decoder_input``)."""

PatternLike = Union[PatternSpec, str]


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected '{name}' to be a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class NATConfig:
    """The non-autoregressive parts of :class:`NonAutoregressiveTransformer` (the sizes, the
    encoder, positions etc. come from its :class:`~graphattn.models.TransformerConfig`).

    Attributes:
        length: one of :data:`NAT_LENGTHS` (see the module docstring).
        decoder_input: one of :data:`NAT_INPUTS`; default ``"fertility"`` when
            ``length="fertility"``, else ``"uniform_copy"``. ``"fertility"`` needs
            ``length="fertility"``; ``"mask"`` needs ``mask_id`` in the TransformerConfig.
        decoder_pattern: the decoder's self-attention pattern (one, or one per layer), replacing
            the TransformerConfig's ``decoder_pattern`` (whose default, ``"causal"``, is for
            autoregressive decoders); ``None`` keeps the TransformerConfig's.
        max_target_length: the largest length the ``"classifier"`` predicts; also the cap of
            the ``"cut_at_end"`` canvas.
        max_offset: ``"offset"`` predicts ``T - S`` in ``[-max_offset, max_offset]`` (training
            offsets outside are clipped to it).
        max_fertility: ``"fertility"`` predicts ``f_i`` in ``0..max_fertility`` (training
            fertilities above are an error).
        canvas_ratio: ``"cut_at_end"`` decodes ``min(ceil(canvas_ratio * S) + 1,
            max_target_length + 1)`` positions.
        length_loss_weight: weight of the length (or fertility) loss added to the token loss.
        label_smoothing: of the token loss.
    """

    length: str = "classifier"
    decoder_input: str | None = None
    decoder_pattern: PatternLike | tuple[PatternLike, ...] | None = "full"
    max_target_length: int = 256
    max_offset: int = 32
    max_fertility: int = 8
    canvas_ratio: float = 2.0
    length_loss_weight: float = 0.1
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.length not in NAT_LENGTHS:
            raise ValueError(f"Unknown NAT length {self.length!r}; expected one of {', '.join(NAT_LENGTHS)}")
        if self.decoder_input is None:
            object.__setattr__(self, "decoder_input", "fertility" if self.length == "fertility" else "uniform_copy")
        if self.decoder_input not in NAT_INPUTS:
            raise ValueError(f"Unknown NAT decoder_input {self.decoder_input!r}; expected one of {', '.join(NAT_INPUTS)}")
        if self.decoder_input == "fertility" and self.length != "fertility":
            raise ValueError(
                f"decoder_input='fertility' copies source tokens by their predicted fertilities, so it needs "
                f"length='fertility', got length={self.length!r}"
            )
        for name in ("max_target_length", "max_offset", "max_fertility"):
            _positive_int(getattr(self, name), name)
        if not (isinstance(self.canvas_ratio, (int, float)) and self.canvas_ratio > 0):
            raise ValueError(f"Expected canvas_ratio > 0, got {self.canvas_ratio!r}")
        if not self.length_loss_weight >= 0:
            raise ValueError(f"Expected length_loss_weight >= 0, got {self.length_loss_weight!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"Expected 0 <= label_smoothing < 1, got {self.label_smoothing!r}")


class NATEncoding(NamedTuple):
    """The encoded sources, what every decoding pass starts from.

    Attributes:
        memory: ``[B, S, E]`` encoder states (padded slots not meaningful).
        lengths: ``[B]`` int64 real source lengths.
        embeddings: ``[B, S, E]`` source embeddings (token embedding times its scale, or the
            projection of input vectors; no positions), what uniform / fertility copy reads.
    """

    memory: Tensor
    lengths: Tensor
    embeddings: Tensor

    def select(self, rows: Tensor) -> "NATEncoding":
        """The encoding of ``rows`` ``[B']`` (repeats allowed: length beams, NPD samples)."""
        return NATEncoding(self.memory[rows], self.lengths[rows], self.embeddings[rows])


class NATForward(NamedTuple):
    """A teacher-forced pass of :class:`NonAutoregressiveTransformer` (:meth:`~NonAutoregressiveTransformer.forward`).

    Attributes:
        logits: ``[B, T, V]`` token scores at the ``T`` decoder positions.
        lengths: ``[B]`` decoder positions per row (the gold target length, or the
            ``cut_at_end`` canvas).
        length_logits: ``[B, K]`` length (classifier / offset) scores, ``[B, S, F + 1]``
            fertility scores, or None (``uniform_copy`` / ``cut_at_end``).
        inputs: ``[B, T]`` the decoder's input ids with ``decoder_input="mask"``, else None.
        source_lengths: ``[B]`` real source lengths.
    """

    logits: Tensor
    lengths: Tensor
    length_logits: Tensor | None
    inputs: Tensor | None
    source_lengths: Tensor


# ---------------------------------------------------------------------- copy and alignment helpers
def uniform_copy_index(source_lengths: Tensor, target_lengths: Tensor, slots: int | None = None) -> Tensor:
    """Uniform copy (Gu et al. 2018): target position ``t`` of a ``T``-token row reads source
    position ``floor((2t + 1) S / 2T)`` (the source position under the centre of target cell
    ``t`` when both sequences are stretched onto ``[0, 1]``).

    Args:
        source_lengths: ``[B]`` ``S_b >= 1``.
        target_lengths: ``[B]`` ``T_b >= 0``.
        slots: target slots (default ``max T_b``).

    Returns:
        ``[B, slots]`` int64 source positions (padded slots hold 0).

    Example:
        >>> uniform_copy_index(torch.tensor([3, 4]), torch.tensor([5, 2])).tolist()
        [[0, 0, 1, 2, 2], [1, 3, 0, 0, 0]]
    """
    source_lengths, target_lengths = source_lengths.long(), target_lengths.long()
    slots = int(target_lengths.max()) if slots is None else slots
    t = torch.arange(slots, device=target_lengths.device)[None, :]  # [1, slots]
    index = ((2 * t + 1) * source_lengths[:, None]) // (2 * target_lengths.clamp(min=1)[:, None])
    index = torch.minimum(index, (source_lengths - 1).clamp(min=0)[:, None])
    return torch.where(t < target_lengths[:, None], index, 0)


def fertility_copy_index(fertilities: Tensor, slots: int | None = None) -> tuple[Tensor, Tensor]:
    """Copy by fertility: source position ``i`` appears ``f_i`` times, in source order.

    Args:
        fertilities: ``[B, S]`` non-negative ints (0 at padded source slots).
        slots: target slots (default ``max_b sum_i f_bi``).

    Returns:
        ``(index [B, slots] int64 source positions (0 at padded slots), lengths [B] = sum_i f_bi)``.

    Example:
        >>> fertility_copy_index(torch.tensor([[2, 0, 1], [1, 1, 0]]))[0].tolist()
        [[0, 0, 2], [0, 1, 0]]
    """
    fertilities = fertilities.long()
    ends = fertilities.cumsum(1)  # [B, S]: target positions copied from source <= i
    lengths = ends[:, -1] if fertilities.size(1) else fertilities.new_zeros(fertilities.size(0))
    slots = int(lengths.max()) if slots is None and lengths.numel() else (slots or 0)
    t = torch.arange(slots, device=fertilities.device).expand(fertilities.size(0), slots).contiguous()
    index = torch.searchsorted(ends.contiguous(), t, right=True)  # first i with ends[i] > t
    return torch.where(t < lengths[:, None], index, 0), lengths


def fertilities_from_alignment(alignment: Tensor, target_lengths: Tensor, source_slots: int) -> Tensor:
    """Fertilities from a hard alignment: ``f_i`` = the number of target tokens aligned to
    source position ``i``.

    Args:
        alignment: ``[B, T]`` int64, the source position of every target token.
        target_lengths: ``[B]`` real target lengths (later alignment entries are ignored).
        source_slots: ``S``.

    Returns:
        ``[B, S]`` int64 fertilities.

    Example:
        >>> fertilities_from_alignment(torch.tensor([[0, 0, 2]]), torch.tensor([3]), 4).tolist()
        [[2, 0, 1, 0]]
    """
    real = torch.arange(alignment.size(1), device=alignment.device) < target_lengths[:, None]
    if alignment.numel() and bool(((alignment < 0) | (alignment >= source_slots))[real].any()):
        raise ValueError(f"Expected alignment entries in [0, {source_slots}) (source positions), got "
                         f"[{int(alignment[real].min())}, {int(alignment[real].max())}]")
    out = torch.zeros(alignment.size(0), source_slots, dtype=torch.long, device=alignment.device)
    return out.scatter_add_(1, torch.where(real, alignment, 0).long(), real.long())


def uniform_fertilities(source_lengths: Tensor, target_lengths: Tensor, source_slots: int | None = None) -> Tensor:
    """Fertilities of the uniform monotone alignment (:func:`uniform_copy_index`), the default
    fertility targets; fertility copy with them reproduces uniform copy.

    Example:
        >>> uniform_fertilities(torch.tensor([3]), torch.tensor([5])).tolist()
        [[2, 1, 2]]
    """
    source_slots = int(source_lengths.max()) if source_slots is None else source_slots
    return fertilities_from_alignment(uniform_copy_index(source_lengths, target_lengths), target_lengths, source_slots)


def cmlm_mask(
    target: Tensor, lengths: Tensor, mask_id: int, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Conditional masked LM training inputs (Ghazvininejad et al. 2019): in every row, a number
    ``n ~ Uniform{1, ..., T_b}`` of its target tokens, chosen uniformly, become ``mask_id``.

    Args:
        target: ``[B, T]`` right-padded target ids.
        lengths: ``[B]`` real target lengths ``T_b >= 1``.
        mask_id: the ``[MASK]`` id.
        generator: random source (default torch's global RNG).

    Returns:
        ``(inputs [B, T], masked [B, T] bool)``.
    """
    batch, slots = target.shape
    device = target.device
    real = torch.arange(slots, device=device) < lengths[:, None]
    counts = (torch.rand(batch, generator=generator, device=device) * lengths).floor().long() + 1  # [B] in 1..T_b
    counts = torch.minimum(counts, lengths)
    noise = torch.rand(batch, slots, generator=generator, device=device).masked_fill(~real, 2.0)
    rank = noise.argsort(1).argsort(1)  # rank of every slot among its row
    masked = (rank < counts[:, None]) & real
    return torch.where(masked, mask_id, target), masked


def nat_targets(tgt: Tensor, *, pad_id: int, bos_id: int, eos_id: int) -> Tensor:
    """``[BOS, y1, ..., yn, EOS, PAD...]`` ``[B, T + 2]`` -> ``[y1, ..., yn, PAD...]`` ``[B, T]``
    (a leading BOS and every EOS removed; the rows stay right-padded).

    Example:
        >>> nat_targets(torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]]), pad_id=0, bos_id=1, eos_id=2).tolist()
        [[5, 6], [7, 0]]
    """
    if not isinstance(tgt, Tensor) or tgt.dim() != 2:
        raise ValueError(f"Expected tgt as int64 ids [B, T], got {type(tgt).__name__ if not isinstance(tgt, Tensor) else list(tgt.shape)}")
    body = tgt[:, 1:] if tgt.size(1) and bool((tgt[:, 0] == bos_id).all()) else tgt
    body = torch.where(body == eos_id, pad_id, body)
    lengths = (body != pad_id).sum(1)
    keep = body != pad_id
    out = torch.full((tgt.size(0), int(lengths.max()) if lengths.numel() else 0), pad_id, dtype=tgt.dtype, device=tgt.device)
    slots = torch.arange(out.size(1), device=tgt.device) < lengths[:, None]
    out[slots] = body[keep]
    return out


def _at_least_float(x: Tensor) -> Tensor:
    """``x`` in float32, or float64 if it is (length / token statistics of half models in float32)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _source_embeddings(encoder: Encoder, src: Tensor | Vectors) -> Tensor:
    """``[B, S, E]`` source embeddings without positions (what copy-based decoder inputs read)."""
    if encoder.reads_vectors:
        features, _ = _check_vectors(src, encoder.config.input_features)
        return encoder.embedding.embed_values(features)
    return encoder.embedding.embed_values(src)


def _check_target(target: Tensor, config: TransformerConfig) -> Tensor:
    lengths = _lengths(target, config.pad_id, "target")
    _check_ids(target, config.vocab_size, "target")
    if bool((lengths == 0).any()):
        row = int((lengths == 0).nonzero()[0])
        raise ValueError(f"Expected every target to have at least one token, but row {row} is empty")
    return lengths


def _check_configs(config: Any, sub: Any, sub_type: type, name: str) -> Any:
    """Check a model's ``TransformerConfig`` and its own config ``sub`` (None: the default
    ``sub_type()``); returns ``sub``."""
    if not isinstance(config, TransformerConfig):
        raise TypeError(f"Expected config to be a TransformerConfig, got {type(config).__name__}")
    sub = sub_type() if sub is None else sub
    if not isinstance(sub, sub_type):
        raise TypeError(f"Expected {name} to be a {sub_type.__name__} or None, got {type(sub).__name__}")
    if config.copy:
        raise ValueError("The copy mechanism (copy=True) is for the autoregressive EncoderDecoder; "
                         "non-autoregressive models have none: set copy=False")
    return sub


def _bidirectional_decoder(config: TransformerConfig, shared: nn.Embedding | None) -> Decoder:
    """:class:`Decoder` (token embedding, blocks with cross-attention, output layer) whose
    relative-position bias, if any, tells earlier from later keys (the decoder is not causal)."""
    decoder = Decoder(config, cross=True, embedding=shared)
    if config.position == "relative":
        decoder.stack = _Stack(
            config, config.layer_patterns("decoder", config.decoder_layers), cross=True, bidirectional=True,
            mechanisms=config.layer_attention("decoder", config.decoder_layers),
        )
    return decoder


def _decoder_states(
    stack: _Stack,
    config: TransformerConfig,
    x: Tensor,
    lengths: Tensor,
    slots: int,
    memory: Tensor,
    source_lengths: Tensor,
    memory_caches: list[LayerCache] | None = None,
) -> Tensor:
    """Run the (non-causal) blocks over decoder inputs ``x`` ``[B * T, E]`` of right-padded rows
    of ``lengths`` ``[B]`` in ``T = slots``, cross-attending ``memory`` ``[B, S, E]`` -> ``[B * T, E]``."""
    batch, source_slots = memory.shape[:2]
    contexts = stack.full_contexts(lengths, slots)
    cross_graph = sequence_batch(
        config.cross_pattern, lengths, source_lengths, query_slots=slots, key_slots=source_slots, device=x.device
    )
    return stack(
        x, contexts, memory=memory.reshape(batch * source_slots, -1), cross_context=AttentionContext(cross_graph),
        caches=memory_caches,
    )


# ---------------------------------------------------------------------- the NAT
class NonAutoregressiveTransformer(nn.Module):
    """Non-autoregressive encoder-decoder Transformer (see the module docstring).

    Args:
        config: sizes, encoder pattern, positions, special ids (``mask_id`` for
            ``decoder_input="mask"``); ``config.decoder_pattern`` is replaced by
            ``nat.decoder_pattern`` unless that is None. ``input_features`` (speech frames)
            works: copy-based inputs then copy the projected input vectors.
        nat: the :class:`NATConfig` (default ``NATConfig()``: length classifier, uniform copy).

    Shapes:
        ``forward(src [B, S], target [B, T]) -> NATForward(logits [B, T', V], ...)``
        (``T' = T`` or the canvas); ``loss(src, target) -> (scalar, metrics)``;
        ``encode(src) -> NATEncoding``; ``decode(encoding, lengths [B'], ...) -> logits [B', T, V]``.
    """

    def __init__(self, config: TransformerConfig, nat: NATConfig | None = None) -> None:
        super().__init__()
        nat = _check_configs(config, nat, NATConfig, "nat")
        if nat.decoder_pattern is not None:
            config = dataclasses.replace(config, decoder_pattern=nat.decoder_pattern)
        if nat.decoder_input == "mask" and config.mask_id is None:
            raise ValueError("decoder_input='mask' (Mask-Predict / CMLM) needs mask_id in the TransformerConfig")
        self.config, self.nat = config, nat
        self.encoder = Encoder(config, source=True)
        shared = self.encoder.embedding.tokens if config.share_embeddings else None
        self.decoder = _bidirectional_decoder(config, shared)
        width = {"classifier": nat.max_target_length + 1, "offset": 2 * nat.max_offset + 1,
                 "fertility": nat.max_fertility + 1}.get(nat.length)
        self.length_head = nn.Linear(config.d_model, width) if width is not None else None

    pad_id = property(lambda self: self.config.pad_id)
    eos_id = property(lambda self: self.config.eos_id)

    @property
    def uses_tokens(self) -> bool:
        """True for the conditional masked LM (``decoder_input="mask"``): the decoder reads ids."""
        return self.nat.decoder_input == "mask"

    @property
    def cuts_at_end(self) -> bool:
        return self.nat.length == "cut_at_end"

    def banned_ids(self) -> list[int]:
        """Ids never emitted at decoding: pad, BOS, mask (and EOS unless cutting at END)."""
        cfg = self.config
        out = {cfg.pad_id, cfg.bos_id} | ({cfg.mask_id} if cfg.mask_id is not None else set())
        if not self.cuts_at_end:
            out.add(cfg.eos_id)
        return sorted(out)

    # ------------------------------------------------------------------ pieces
    def encode(self, src: Tensor | Vectors) -> NATEncoding:
        """``src`` ids ``[B, S]`` right-padded (or :class:`~graphattn.models.Vectors`) -> :class:`NATEncoding`."""
        if isinstance(src, (tuple, list)) and not isinstance(src, Vectors):
            raise TypeError("NonAutoregressiveTransformer takes source ids [B, S] (or Vectors), not (ids, positions) pairs")
        memory, lengths = self.encoder.encode(src)
        return NATEncoding(memory, lengths, _source_embeddings(self.encoder, src))

    def length_logits(self, encoding: NATEncoding) -> Tensor | None:
        """The length head's raw scores: ``[B, max_target_length + 1]`` (classifier), ``[B, 2M + 1]``
        over offsets ``-M..M`` (offset), ``[B, S, max_fertility + 1]`` (fertility), or None."""
        if self.length_head is None:
            return None
        memory, lengths = encoding.memory, encoding.lengths
        if self.nat.length == "fertility":
            return self.length_head(memory)
        real = (torch.arange(memory.size(1), device=memory.device) < lengths[:, None]).to(memory.dtype)
        pooled = (memory * real[..., None]).sum(1) / lengths.clamp(min=1)[:, None].to(memory.dtype)
        return self.length_head(pooled)

    def length_log_probs(self, encoding: NATEncoding) -> Tensor:
        """``[B, K]`` log-probabilities of the output lengths ``0..K-1`` (classifier or offset;
        length 0 and offsets below length 1 are impossible and renormalized away)."""
        if self.nat.length not in ("classifier", "offset"):
            raise ValueError(f"length_log_probs needs length='classifier' or 'offset', this model has {self.nat.length!r}")
        logits = _at_least_float(self.length_logits(encoding))
        if self.nat.length == "classifier":
            logits = logits.clone()
            logits[:, 0] = -math.inf
            return logits.log_softmax(-1)
        m = self.nat.max_offset
        lengths = encoding.lengths[:, None] + torch.arange(-m, m + 1, device=logits.device)  # [B, 2M + 1]
        logits = logits.masked_fill(lengths < 1, -math.inf).log_softmax(-1)
        width = int(encoding.lengths.max()) + m + 1
        out = logits.new_full((logits.size(0), width), -math.inf)
        return out.scatter(1, lengths.clamp(min=0), torch.where(lengths < 1, -math.inf, logits))

    def fertility_log_probs(self, encoding: NATEncoding) -> Tensor:
        """``[B, S, max_fertility + 1]`` log-probabilities of every source token's fertility."""
        if self.nat.length != "fertility":
            raise ValueError(f"fertility_log_probs needs length='fertility', this model has {self.nat.length!r}")
        return _at_least_float(self.length_logits(encoding)).log_softmax(-1)

    def canvas_lengths(self, source_lengths: Tensor) -> Tensor:
        """``cut_at_end``: ``min(ceil(canvas_ratio * S) + 1, max_target_length + 1)`` positions per row."""
        canvas = torch.ceil(source_lengths.double() * self.nat.canvas_ratio).long() + 1
        return canvas.clamp(max=self.nat.max_target_length + 1)

    def predict_lengths(self, encoding: NATEncoding) -> tuple[Tensor, Tensor | None]:
        """The most probable decoder length of every row ``[B]`` and, with ``length='fertility'``,
        the arg-max fertilities ``[B, S]`` (a row whose fertilities are all 0 gets 1 on its first
        token: a decoder needs one position)."""
        length = self.nat.length
        if length in ("classifier", "offset"):
            return self.length_log_probs(encoding).argmax(-1), None
        if length == "uniform_copy":
            return encoding.lengths.clone(), None
        if length == "cut_at_end":
            return self.canvas_lengths(encoding.lengths), None
        fertilities = self._masked_fertilities(self.fertility_log_probs(encoding).argmax(-1), encoding.lengths)
        return fertilities.sum(1), fertilities

    def _masked_fertilities(self, fertilities: Tensor, source_lengths: Tensor) -> Tensor:
        real = torch.arange(fertilities.size(-1), device=fertilities.device) < source_lengths[..., None]
        fertilities = torch.where(real, fertilities, 0)
        empty = fertilities.sum(-1) == 0
        fertilities[..., 0] = torch.where(empty, 1, fertilities[..., 0])
        return fertilities

    def candidate_lengths(self, encoding: NATEncoding, count: int) -> Tensor:
        """``count`` candidate lengths per row ``[B, count]``, best first: the most probable lengths
        (classifier / offset), else the predicted length ``L`` and ``L - 1, L + 1, L - 2, ...``
        (at least 1; a fertility model then reads uniform copy of its source)."""
        count = _positive_int(count, "count")
        if self.nat.length in ("classifier", "offset"):
            log_probs = self.length_log_probs(encoding)
            possible = int(torch.isfinite(log_probs).sum(1).min())
            if count > possible:
                raise ValueError(f"Asked for {count} candidate lengths, but only {possible} lengths are possible")
            return log_probs.topk(count, dim=1).indices
        center, _ = self.predict_lengths(encoding)
        steps = torch.tensor([0] + [s for k in range(1, count) for s in (-k, k)][: count - 1], device=center.device)
        return (center[:, None] + steps).clamp(min=1)

    def decoder_inputs(
        self,
        encoding: NATEncoding,
        lengths: Tensor,
        *,
        slots: int | None = None,
        tokens: Tensor | None = None,
        fertilities: Tensor | None = None,
    ) -> Tensor:
        """Decoder input vectors ``[B * T, E]`` (token / copied embedding + position + dropout).

        Args:
            encoding: the sources of the ``B`` rows.
            lengths: ``[B]`` decoder positions per row.
            slots: ``T`` (default ``max(lengths)``).
            tokens: ``[B, T]`` input ids (``decoder_input="mask"``; ``mask_id`` where unknown).
            fertilities: ``[B, S]`` (``decoder_input="fertility"``; ``lengths`` must be their sums;
                None: uniform copy).
        """
        slots = int(lengths.max()) if slots is None else slots
        batch = lengths.numel()
        positions = torch.arange(slots, device=lengths.device).expand(batch, slots)
        if self.uses_tokens:
            if tokens is None or tokens.shape != (batch, slots):
                got = list(tokens.shape) if isinstance(tokens, Tensor) else tokens
                raise ValueError(f"The masked-LM decoder reads token ids [B, T] = [{batch}, {slots}], got {got}")
            return self.decoder.embed_ids(tokens, positions, unknown_to_unk=False).reshape(batch * slots, -1)
        if fertilities is not None:
            index, sums = fertility_copy_index(fertilities, slots)
            if not torch.equal(sums, lengths):
                raise ValueError(f"Expected lengths equal to the fertility sums {sums.tolist()}, got {lengths.tolist()}")
        else:
            index = uniform_copy_index(encoding.lengths, lengths, slots)
        values = encoding.embeddings.gather(1, index[..., None].expand(-1, -1, encoding.embeddings.size(-1)))
        embedding = self.decoder.embedding
        if embedding.positions is not None:
            values = values + embedding.positions(positions).to(values.dtype)
        return embedding.dropout(values).reshape(batch * slots, -1)

    def decode(
        self,
        encoding: NATEncoding,
        lengths: Tensor,
        *,
        tokens: Tensor | None = None,
        fertilities: Tensor | None = None,
        memory_caches: list[LayerCache] | None = None,
    ) -> Tensor:
        """One parallel decoder pass: logits ``[B, T, V]`` at ``T = max(lengths)`` positions
        (rows of ``encoding`` and ``lengths`` match; use :meth:`NATEncoding.select` to expand).
        Arguments as :meth:`decoder_inputs`; ``memory_caches`` from :meth:`memory_caches` keep the
        cross-attention keys/values of the encoder output between passes over the same rows."""
        hidden = self.decoder_states(encoding, lengths, tokens=tokens, fertilities=fertilities, memory_caches=memory_caches)
        return self.decoder.output(hidden)

    def decoder_states(
        self,
        encoding: NATEncoding,
        lengths: Tensor,
        *,
        tokens: Tensor | None = None,
        fertilities: Tensor | None = None,
        memory_caches: list[LayerCache] | None = None,
    ) -> Tensor:
        """The decoder's final states ``[B, T, E]`` of one parallel pass (see :meth:`decode`)."""
        lengths = lengths.long()
        if lengths.shape != encoding.lengths.shape:
            raise ValueError(f"Expected one length per encoded row ({encoding.lengths.numel()}), got {list(lengths.shape)}")
        if bool((lengths < 1).any()):
            raise ValueError(f"Expected every decoder length >= 1, got {lengths.tolist()}")
        slots = int(lengths.max())
        x = self.decoder_inputs(encoding, lengths, slots=slots, tokens=tokens, fertilities=fertilities)
        hidden = _decoder_states(
            self.decoder.stack, self.config, x, lengths, slots, encoding.memory, encoding.lengths, memory_caches
        )
        return hidden.view(lengths.numel(), slots, -1)

    def memory_caches(self, encoding: NATEncoding) -> list[LayerCache]:
        """Empty per-layer caches of the cross-attention keys/values of ``encoding``'s rows, for
        several :meth:`decode` passes over them (filled by the first; reorder them with
        ``cache.reorder(index)`` when the rows change)."""
        return [LayerCache(None, source_slots=encoding.memory.size(1)) for _ in self.decoder.stack.layers]

    # ------------------------------------------------------------------ training
    def forward(
        self,
        src: Tensor | Vectors,
        target: Tensor,
        *,
        fertilities: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> NATForward:
        """Teacher-forced pass on gold lengths (and gold fertilities; CMLM: a random mask).

        Args:
            src: ``[B, S]`` source ids (or Vectors).
            target: ``[B, T]`` target ids without BOS / EOS, right-padded, every row non-empty.
            fertilities: ``[B, S]`` gold fertilities summing to the target lengths (default
                :func:`uniform_fertilities`); ``length='fertility'`` only.
            generator: random source of the CMLM masking.
        """
        target_lengths = _check_target(target, self.config)
        encoding = self.encode(src)
        if target.size(0) != encoding.lengths.numel():
            raise ValueError(f"Expected as many targets as sources, got {target.size(0)} and {encoding.lengths.numel()}")
        lengths = target_lengths
        if self.cuts_at_end:
            lengths = self.canvas_lengths(encoding.lengths)
            if bool((target_lengths + 1 > lengths).any()):
                row = int((target_lengths + 1 > lengths).nonzero()[0])
                raise ValueError(
                    f"Row {row}: its target ({int(target_lengths[row])} tokens + END) does not fit the canvas of "
                    f"{int(lengths[row])} positions; raise canvas_ratio or max_target_length"
                )
        if fertilities is not None and self.nat.length != "fertility":
            raise ValueError("fertilities are the targets of length='fertility' models")
        if self.nat.length == "fertility":
            if fertilities is None:
                fertilities = uniform_fertilities(encoding.lengths, target_lengths, encoding.memory.size(1))
            fertilities = self._check_fertilities(fertilities, encoding, target_lengths)
        inputs = None
        if self.uses_tokens:
            canvas = self._canvas_target(target, target_lengths, lengths)
            inputs, _ = cmlm_mask(canvas, lengths, self.config.mask_id, generator=generator)
        logits = self.decode(
            encoding, lengths, tokens=inputs,
            fertilities=fertilities if self.nat.decoder_input == "fertility" else None,
        )
        return NATForward(logits, lengths, self.length_logits(encoding), inputs, encoding.lengths)

    def _check_fertilities(self, fertilities: Tensor, encoding: NATEncoding, target_lengths: Tensor) -> Tensor:
        shape = tuple(encoding.memory.shape[:2])
        if not isinstance(fertilities, Tensor) or tuple(fertilities.shape) != shape or fertilities.dtype.is_floating_point:
            got = f"{fertilities.dtype} {list(fertilities.shape)}" if isinstance(fertilities, Tensor) else type(fertilities).__name__
            raise ValueError(f"Expected fertilities as an integer tensor [B, S] = {list(shape)}, got {got}")
        real = torch.arange(shape[1], device=fertilities.device) < encoding.lengths[:, None]
        fertilities = torch.where(real, fertilities.long(), 0)
        if bool((fertilities < 0).any()) or bool((fertilities > self.nat.max_fertility).any()):
            raise ValueError(f"Expected fertilities in [0, {self.nat.max_fertility}] (max_fertility), got "
                             f"[{int(fertilities.min())}, {int(fertilities.max())}]")
        if not torch.equal(fertilities.sum(1), target_lengths):
            raise ValueError(f"Expected fertilities summing to the target lengths {target_lengths.tolist()}, got "
                             f"{fertilities.sum(1).tolist()}")
        return fertilities

    def _canvas_target(self, target: Tensor, target_lengths: Tensor, lengths: Tensor) -> Tensor:
        """The token every decoder position must produce ``[B, max(lengths)]``: the target, and
        with ``cut_at_end`` END after it and pad up to the canvas length."""
        slots = int(lengths.max())
        out = torch.full((target.size(0), slots), self.config.pad_id, dtype=torch.long, device=target.device)
        width = min(slots, target.size(1))
        out[:, :width] = target[:, :width]
        if self.cuts_at_end:
            out.scatter_(1, target_lengths[:, None], self.config.eos_id)
        return out

    def loss(
        self,
        src: Tensor | Vectors,
        target: Tensor,
        *,
        fertilities: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Token loss + ``length_loss_weight`` x length (or fertility) loss.

        The token loss is the cross-entropy at every target position (CMLM: at the masked
        positions only; ``cut_at_end``: at every canvas position, END and the pad after it
        included), averaged over the counted positions. The length loss is the cross-entropy of
        the gold length (classifier), of the gold offset clipped to ``[-max_offset, max_offset]``
        (offset) or of the gold fertilities averaged over source tokens (fertility).

        Returns:
            ``(loss, {"token_accuracy": ..., "length_accuracy": ...})`` (no length accuracy
            for models that predict no length).
        """
        out = self(src, target, fertilities=fertilities, generator=generator)
        target_lengths = (target != self.config.pad_id).sum(1)
        gold = self._canvas_target(target, target_lengths, out.lengths)
        counted = torch.arange(gold.size(1), device=gold.device) < out.lengths[:, None]
        if out.inputs is not None:
            counted &= out.inputs == self.config.mask_id
        per_token = F.cross_entropy(out.logits.transpose(1, 2).float(), gold, reduction="none",
                                    label_smoothing=self.nat.label_smoothing)
        loss = (per_token * counted).sum() / counted.sum().clamp(min=1)
        metrics: dict[str, Tensor] = {}
        with torch.no_grad():
            metrics["token_accuracy"] = ((out.logits.argmax(-1) == gold) & counted).sum() / counted.sum().clamp(min=1)
        if out.length_logits is not None:
            length_loss, accuracy = self._length_loss(out.length_logits, out.source_lengths, target_lengths, fertilities)
            loss = loss + self.nat.length_loss_weight * length_loss
            metrics["length_accuracy"] = accuracy
        return loss, metrics

    def _length_loss(
        self, logits: Tensor, source_lengths: Tensor, target_lengths: Tensor, fertilities: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        nat = self.nat
        if nat.length == "classifier":
            if bool((target_lengths > nat.max_target_length).any()):
                raise ValueError(f"A target has {int(target_lengths.max())} tokens, more than max_target_length = "
                                 f"{nat.max_target_length}; raise max_target_length")
            gold = target_lengths
        elif nat.length == "offset":
            gold = (target_lengths - source_lengths).clamp(-nat.max_offset, nat.max_offset) + nat.max_offset
        else:
            if fertilities is None:
                fertilities = uniform_fertilities(source_lengths, target_lengths, logits.size(1))
            real = torch.arange(logits.size(1), device=logits.device) < source_lengths[:, None]
            per = F.cross_entropy(logits.float().transpose(1, 2), fertilities.long().clamp(max=nat.max_fertility), reduction="none")
            loss = (per * real).sum() / real.sum().clamp(min=1)
            with torch.no_grad():
                accuracy = ((logits.argmax(-1) == fertilities) & real).sum() / real.sum().clamp(min=1)
            return loss, accuracy
        loss = F.cross_entropy(logits.float(), gold)
        with torch.no_grad():
            accuracy = (logits.argmax(-1) == gold).float().mean()
        return loss, accuracy

    def extra_repr(self) -> str:
        return f"length={self.nat.length!r}, decoder_input={self.nat.decoder_input!r}"


class NATLoss:
    """``loss_fn`` for :func:`graphattn.train.fit`: a batch ``(src [B, S], tgt [B, T])`` with
    ``tgt = [BOS, y, EOS, PAD...]`` (:class:`~graphattn.train.Seq2SeqBatch`) -> the model's
    :meth:`~NonAutoregressiveTransformer.loss` on :func:`nat_targets` (or :meth:`CTCNAT.loss`)."""

    def __call__(self, model: nn.Module, batch: Any, state: Any = None) -> tuple[Tensor, dict[str, Tensor]]:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(f"Expected a (src, tgt) batch, got {type(batch).__name__}")
        src, tgt = batch
        inner = getattr(model, "module", model)  # DistributedDataParallel
        cfg = inner.config
        return inner.loss(src, nat_targets(tgt, pad_id=cfg.pad_id, bos_id=cfg.bos_id, eos_id=cfg.eos_id))


# ---------------------------------------------------------------------- CTC
@dataclass(frozen=True)
class CTCNATConfig:
    """The non-autoregressive parts of :class:`CTCNAT`.

    Attributes:
        upsample: ``k``: every encoder state becomes ``k`` canvas positions (``k * S`` per row;
            a target of ``U`` tokens with ``r`` adjacent repeats needs ``k * S >= U + r``).
        decoder_pattern: the canvas self-attention pattern (None: the TransformerConfig's).
        imputer: the canvas also reads a token per position (symbol, blank or ``[MASK]``) and is
            trained to fill masked positions of the best CTC alignment given the others
            (Imputer-style refinement).
        imputer_weight: weight of that loss next to the CTC loss.
    """

    upsample: int = 2
    decoder_pattern: PatternLike | tuple[PatternLike, ...] | None = "full"
    imputer: bool = False
    imputer_weight: float = 1.0

    def __post_init__(self) -> None:
        _positive_int(self.upsample, "upsample")
        if not self.imputer_weight >= 0:
            raise ValueError(f"Expected imputer_weight >= 0, got {self.imputer_weight!r}")


class _CanvasEmbedding(_InputEmbedding):
    """Canvas token embedding (``V`` symbols, the blank ``V``, ``[MASK]`` ``V + 1``) + positions + dropout."""

    def __init__(self, config: TransformerConfig, size: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(size, config.d_model)
        nn.init.normal_(self.tokens.weight, std=0.02)
        self._add_positions(config)

    def embed_values(self, ids: Tensor) -> Tensor:
        return self.tokens(ids)


class CTCNAT(nn.Module):
    """CTC non-autoregressive Transformer (Libovicky & Helcl 2018) with optional Imputer-style
    refinement (Saharia et al. 2020).

    Encoder -> ``Linear(E, k E)`` upsampling (``k * S_b`` canvas positions per row) -> canvas
    input = upsampled state + canvas token embedding (``[MASK]`` everywhere unless refining) +
    positions -> ``N`` non-causal blocks with cross-attention to the encoder -> ``Linear(E, V + 1)``
    -> log-softmax over the ``V`` symbols and the blank (id ``V``, :attr:`blank`).

    Args:
        config: sizes, encoder, positions; ``config.vocab_size`` symbols.
        ctc: the :class:`CTCNATConfig`.

    Shapes:
        ``forward(src [B, S], canvas [B, k S] | None) -> CTCOutput(log_probs [B, k S, V + 1],
        lengths [B] = k S_b)``; ``loss(src, target [B, U]) -> (scalar, metrics)``.
    """

    def __init__(self, config: TransformerConfig, ctc: CTCNATConfig | None = None) -> None:
        super().__init__()
        ctc = _check_configs(config, ctc, CTCNATConfig, "ctc")
        if ctc.decoder_pattern is not None:
            config = dataclasses.replace(config, decoder_pattern=ctc.decoder_pattern)
        self.config, self.ctc = config, ctc
        self.blank = config.vocab_size
        self.mask_id = config.vocab_size + 1
        self.num_classes = config.vocab_size + 1
        self.encoder = Encoder(config, source=True)
        self.upsample = nn.Linear(config.d_model, ctc.upsample * config.d_model)
        self.canvas_embedding = _CanvasEmbedding(config, config.vocab_size + 2)
        self.stack = _Stack(
            config, config.layer_patterns("decoder", config.decoder_layers), cross=True, bidirectional=True,
            mechanisms=config.layer_attention("decoder", config.decoder_layers),
        )
        self.output = nn.Linear(config.d_model, self.num_classes)

    pad_id = property(lambda self: self.config.pad_id)

    def encode(self, src: Tensor | Vectors) -> NATEncoding:
        """-> :class:`NATEncoding` whose ``embeddings`` are the upsampled states ``[B, k S, E]``
        and whose ``lengths`` are the source lengths."""
        memory, lengths = self.encoder.encode(src)
        batch, slots, width = memory.shape
        upsampled = self.upsample(memory).view(batch, slots * self.ctc.upsample, width)
        return NATEncoding(memory, lengths, upsampled)

    def canvas_lengths(self, source_lengths: Tensor) -> Tensor:
        return source_lengths * self.ctc.upsample

    def decode(self, encoding: NATEncoding, canvas: Tensor | None = None) -> CTCOutput:
        """Canvas log-probabilities ``[B, k S, V + 1]`` (float32 for half models) given canvas
        tokens ``[B, k S]`` (None: all ``[MASK]``)."""
        lengths = self.canvas_lengths(encoding.lengths)
        batch, slots = encoding.embeddings.shape[:2]
        if canvas is None:
            canvas = torch.full((batch, slots), self.mask_id, dtype=torch.long, device=lengths.device)
        elif not self.ctc.imputer:
            raise ValueError("This CTCNAT reads no canvas tokens; build it with CTCNATConfig(imputer=True) to refine")
        if canvas.shape != (batch, slots):
            raise ValueError(f"Expected canvas tokens [B, k S] = [{batch}, {slots}], got {list(canvas.shape)}")
        _check_ids(canvas, self.config.vocab_size + 2, "canvas")
        positions = torch.arange(slots, device=lengths.device).expand(batch, slots)
        if not self.ctc.imputer:
            canvas = torch.full_like(canvas, self.mask_id)
        x = encoding.embeddings + self.canvas_embedding(canvas, positions)  # [B, kS, E]
        hidden = _decoder_states(self.stack, self.config, x.reshape(batch * slots, -1), lengths, slots,
                                 encoding.memory, encoding.lengths)
        logits = self.output(hidden).view(batch, slots, -1)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        return CTCOutput(logits.log_softmax(-1), lengths)

    def forward(self, src: Tensor | Vectors, canvas: Tensor | None = None) -> CTCOutput:
        """``src`` -> ``CTCOutput(log_probs [B, k S, V + 1], lengths [B])``."""
        return self.decode(self.encode(src), canvas)

    def loss(
        self, src: Tensor | Vectors, target: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """CTC loss (``torch.nn.functional.ctc_loss``, ``zero_infinity=True``, mean over rows of
        the per-row negative log-likelihood divided by the target length) of the all-``[MASK]``
        canvas; with ``imputer``, plus ``imputer_weight`` x the cross-entropy of the masked
        canvas positions against the best alignment (:func:`ctc_best_alignment` of the detached
        all-mask prediction), where ``n ~ Uniform{1..k S_b}`` positions are masked and the others
        read the alignment.

        Args:
            src: ``[B, S]`` source ids (or Vectors).
            target: ``[B, U]`` target ids without BOS / EOS, right-padded, every row non-empty.
        """
        target_lengths = _check_target(target, self.config)
        encoding = self.encode(src)
        log_probs, lengths = self.decode(encoding)
        losses = F.ctc_loss(log_probs.transpose(0, 1), target, lengths, target_lengths, blank=self.blank,
                            reduction="none", zero_infinity=True)
        loss = (losses / target_lengths.to(losses.dtype)).mean()
        metrics: dict[str, Tensor] = {"ctc": loss.detach()}
        if self.ctc.imputer and self.ctc.imputer_weight > 0:
            with torch.no_grad():
                path, valid = ctc_best_alignment(log_probs.detach(), lengths, target, target_lengths, blank=self.blank)
            canvas, masked = cmlm_mask(path, lengths, self.mask_id, generator=generator)
            refined, _ = self.decode(encoding, canvas)
            counted = masked & valid[:, None]
            per = F.nll_loss(refined.transpose(1, 2), path, reduction="none")
            imputer = (per * counted).sum() / counted.sum().clamp(min=1)
            loss = loss + self.ctc.imputer_weight * imputer
            metrics["imputer"] = imputer.detach()
        return loss, metrics

    def extra_repr(self) -> str:
        return f"upsample={self.ctc.upsample}, blank={self.blank}, imputer={self.ctc.imputer}"


def ctc_best_alignment(
    log_probs: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor, *, blank: int
) -> tuple[Tensor, Tensor]:
    """The most probable CTC path (Viterbi forced alignment) of every target: of all frame
    labellings that collapse (:func:`~graphattn.models.ctc_collapse`) to ``targets[b]``, the one
    with the largest ``sum_t log_probs[b, t, path_t]``.

    Dynamic programming over the blank-extended target ``(-, y1, -, y2, ..., -)`` (a step may
    stay, advance by one, or skip a blank between two different labels), vectorized over the
    batch and the states, a Python loop over frames.

    Args:
        log_probs: ``[B, L, C]`` per-frame log-probabilities.
        lengths: ``[B]`` real frames.
        targets: ``[B, U]`` labels (right-padded, any padding).
        target_lengths: ``[B]``.
        blank: the blank id.

    Returns:
        ``(paths [B, L] int64 (blank at padded frames), valid [B] bool)``: ``valid`` is False for a
        row with no path (a target too long for its frames); its path is all blank.

    Example:
        >>> lp = torch.log(torch.tensor([[[0.1, 0.9, 0.0], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]]) + 1e-9)
        >>> ctc_best_alignment(lp, torch.tensor([3]), torch.tensor([[1, 2]]), torch.tensor([2]), blank=0)[0].tolist()
        [[1, 1, 2]]
    """
    batch, frames, _ = log_probs.shape
    device = log_probs.device
    units = targets.size(1)
    states = 2 * units + 1
    s = torch.arange(states, device=device)
    label_index = ((s - 1) // 2).clamp(min=0, max=max(units - 1, 0))
    if units:
        extended = torch.where(s % 2 == 1, targets.long()[:, label_index], blank)  # [B, Z]
    else:
        extended = torch.full((batch, states), blank, dtype=torch.long, device=device)
    valid_state = s[None, :] < (2 * target_lengths[:, None] + 1)
    skip = (s[None, :] % 2 == 1) & (s[None, :] >= 2)
    if states > 2:
        skip = skip & torch.cat([torch.zeros(batch, 2, dtype=torch.bool, device=device), extended[:, 2:] != extended[:, :-2]], 1)
    neg = torch.tensor(-math.inf, dtype=torch.float64, device=device)
    lp = log_probs.double()
    alpha = torch.full((batch, states), -math.inf, dtype=torch.float64, device=device)
    if frames:
        first = lp[:, 0].gather(1, extended)
        alpha[:, 0] = first[:, 0]
        if states > 1:
            alpha[:, 1] = torch.where(target_lengths > 0, first[:, 1], neg)
        alpha = torch.where(valid_state, alpha, neg)
    pointers = torch.zeros(max(frames, 1), batch, states, dtype=torch.long, device=device)
    for t in range(1, frames):
        stay = alpha
        step = torch.cat([alpha.new_full((batch, 1), -math.inf), alpha[:, :-1]], 1)
        jump = torch.cat([alpha.new_full((batch, 2), -math.inf), alpha[:, :-2]], 1)[:, :states]
        jump = torch.where(skip, jump, neg)
        best, choice = torch.stack([stay, step, jump], -1).max(-1)
        new = torch.where(valid_state, best + lp[:, t].gather(1, extended), neg)
        running = (t < lengths)[:, None]
        alpha = torch.where(running, new, alpha)
        pointers[t] = choice
    paths = torch.full((batch, frames), blank, dtype=torch.long, device=device)
    valid = torch.zeros(batch, dtype=torch.bool, device=device)
    ends = (2 * target_lengths).tolist()
    alpha_list, pointer_rows, extended_rows = alpha.tolist(), pointers.permute(1, 0, 2).tolist(), extended.tolist()
    out_rows = paths.tolist()
    for b, (length, end) in enumerate(zip(lengths.tolist(), ends)):
        if length == 0:
            valid[b] = end == 0
            continue
        candidates = [end] + ([end - 1] if end >= 1 else [])
        state = max(candidates, key=lambda c: alpha_list[b][c])
        if alpha_list[b][state] == -math.inf:
            continue
        valid[b] = True
        for t in range(length - 1, -1, -1):
            out_rows[b][t] = extended_rows[b][state]
            if t:
                state -= pointer_rows[b][t][state]
    return torch.tensor(out_rows, dtype=torch.long, device=device).view(batch, frames), valid


# ---------------------------------------------------------------------- Levenshtein
def levenshtein_oracle(hypothesis: Sequence[int], target: Sequence[int]) -> tuple[list[bool], list[list[int]]]:
    """The fewest insertions and deletions (no substitutions) that turn ``hypothesis`` into
    ``target`` -- the expert policy of the Levenshtein Transformer (Gu et al. 2019): keep a
    longest common subsequence (the earliest one, by dynamic programming), delete every other
    hypothesis token, insert the missing target tokens into the gaps.

    Args:
        hypothesis, target: token id sequences.

    Returns:
        ``(delete, insertions)``: ``delete[i]`` whether hypothesis token ``i`` goes;
        ``insertions[k]`` the tokens to insert into slot ``k`` of the hypothesis after deletion
        (slot ``k`` is before its ``k``-th kept token; there are ``kept + 1`` slots).

    Example:
        >>> levenshtein_oracle([5, 6, 7], [5, 8, 7, 9])
        ([False, True, False], [[], [8], [9]])
    """
    h, t = list(hypothesis), list(target)
    n, m = len(h), len(t)
    # lcs[i][j]: longest common subsequence of h[i:] and t[j:]
    lcs = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, below = lcs[i], lcs[i + 1]
        for j in range(m - 1, -1, -1):
            row[j] = below[j + 1] + 1 if h[i] == t[j] else max(below[j], row[j + 1])
    delete = [True] * n
    insertions: list[list[int]] = [[]]
    i = j = 0
    while i < n and j < m:
        if h[i] == t[j] and lcs[i][j] == lcs[i + 1][j + 1] + 1:
            delete[i] = False
            insertions.append([])
            i, j = i + 1, j + 1
        elif lcs[i + 1][j] >= lcs[i][j + 1]:
            i += 1  # delete h[i]
        else:
            insertions[-1].append(t[j])  # insert t[j]
            j += 1
    insertions[-1].extend(t[j:])
    return delete, insertions


def canvas_ids(rows: Sequence[Sequence[int]], config: TransformerConfig,
               device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """The decoder canvas of edit-based decoders: ``[BOS] + row + [EOS]`` of every row,
    right-padded with ``config.pad_id`` -> ``(ids [B, T], lengths [B])``."""
    width = max(len(r) for r in rows) + 2
    ids = torch.full((len(rows), width), config.pad_id, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row) + 2] = torch.tensor([config.bos_id, *row, config.eos_id], dtype=torch.long)
    return ids.to(device), torch.tensor([len(r) + 2 for r in rows], dtype=torch.long, device=device)


class LevenshteinTransformer(nn.Module):
    """Levenshtein Transformer (Gu et al. 2019), simplified: a NAT that edits its output by
    deletions and insertions.

    The encoder and the non-causal decoder are those of a masked-LM
    :class:`NonAutoregressiveTransformer` (:attr:`nat`); the decoder reads the current canvas
    ``[BOS, y1, ..., yn, EOS]`` (``[MASK]`` at placeholders) and three heads act on its states:
    *deletion* (``Linear(E, 2)`` per token: keep / delete), *placeholder insertion*
    (``Linear(2E, max_insertions + 1)`` on every pair of neighbouring states: how many tokens to
    insert between them) and *token prediction* (the decoder's output layer at placeholders).
    :func:`graphattn.decoding.levenshtein_decode` starts from the empty canvas and applies
    delete -> insert placeholders -> fill, until the output stops changing.

    Training (:meth:`loss`, the sum of three cross-entropies, expert = :func:`levenshtein_oracle`):
    a uniformly drawn number of target tokens is deleted; the placeholder head learns how many
    tokens each gap of the remaining canvas misses, the token head fills the gaps of the
    target; the deletion head learns which tokens of the model's own filled canvas (arg-max,
    no gradient) the oracle would delete.

    Args:
        config: as :class:`NonAutoregressiveTransformer` (needs ``mask_id``).
        max_insertions: the most tokens inserted into one gap at once (larger counts in
            training are clipped).
        decoder_pattern: the decoder's self-attention pattern.
    """

    def __init__(self, config: TransformerConfig, *, max_insertions: int = 8,
                 decoder_pattern: PatternLike | tuple[PatternLike, ...] | None = "full") -> None:
        super().__init__()
        self.max_insertions = _positive_int(max_insertions, "max_insertions")
        self.nat = NonAutoregressiveTransformer(
            config, NATConfig(length="uniform_copy", decoder_input="mask", decoder_pattern=decoder_pattern)
        )
        self.config = self.nat.config
        width = self.config.d_model
        self.delete_head = nn.Linear(width, 2)
        self.insert_head = nn.Linear(2 * width, self.max_insertions + 1)

    pad_id = property(lambda self: self.config.pad_id)
    eos_id = property(lambda self: self.config.eos_id)

    def banned_ids(self) -> list[int]:
        return self.nat.banned_ids()

    def encode(self, src: Tensor | Vectors) -> NATEncoding:
        return self.nat.encode(src)

    def canvas(self, rows: Sequence[Sequence[int]], device: torch.device | None = None) -> tuple[Tensor, Tensor]:
        """``[BOS] + row + [EOS]`` of every row, right-padded: ``(ids [B, T], lengths [B])``."""
        return canvas_ids(rows, self.config, device)

    def states(self, encoding: NATEncoding, canvas: Tensor, lengths: Tensor) -> Tensor:
        """Decoder states ``[B, T, E]`` over the canvas."""
        return self.nat.decoder_states(encoding, lengths, tokens=canvas)

    def deletion_logits(self, states: Tensor) -> Tensor:
        """``[B, T, 2]`` (index 1: delete)."""
        return self.delete_head(states)

    def insertion_logits(self, states: Tensor) -> Tensor:
        """``[B, T - 1, max_insertions + 1]``: slot ``k`` lies between canvas positions ``k`` and ``k + 1``."""
        return self.insert_head(torch.cat([states[:, :-1], states[:, 1:]], -1))

    def token_logits(self, states: Tensor) -> Tensor:
        """``[B, T, V]``."""
        return self.nat.decoder.output(states)

    def loss(
        self, src: Tensor | Vectors, target: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Placeholder + token + deletion cross-entropies (see the class docstring).

        Args:
            src: ``[B, S]`` source ids (or Vectors).
            target: ``[B, T]`` target ids without BOS / EOS, right-padded, every row non-empty.
        """
        cfg = self.config
        target_lengths = _check_target(target, cfg)
        encoding = self.encode(src)
        device = target.device
        rows = [row[:n] for row, n in zip(target.tolist(), target_lengths.tolist())]
        _, dropped = cmlm_mask(target, target_lengths, cfg.mask_id, generator=generator)  # tokens to delete
        dropped = dropped.tolist()
        kept_rows, gaps = [], []
        for row, drop in zip(rows, dropped):
            kept, counts = [], [0]
            for token, gone in zip(row, drop):
                if gone:
                    counts[-1] += 1
                else:
                    kept.append(token)
                    counts.append(0)
            kept_rows.append(kept)
            gaps.append(counts)
        # 1. placeholders: how many tokens every gap of the partial canvas misses
        canvas, lengths = self.canvas(kept_rows, device)
        slots = lengths - 1
        gold = torch.zeros(len(rows), canvas.size(1) - 1, dtype=torch.long, device=device)
        for b, counts in enumerate(gaps):
            gold[b, : len(counts)] = torch.tensor(counts, dtype=torch.long).clamp(max=self.max_insertions)
        insert_logits = self.insertion_logits(self.states(encoding, canvas, lengths))
        real_slots = torch.arange(gold.size(1), device=device) < slots[:, None]
        per = F.cross_entropy(insert_logits.float().transpose(1, 2), gold, reduction="none")
        insert_loss = (per * real_slots).sum() / real_slots.sum()
        # 2. tokens: the target with [MASK] where tokens were deleted
        full, full_lengths = self.canvas(rows, device)
        masked = torch.zeros_like(full, dtype=torch.bool)
        for b, drop in enumerate(dropped):
            masked[b, 1: 1 + len(rows[b])] = torch.tensor(drop[: len(rows[b])], dtype=torch.bool)
        inputs = torch.where(masked, cfg.mask_id, full)
        token_logits = self.token_logits(self.states(encoding, inputs, full_lengths))
        per = F.cross_entropy(token_logits.float().transpose(1, 2), full, reduction="none")
        token_loss = (per * masked).sum() / masked.sum().clamp(min=1)
        # 3. deletion: what the oracle removes from the model's own filled canvas
        with torch.no_grad():
            guess = _at_least_float(token_logits.detach()).index_fill(
                -1, torch.tensor(self.banned_ids(), device=device), -math.inf).argmax(-1)
            filled = torch.where(masked, guess, full)
        labels = torch.zeros_like(filled)
        for b, row in enumerate(filled.tolist()):
            hypothesis = row[1: 1 + len(rows[b])]
            delete, _ = levenshtein_oracle(hypothesis, rows[b])
            labels[b, 1: 1 + len(delete)] = torch.tensor(delete, dtype=torch.long)
        delete_logits = self.deletion_logits(self.states(encoding, filled, full_lengths))
        position = torch.arange(filled.size(1), device=device)
        real_tokens = (position >= 1) & (position < full_lengths[:, None] - 1)
        per = F.cross_entropy(delete_logits.float().transpose(1, 2), labels, reduction="none")
        delete_loss = (per * real_tokens).sum() / real_tokens.sum().clamp(min=1)
        with torch.no_grad():
            metrics = {
                "insert_accuracy": ((insert_logits.argmax(-1) == gold) & real_slots).sum() / real_slots.sum(),
                "token_accuracy": ((guess == full) & masked).sum() / masked.sum().clamp(min=1),
                "delete_accuracy": ((delete_logits.argmax(-1) == labels) & real_tokens).sum() / real_tokens.sum().clamp(min=1),
            }
        return insert_loss + token_loss + delete_loss, metrics

    def extra_repr(self) -> str:
        return f"max_insertions={self.max_insertions}"
