"""Sequence-to-sequence training: batches, a padding-aware loss with label smoothing and
scheduled sampling, and corpus BLEU."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.train._common import check_choice, check_int
from graphattn.train.config import TrainState

__all__ = [
    "Seq2SeqBatch",
    "Seq2SeqCollator",
    "sequence_cross_entropy",
    "ScheduledSampling",
    "SCHEDULED_SAMPLING_SCHEDULES",
    "Seq2SeqLoss",
    "corpus_bleu",
]

SCHEDULED_SAMPLING_SCHEDULES = ("linear", "exponential", "inverse_sigmoid")
"""Decay schedules of :class:`ScheduledSampling` (Bengio et al. 2015)."""


class Seq2SeqBatch(NamedTuple):
    """A batch of source / target id sequences, right-padded with the pad id.

    Attributes:
        src: ``[B, S]`` int64 source ids.
        tgt: ``[B, T]`` int64 target ids ``[BOS, y1, ..., yn, EOS, PAD, ...]``.
    """

    src: Tensor
    tgt: Tensor


@dataclass(frozen=True)
class Seq2SeqCollator:
    """Collate ``(src, tgt)`` pairs of 1-D id sequences (tensors or lists) into a
    :class:`Seq2SeqBatch`, right-padding each side with ``pad_id`` (a picklable ``collate_fn``).

    Example:
        >>> Seq2SeqCollator(pad_id=0)([([5, 6], [1, 7, 2]), ([8], [1, 2])])
        Seq2SeqBatch(src=tensor([[5, 6],
                [8, 0]]), tgt=tensor([[1, 7, 2],
                [1, 2, 0]]))
    """

    pad_id: int

    def __call__(self, samples: Sequence[tuple[Any, Any]]) -> Seq2SeqBatch:
        if not samples:
            raise ValueError("Expected at least one (src, tgt) pair, got an empty list")
        sources, targets = [], []
        for index, sample in enumerate(samples):
            if len(sample) != 2:
                raise ValueError(f"Expected (src, tgt) pairs, got an item of length {len(sample)} at position {index}")
            sources.append(torch.as_tensor(sample[0], dtype=torch.long).reshape(-1))
            targets.append(torch.as_tensor(sample[1], dtype=torch.long).reshape(-1))
        pad = nn.utils.rnn.pad_sequence
        return Seq2SeqBatch(pad(sources, batch_first=True, padding_value=self.pad_id),
                            pad(targets, batch_first=True, padding_value=self.pad_id))


def sequence_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    pad_id: int | None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """Token-level cross entropy of ``[B, T, V]`` logits against ``[B, T]`` ids, ignoring padding.

    With label smoothing ``e`` the target distribution is ``(1 - e) * onehot(y) + e / V``, as
    in ``F.cross_entropy(label_smoothing=e)``: the loss of one token is
    ``(1 - e) * -log p_y + e * mean_v(-log p_v)``.

    Args:
        logits: ``[B, T, V]`` unnormalized scores.
        targets: ``[B, T]`` integer ids; positions equal to ``pad_id`` do not count.
        pad_id: the padding id (``None``: every position counts).
        label_smoothing: ``e`` in ``[0, 1)``.
        reduction: ``"mean"`` (over non-pad tokens; 0 when there are none), ``"sum"``, or
            ``"none"`` (``[B, T]``, zero at pads).

    Returns:
        A scalar, or ``[B, T]`` for ``reduction="none"``.
    """
    if not isinstance(logits, Tensor) or logits.dim() != 3:
        got = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"Expected logits of shape [B, T, V], got {got}")
    if not isinstance(targets, Tensor) or targets.shape != logits.shape[:2]:
        got = list(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(f"Expected targets of shape [B, T] = {list(logits.shape[:2])} (the logits' first two sizes), got {got}")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise TypeError(f"Expected integer target ids (int64), got dtype {targets.dtype}; convert with targets.long()")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"Expected reduction 'mean', 'sum' or 'none', got {reduction!r}")
    _check_label_smoothing(label_smoothing)
    ignore = -100 if pad_id is None else int(pad_id)
    per_token = F.cross_entropy(
        logits.transpose(1, 2), targets.long(), ignore_index=ignore, label_smoothing=label_smoothing, reduction="none"
    )  # [B, T], 0 at ignored positions
    if reduction == "none":
        return per_token
    if reduction == "sum":
        return per_token.sum()
    count = (targets != ignore).sum()
    return per_token.sum() / count.clamp(min=1)


@dataclass(frozen=True)
class ScheduledSampling:
    """Scheduled sampling (Bengio et al. 2015): the probability ``eps_i`` of feeding the GOLD
    previous token at training step ``i`` decays from 1 towards 0.

    Schedules (``schedule=``):

    * ``"linear"``: ``eps_i = max(eps_min, k - c * i)`` (clipped to ``[0, 1]``); ``c = 0`` gives a
      constant ``eps = k``;
    * ``"exponential"``: ``eps_i = k ** i`` with ``0 < k < 1``;
    * ``"inverse_sigmoid"``: ``eps_i = k / (k + exp(i / k))`` with ``k >= 1``.

    :class:`Seq2SeqLoss` applies it with the two-pass scheme of Mihaylova & Martins (2019)
    for Transformers.

    Attributes:
        schedule: one of :data:`SCHEDULED_SAMPLING_SCHEDULES`.
        k, c, eps_min: the schedule's constants.
        sample: feed tokens sampled from the model's distribution instead of its argmax.
    """

    schedule: str
    k: float
    c: float = 0.0
    eps_min: float = 0.0
    sample: bool = False

    def __post_init__(self) -> None:
        check_choice(self.schedule, SCHEDULED_SAMPLING_SCHEDULES, "scheduled sampling schedule")
        if self.schedule == "exponential" and not 0.0 < self.k < 1.0:
            raise ValueError(f"The exponential schedule eps_i = k**i needs 0 < k < 1, got k={self.k!r}")
        if self.schedule == "inverse_sigmoid" and not self.k >= 1.0:
            raise ValueError(f"The inverse sigmoid schedule eps_i = k / (k + exp(i / k)) needs k >= 1, got k={self.k!r}")
        if self.schedule == "linear" and (self.c < 0 or not 0.0 <= self.eps_min <= 1.0):
            raise ValueError(f"The linear schedule needs c >= 0 and 0 <= eps_min <= 1, got c={self.c!r}, eps_min={self.eps_min!r}")

    def teacher_forcing_probability(self, step: int) -> float:
        """``eps_i``: the probability of feeding the gold token at training step ``step``.

        Example:
            >>> ScheduledSampling("exponential", k=0.5).teacher_forcing_probability(3)
            0.125
        """
        if self.schedule == "linear":
            return min(1.0, max(0.0, self.eps_min, self.k - self.c * step))
        if self.schedule == "exponential":
            return float(self.k**step)
        exponent = step / self.k
        return 0.0 if exponent > 700 else float(self.k / (self.k + math.exp(exponent)))


class Seq2SeqLoss:
    """Teacher-forced sequence-to-sequence loss, a ``loss_fn`` for :func:`~graphattn.train.fit`.

    For a batch ``(src [B, S], tgt [B, T])`` (:class:`Seq2SeqBatch` or a plain pair; ``src`` may
    also be a pair ``(ids, position ids)``, passed on as is) with
    ``tgt = [BOS, y1, ..., yn, EOS, PAD...]``, feeds ``tgt[:, :-1]`` to ``model(src, tgt_in)``
    (which returns logits ``[B, T-1, V]``) and scores them against ``tgt[:, 1:]`` with
    :func:`sequence_cross_entropy` (mean over non-pad tokens, label smoothing).

    With ``scheduled_sampling`` (only while training: ``model.training`` and
    ``state.training``), the two-pass scheme of Mihaylova & Martins (2019): pass 1 runs the
    model without gradient on the gold inputs; each decoder input token except BOS (position 0,
    and any ``bos_id``) and pads is replaced, with probability ``1 - eps_i``, by the model's
    pass-1 prediction of that position (argmax, or a sample); pass 2 runs on the mixed inputs
    with gradient. ``eps_i`` follows the schedule at ``state.step``; with ``eps_i = 1`` pass 1
    is skipped. Pass 1 runs in the model's current (training) mode.

    Returns ``(loss, {"accuracy": ..., "teacher_forcing": eps_i?})``: token accuracy of the
    argmax over non-pad targets, and the gold-token probability when scheduled sampling is on.

    Args:
        pad_id: the padding id of ``src`` and ``tgt``.
        bos_id: the begin-of-sequence id (never replaced by scheduled sampling).
        label_smoothing: see :func:`sequence_cross_entropy`.
        scheduled_sampling: a :class:`ScheduledSampling` schedule, or None.
    """

    def __init__(
        self,
        pad_id: int,
        bos_id: int | None = None,
        label_smoothing: float = 0.0,
        scheduled_sampling: ScheduledSampling | None = None,
    ) -> None:
        check_int(pad_id, "pad_id", minimum=0)
        if bos_id is not None:
            check_int(bos_id, "bos_id", minimum=0)
        _check_label_smoothing(label_smoothing)
        if scheduled_sampling is not None and not isinstance(scheduled_sampling, ScheduledSampling):
            raise TypeError(f"Expected scheduled_sampling to be a ScheduledSampling or None, got {type(scheduled_sampling).__name__}")
        self.pad_id, self.bos_id = pad_id, bos_id
        self.label_smoothing = float(label_smoothing)
        self.scheduled_sampling = scheduled_sampling

    def __repr__(self) -> str:
        return (f"Seq2SeqLoss(pad_id={self.pad_id}, bos_id={self.bos_id}, label_smoothing={self.label_smoothing}, "
                f"scheduled_sampling={self.scheduled_sampling})")

    def __call__(self, model: nn.Module, batch: Any, state: TrainState | None = None) -> tuple[Tensor, dict[str, Tensor | float]]:
        src, tgt = self._unpack(batch)
        tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]
        extras: dict[str, Tensor | float] = {}
        training = model.training and (state is None or state.training)
        if self.scheduled_sampling is not None and training:
            eps = self.scheduled_sampling.teacher_forcing_probability(state.step if state is not None else 0)
            extras["teacher_forcing"] = eps
            if eps < 1.0:
                tgt_in = self.mix_predictions(model, src, tgt_in, eps)
        logits = model(src, tgt_in)
        if not isinstance(logits, Tensor) or logits.dim() != 3 or logits.shape[:2] != tgt_out.shape:
            got = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"Expected model(src, tgt_in) to return logits [B, T-1, V] with [B, T-1] = {list(tgt_out.shape)}, got {got}")
        loss = sequence_cross_entropy(logits, tgt_out, self.pad_id, self.label_smoothing)
        with torch.no_grad():
            real = tgt_out != self.pad_id
            correct = (logits.argmax(-1) == tgt_out) & real
            extras["accuracy"] = correct.sum() / real.sum().clamp(min=1)
        return loss, extras

    def mix_predictions(self, model: nn.Module, src: Tensor, tgt_in: Tensor, teacher_forcing: float) -> Tensor:
        """The decoder inputs of pass 2: ``tgt_in`` ``[B, T]`` with each replaceable token
        swapped, with probability ``1 - teacher_forcing``, for the model's pass-1 prediction of
        that position (the prediction made at the previous position)."""
        with torch.no_grad():
            logits = model(src, tgt_in)  # [B, T, V]; logits[:, t] predicts the token at t + 1
            if self.scheduled_sampling is not None and self.scheduled_sampling.sample:
                probabilities = torch.softmax(logits.float(), dim=-1)
                predicted = torch.multinomial(probabilities.reshape(-1, probabilities.shape[-1]), 1).reshape(logits.shape[:2])
            else:
                predicted = logits.argmax(-1)
            shifted = torch.cat([tgt_in[:, :1], predicted[:, :-1].to(tgt_in.dtype)], dim=1)  # prediction for position t
            replaceable = tgt_in != self.pad_id
            replaceable[:, 0] = False
            if self.bos_id is not None:
                replaceable &= tgt_in != self.bos_id
            replace = replaceable & (torch.rand(tgt_in.shape, device=tgt_in.device) >= teacher_forcing)
            return torch.where(replace, shifted, tgt_in)

    @staticmethod
    def _unpack(batch: Any) -> tuple[Tensor, Tensor]:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(
                f"Expected a Seq2SeqBatch(src, tgt) or a (src, tgt) pair, got {type(batch).__name__}"
                f"{' of length ' + str(len(batch)) if isinstance(batch, (tuple, list)) else ''}; collate with Seq2SeqCollator"
            )
        src, tgt = batch
        src_ids = src[0] if isinstance(src, (tuple, list)) and len(src) == 2 else src  # (ids, position ids)
        for name, tensor in (("src", src_ids), ("tgt", tgt)):
            if not isinstance(tensor, Tensor) or tensor.dim() != 2 or tensor.dtype.is_floating_point:
                got = f"{tensor.dtype} {list(tensor.shape)}" if isinstance(tensor, Tensor) else type(tensor).__name__
                raise ValueError(f"Expected '{name}' to be an int64 tensor [B, length] of token ids, got {got}")
        if tgt.shape[1] < 2:
            raise ValueError(f"Expected tgt of length >= 2 ([BOS, ..., EOS]), got shape {list(tgt.shape)}")
        return src, tgt


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[str], *, tokenize: str = "13a", lowercase: bool = False
) -> float:
    """Corpus BLEU (0-100) of detokenized ``hypotheses`` against one reference each, by
    sacreBLEU (imported here; ``pip install sacrebleu``), default ``13a`` tokenization.

    Example:
        >>> round(corpus_bleu(["the cat sat on the mat"], ["the cat sat on a mat"]), 2)
        53.73
    """
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("Expected lists of strings (one sentence each), got a single str; wrap it in a list")
    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise ValueError(
            f"Expected one reference per hypothesis, got {len(hypotheses)} hypotheses and {len(references)} references"
        )
    for name, sentences in (("hypotheses", hypotheses), ("references", references)):
        bad = next((i for i, s in enumerate(sentences) if not isinstance(s, str)), None)
        if bad is not None:
            raise TypeError(f"Expected {name} to be strings, got {type(sentences[bad]).__name__} at position {bad}; "
                            "decode token ids to text first")
    try:
        import sacrebleu
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("corpus_bleu needs sacrebleu: pip install 'sacrebleu>=2.3'") from exc
    return float(sacrebleu.corpus_bleu(hypotheses, [references], tokenize=tokenize, lowercase=lowercase).score)


def _check_label_smoothing(label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"Expected 0 <= label_smoothing < 1, got {label_smoothing!r}")
