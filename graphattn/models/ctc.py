"""Connectionist Temporal Classification (CTC) on the graphattn encoder: a label per frame,
collapsed into a shorter output sequence (Graves et al. 2006).

* :class:`CTCModel`: the :class:`~graphattn.models.Encoder` of a
  :class:`~graphattn.models.TransformerConfig` (any pattern per layer, e.g.
  ``local(window=8)`` over speech frames) and ``Linear(E, V)`` -> log-probabilities ``[B, T, V]``
  over ``V`` output symbols, one of them the *blank*; :meth:`CTCModel.loss` is
  ``torch.nn.functional.ctc_loss`` on them.
* Decoding: :func:`ctc_greedy_decode` (best path: the arg-max per frame, repeats collapsed,
  blanks dropped) and :func:`ctc_beam_search` (CTC prefix beam search in log space, which sums
  over all the paths of a labelling; with a beam as large as the number of prefixes it finds the
  most probable labelling exactly).
* Metrics: :func:`edit_distance` (Levenshtein) and :func:`character_error_rate`.

The collapse rule: a path ``pi`` (one symbol per frame) becomes the labelling ``B(pi)`` by
merging runs of the same symbol and then removing blanks, so ``a a - a b -`` -> ``a a b``.

Example:
    >>> import torch
    >>> from graphattn.models import TransformerConfig, Vectors
    >>> config = TransformerConfig(vocab_size=6, input_features=4, d_model=16, num_heads=2,
    ...                            num_layers=1, encoder_pattern="local(window=2)")
    >>> model = CTCModel(config)
    >>> inputs = Vectors(torch.randn(2, 7, 4), torch.tensor([7, 5]))
    >>> out = model(inputs)
    >>> out.log_probs.shape, out.lengths.tolist()
    (torch.Size([2, 7, 6]), [7, 5])
    >>> targets = torch.tensor([[3, 4, 5], [4, 4, 0]])   # padded with anything past the lengths
    >>> loss = model.loss(inputs, targets, torch.tensor([3, 2]))
    >>> bool(torch.isfinite(loss))
    True
    >>> len(ctc_beam_search(out.log_probs, out.lengths, beam_size=4))
    2
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.models.transformer import Encoder, TransformerConfig, Vectors

__all__ = [
    "CTCModel",
    "CTCOutput",
    "ctc_greedy_decode",
    "ctc_beam_search",
    "ctc_collapse",
    "edit_distance",
    "character_error_rate",
    "CTC_REDUCTIONS",
]

CTC_REDUCTIONS = ("mean", "sum", "none")
"""How :meth:`CTCModel.loss` reduces the per-sequence losses."""


class CTCOutput(NamedTuple):
    """What :class:`CTCModel` returns: ``log_probs`` ``[B, T, V]`` (log-softmax over the ``V``
    symbols, blank included, in the model's dtype -- float32 for half / bfloat16 models; rows
    past ``lengths[b]`` are not meaningful) and ``lengths``
    int64 ``[B]`` (real frames per row)."""

    log_probs: Tensor
    lengths: Tensor


class CTCModel(nn.Module):
    """Encoder + ``Linear(E, V)`` + log-softmax: frames (or tokens) ``[B, T]`` -> per-frame
    log-probabilities ``[B, T, V]`` for CTC.

    Args:
        config: the encoder's config (sizes, ``encoder_pattern``, ``position``;
            ``input_features = F`` for :class:`~graphattn.models.Vectors` inputs such as speech
            frames, else token ids).
        num_classes: ``V``, the output symbols including the blank (default
            ``config.vocab_size``). For :mod:`graphattn.data.speech`:
            ``CHARACTER_VOCAB_SIZE`` (18) with ``blank = BLANK`` (0).
        blank: the id of the blank symbol, in ``[0, V)``.

    Shapes:
        ``forward(inputs) -> CTCOutput(log_probs [B, T, V], lengths [B])``;
        ``loss(inputs, targets [B, S], target_lengths [B]) -> []`` (or ``[B]`` with
        ``reduction="none"``); ``decode(inputs) -> list of B label lists``.

    The result for one row does not depend on the padding of its batch (in eval mode): padded
    frames are never attended to and never enter the loss.
    """

    def __init__(self, config: TransformerConfig, num_classes: int | None = None, *, blank: int = 0) -> None:
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"Expected config to be a TransformerConfig, got {type(config).__name__}")
        num_classes = config.vocab_size if num_classes is None else num_classes
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"Expected num_classes to be an int >= 2 (the blank and at least one symbol), got {num_classes!r}")
        _check_blank(blank, num_classes)
        self.config = config
        self.num_classes = num_classes
        self.blank = blank
        self.encoder = Encoder(config)
        self.output = nn.Linear(config.d_model, num_classes)

    def reset_parameters(self) -> None:
        """Re-initialize the output layer (the encoder keeps its weights)."""
        self.output.reset_parameters()

    def forward(self, inputs: Tensor | Vectors) -> CTCOutput:
        """``inputs`` -- :class:`~graphattn.models.Vectors` ``(features [B, T, F], lengths [B])``
        with ``config.input_features = F``, or right-padded token ids ``[B, T]`` -- ->
        :class:`CTCOutput` ``(log_probs [B, T, V], lengths [B])``."""
        hidden, lengths = self.encoder.encode(inputs)  # [B, T, E], [B]
        logits = self.output(hidden)  # [B, T, V]
        if logits.dtype in (torch.float16, torch.bfloat16):  # the softmax statistics in float32
            logits = logits.float()
        return CTCOutput(F.log_softmax(logits, dim=-1), lengths)

    def loss(
        self,
        inputs: Tensor | Vectors,
        targets: Tensor,
        target_lengths: Tensor,
        *,
        reduction: str = "mean",
    ) -> Tensor:
        """CTC negative log-likelihood of ``targets`` given ``inputs``.

        ``torch.nn.functional.ctc_loss`` with ``zero_infinity=True`` (a target that no path of
        the utterance's length can produce -- too long for its frames -- costs 0 and no
        gradient instead of ``inf``).

        Args:
            inputs: as :meth:`forward`.
            targets: int64 ``[B, S]``, the labels of row ``b`` in ``targets[b, :target_lengths[b]]``
                (what follows is ignored), each in ``[0, V)`` and not the blank.
            target_lengths: int64 ``[B]``, ``0 <= target_lengths[b] <= S``.
            reduction: ``"mean"``: the mean over the batch of the per-sequence negative
                log-likelihoods (unlike ``ctc_loss(reduction="mean")``, not divided by the target
                lengths); ``"sum"``; ``"none"``: ``[B]``.

        Returns:
            A scalar (``[B]`` with ``reduction="none"``).
        """
        if reduction not in CTC_REDUCTIONS:
            raise ValueError(f"Expected reduction to be one of {CTC_REDUCTIONS}, got {reduction!r}")
        log_probs, lengths = self(inputs)
        targets, target_lengths = _check_targets(targets, target_lengths, lengths.numel(), self.num_classes, self.blank)
        losses = F.ctc_loss(
            log_probs.transpose(0, 1),  # [T, B, V]
            targets.to(log_probs.device),
            lengths,
            target_lengths.to(lengths.device),
            blank=self.blank,
            reduction="none",
            zero_infinity=True,
        )  # [B]
        if reduction == "none":
            return losses
        return losses.sum() if reduction == "sum" else losses.mean()

    @torch.no_grad()
    def decode(self, inputs: Tensor | Vectors, *, beam_size: int = 1) -> list[list[int]]:
        """The labelling of every row: best path (:func:`ctc_greedy_decode`) for
        ``beam_size=1``, else :func:`ctc_beam_search`. Call ``eval()`` first."""
        log_probs, lengths = self(inputs)
        if beam_size == 1:
            return ctc_greedy_decode(log_probs, lengths, blank=self.blank)
        return ctc_beam_search(log_probs, lengths, beam_size, blank=self.blank)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, blank={self.blank}"


# ---------------------------------------------------------------------- checks
def _check_blank(blank: object, num_classes: int) -> None:
    if isinstance(blank, bool) or not isinstance(blank, int) or not 0 <= blank < num_classes:
        raise ValueError(f"Expected blank to be an int in [0, {num_classes}), got {blank!r}")


def _check_log_probs(log_probs: Tensor, lengths: Tensor, blank: int) -> tuple[Tensor, Tensor]:
    if not isinstance(log_probs, Tensor) or log_probs.dim() != 3 or not log_probs.dtype.is_floating_point:
        got = f"{log_probs.dtype} {list(log_probs.shape)}" if isinstance(log_probs, Tensor) else type(log_probs).__name__
        raise ValueError(f"Expected log_probs as a float tensor [B, T, V] (log-softmax over V symbols), got {got}")
    batch, frames, num_classes = log_probs.shape
    if not isinstance(lengths, Tensor) or lengths.shape != (batch,) or lengths.dtype not in (torch.int32, torch.int64):
        got = f"{lengths.dtype} {list(lengths.shape)}" if isinstance(lengths, Tensor) else type(lengths).__name__
        raise ValueError(f"Expected lengths as an integer tensor [B] = [{batch}] (frames per row), got {got}")
    if batch and (bool((lengths < 0).any()) or bool((lengths > frames).any())):
        raise ValueError(f"Expected 0 <= lengths <= T = {frames}, got {lengths.tolist()}")
    _check_blank(blank, num_classes)
    return log_probs.detach(), lengths


def _check_targets(
    targets: Tensor, target_lengths: Tensor, batch: int, num_classes: int, blank: int
) -> tuple[Tensor, Tensor]:
    if not isinstance(targets, Tensor) or targets.dim() != 2 or targets.size(0) != batch or targets.dtype not in (torch.int32, torch.int64):
        got = f"{targets.dtype} {list(targets.shape)}" if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(f"Expected targets as an integer tensor [B, S] with B = {batch}, got {got}")
    if (
        not isinstance(target_lengths, Tensor)
        or target_lengths.shape != (batch,)
        or target_lengths.dtype not in (torch.int32, torch.int64)
    ):
        got = f"{target_lengths.dtype} {list(target_lengths.shape)}" if isinstance(target_lengths, Tensor) else type(target_lengths).__name__
        raise ValueError(f"Expected target_lengths as an integer tensor [B] = [{batch}], got {got}")
    if batch and (bool((target_lengths < 0).any()) or bool((target_lengths > targets.size(1)).any())):
        raise ValueError(f"Expected 0 <= target_lengths <= S = {targets.size(1)}, got {target_lengths.tolist()}")
    real = torch.arange(targets.size(1), device=targets.device) < target_lengths.to(targets.device)[:, None]  # [B, S]
    labels = targets[real]
    if labels.numel() and (bool((labels < 0).any()) or bool((labels >= num_classes).any()) or bool((labels == blank).any())):
        raise ValueError(
            f"Expected every target label in [0, {num_classes}) and not the blank ({blank}), got "
            f"{sorted(set(labels.tolist()))} (labels past target_lengths are ignored)"
        )
    return targets.long(), target_lengths.long()


# ---------------------------------------------------------------------- decoding
def ctc_collapse(path: Sequence[int], blank: int = 0) -> list[int]:
    """The labelling of a path: runs of one symbol merged, then blanks removed.

    Example:
        >>> ctc_collapse([3, 3, 0, 3, 4, 0, 0], blank=0)
        [3, 3, 4]
    """
    out = []
    previous = None
    for symbol in path:
        symbol = int(symbol)
        if symbol != previous and symbol != blank:
            out.append(symbol)
        previous = symbol
    return out


def ctc_greedy_decode(log_probs: Tensor, lengths: Tensor, *, blank: int = 0) -> list[list[int]]:
    """Best-path decoding: the arg-max symbol of each of the ``lengths[b]`` real frames, collapsed
    (:func:`ctc_collapse`).

    Args:
        log_probs: ``[B, T, V]`` per-frame scores (log-probabilities; any monotone scores give
            the same result).
        lengths: int ``[B]``, real frames per row (``0 <= lengths[b] <= T``).
        blank: the blank id.

    Returns:
        ``B`` lists of label ids.

    Example:
        >>> scores = torch.tensor([[[0.0, 1, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]]).log()
        >>> ctc_greedy_decode(scores, torch.tensor([5]))
        [[1, 1, 2]]
    """
    log_probs, lengths = _check_log_probs(log_probs, lengths, blank)
    best = log_probs.argmax(-1).tolist()  # [B, T]
    return [ctc_collapse(row[: int(length)], blank) for row, length in zip(best, lengths.tolist())]


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    if a < b:
        a, b = b, a
    return a + math.log1p(math.exp(b - a))


def ctc_beam_search(log_probs: Tensor, lengths: Tensor, beam_size: int, *, blank: int = 0) -> list[list[int]]:
    """CTC prefix beam search (Hannun et al. 2014, without a language model), in log space.

    Every prefix ``l`` on the beam carries two log-probabilities over the frames read so far:
    ``b`` of the paths that collapse to ``l`` and end in a blank, ``n`` of those that end in
    ``l``'s last label. Reading frame ``t`` with log-probabilities ``y``:

    * blank: ``b'(l) += logsumexp(b(l), n(l)) + y[blank]``;
    * ``l``'s last label ``c`` again: ``n'(l) += n(l) + y[c]`` (a repeat merges) and
      ``n'(l + c) += b(l) + y[c]`` (a blank in between separates);
    * any other label ``c``: ``n'(l + c) += logsumexp(b(l), n(l)) + y[c]``;

    then the ``beam_size`` prefixes with the largest ``logsumexp(b, n)`` are kept. Without
    pruning (``beam_size`` at least the number of distinct prefixes) the scores are the exact
    total probabilities of the labellings, so the result is the most probable labelling; with
    ``beam_size=1`` it is usually, not always, the best path.

    Args:
        log_probs: ``[B, T, V]`` log-probabilities (log-softmax over ``V``).
        lengths: int ``[B]``, real frames per row.
        beam_size: prefixes kept after every frame, ``>= 1``.
        blank: the blank id.

    Returns:
        ``B`` lists of label ids, the best prefix of each row (ties: the one found first).

    Example:
        >>> # the best path is "blank" (0.6 * 0.6), but "1" has 0.4 * 0.4 + 2 * 0.4 * 0.6 = 0.64
        >>> y = torch.tensor([[[0.6, 0.4], [0.6, 0.4]]]).log()
        >>> ctc_greedy_decode(y, torch.tensor([2])), ctc_beam_search(y, torch.tensor([2]), 4)
        ([[]], [[1]])
    """
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"Expected beam_size to be a positive int, got {beam_size!r}")
    log_probs, lengths = _check_log_probs(log_probs, lengths, blank)
    num_classes = log_probs.size(-1)
    rows = log_probs.double().cpu().tolist()
    out = []
    for row, length in zip(rows, lengths.tolist()):
        # prefix -> [log p(ending in blank), log p(ending in its last label)]
        beams: dict[tuple[int, ...], list[float]] = {(): [0.0, -math.inf]}
        for frame in row[: int(length)]:
            following: dict[tuple[int, ...], list[float]] = {}
            for prefix, (ends_blank, ends_label) in beams.items():
                total = _logaddexp(ends_blank, ends_label)
                entry = following.setdefault(prefix, [-math.inf, -math.inf])
                entry[0] = _logaddexp(entry[0], total + frame[blank])
                last = prefix[-1] if prefix else None
                for symbol in range(num_classes):
                    if symbol == blank:
                        continue
                    score = frame[symbol]
                    if score == -math.inf:
                        continue
                    extended = prefix + (symbol,)
                    target = following.setdefault(extended, [-math.inf, -math.inf])
                    if symbol == last:
                        entry[1] = _logaddexp(entry[1], ends_label + score)
                        target[1] = _logaddexp(target[1], ends_blank + score)
                    else:
                        target[1] = _logaddexp(target[1], total + score)
            ranked = sorted(following.items(), key=lambda item: _logaddexp(*item[1]), reverse=True)
            beams = dict(ranked[:beam_size])
        best = max(beams.items(), key=lambda item: _logaddexp(*item[1]))[0]
        out.append(list(best))
    return out


# ---------------------------------------------------------------------- metrics
def edit_distance(hypothesis: Sequence, reference: Sequence) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions (each costing 1)
    that turn ``hypothesis`` into ``reference`` (strings or sequences of ids).

    Example:
        >>> edit_distance("sevn", "seven"), edit_distance("", "one"), edit_distance([3, 4], [4])
        (1, 3, 1)
    """
    hypothesis, reference = list(hypothesis), list(reference)
    previous = list(range(len(reference) + 1))
    for i, h in enumerate(hypothesis, start=1):
        current = [i]
        for j, r in enumerate(reference, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (h != r)))
        previous = current
    return previous[-1]


def character_error_rate(hypotheses: Sequence[Sequence], references: Sequence[Sequence]) -> float:
    """Character error rate of a corpus: the sum of the edit distances
    (:func:`edit_distance`) between each hypothesis and its reference, divided by the total
    number of reference characters (so it can exceed 1 when hypotheses are too long).

    Args:
        hypotheses: decoded strings (or id sequences), one per utterance.
        references: the true strings, as many, with at least one character in all.

    Example:
        >>> character_error_rate(["sevn", "one"], ["seven", "one"])   # 1 edit / 8 characters
        0.125
    """
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("Expected lists of strings (one per utterance), got a single string; wrap it in a list")
    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise ValueError(
            f"Expected as many hypotheses as references, got {len(hypotheses)} and {len(references)}"
        )
    total = sum(len(reference) for reference in references)
    if total == 0:
        raise ValueError("The character error rate needs at least one reference character, got none")
    return sum(edit_distance(h, r) for h, r in zip(hypotheses, references)) / total
