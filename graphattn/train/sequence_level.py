"""Sequence-level training toward the evaluation metric: REINFORCE on a sentence-level reward
(sentence BLEU by default) with the MIXER schedule (Ranzato et al. 2015), and model selection by
validation BLEU.

Cross-entropy trains every target token given the gold prefix; the test metric scores whole
outputs the model produced itself. :class:`SequenceLevelLoss` closes that gap: for each target
it keeps the first ``n - Δ`` tokens under cross-entropy (gold prefix), lets the model sample the
remaining suffix, scores the finished output with ``reward_fn`` against the reference, and
pushes the log-probability of the sampled suffix up or down by ``reward - baseline``
(REINFORCE, Williams 1992). :class:`MixerSchedule` anneals ``Δ`` from 0 (pure cross-entropy)
to the whole sequence (pure REINFORCE) in steps of ``delta`` tokens. Baselines: ``"greedy"``
(self-critical: the reward of the greedy output from the same prefix, Rennie et al. 2017),
``"batch_mean"`` (leave-one-out mean of the batch's rewards), ``"moving_average"`` (an EMA of
past rewards), or none.

The model is any encoder-decoder that implements the decoding protocol
(:class:`~graphattn.models.decodable.Decodable`: ``start_decoding`` / ``decode_step``) and is
callable as ``model(src, tgt_in) -> logits [B, T, V]`` -- :class:`~graphattn.models.EncoderDecoder`.

:func:`greedy_decode` and :func:`validation_bleu` give an ``evaluate_fn`` for
:func:`~graphattn.train.fit` that selects the checkpoint by validation BLEU
(``monitor="val_bleu", mode="max"``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from graphattn.train._common import check_choice, check_int
from graphattn.train.config import TrainState
from graphattn.train.devices import unwrap_model
from graphattn.train.seq2seq import Seq2SeqLoss, corpus_bleu, sequence_cross_entropy

__all__ = [
    "BASELINES",
    "MixerSchedule",
    "SequenceLevelLoss",
    "sentence_bleu_reward",
    "greedy_decode",
    "validation_bleu",
    "ids_to_text",
]

BASELINES = ("greedy", "batch_mean", "moving_average", "none")
"""Baselines of :class:`SequenceLevelLoss`."""

RewardFn = Callable[[Sequence[int], Sequence[int]], float]


@dataclass(frozen=True)
class MixerSchedule:
    """How many final target tokens are trained by REINFORCE at a training step (MIXER).

    Steps ``0 .. xent_steps - 1``: none (cross-entropy only). Then ``delta`` tokens, and ``delta``
    more after every ``anneal_every`` further steps, until the whole sequence (capped by each
    target's length). ``MixerSchedule(0, anneal_every=1, delta=10**9)`` is pure REINFORCE.

    Example:
        >>> s = MixerSchedule(xent_steps=100, anneal_every=50, delta=2)
        >>> [s.reinforce_tokens(step) for step in (0, 99, 100, 149, 150, 260)]
        [0, 0, 2, 2, 4, 8]
    """

    xent_steps: int
    anneal_every: int
    delta: int = 2

    def __post_init__(self) -> None:
        check_int(self.xent_steps, "xent_steps", minimum=0)
        check_int(self.anneal_every, "anneal_every", minimum=1)
        check_int(self.delta, "delta", minimum=1)

    def reinforce_tokens(self, step: int) -> int:
        if step < self.xent_steps:
            return 0
        return self.delta * (1 + (step - self.xent_steps) // self.anneal_every)


def ids_to_text(ids: Sequence[int]) -> str:
    """Token ids as a space-separated string (a "sentence" of id words for sacreBLEU)."""
    return " ".join(str(int(i)) for i in ids)


def sentence_bleu_reward(hypothesis: Sequence[int], reference: Sequence[int]) -> float:
    """sacreBLEU's sentence BLEU (exponential smoothing, no tokenization) of two id sequences,
    scaled to ``[0, 1]``.

    Example:
        >>> round(sentence_bleu_reward([5, 6, 7, 8], [5, 6, 7, 8]), 3)
        1.0
        >>> sentence_bleu_reward([], [5, 6])
        0.0
    """
    if not hypothesis or not reference:
        return float(len(hypothesis) == len(reference))
    import sacrebleu

    return float(sacrebleu.sentence_bleu(ids_to_text(hypothesis), [ids_to_text(reference)], tokenize="none").score) / 100.0


def _rollout(
    model: Any,
    src: Any,
    gold: Tensor,
    forced: Tensor,
    max_new_tokens: int,
    *,
    sample: bool,
    eos_id: int,
    pad_id: int,
    bos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Decode ``max_new_tokens`` tokens per row: the gold token ``gold[:, t]`` while ``t <
    forced[b]``, then samples (or the argmax) -- never ``pad_id`` or ``bos_id``; a row stops
    after EOS (pads follow).

    Returns ``(tokens [B, M], lengths [B])`` -- lengths count the EOS when there is one."""
    start = model.start_decoding(src, max_new_tokens=max_new_tokens)
    logits, state = start.logits, start.state
    batch = logits.size(0)
    device = logits.device
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    lengths = torch.full((batch,), max_new_tokens, dtype=torch.long, device=device)
    tokens = []
    for t in range(max_new_tokens):
        logits = _ban(logits, pad_id, bos_id, eos_id)  # never emit PAD / BOS
        if sample:
            probabilities = torch.softmax(logits.float(), dim=-1)
            choice = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
        else:
            choice = logits.argmax(-1)
        if t < gold.size(1):
            choice = torch.where(t < forced, gold[:, t], choice)
        choice = torch.where(finished, torch.full_like(choice, pad_id), choice)
        tokens.append(choice)
        ended = ~finished & (choice == eos_id)
        lengths = torch.where(ended, torch.full_like(lengths, t + 1), lengths)
        finished |= ended
        if bool(finished.all()) or t == max_new_tokens - 1:
            break
        logits, state = model.decode_step(choice, state)
    return torch.stack(tokens, 1), lengths


def _ban(logits: Tensor, pad_id: int, bos_id: int | None, eos_id: int) -> Tensor:
    """``logits [..., V]`` with PAD and BOS at ``-inf``: the distribution samples are drawn from."""
    banned = sorted({pad_id, *(() if bos_id is None else (bos_id,))} - {eos_id})
    return logits.index_fill(-1, torch.tensor(banned, device=logits.device), float("-inf"))


def _strip(ids: Tensor, length: int, eos_id: int) -> list[int]:
    out = ids[:length].tolist()
    return out[:-1] if out and out[-1] == eos_id else out


class SequenceLevelLoss:
    """MIXER / REINFORCE loss, a ``loss_fn`` for :func:`~graphattn.train.fit`.

    For a batch ``(src [B, S], tgt [B, T])`` with ``tgt = [BOS, y1, ..., yn, EOS, PAD...]`` and
    ``Δ = schedule.reinforce_tokens(state.step)`` (every token when ``schedule`` is None):

    1. without gradient, decode each row from its gold prefix ``y1..y_{m}``, ``m = max(0, n + 1 -
       Δ)``, sampling the rest (up to ``T - 1 + extra_tokens`` tokens in all) -- and, for the
       ``"greedy"`` baseline, the argmax continuation of the same prefix;
    2. reward ``R_b = reward_fn(output without EOS, reference without EOS)``;
    3. one teacher-forced pass over ``[BOS, prefix, sampled suffix]`` with gradient: the loss is
       ``(sum of the prefix tokens' cross-entropy - sum_b (R_b - baseline_b) * log p(suffix_b)) /
       (number of reference tokens, EOS included)``, with ``p`` the distribution the samples are
       drawn from (PAD and BOS excluded).

    With ``Δ = 0``, or when not training (``model.training`` False or ``state.training`` False,
    e.g. validation), it is the plain cross-entropy of :func:`sequence_cross_entropy`.
    Sampling runs in the model's current mode (with dropout, if any, as in training).

    Returns ``(loss, {"reward": mean R, "baseline": mean baseline, "reinforce_tokens": Δ})``
    (only the cross-entropy's ``{"accuracy"}`` when Δ = 0).

    Args:
        pad_id, bos_id, eos_id: the special ids of the targets.
        reward_fn: ``(hypothesis ids, reference ids) -> float`` (default :func:`sentence_bleu_reward`).
        baseline: one of :data:`BASELINES`.
        schedule: a :class:`MixerSchedule`, or None for REINFORCE over the whole sequence.
        extra_tokens: how much longer than the batch's longest target a sample may get.
        moving_average_decay: the decay of the ``"moving_average"`` baseline.
        seed: seeds the sampling generator (None: torch's global generator).
    """

    def __init__(
        self,
        pad_id: int,
        bos_id: int,
        eos_id: int,
        *,
        reward_fn: RewardFn = sentence_bleu_reward,
        baseline: str = "greedy",
        schedule: MixerSchedule | None = None,
        extra_tokens: int = 10,
        moving_average_decay: float = 0.9,
        seed: int | None = None,
    ) -> None:
        for name, value in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
            check_int(value, name, minimum=0)
        check_choice(baseline, BASELINES, "baseline")
        check_int(extra_tokens, "extra_tokens", minimum=0)
        if schedule is not None and not isinstance(schedule, MixerSchedule):
            raise TypeError(f"Expected schedule to be a MixerSchedule or None, got {type(schedule).__name__}")
        if not callable(reward_fn):
            raise TypeError(f"Expected a callable reward_fn(hypothesis ids, reference ids) -> float, got {reward_fn!r}")
        if not 0.0 <= moving_average_decay < 1.0:
            raise ValueError(f"Expected 0 <= moving_average_decay < 1, got {moving_average_decay}")
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.reward_fn, self.baseline, self.schedule = reward_fn, baseline, schedule
        self.extra_tokens, self.decay = extra_tokens, moving_average_decay
        self.average_reward: float | None = None
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def __repr__(self) -> str:
        return (f"SequenceLevelLoss(baseline={self.baseline!r}, schedule={self.schedule}, "
                f"extra_tokens={self.extra_tokens})")

    def reinforce_tokens(self, step: int) -> int:
        """``Δ`` at ``step`` (a very large number without a schedule: every token)."""
        return 1 << 30 if self.schedule is None else self.schedule.reinforce_tokens(step)

    def __call__(self, model: nn.Module, batch: Any, state: TrainState | None = None) -> tuple[Tensor, dict[str, Any]]:
        src, tgt = Seq2SeqLoss._unpack(batch)
        tgt_out = tgt[:, 1:]
        training = model.training and (state is None or state.training)
        delta = self.reinforce_tokens(state.step if state is not None else 0)
        if not training or delta == 0:
            logits = model(src, tgt[:, :-1])
            loss = sequence_cross_entropy(logits, tgt_out, self.pad_id)
            with torch.no_grad():
                real = tgt_out != self.pad_id
                accuracy = ((logits.argmax(-1) == tgt_out) & real).sum() / real.sum().clamp(min=1)
            return loss, {"accuracy": accuracy, "reinforce_tokens": delta}
        decoder = unwrap_model(model)
        target_lengths = (tgt_out != self.pad_id).sum(1)  # n + 1 (EOS included)
        forced = (target_lengths - delta).clamp(min=0)
        max_new = tgt_out.size(1) + self.extra_tokens
        generator = self.generator
        if generator is not None and generator.device != tgt.device:
            generator = None
        with torch.no_grad():
            sampled, lengths = _rollout(decoder, src, tgt_out, forced, max_new, sample=True, eos_id=self.eos_id,
                                        pad_id=self.pad_id, bos_id=self.bos_id, generator=generator)
            greedy = None
            if self.baseline == "greedy":
                greedy = _rollout(decoder, src, tgt_out, forced, max_new, sample=False, eos_id=self.eos_id,
                                  pad_id=self.pad_id, bos_id=self.bos_id)
        references = [_strip(tgt_out[b], int(target_lengths[b]), self.eos_id) for b in range(tgt.size(0))]
        rewards = torch.tensor(
            [self.reward_fn(_strip(sampled[b], int(lengths[b]), self.eos_id), references[b]) for b in range(tgt.size(0))],
            dtype=torch.float32, device=tgt.device,
        )
        baseline = self._baseline(rewards, greedy, references)
        # teacher-forced pass over [BOS, prefix + sampled suffix] with gradient
        tgt_in = torch.cat([tgt[:, :1], sampled[:, :-1]], dim=1)
        positions = torch.arange(sampled.size(1), device=tgt.device)
        in_output = positions.unsqueeze(0) < lengths.unsqueeze(1)  # [B, M]
        tgt_in = torch.where(in_output, tgt_in, torch.full_like(tgt_in, self.pad_id))
        logits = _ban(model(src, tgt_in).float(), self.pad_id, self.bos_id, self.eos_id)  # as sampled
        log_probs = torch.log_softmax(logits, dim=-1).gather(2, sampled.unsqueeze(2)).squeeze(2)  # [B, M]
        log_probs = torch.where(in_output, log_probs, torch.zeros_like(log_probs))
        is_prefix = positions.unsqueeze(0) < forced.unsqueeze(1)
        xent = -(log_probs * is_prefix).sum()
        suffix_log_prob = (log_probs * ~is_prefix).sum(1)  # [B]
        advantage = (rewards - baseline).detach()
        # normalized by the reference token count (fixed by the batch, unlike the samples' lengths,
        # so the gradient stays an unbiased estimate of grad E[R] / tokens)
        tokens = target_lengths.sum().clamp(min=1)
        loss = (xent - (advantage * suffix_log_prob).sum()) / tokens
        return loss, {"reward": rewards.mean(), "baseline": baseline.mean(), "reinforce_tokens": delta}

    def _baseline(self, rewards: Tensor, greedy: tuple[Tensor, Tensor] | None, references: list[list[int]]) -> Tensor:
        if self.baseline == "none":
            return torch.zeros_like(rewards)
        if self.baseline == "greedy":
            tokens, lengths = greedy
            return torch.tensor(
                [self.reward_fn(_strip(tokens[b], int(lengths[b]), self.eos_id), references[b]) for b in range(len(references))],
                dtype=rewards.dtype, device=rewards.device,
            )
        if self.baseline == "batch_mean":
            count = rewards.numel()
            if count == 1:
                return torch.zeros_like(rewards)
            return (rewards.sum() - rewards) / (count - 1)  # leave-one-out: no example is its own baseline
        mean = float(rewards.mean())
        value = mean if self.average_reward is None else self.average_reward
        self.average_reward = value * self.decay + (1.0 - self.decay) * mean
        return torch.full_like(rewards, value)


def greedy_decode(model: nn.Module, src: Any, *, max_new_tokens: int, eos_id: int, pad_id: int,
                  bos_id: int | None = None) -> list[list[int]]:
    """Greedy outputs (without EOS) of a decodable model for one source batch; PAD (and BOS when
    given) are never emitted, as in :class:`SequenceLevelLoss`'s samples."""
    model = unwrap_model(model)
    batch = src.size(0) if isinstance(src, Tensor) else src[0].size(0)
    empty = torch.zeros(batch, 0, dtype=torch.long)
    tokens, lengths = _rollout(model, src, empty.to(_device_of(src)), torch.zeros(batch, dtype=torch.long, device=_device_of(src)),
                               max_new_tokens, sample=False, eos_id=eos_id, pad_id=pad_id, bos_id=bos_id)
    return [_strip(tokens[b], int(lengths[b]), eos_id) for b in range(batch)]


def _device_of(src: Any) -> torch.device:
    return src.device if isinstance(src, Tensor) else src[0].device


def validation_bleu(
    *, collate_fn: Callable[[list], Any], pad_id: int, eos_id: int, bos_id: int | None = None, batch_size: int = 64,
    extra_tokens: int = 10, to_text: Callable[[Sequence[int]], str] = ids_to_text,
) -> Callable[[nn.Module, Sequence], dict[str, float]]:
    """An ``evaluate_fn`` for :func:`~graphattn.train.fit`: corpus BLEU (sacreBLEU) of the greedy
    outputs on the validation pairs, as ``{"val_bleu": ...}`` (choose the best checkpoint with
    ``monitor="val_bleu", mode="max"``). ``collate_fn`` makes ``(src, tgt)`` batches of the
    validation pairs; ``to_text`` turns ids into a sentence (default: ids separated by spaces)."""

    def evaluate_fn(model: nn.Module, data: Sequence) -> dict[str, float]:
        hypotheses, references = [], []
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(data), batch_size):
                    src, tgt = collate_fn([data[i] for i in range(start, min(start + batch_size, len(data)))])
                    device = next(unwrap_model(model).parameters()).device
                    src, tgt = src.to(device), tgt.to(device)
                    outputs = greedy_decode(model, src, max_new_tokens=tgt.size(1) - 1 + extra_tokens, eos_id=eos_id,
                                            pad_id=pad_id, bos_id=bos_id)
                    lengths = (tgt[:, 1:] != pad_id).sum(1)
                    hypotheses += [to_text(o) for o in outputs]
                    references += [to_text(_strip(tgt[b, 1:], int(lengths[b]), eos_id)) for b in range(tgt.size(0))]
        finally:
            model.train(was_training)
        return {"val_bleu": corpus_bleu(hypotheses, references, tokenize="none")}

    return evaluate_fn
