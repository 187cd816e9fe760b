"""Autoregressive decoding: greedy search, multinomial sampling and beam search behind one
:func:`generate`, with Hugging Face ``generate()`` argument names and meanings.

A model takes part by implementing :class:`Decodable` (three methods; the models never see the
search): :meth:`~Decodable.start_decoding` encodes the inputs and scores the first new token,
:meth:`~Decodable.decode_step` scores the next token of every row given the token just chosen,
:meth:`~Decodable.reorder_state` keeps, duplicates and reorders rows of its decoding state (beam
expansion and reordering, rows that finished early leaving the batch).

Scores are processed in Hugging Face's order: repetition penalty, no-repeat n-grams, minimum
length (all three look at the whole output context: the prefix returned by ``start_decoding``
plus the generated tokens) and, when sampling, temperature, top-k and top-p. The processors are
public functions (:func:`apply_repetition_penalty`, :func:`apply_no_repeat_ngram`,
:func:`apply_min_length`, :func:`apply_temperature`, :func:`apply_top_k`, :func:`apply_top_p`).

Every row is decoded independently of the others, so the output for one example does not
depend on the batch it is decoded in (given a model whose rows do not interact): prefixes are
right-padded and every length (``min_length``, n-grams, the repetition penalty's context) is
the row's real length, and sampling can draw from one generator per example (``seed=[...]``).

Non-autoregressive decoding (models of :mod:`graphattn.models.nat`) is here too:
:func:`parallel_decode` (one parallel pass), :func:`mask_predict` (iterative re-masking of the
least confident tokens, a length beam, early stopping), :func:`noisy_parallel_decode` (sampled
lengths / fertilities rescored by an autoregressive teacher in one pass, :func:`teacher_scores`),
:func:`ctc_decode` (CTC best path / beam search, Imputer-style refinement),
:func:`levenshtein_decode` (delete / insert / fill iterations) and :func:`distill`
(sequence-level knowledge distillation: the teacher decodes the training sources). They return
:class:`NonAutoregressiveOutput`; every candidate is decoded independently of its batch.

Example:
    >>> import torch
    >>> from graphattn.decoding import DecodingStart, generate
    >>> class CountUp:            # next token = last token + 1, up to EOS = 5
    ...     eos_id, pad_id = 5, 0
    ...     def _logits(self, last):
    ...         return 10.0 * torch.nn.functional.one_hot((last + 1).clamp(max=5), 6).float()
    ...     def start_decoding(self, prompts, *, max_new_tokens):
    ...         lengths = torch.full((len(prompts),), prompts.shape[1])
    ...         return DecodingStart(self._logits(prompts[:, -1]), prompts[:, -1], prompts, lengths)
    ...     def decode_step(self, tokens, state):
    ...         return self._logits(tokens), tokens
    ...     def reorder_state(self, state, index):
    ...         return state[index]
    >>> out = generate(CountUp(), torch.tensor([[0, 1], [2, 3]]), max_new_tokens=8)
    >>> out.sequences
    tensor([[2, 3, 4, 5],
            [4, 5, 0, 0]])
    >>> out.lengths
    tensor([4, 2])
    >>> generate(CountUp(), torch.tensor([[2, 3]]), num_beams=2).sequences
    tensor([[4, 5]])
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from graphattn.models.decodable import Decodable, DecodingStart

__all__ = [
    "Decodable",
    "DecodingStart",
    "GenerateOutput",
    "generate",
    "apply_repetition_penalty",
    "apply_no_repeat_ngram",
    "apply_min_length",
    "apply_temperature",
    "apply_top_k",
    "apply_top_p",
    # non-autoregressive decoding (graphattn.models.nat)
    "NonAutoregressiveOutput",
    "parallel_decode",
    "mask_predict",
    "remask_count",
    "noisy_parallel_decode",
    "teacher_scores",
    "ctc_decode",
    "distill",
    "levenshtein_decode",
    "insertion_decode",
]

# Initial score of beams 2..num_beams of every example, so that the first step expands beam 1
# only (the num_beams copies are identical then). The value Hugging Face uses.
_INACTIVE_BEAM_SCORE = -1e9


@dataclass
class GenerateOutput:
    """What :func:`generate` returns; rows are example-major: row ``i * num_return_sequences + j``
    is the ``j``-th sequence of example ``i``.

    Attributes:
        sequences: ``[B * num_return_sequences, T]`` int64, the generated tokens only (prefix
            excluded), ending with EOS when one was produced, pad id after it;
            ``T = lengths.max()``.
        scores: ``[B * num_return_sequences]`` float. Beam search: the final length-penalized
            score of the hypothesis, ``sum_logprobs / lengths ** length_penalty`` (Hugging
            Face's ``sequences_scores``). Greedy search and sampling: the sum, over the
            generated tokens (EOS included), of the log-probability of the chosen token under
            the distribution it was chosen from: ``log_softmax`` of the processed scores (after
            repetition penalty, no-repeat n-grams and minimum length; when sampling also after
            temperature, top-k and top-p). Without processors, and with temperature 1, that is
            the model's log-likelihood of the generated tokens.
        lengths: ``[B * num_return_sequences]`` int64, the generated length including EOS.
    """

    sequences: Tensor
    scores: Tensor
    lengths: Tensor


# --------------------------------------------------------------------------------------------
# Logits processors (functional versions of Hugging Face's LogitsProcessors / LogitsWarpers)
# --------------------------------------------------------------------------------------------


def apply_repetition_penalty(
    scores: Tensor, context: Tensor, context_lengths: Tensor, penalty: float
) -> Tensor:
    """Penalize the tokens that occur in each row's context (CTRL's repetition penalty, Hugging
    Face's ``RepetitionPenaltyLogitsProcessor``).

    The score ``s`` of every token present in ``context[i, :context_lengths[i]]`` becomes
    ``s * penalty`` if ``s < 0`` and ``s / penalty`` otherwise (once, however often the token
    occurs); other scores are unchanged. ``penalty > 1`` discourages repetition.

    Args:
        scores: ``[N, V]`` scores of the next token.
        context: ``[N, L]`` int64 tokens, right-padded (padding is ignored).
        context_lengths: ``[N]`` real length of each row of ``context``.
        penalty: a strictly positive float (1.0 = no penalty).

    Returns:
        ``[N, V]`` new scores (the input is not modified).

    Example:
        >>> scores = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
        >>> apply_repetition_penalty(scores, torch.tensor([[0, 1, 1, 9]]), torch.tensor([3]), 2.0)
        tensor([[ 0.5000, -4.0000,  0.5000,  3.0000]])
    """
    penalty = _positive_float(penalty, "penalty")
    _check_context(scores, context, context_lengths)
    return _penalize(scores, _context_tokens_mask(context, context_lengths, scores.shape[-1]), penalty)


def apply_no_repeat_ngram(
    scores: Tensor, context: Tensor, context_lengths: Tensor, ngram_size: int
) -> Tensor:
    """Forbid every token that would repeat an n-gram of the row's context (Hugging Face's
    ``NoRepeatNGramLogitsProcessor``).

    A token ``x`` gets score ``-inf`` when the last ``ngram_size - 1`` tokens of the context
    followed by ``x`` already occur as an n-gram in the context. With ``ngram_size = 1`` every
    token of the context is banned; a context shorter than ``ngram_size - 1`` bans nothing.

    Args:
        scores: ``[N, V]`` scores of the next token.
        context: ``[N, L]`` int64 tokens, right-padded (padding is ignored).
        context_lengths: ``[N]`` real length of each row of ``context``.
        ngram_size: a positive int.

    Returns:
        ``[N, V]`` new scores.

    Example:
        >>> scores = torch.zeros(1, 5)
        >>> apply_no_repeat_ngram(scores, torch.tensor([[1, 2, 3, 1, 2]]), torch.tensor([5]), 3)
        tensor([[0., 0., 0., -inf, 0.]])
    """
    ngram_size = _positive_int(ngram_size, "ngram_size")
    _check_context(scores, context, context_lengths)
    banned = _repeated_ngram_mask(context, context_lengths, ngram_size, scores.shape[-1])
    return scores.masked_fill(banned, -math.inf)


def apply_min_length(scores: Tensor, lengths: Tensor, min_length: int, eos_token_id: int) -> Tensor:
    """Forbid EOS in the rows whose current length is below ``min_length`` (Hugging Face's
    ``MinLengthLogitsProcessor``; with the number of generated tokens as ``lengths`` it is
    ``MinNewTokensLengthLogitsProcessor``).

    Args:
        scores: ``[N, V]`` scores of the next token.
        lengths: ``[N]`` current length of every row (for ``min_length``: prefix + generated).
        min_length: EOS is forbidden while ``lengths < min_length``.
        eos_token_id: the token to forbid.

    Returns:
        ``[N, V]`` new scores, ``-inf`` at ``[i, eos_token_id]`` for the rows that are too short.

    Example:
        >>> apply_min_length(torch.zeros(2, 3), torch.tensor([1, 4]), 3, eos_token_id=2)
        tensor([[0., 0., -inf],
                [0., 0., 0.]])
    """
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise ValueError(f"Expected 'scores' of shape [N, V], got {_describe(scores)}")
    _token_id(eos_token_id, "eos_token_id", scores.shape[-1])
    if not isinstance(lengths, Tensor) or lengths.shape != scores.shape[:1]:
        raise ValueError(
            f"Expected 'lengths' of shape [{scores.shape[0]}] (one per row of scores), got "
            f"{_describe(lengths)}"
        )
    return _ban_token(scores, lengths < _nonnegative_int(min_length, "min_length"), eos_token_id)


def apply_temperature(scores: Tensor, temperature: float) -> Tensor:
    """Divide the scores by ``temperature`` (Hugging Face's ``TemperatureLogitsWarper``):
    below 1 sharpens the distribution, above 1 flattens it.

    Example:
        >>> apply_temperature(torch.tensor([[1.0, -2.0]]), 0.5)
        tensor([[ 2., -4.]])
    """
    return scores / _positive_float(temperature, "temperature")


def apply_top_k(
    scores: Tensor, top_k: int, *, min_tokens_to_keep: int = 1, filter_value: float = -math.inf
) -> Tensor:
    """Keep the ``top_k`` best tokens of every row, set the others to ``filter_value`` (Hugging
    Face's ``TopKLogitsWarper``).

    Every token whose score equals the ``k``-th best score is kept too, so ties can keep more
    than ``k`` tokens. ``k = min(max(top_k, min_tokens_to_keep), V)``.

    Example:
        >>> apply_top_k(torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.0]]), 2)
        tensor([[-inf, 3., 2., 2., -inf]])
    """
    top_k = _positive_int(top_k, "top_k")
    min_tokens_to_keep = _positive_int(min_tokens_to_keep, "min_tokens_to_keep")
    k = min(max(top_k, min_tokens_to_keep), scores.shape[-1])
    kth_best = scores.topk(k, dim=-1).values[..., -1:]
    return scores.masked_fill(scores < kth_best, filter_value)


def apply_top_p(
    scores: Tensor, top_p: float, *, min_tokens_to_keep: int = 1, filter_value: float = -math.inf
) -> Tensor:
    """Nucleus filtering (Hugging Face's ``TopPLogitsWarper``): keep the most probable tokens
    whose probabilities (``softmax(scores)``) add up to at least ``top_p``, set the others to
    ``filter_value``.

    Exactly Hugging Face's rule: sort ascending, remove the tokens whose cumulative probability
    is ``<= 1 - top_p``, always keep the ``min_tokens_to_keep`` best. One refinement: a token tied
    with the least probable kept token is kept too (as :func:`apply_top_k` does), so the result
    never depends on how a sort orders equal scores (Hugging Face's does in that case).

    Example:
        >>> probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
        >>> apply_top_p(probs.log(), 0.7).exp()
        tensor([[0.5000, 0.3000, 0.0000, 0.0000]])
        >>> apply_top_p(torch.tensor([[0.4, 0.2, 0.2, 0.2]]).log(), 0.5).exp()   # ties kept
        tensor([[0.4000, 0.2000, 0.2000, 0.2000]])
    """
    top_p = float(top_p)
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"Expected top_p in (0, 1], got {top_p}; use top_p=1.0 to disable nucleus filtering")
    min_tokens_to_keep = _positive_int(min_tokens_to_keep, "min_tokens_to_keep")
    ascending = scores.sort(dim=-1).values
    probs = ascending.to(torch.promote_types(scores.dtype, torch.float32)).softmax(dim=-1)
    remove = probs.cumsum(dim=-1) <= 1.0 - top_p
    remove[..., -min_tokens_to_keep:] = False
    least_kept = ascending.masked_fill(remove, math.inf).amin(dim=-1, keepdim=True)
    return scores.masked_fill(scores < least_kept, filter_value)


# --------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    """The validated arguments of one :func:`generate` call."""

    max_new_tokens: int
    min_length: int
    min_new_tokens: int
    do_sample: bool
    num_beams: int
    num_return_sequences: int
    temperature: float
    top_k: int  # 0 = off
    top_p: float
    repetition_penalty: float
    no_repeat_ngram_size: int
    length_penalty: float
    early_stopping: bool | str
    eos_token_id: int | None
    pad_token_id: int


@torch.no_grad()
def generate(
    model: Decodable,
    inputs: Any,
    *,
    max_new_tokens: int = 20,
    min_length: int = 0,
    min_new_tokens: int = 0,
    do_sample: bool = False,
    num_beams: int = 1,
    num_return_sequences: int = 1,
    temperature: float = 1.0,
    top_k: int | None = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    seed: int | Sequence[int] | None = None,
    progress: bool = False,
) -> GenerateOutput:
    """Generate tokens autoregressively from ``model`` with greedy search, multinomial sampling
    or beam search; argument names and meanings are Hugging Face ``generate()``'s.

    Modes:

    * **Greedy** (``num_beams=1``, ``do_sample=False``): the arg-max of the processed scores.
    * **Sampling** (``do_sample=True``): a token drawn from ``softmax`` of the processed and
      warped scores (temperature, then top-k, then top-p), by Gumbel-max with the generator(s)
      given by ``seed``. ``num_return_sequences`` copies of every example are sampled.
    * **Beam search** (``num_beams > 1``): Hugging Face's ``BeamSearchScorer``. Every step takes
      the ``2 * num_beams`` best continuations of the example's beams (``sum of processed
      log-probabilities``); an EOS continuation ranked among the first ``num_beams`` becomes a
      finished hypothesis, and the ``num_beams`` best non-EOS continuations become the next
      beams. Finished hypotheses live in a per-example heap of the ``num_beams`` best, scored
      ``sum_logprobs / generated_length ** length_penalty`` (length counted in generated
      tokens, EOS included). ``early_stopping`` says when an example is done:
      ``True``, as soon as it has ``num_beams`` finished hypotheses; ``False`` (a heuristic),
      when the best current continuation, scored at the *current* length, cannot beat the
      worst hypothesis in the heap (with ``length_penalty > 0`` a longer hypothesis can still
      win, so the heuristic may miss the best one); ``"never"`` (canonical beam search), when
      no continuation can beat it any more (scored at ``max_new_tokens`` when
      ``length_penalty > 0``): the result is then the one of running every beam to
      ``max_new_tokens``. Examples not done at ``max_new_tokens`` add their running beams to
      the heap. The ``num_return_sequences`` best hypotheses of every example are returned,
      best first. The "best continuation" is the best of the ``2 * num_beams`` candidates of
      the step, EOS ones included, as in ``BeamSearchScorer`` (transformers >= 4.50's
      vectorized beam search uses the best running beam instead, which can stop the
      heuristic a step earlier in rare cases).

    Finished rows (greedy / sampling) and done examples (beam search) leave the batch through
    :meth:`Decodable.reorder_state`; they are never stepped with padding. The result is the same
    as Hugging Face's padded stepping (and independent of the batch).

    Args:
        model: a :class:`Decodable`.
        inputs: passed as is to ``model.start_decoding``.
        max_new_tokens: the most tokens to generate per sequence (EOS included).
        min_length: EOS is forbidden while prefix + generated tokens are fewer than this (Hugging
            Face's ``min_length``: for a causal LM the prompt counts, for an encoder-decoder the
            decoder start token does).
        min_new_tokens: EOS is forbidden while fewer tokens than this were generated.
        do_sample: sample instead of taking the best token(s).
        num_beams: beam width; 1 means no beam search.
        num_return_sequences: sequences returned per example (beam search: ``<= num_beams``
            best hypotheses; sampling: independent samples; greedy: must be 1).
        temperature: divides the scores before sampling (``> 0``; used only when sampling).
        top_k: sample among the ``top_k`` best tokens only (ties at the ``k``-th score kept);
            0 or None = off. (Hugging Face's default is 50; here it is off.)
        top_p: sample among the smallest set of best tokens whose probabilities add up to at
            least ``top_p`` (in ``(0, 1]``; 1.0 = off).
        repetition_penalty: ``> 0``; the score ``s`` of every token of the context (prefix and
            generated tokens) becomes ``s * p`` if ``s < 0``, ``s / p`` otherwise. Applied to
            logits in greedy search and sampling, to log-probabilities in beam search (as in
            Hugging Face).
        no_repeat_ngram_size: if ``> 0``, no n-gram of that size occurs twice in the context.
        length_penalty: exponent of the length in beam search scores (``> 0`` favours longer
            sequences, ``< 0`` shorter ones).
        early_stopping: ``True``, ``False`` or ``"never"``, see above.
        eos_token_id: the end-of-sequence token (default ``model.eos_id`` if present, else
            None: every sequence is ``max_new_tokens`` long).
        pad_token_id: written after EOS (default ``model.pad_id`` if present, else
            ``eos_token_id`` as in Hugging Face, else 0).
        seed: sampling randomness (ignored unless ``do_sample``). ``None``: PyTorch's global
            generator. An int: one ``torch.Generator`` seeded with it for the whole call
            (reproducible, but an example's samples depend on the batch it is decoded in). A
            sequence of ``B`` ints: one generator per example, so each example's samples are
            independent of the batch; with ``num_return_sequences > 1`` the copies of an example
            draw from its generator in order (copy 0, then copy 1, ...) at every step, finished
            copies no longer drawing.
        progress: show a tqdm progress bar over the decoding steps.

    Returns:
        :class:`GenerateOutput` (sequences, scores, lengths).

    Raises:
        TypeError: ``model`` does not implement :class:`Decodable`, or an argument has the wrong
            type.
        ValueError: an argument is out of range, ``min_length``/``min_new_tokens`` without an EOS
            id, ``num_return_sequences`` larger than ``num_beams``, or the model returned
            tensors of the wrong shape.
        NotImplementedError: beam sampling (``do_sample=True`` with ``num_beams > 1``).
    """
    if not isinstance(model, Decodable):
        raise TypeError(
            f"Expected a model implementing graphattn.decoding.Decodable (start_decoding, "
            f"decode_step, reorder_state), got {type(model).__name__}"
        )
    settings = _validate_arguments(
        model,
        max_new_tokens=max_new_tokens,
        min_length=min_length,
        min_new_tokens=min_new_tokens,
        do_sample=do_sample,
        num_beams=num_beams,
        num_return_sequences=num_return_sequences,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    start = model.start_decoding(inputs, max_new_tokens=settings.max_new_tokens)
    batch_size = _check_start(start, settings)
    sampler = _Sampler(seed, batch_size, start.logits.device) if settings.do_sample else None
    bar = tqdm(total=settings.max_new_tokens, desc="generate", unit="step", disable=not progress, leave=False)
    try:
        if settings.num_beams > 1:
            return _beam_search(model, start, settings, bar)
        return _greedy_or_sample(model, start, settings, sampler, bar)
    finally:
        bar.close()


def _validate_arguments(model: Any, **args: Any) -> _Settings:
    max_new_tokens = _positive_int(args["max_new_tokens"], "max_new_tokens")
    min_length = _nonnegative_int(args["min_length"], "min_length")
    min_new_tokens = _nonnegative_int(args["min_new_tokens"], "min_new_tokens")
    do_sample = args["do_sample"]
    if not isinstance(do_sample, bool):
        raise TypeError(f"Expected 'do_sample' to be a bool, got {do_sample!r}")
    num_beams = _positive_int(args["num_beams"], "num_beams")
    num_return_sequences = _positive_int(args["num_return_sequences"], "num_return_sequences")
    temperature = args["temperature"]
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(
            f"Expected temperature > 0, got {temperature!r}; for deterministic decoding use "
            f"do_sample=False (greedy or beam search) instead of temperature 0"
        )
    top_k = 0 if args["top_k"] is None else _nonnegative_int(args["top_k"], "top_k")
    top_p = args["top_p"]
    if not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0.0 < top_p <= 1.0:
        raise ValueError(f"Expected top_p in (0, 1], got {top_p!r}; use top_p=1.0 to disable nucleus sampling")
    repetition_penalty = _positive_float(args["repetition_penalty"], "repetition_penalty")
    no_repeat_ngram_size = _nonnegative_int(args["no_repeat_ngram_size"], "no_repeat_ngram_size")
    length_penalty = args["length_penalty"]
    if (
        not isinstance(length_penalty, (int, float))
        or isinstance(length_penalty, bool)
        or not math.isfinite(length_penalty)
    ):
        raise ValueError(f"Expected length_penalty to be a finite float, got {length_penalty!r}")
    early_stopping = args["early_stopping"]
    if early_stopping not in (True, False, "never") or not isinstance(early_stopping, (bool, str)):
        raise ValueError(f"Expected early_stopping to be True, False or 'never', got {early_stopping!r}")

    if do_sample and num_beams > 1:
        raise NotImplementedError(
            f"Beam sampling (do_sample=True with num_beams={num_beams}) is not implemented; use "
            f"num_beams=1 to sample or do_sample=False for beam search"
        )
    if num_beams > 1 and num_return_sequences > num_beams:
        raise ValueError(
            f"Expected num_return_sequences <= num_beams for beam search (it returns the best "
            f"hypotheses of a heap of num_beams), got num_return_sequences={num_return_sequences} "
            f"and num_beams={num_beams}; raise num_beams or lower num_return_sequences"
        )
    if num_beams == 1 and not do_sample and num_return_sequences != 1:
        raise ValueError(
            f"Greedy search returns one sequence per example, got num_return_sequences="
            f"{num_return_sequences}; use do_sample=True or num_beams >= num_return_sequences"
        )
    if not do_sample:
        unused = [
            f"{name}={value}"
            for name, value, default in (
                ("temperature", temperature, 1.0), ("top_k", top_k, 0), ("top_p", top_p, 1.0)
            )
            if value != default
        ]
        if unused:
            warnings.warn(
                f"do_sample is False, so {', '.join(unused)} has no effect (these only shape the "
                f"sampling distribution); set do_sample=True to sample",
                UserWarning,
                stacklevel=3,
            )

    eos_token_id = args["eos_token_id"]
    if eos_token_id is None:
        eos_token_id = getattr(model, "eos_id", None)
    if eos_token_id is not None:
        eos_token_id = _nonnegative_int(eos_token_id, "eos_token_id")
    pad_token_id = args["pad_token_id"]
    if pad_token_id is None:
        pad_token_id = getattr(model, "pad_id", None)
    if pad_token_id is None:
        pad_token_id = eos_token_id if eos_token_id is not None else 0
    if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int):
        raise TypeError(f"Expected pad_token_id to be an int, got {pad_token_id!r}")
    if eos_token_id is None and (min_length > 0 or min_new_tokens > 0):
        raise ValueError(
            f"min_length={min_length} / min_new_tokens={min_new_tokens} forbid the EOS token, but "
            f"there is no EOS token (eos_token_id is None and the model has no eos_id); pass "
            f"eos_token_id=... or drop min_length / min_new_tokens"
        )
    return _Settings(
        max_new_tokens=max_new_tokens,
        min_length=min_length,
        min_new_tokens=min_new_tokens,
        do_sample=do_sample,
        num_beams=num_beams,
        num_return_sequences=num_return_sequences,
        temperature=float(temperature),
        top_k=top_k,
        top_p=float(top_p),
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
        length_penalty=float(length_penalty),
        early_stopping=early_stopping,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )


def _check_start(start: Any, settings: _Settings) -> int:
    """Check what ``start_decoding`` returned; returns the batch size ``B``."""
    if not isinstance(start, DecodingStart):
        raise TypeError(f"Expected start_decoding to return a DecodingStart, got {type(start).__name__}")
    logits, prefix, lengths = start.logits, start.prefix, start.prefix_lengths
    if not isinstance(logits, Tensor) or logits.dim() != 2 or not logits.is_floating_point() or logits.shape[0] == 0:
        raise ValueError(
            f"Expected start_decoding's logits to be a floating-point tensor [B, V] with B >= 1, "
            f"got {_describe(logits)}"
        )
    batch_size, vocab_size = logits.shape
    if (
        not isinstance(prefix, Tensor)
        or prefix.dim() != 2
        or prefix.shape[0] != batch_size
        or prefix.is_floating_point()
    ):
        raise ValueError(
            f"Expected start_decoding's prefix to be an integer tensor [B, P] = [{batch_size}, P], "
            f"got {_describe(prefix)}"
        )
    if not isinstance(lengths, Tensor) or lengths.shape != (batch_size,) or lengths.is_floating_point():
        raise ValueError(
            f"Expected start_decoding's prefix_lengths to be an integer tensor [B] = [{batch_size}], "
            f"got {_describe(lengths)}"
        )
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > prefix.shape[1]):
        raise ValueError(
            f"Expected start_decoding's prefix_lengths in [0, P] = [0, {prefix.shape[1]}], got "
            f"values from {int(lengths.min())} to {int(lengths.max())}"
        )
    real = torch.arange(prefix.shape[1], device=prefix.device) < lengths[:, None].to(prefix.device)
    if real.any():
        tokens = prefix[real]
        if int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size:
            raise ValueError(
                f"Expected the prefix tokens (within prefix_lengths) in [0, V) = [0, {vocab_size}), "
                f"got values from {int(tokens.min())} to {int(tokens.max())}"
            )
    if settings.eos_token_id is not None and settings.eos_token_id >= vocab_size:
        raise ValueError(
            f"Expected eos_token_id in [0, V) = [0, {vocab_size}) (V from the model's logits), got "
            f"{settings.eos_token_id}"
        )
    if settings.num_beams > 1 and vocab_size < 2:
        raise ValueError(f"Beam search needs a vocabulary of at least 2 tokens, got V={vocab_size}")
    return batch_size


def _check_step(result: Any, rows: int, vocab_size: int, step: int) -> tuple[Tensor, Any]:
    """Check what ``decode_step`` returned at ``step`` (tokens generated so far)."""
    if not isinstance(result, tuple) or len(result) != 2:
        raise TypeError(f"Expected decode_step to return a tuple (logits, state), got {type(result).__name__}")
    logits, state = result
    if (
        not isinstance(logits, Tensor)
        or not logits.is_floating_point()
        or tuple(logits.shape) != (rows, vocab_size)
    ):
        raise ValueError(
            f"Expected decode_step to return floating-point logits of shape [{rows}, {vocab_size}] "
            f"(one row per token it was given, the vocabulary size of start_decoding), got "
            f"{_describe(logits)} after {step} generated tokens; fix the model's decode_step"
        )
    return logits, state


def _score_dtype(logits: Tensor) -> torch.dtype:
    return torch.promote_types(logits.dtype, torch.float32)


class _Context:
    """The output context of every row of the decoding batch (prefix + generated tokens), as
    much of it as the processors need.

    Attributes:
        lengths: ``[N]`` real context length of every row.
        tokens: ``[N, P + max_new_tokens]`` the context, zero after ``lengths`` (only for
            no-repeat n-grams, else None).
        seen: ``[N, V]`` bool, token occurs in the context (only for the repetition penalty).
    """

    def __init__(self, lengths: Tensor, tokens: Tensor | None, seen: Tensor | None) -> None:
        self.lengths, self.tokens, self.seen = lengths, tokens, seen

    @classmethod
    def from_prefix(cls, prefix: Tensor, prefix_lengths: Tensor, vocab_size: int, settings: _Settings) -> _Context:
        device = prefix.device
        lengths = prefix_lengths.to(device=device, dtype=torch.long)
        real = torch.arange(prefix.shape[1], device=device) < lengths[:, None]
        prefix = torch.where(real, prefix.long(), 0)
        tokens = seen = None
        if settings.no_repeat_ngram_size:
            tokens = torch.cat([prefix, prefix.new_zeros(prefix.shape[0], settings.max_new_tokens)], dim=1)
        if settings.repetition_penalty != 1.0:
            seen = _context_tokens_mask(prefix, lengths, vocab_size)
        return cls(lengths, tokens, seen)

    def select(self, index: Tensor) -> _Context:
        """The context of the rows ``index`` (keep / duplicate / reorder)."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return _Context(self.lengths[index], pick(self.tokens), pick(self.seen))

    def append(self, new_tokens: Tensor) -> None:
        """Append ``new_tokens [N]`` to every row."""
        if self.tokens is not None:
            self.tokens.scatter_(1, self.lengths[:, None], new_tokens[:, None])
        if self.seen is not None:
            self.seen.scatter_(1, new_tokens[:, None], True)
        self.lengths = self.lengths + 1

    def process(self, scores: Tensor, generated: int, settings: _Settings) -> Tensor:
        """Apply repetition penalty, no-repeat n-grams, min_length and min_new_tokens (Hugging
        Face's order) to ``scores [N, V]``; ``generated`` tokens were generated so far."""
        if self.seen is not None:
            scores = _penalize(scores, self.seen, settings.repetition_penalty)
        if self.tokens is not None:
            width = int(self.lengths.max())
            banned = _repeated_ngram_mask(
                self.tokens[:, :width], self.lengths, settings.no_repeat_ngram_size, scores.shape[-1]
            )
            scores = scores.masked_fill(banned, -math.inf)
        eos = settings.eos_token_id
        if eos is not None and (settings.min_length or settings.min_new_tokens):
            too_short = self.lengths < settings.min_length
            if generated < settings.min_new_tokens:
                too_short = torch.ones_like(too_short)
            scores = _ban_token(scores, too_short, eos)
        return scores


def _warp(scores: Tensor, settings: _Settings) -> Tensor:
    """Temperature, top-k, top-p (Hugging Face's warper order)."""
    if settings.temperature != 1.0:
        scores = scores / settings.temperature
    if settings.top_k:
        scores = apply_top_k(scores, settings.top_k)
    if settings.top_p < 1.0:
        scores = apply_top_p(scores, settings.top_p)
    return scores


class _Sampler:
    """Draws one token per row from ``softmax(logprobs)`` by Gumbel-max (float64 noise), with the
    generator(s) chosen by ``seed`` (see :func:`generate`)."""

    def __init__(self, seed: int | Sequence[int] | None, batch_size: int, device: torch.device) -> None:
        self.device = device
        self.shared: torch.Generator | None = None
        self.per_example: list[torch.Generator] | None = None
        if seed is None:
            return
        if isinstance(seed, int) and not isinstance(seed, bool):
            self.shared = torch.Generator(device=device).manual_seed(seed)
            return
        if (
            isinstance(seed, (str, bytes))
            or not isinstance(seed, Sequence)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seed)
        ):
            raise TypeError(f"Expected seed to be None, an int or a sequence of ints (one per example), got {seed!r}")
        if len(seed) != batch_size:
            raise ValueError(
                f"Expected one seed per example, i.e. {batch_size} seeds, got {len(seed)}; pass a "
                f"single int for one generator shared by the whole batch"
            )
        self.per_example = [torch.Generator(device=device).manual_seed(s) for s in seed]

    def draw(self, logprobs: Tensor, examples: Tensor) -> Tensor:
        """``logprobs [n, V]``, ``examples [n]`` (the example of every row) -> tokens ``[n]``."""
        n, vocab_size = logprobs.shape
        options = dict(dtype=torch.float64, device=logprobs.device)
        if self.per_example is not None:
            uniform = torch.stack(
                [torch.rand(vocab_size, generator=self.per_example[e], **options) for e in examples.tolist()]
            )
        else:
            uniform = torch.rand((n, vocab_size), generator=self.shared, **options)
        gumbel = -torch.log(-torch.log(uniform))
        return (logprobs.double() + gumbel).argmax(dim=-1)


def _greedy_or_sample(
    model: Decodable, start: DecodingStart, settings: _Settings, sampler: _Sampler | None, bar: Any
) -> GenerateOutput:
    logits, state = start.logits, start.state
    batch_size, vocab_size = logits.shape
    device, dtype = logits.device, _score_dtype(logits)
    copies = settings.num_return_sequences
    prefix, prefix_lengths = start.prefix.to(device), start.prefix_lengths.to(device)
    if copies > 1:
        expand = torch.arange(batch_size, device=device).repeat_interleave(copies)
        state = model.reorder_state(state, expand)
        logits, prefix, prefix_lengths = logits[expand], prefix[expand], prefix_lengths[expand]
    context = _Context.from_prefix(prefix, prefix_lengths, vocab_size, settings)
    num_rows = batch_size * copies
    rows = torch.arange(num_rows, device=device)  # output row of every row of the decoding batch
    sequences = torch.full(
        (num_rows, settings.max_new_tokens), settings.pad_token_id, dtype=torch.long, device=device
    )
    scores = torch.zeros(num_rows, dtype=dtype, device=device)
    lengths = torch.full((num_rows,), settings.max_new_tokens, dtype=torch.long, device=device)
    eos = settings.eos_token_id

    for step in range(settings.max_new_tokens):
        processed = context.process(logits.to(dtype), step, settings)
        if sampler is not None:
            processed = _warp(processed, settings)
        logprobs = processed.log_softmax(dim=-1)
        if sampler is not None:
            tokens = sampler.draw(logprobs, rows // copies)
        else:
            tokens = processed.argmax(dim=-1)
        scores[rows] += logprobs.gather(1, tokens[:, None]).squeeze(1)
        sequences[rows, step] = tokens
        bar.update(1)
        if step + 1 == settings.max_new_tokens:
            break
        if eos is not None:
            finished = tokens == eos
            num_finished = int(finished.sum())
            if num_finished:
                lengths[rows[finished]] = step + 1
                if num_finished == rows.numel():
                    break
                keep = (~finished).nonzero().squeeze(1)
                state = model.reorder_state(state, keep)
                rows, tokens, context = rows[keep], tokens[keep], context.select(keep)
        context.append(tokens)
        logits, state = _check_step(model.decode_step(tokens, state), rows.numel(), vocab_size, step + 1)

    width = int(lengths.max())
    return GenerateOutput(sequences[:, :width].contiguous(), scores, lengths)


class _BeamHypotheses:
    """The finished hypotheses of one example: a heap of the ``num_beams`` best, with Hugging
    Face's ``BeamHypotheses`` semantics (insertion, eviction of the worst, ``is_done``)."""

    def __init__(
        self, num_beams: int, length_penalty: float, early_stopping: bool | str, max_new_tokens: int
    ) -> None:
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.max_new_tokens = max_new_tokens
        self.beams: list[tuple[float, list[int]]] = []  # (score, tokens), in insertion order
        self.worst_score = 1e9

    def add(self, tokens: list[int], sum_logprobs: float, generated_length: int) -> None:
        score = sum_logprobs / generated_length**self.length_penalty
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, tokens))
            if len(self.beams) > self.num_beams:
                worst = min(range(len(self.beams)), key=lambda i: (self.beams[i][0], i))
                del self.beams[worst]
                self.worst_score = min(s for s, _ in self.beams)
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs: float, generated_length: int) -> bool:
        """Whether no continuation can enter the heap any more (or the heuristic says so)."""
        if len(self.beams) < self.num_beams:
            return False
        if self.early_stopping is True:
            return True
        length = generated_length
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            length = self.max_new_tokens
        return self.worst_score >= best_sum_logprobs / length**self.length_penalty

    def best(self, count: int) -> list[tuple[float, list[int]]]:
        """The ``count`` best hypotheses, best first (equal scores: the later-inserted first)."""
        return sorted(self.beams, key=lambda beam: beam[0])[::-1][:count]


def _beam_search(model: Decodable, start: DecodingStart, settings: _Settings, bar: Any) -> GenerateOutput:
    logits, state = start.logits, start.state
    batch_size, vocab_size = logits.shape
    device, dtype = logits.device, _score_dtype(logits)
    beams, eos = settings.num_beams, settings.eos_token_id
    expand = torch.arange(batch_size, device=device).repeat_interleave(beams)
    state = model.reorder_state(state, expand)
    logits = logits[expand]
    prefix, prefix_lengths = start.prefix.to(device)[expand], start.prefix_lengths.to(device)[expand]
    context = _Context.from_prefix(prefix, prefix_lengths, vocab_size, settings)
    beam_scores = torch.zeros(batch_size, beams, dtype=dtype, device=device)
    beam_scores[:, 1:] = _INACTIVE_BEAM_SCORE
    beam_scores = beam_scores.view(-1)  # [A * beams], A = examples still decoding
    generated = torch.zeros(batch_size * beams, settings.max_new_tokens, dtype=torch.long, device=device)
    hypotheses = [
        _BeamHypotheses(beams, settings.length_penalty, settings.early_stopping, settings.max_new_tokens)
        for _ in range(batch_size)
    ]
    active = list(range(batch_size))  # example of every group of `beams` rows
    rank = torch.arange(2 * beams, device=device)

    for step in range(settings.max_new_tokens):
        num_active = len(active)
        logprobs = context.process(logits.to(dtype).log_softmax(dim=-1), step, settings)
        candidates = (logprobs + beam_scores[:, None]).view(num_active, beams * vocab_size)
        top_scores, top_index = candidates.topk(2 * beams, dim=1)  # [A, 2 * beams], best first
        source = top_index // vocab_size + torch.arange(num_active, device=device)[:, None] * beams
        tokens = top_index % vocab_size
        is_eos = tokens == eos if eos is not None else torch.zeros_like(tokens, dtype=torch.bool)
        # The next beams: the `beams` best non-EOS candidates, in rank order (each beam adds at most
        # one EOS candidate, so at least `beams` of the 2 * beams candidates are not EOS).
        running = torch.where(is_eos, rank + 2 * beams, rank).argsort(dim=1)[:, :beams]
        generated_length = step + 1

        # EOS candidates ranked among the first `beams` become finished hypotheses, in rank order.
        finished = (is_eos & (rank < beams)).nonzero().tolist()
        if finished:
            where = torch.tensor(finished, device=device).T
            prefixes = generated[source[where[0], where[1]], :step].tolist()
            sums = top_scores[where[0], where[1]].tolist()
            for (a, _), tokens_before, total in zip(finished, prefixes, sums):
                hypotheses[active[a]].add(tokens_before + [eos], total, generated_length)
        best = top_scores[:, 0].tolist()
        keep = [a for a in range(num_active) if not hypotheses[active[a]].is_done(best[a], generated_length)]

        rows = source.gather(1, running)  # [A, beams] current row of every next beam
        next_tokens = tokens.gather(1, running)
        next_scores = top_scores.gather(1, running)
        if len(keep) < num_active:
            kept = torch.tensor(keep, dtype=torch.long, device=device)
            rows, next_tokens, next_scores = rows[kept], next_tokens[kept], next_scores[kept]
            active = [active[a] for a in keep]
        rows, next_tokens, beam_scores = rows.reshape(-1), next_tokens.reshape(-1), next_scores.reshape(-1)
        generated = generated[rows]
        generated[:, step] = next_tokens
        bar.update(1)
        if not active:
            break
        if generated_length == settings.max_new_tokens:
            # The examples that are not done add their running beams to their heap.
            final_tokens = generated[:, :generated_length].tolist()
            final_sums = beam_scores.tolist()
            for a, example in enumerate(active):
                for row in range(a * beams, (a + 1) * beams):
                    hypotheses[example].add(final_tokens[row], final_sums[row], generated_length)
            break
        state = model.reorder_state(state, rows)
        context = context.select(rows)
        context.append(next_tokens)
        logits, state = _check_step(model.decode_step(next_tokens, state), rows.numel(), vocab_size, step + 1)

    return _collect_hypotheses(hypotheses, settings, dtype, device)


def _collect_hypotheses(
    hypotheses: list[_BeamHypotheses], settings: _Settings, dtype: torch.dtype, device: torch.device
) -> GenerateOutput:
    chosen = [beam for example in hypotheses for beam in example.best(settings.num_return_sequences)]
    lengths = torch.tensor([len(tokens) for _, tokens in chosen], dtype=torch.long)
    sequences = torch.full((len(chosen), int(lengths.max())), settings.pad_token_id, dtype=torch.long)
    for row, (_, tokens) in enumerate(chosen):
        sequences[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    scores = torch.tensor([score for score, _ in chosen], dtype=dtype)
    return GenerateOutput(sequences.to(device), scores.to(device), lengths.to(device))


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _penalize(scores: Tensor, mask: Tensor, penalty: float) -> Tensor:
    penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(mask, penalized, scores)


def _ban_token(scores: Tensor, rows: Tensor, token: int) -> Tensor:
    """``scores`` with ``-inf`` at ``[i, token]`` for the rows where ``rows [N]`` is True."""
    column = torch.arange(scores.shape[-1], device=scores.device) == token
    return scores.masked_fill(rows[:, None] & column, -math.inf)


def _context_tokens_mask(context: Tensor, lengths: Tensor, vocab_size: int) -> Tensor:
    """``[N, V]`` bool: token ``v`` occurs in ``context[i, :lengths[i]]``."""
    real = torch.arange(context.shape[1], device=context.device) < lengths[:, None]
    return _scatter_any(torch.where(real, context, 0), real, vocab_size)


def _repeated_ngram_mask(context: Tensor, lengths: Tensor, ngram_size: int, vocab_size: int) -> Tensor:
    """``[N, V]`` bool: the tokens that would complete an n-gram already in the context."""
    if ngram_size == 1:
        return _context_tokens_mask(context, lengths, vocab_size)
    width = ngram_size - 1  # the n-gram's prefix, compared with the context's last `width` tokens
    num_rows, length = context.shape
    if length <= width:
        return torch.zeros(num_rows, vocab_size, dtype=torch.bool, device=context.device)
    starts = length - width  # windows context[:, j : j + width] that have a following position
    last = (lengths[:, None] - width + torch.arange(width, device=context.device)).clamp(min=0)
    suffix = context.gather(1, last)  # [N, width]
    windows = context.unfold(1, width, 1)[:, :starts]  # [N, starts, width]
    j = torch.arange(starts, device=context.device)
    match = (windows == suffix[:, None, :]).all(dim=-1) & (j + width < lengths[:, None])
    following = context[:, width:]  # [N, starts], the token after window j
    return _scatter_any(torch.where(match, following, 0), match, vocab_size)


def _scatter_any(index: Tensor, valid: Tensor, vocab_size: int) -> Tensor:
    """``[N, V]`` bool: some ``valid[i, j]`` has ``index[i, j] == v``."""
    counts = torch.zeros(index.shape[0], vocab_size, dtype=torch.long, device=index.device)
    return counts.scatter_add_(1, index.long(), valid.long()) > 0


def _check_context(scores: Tensor, context: Tensor, lengths: Tensor) -> None:
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise ValueError(f"Expected 'scores' of shape [N, V], got {_describe(scores)}")
    num_rows, vocab_size = scores.shape
    if (
        not isinstance(context, Tensor)
        or context.dim() != 2
        or context.shape[0] != num_rows
        or context.is_floating_point()
    ):
        raise ValueError(
            f"Expected 'context' to be an integer tensor [N, L] with N = {num_rows}, got {_describe(context)}"
        )
    if not isinstance(lengths, Tensor) or lengths.shape != (num_rows,) or lengths.is_floating_point():
        raise ValueError(f"Expected 'context_lengths' to be an integer tensor [{num_rows}], got {_describe(lengths)}")
    real = torch.arange(context.shape[1], device=context.device) < lengths[:, None]
    if real.any() and (int(context[real].min()) < 0 or int(context[real].max()) >= vocab_size):
        raise ValueError(
            f"Expected the context tokens in [0, V) = [0, {vocab_size}), got {context[real].unique().tolist()}"
        )


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"a {x.dtype} tensor of shape {list(x.shape)}"
    return type(x).__name__


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Expected '{name}' to be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"Expected '{name}' to be a positive int, got {value}")
    return value


def _nonnegative_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Expected '{name}' to be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"Expected '{name}' >= 0, got {value}")
    return value


def _positive_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"Expected '{name}' to be a strictly positive float, got {value!r}")
    return float(value)


def _token_id(value: object, name: str, vocab_size: int) -> int:
    value = _nonnegative_int(value, name)
    if value >= vocab_size:
        raise ValueError(f"Expected '{name}' in [0, V) = [0, {vocab_size}), got {value}")
    return value


# --------------------------------------------------------------------------------------------
# Non-autoregressive decoding (graphattn.models.nat)
# --------------------------------------------------------------------------------------------


@dataclass
class NonAutoregressiveOutput:
    """What the non-autoregressive decoders return (:func:`parallel_decode`, :func:`mask_predict`,
    :func:`noisy_parallel_decode`, :func:`ctc_decode`).

    Attributes:
        sequences: ``[B, T]`` int64 output tokens (no BOS / EOS), ``pad_id`` after each row's
            length; ``T = max(lengths)`` (at least 1 column).
        lengths: ``[B]`` int64 output lengths.
        scores: ``[B]`` float: the mean log-probability of the output tokens under the NAT
            (:func:`parallel_decode`, :func:`mask_predict`: the length-beam criterion;
            :func:`ctc_decode`: of the chosen canvas path), or the autoregressive teacher's
            log-likelihood of the output with EOS (:func:`noisy_parallel_decode`).
        iterations: ``[B]`` int64 decoder passes run for the chosen candidate (mask-predict
            and CTC refinement; early stopping makes it smaller than ``iterations``), or None.
        candidates: ``[B, C, Tc]`` every candidate (length beam, NPD samples) when asked for,
            else None; ``candidate_lengths`` ``[B, C]`` and ``candidate_scores`` ``[B, C]`` (the
            selection criterion) with them.
    """

    sequences: Tensor
    lengths: Tensor
    scores: Tensor
    iterations: Tensor | None = None
    candidates: Tensor | None = None
    candidate_lengths: Tensor | None = None
    candidate_scores: Tensor | None = None


def _ban_ids(logits: Tensor, banned: Sequence[int]) -> Tensor:
    """``logits [..., V]`` -> float log-probabilities with the ``banned`` ids impossible."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if banned:
        logits = logits.index_fill(-1, torch.tensor(list(banned), device=logits.device), -math.inf)
    return logits.log_softmax(-1)


def _check_nat(model: Any, what: str) -> None:
    for name in ("encode", "decode", "predict_lengths", "candidate_lengths", "banned_ids"):
        if not callable(getattr(model, name, None)):
            raise TypeError(
                f"{what} needs a graphattn.models.NonAutoregressiveTransformer (or a model with encode, decode, "
                f"predict_lengths, candidate_lengths, banned_ids), got {type(model).__name__}"
            )


def _cut(model: Any, tokens: Tensor, token_log_probs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Padded outputs of decoded canvases ``tokens [N, T]`` (``lengths [N]`` real positions):
    ``(sequences [N, T'], lengths [N], mean log-probability [N])``; a ``cut_at_end`` model's
    output stops before its first END (whose log-probability still counts)."""
    pad = model.config.pad_id
    slots = tokens.size(1)
    position = torch.arange(slots, device=tokens.device)
    real = position < lengths[:, None]
    counted = real
    if getattr(model, "cuts_at_end", False):
        is_end = (tokens == model.config.eos_id) & real
        first = torch.where(is_end.any(1), is_end.float().argmax(1), lengths)
        counted = position <= first[:, None]
        counted &= real
        lengths = first
        real = position < lengths[:, None]
    scores = (token_log_probs * counted).sum(1) / counted.sum(1).clamp(min=1)
    sequences = torch.where(real, tokens, pad)
    width = max(int(lengths.max()) if lengths.numel() else 0, 1)
    return sequences[:, :width].contiguous(), lengths, scores


@torch.no_grad()
def parallel_decode(model: Any, src: Any) -> NonAutoregressiveOutput:
    """Vanilla non-autoregressive decoding: the most probable length (or fertilities, or the
    ``cut_at_end`` canvas), then every token the arg-max of one parallel decoder pass (a
    masked-LM decoder reads ``[MASK]`` everywhere). Pad, BOS, ``[MASK]`` and (unless cutting at
    END) EOS are never emitted.

    Args:
        model: a :class:`~graphattn.models.NonAutoregressiveTransformer` (``eval()`` it first).
        src: ``[B, S]`` source ids, right-padded (or Vectors).

    Returns:
        :class:`NonAutoregressiveOutput` (``scores``: mean token log-probability).
    """
    _check_nat(model, "parallel_decode")
    encoding = model.encode(src)
    lengths, fertilities = model.predict_lengths(encoding)
    tokens = None
    if model.uses_tokens:
        tokens = _all_masks(lengths, model.config.mask_id, model.config.pad_id)
    copy = fertilities if model.nat.decoder_input == "fertility" else None
    log_probs = _ban_ids(model.decode(encoding, lengths, tokens=tokens, fertilities=copy), model.banned_ids())
    best, chosen = log_probs.max(-1)
    sequences, out_lengths, scores = _cut(model, chosen, best, lengths)
    return NonAutoregressiveOutput(sequences, out_lengths, scores, torch.ones_like(lengths))


def _all_masks(lengths: Tensor, mask_id: int, pad_id: int) -> Tensor:
    slots = int(lengths.max())
    real = torch.arange(slots, device=lengths.device) < lengths[:, None]
    return torch.where(real, mask_id, pad_id)


def remask_count(length: int | Tensor, iteration: int, iterations: int) -> int | Tensor:
    """Mask-Predict's schedule: at iteration ``t`` (``1 <= t < T``) the ``floor(n (T - t) / T)``
    least confident of the ``n`` tokens are masked again and re-predicted (iteration 0 predicts
    all ``n``).

    Example:
        >>> [remask_count(10, t, 4) for t in range(1, 4)]
        [7, 5, 2]
    """
    return (length * (iterations - iteration)) // iterations


def _refine(
    model: Any, encoding: Any, lengths: Tensor, iterations: int, early_stop: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Mask-Predict over candidates (rows of ``encoding``, lengths ``[N]``): ``(tokens [N, T],
    token log-probabilities [N, T], passes run [N])``."""
    mask_id, pad_id = model.config.mask_id, model.config.pad_id
    banned = model.banned_ids()
    count, slots = lengths.numel(), int(lengths.max())
    device = lengths.device
    real = torch.arange(slots, device=device) < lengths[:, None]
    tokens = torch.where(real, mask_id, pad_id)
    confidence = torch.zeros(count, slots, device=device, dtype=torch.promote_types(encoding.memory.dtype, torch.float32))
    active = torch.ones(count, dtype=torch.bool, device=device)
    passes = torch.zeros(count, dtype=torch.long, device=device)
    caches = model.memory_caches(encoding)
    cached_rows = torch.arange(count, device=device)  # the candidates whose memory the caches hold
    for t in range(iterations):
        if t == 0:
            masked = real.clone()
        else:
            n = remask_count(lengths, t, iterations)  # [N]
            order = confidence.masked_fill(~real, math.inf).argsort(dim=1, stable=True).argsort(1)  # rank, least confident first
            masked = (order < n[:, None]) & real & active[:, None]
            tokens = torch.where(masked, mask_id, tokens)
        rows = active.nonzero().squeeze(1)
        width = int(lengths[rows].max())
        if rows.numel() != cached_rows.numel():  # early stop dropped candidates
            keep = torch.searchsorted(cached_rows, rows)
            for cache in caches:
                cache.reorder(keep)
            cached_rows = rows
        log_probs = _ban_ids(
            model.decode(encoding.select(rows), lengths[rows], tokens=tokens[rows, :width], memory_caches=caches), banned
        )  # [A, width, V]
        best, chosen = log_probs.max(-1)
        update = masked[rows, :width]
        previous = tokens[rows, :width]
        new_tokens = torch.where(update, chosen, previous)
        tokens[rows, :width] = new_tokens
        confidence[rows, :width] = torch.where(update, best, confidence[rows, :width])
        passes[rows] += 1
        if early_stop and t > 0:
            unchanged = (new_tokens == output_before[rows, :width]).all(1)
            active[rows[unchanged]] = False
            if not bool(active.any()):
                break
        output_before = tokens.clone()
    return tokens, confidence, passes


@torch.no_grad()
def mask_predict(
    model: Any,
    src: Any,
    *,
    iterations: int = 10,
    length_beam: int = 1,
    early_stop: bool = True,
    return_candidates: bool = False,
) -> NonAutoregressiveOutput:
    """Mask-Predict (Ghazvininejad et al. 2019) with a conditional masked-LM NAT
    (``decoder_input="mask"``).

    For each of the ``length_beam`` most probable lengths ``n`` of a row (a candidate):
    iteration 0 predicts every position from an all-``[MASK]`` input (arg-max token and its
    probability); each iteration ``t = 1 .. T-1`` masks again the ``floor(n (T - t) / T)``
    (:func:`remask_count`) tokens of lowest probability (ties: the earlier position) and
    re-predicts them from the others, updating their tokens and probabilities (the others keep
    theirs). With ``early_stop`` a candidate stops as soon as an iteration leaves its output
    unchanged. The output is the candidate with the highest mean token log-probability (ties: the
    more probable length). Each candidate is decoded independently of the others (and of the
    batch).

    Args:
        model: a :class:`~graphattn.models.NonAutoregressiveTransformer` with ``decoder_input="mask"``.
        src: ``[B, S]`` source ids, right-padded (or Vectors).
        iterations: ``T >= 1`` (``T = 1``: one parallel pass, :func:`parallel_decode`).
        length_beam: ``l >= 1`` candidate lengths per row.
        early_stop: stop a candidate when its output no longer changes.
        return_candidates: also return every candidate.

    Returns:
        :class:`NonAutoregressiveOutput` (``scores``: the chosen candidate's mean log-probability;
        ``iterations``: its decoder passes).
    """
    _check_nat(model, "mask_predict")
    if not getattr(model, "uses_tokens", False):
        raise ValueError(
            "mask_predict needs a conditional masked-LM NAT (NATConfig(decoder_input='mask')); this model reads "
            f"{model.nat.decoder_input!r} decoder inputs -- use parallel_decode or noisy_parallel_decode"
        )
    iterations = _positive_int(iterations, "iterations")
    length_beam = _positive_int(length_beam, "length_beam")
    encoding = model.encode(src)
    batch = encoding.lengths.numel()
    candidates = model.candidate_lengths(encoding, length_beam)  # [B, l]
    rows = torch.arange(batch, device=candidates.device).repeat_interleave(length_beam)
    lengths = candidates.reshape(-1)
    tokens, confidence, passes = _refine(model, encoding.select(rows), lengths, iterations, early_stop)
    sequences, out_lengths, scores = _cut(model, tokens, confidence, lengths)
    return _pick(sequences, out_lengths, scores, passes, batch, length_beam, return_candidates)


def _pick(
    sequences: Tensor, lengths: Tensor, scores: Tensor, passes: Tensor | None, batch: int, count: int, return_candidates: bool
) -> NonAutoregressiveOutput:
    """The best of every row's ``count`` candidates (rows ``b * count + c``); ties: the first."""
    grid = scores.view(batch, count)
    best = grid.argmax(1)  # the first maximum
    chosen = torch.arange(batch, device=best.device) * count + best
    width = max(int(lengths[chosen].max()) if batch else 0, 1)
    out = NonAutoregressiveOutput(
        sequences[chosen, :width].contiguous(), lengths[chosen], scores[chosen],
        None if passes is None else passes[chosen],
    )
    if return_candidates:
        out.candidates = sequences.view(batch, count, -1)
        out.candidate_lengths = lengths.view(batch, count)
        out.candidate_scores = grid
    return out


def _generators(seed: int | Sequence[int] | None, batch: int, device: torch.device) -> list[torch.Generator] | torch.Generator | None:
    if seed is None:
        return None
    if isinstance(seed, int) and not isinstance(seed, bool):
        return torch.Generator(device=device).manual_seed(seed)
    seeds = list(seed)
    if len(seeds) != batch:
        raise ValueError(f"Expected one seed per example ({batch}), got {len(seeds)}")
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def _gumbel(shape: tuple[int, ...], generators, device: torch.device) -> Tensor:
    """Gumbel noise ``[B, ...]`` (rows from their own generator when given one per example)."""
    if isinstance(generators, list):
        uniform = torch.stack([torch.rand(shape[1:], generator=g, device=device, dtype=torch.float64) for g in generators])
    else:
        uniform = torch.rand(shape, generator=generators, device=device, dtype=torch.float64)
    return -torch.log(-torch.log(uniform.clamp(min=1e-300)))


def _sample_candidates(model: Any, encoding: Any, samples: int, temperature: float, generators) -> tuple[Tensor, Tensor | None]:
    """``(lengths [B, s], fertilities [B, s, S] or None)``: candidate 0 the arg-max, the others
    drawn (Gumbel-max on ``log p / temperature``). The noise of a row depends only on its own
    generator and real source length, never on the padding of its batch."""
    batch = encoding.lengths.numel()
    device = encoding.lengths.device
    kind = model.nat.length
    if kind in ("classifier", "offset"):
        log_probs = model.length_log_probs(encoding)  # [B, K]
        if kind == "classifier":
            grid = torch.arange(log_probs.size(1), device=device).expand(batch, -1)
        else:  # the 2M + 1 lengths S + offset, a width that does not depend on the batch
            m = model.nat.max_offset
            grid = encoding.lengths[:, None] + torch.arange(-m, m + 1, device=device)
        choices = log_probs.gather(1, grid.clamp(min=0)).masked_fill(grid < 1, -math.inf)  # [B, G]
        picked = choices.argmax(-1, keepdim=True)
        if samples > 1:
            noise = _gumbel((batch, samples - 1, choices.size(-1)), generators, device)
            drawn = (choices.double()[:, None, :] / temperature + noise).argmax(-1)
            picked = torch.cat([picked, drawn], 1)
        return grid.gather(1, picked), None
    if kind == "fertility":
        log_probs = model.fertility_log_probs(encoding).double()  # [B, S, F + 1]
        best = log_probs.argmax(-1)[:, None]  # [B, 1, S]
        if samples > 1:
            # noise laid out [B, S, s - 1, F + 1]: source position i's draws do not depend on S
            noise = _gumbel((batch, log_probs.size(1), samples - 1, log_probs.size(2)), generators, device)
            drawn = (log_probs[:, :, None] / temperature + noise).argmax(-1).transpose(1, 2)  # [B, s - 1, S]
            best = torch.cat([best, drawn], 1)
        fertilities = model._masked_fertilities(best, encoding.lengths[:, None])
        return fertilities.sum(-1), fertilities
    # uniform copy / cut at END: no distribution to sample from, so lengths L, L - 1, L + 1, ...
    return model.candidate_lengths(encoding, samples), None


def _select_source(src: Any, rows: Tensor) -> Any:
    if isinstance(src, Tensor):
        return src[rows.to(src.device)]
    features, lengths = src  # Vectors
    return type(src)(features[rows.to(features.device)], lengths[rows.to(lengths.device)])


@torch.no_grad()
def teacher_scores(teacher: Any, src: Any, hypotheses: Tensor, lengths: Tensor, *, length_normalize: bool = False) -> Tensor:
    """The log-likelihood under an autoregressive ``teacher`` of every hypothesis followed by EOS,
    in one teacher-forced pass.

    Args:
        teacher: an :class:`~graphattn.models.EncoderDecoder` (``teacher(src, tgt_in) -> logits``;
            its ``config`` gives pad / BOS / EOS ids).
        src: ``[N, S]`` the source of every hypothesis (or Vectors).
        hypotheses: ``[N, T]`` target tokens (no BOS / EOS), right-padded.
        lengths: ``[N]`` their lengths.
        length_normalize: divide by ``length + 1`` (the scored tokens).

    Returns:
        ``[N]`` float: ``sum_t log p(y_t | y_<t, x)`` over ``y_1 .. y_n, EOS``.
    """
    cfg = teacher.config
    count, slots = hypotheses.shape
    device = hypotheses.device
    position = torch.arange(slots + 1, device=device)
    body = torch.cat([hypotheses, hypotheses.new_full((count, 1), cfg.pad_id)], 1)  # [N, T + 1]
    tgt_out = torch.where(position < lengths[:, None], body, cfg.pad_id)
    tgt_out = torch.where(position == lengths[:, None], cfg.eos_id, tgt_out)
    tgt_in = torch.cat([hypotheses.new_full((count, 1), cfg.bos_id), tgt_out[:, :-1]], 1)
    tgt_in = torch.where(position <= lengths[:, None], tgt_in, cfg.pad_id)
    logits = teacher(src, tgt_in)
    log_probs = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)  # [N, T + 1, V]
    counted = position <= lengths[:, None]
    picked = log_probs.gather(2, tgt_out[..., None]).squeeze(2)
    scores = (picked * counted).sum(1)
    return scores / (lengths + 1).to(scores.dtype) if length_normalize else scores


@torch.no_grad()
def noisy_parallel_decode(
    model: Any,
    teacher: Any,
    src: Any,
    *,
    samples: int = 10,
    temperature: float = 1.0,
    iterations: int = 1,
    length_normalize: bool = False,
    seed: int | Sequence[int] | None = None,
    return_candidates: bool = False,
) -> NonAutoregressiveOutput:
    """Noisy parallel decoding (Gu et al. 2018): ``samples`` candidates per row, each decoded in
    parallel by the NAT, all rescored by an autoregressive teacher in **one** teacher-forced pass
    (:func:`teacher_scores`); the best-scored candidate wins (ties: the earlier candidate).

    Candidates: candidate 0 uses the most probable length (fertilities), so ``samples=1``
    equals :func:`parallel_decode` (and :func:`mask_predict` with ``length_beam=1`` for a
    masked-LM NAT); the others draw the length (``classifier`` / ``offset``) or every source
    token's fertility (``fertility``) from the model's distribution sharpened by ``temperature``.
    Models that predict no length (``uniform_copy``, ``cut_at_end``) try the lengths
    ``L, L - 1, L + 1, ...`` instead.

    Args:
        model: a :class:`~graphattn.models.NonAutoregressiveTransformer` (eval mode).
        teacher: an autoregressive :class:`~graphattn.models.EncoderDecoder` over the same
            vocabularies (eval mode).
        src: ``[B, S]`` source ids (or Vectors).
        samples: ``s >= 1`` candidates per row.
        temperature: of the sampling distribution (``> 0``).
        iterations: Mask-Predict iterations per candidate for a masked-LM NAT (else ignored).
        length_normalize: rank by the teacher's mean instead of total log-likelihood.
        seed: ``None`` (torch's global RNG), an int (one generator for the batch), or one int per
            example (then a row's result does not depend on its batch).
        return_candidates: also return every candidate and its teacher score.

    Returns:
        :class:`NonAutoregressiveOutput` (``scores``: the teacher's score of the output).
    """
    _check_nat(model, "noisy_parallel_decode")
    samples = _positive_int(samples, "samples")
    temperature = _positive_float(temperature, "temperature")
    iterations = _positive_int(iterations, "iterations")
    if not callable(teacher) or not hasattr(teacher, "config"):
        raise TypeError(f"Expected teacher to be an autoregressive EncoderDecoder, got {type(teacher).__name__}")
    encoding = model.encode(src)
    batch = encoding.lengths.numel()
    device = encoding.lengths.device
    generators = _generators(seed, batch, device)
    lengths, fertilities = _sample_candidates(model, encoding, samples, temperature, generators)
    rows = torch.arange(batch, device=device).repeat_interleave(samples)
    lengths = lengths.reshape(-1)
    expanded = encoding.select(rows)
    if model.uses_tokens:
        tokens, confidence, passes = _refine(model, expanded, lengths, iterations, early_stop=True)
    else:
        copy = fertilities.reshape(batch * samples, -1) if fertilities is not None and model.nat.decoder_input == "fertility" else None
        log_probs = _ban_ids(model.decode(expanded, lengths, fertilities=copy), model.banned_ids())
        confidence, tokens = log_probs.max(-1)
        passes = torch.ones_like(lengths)
    sequences, out_lengths, _ = _cut(model, tokens, confidence, lengths)
    scores = teacher_scores(teacher, _select_source(src, rows), sequences, out_lengths, length_normalize=length_normalize)
    return _pick(sequences, out_lengths, scores, passes, batch, samples, return_candidates)


@torch.no_grad()
def ctc_decode(model: Any, src: Any, *, beam_size: int = 1, iterations: int = 1, early_stop: bool = True) -> NonAutoregressiveOutput:
    """Decode a :class:`~graphattn.models.CTCNAT`: best path (``beam_size=1``,
    :func:`~graphattn.models.ctc_greedy_decode`) or prefix beam search
    (:func:`~graphattn.models.ctc_beam_search`) over the canvas, repeats collapsed and blanks
    dropped.

    With ``iterations = T > 1`` (a model trained with ``imputer=True``): Imputer-style
    refinement of the best path -- iteration ``t`` masks the ``floor(L (T - t) / T)`` least
    confident of the ``L`` canvas positions (:func:`remask_count`) and re-predicts them from the
    others; with ``early_stop`` a row stops when its path no longer changes; the final path is
    collapsed.

    Returns:
        :class:`NonAutoregressiveOutput` (``scores``: mean log-probability of the chosen path;
        with beam search, of the best path).
    """
    from graphattn.models.ctc import ctc_beam_search, ctc_collapse

    beam_size = _positive_int(beam_size, "beam_size")
    iterations = _positive_int(iterations, "iterations")
    if not hasattr(model, "blank") or not callable(getattr(model, "encode", None)):
        raise TypeError(f"ctc_decode needs a graphattn.models.CTCNAT, got {type(model).__name__}")
    if iterations > 1 and beam_size > 1:
        raise ValueError("Choose refinement (iterations > 1) or beam search (beam_size > 1), not both")
    if iterations > 1 and not model.ctc.imputer:
        raise ValueError("Refinement needs a CTCNAT trained with CTCNATConfig(imputer=True); use iterations=1")
    encoding = model.encode(src)
    log_probs, lengths = model.decode(encoding)
    confidence, path = log_probs.max(-1)
    real = torch.arange(path.size(1), device=path.device) < lengths[:, None]
    active = torch.ones_like(lengths, dtype=torch.bool)
    passes = torch.ones_like(lengths)
    for t in range(1, iterations):
        n = remask_count(lengths, t, iterations)
        order = confidence.masked_fill(~real, math.inf).argsort(dim=1, stable=True).argsort(1)
        masked = (order < n[:, None]) & real & active[:, None]
        rows = active.nonzero().squeeze(1)
        canvas = torch.where(masked, model.mask_id, path)
        refined, _ = model.decode(encoding.select(rows), canvas[rows])
        best, chosen = refined.max(-1)
        update = masked[rows]
        new_path = torch.where(update, chosen, path[rows])
        unchanged = (new_path == path[rows]).all(1)
        path[rows] = new_path
        confidence[rows] = torch.where(update, best, confidence[rows])
        passes[rows] += 1
        if early_stop:
            active[rows[unchanged]] = False
            if not bool(active.any()):
                break
    scores = (confidence * real).sum(1) / real.sum(1).clamp(min=1)
    if beam_size > 1:
        labels = ctc_beam_search(log_probs, lengths, beam_size, blank=model.blank)
    else:
        labels = [ctc_collapse(row[:n], model.blank) for row, n in zip(path.tolist(), lengths.tolist())]
    out_lengths = torch.tensor([len(x) for x in labels], dtype=torch.long, device=lengths.device)
    sequences = torch.full((len(labels), max(int(out_lengths.max()) if labels else 0, 1)), model.config.pad_id,
                           dtype=torch.long, device=lengths.device)
    for i, row in enumerate(labels):
        if row:
            sequences[i, : len(row)] = torch.tensor(row, dtype=torch.long, device=lengths.device)
    return NonAutoregressiveOutput(sequences, out_lengths, scores, passes)


@torch.no_grad()
def distill(
    teacher: Decodable,
    sources: Sequence[Sequence[int]] | Tensor,
    *,
    batch_size: int = 64,
    num_beams: int = 1,
    max_new_tokens: int | None = None,
    pad_id: int | None = None,
    progress: bool = False,
) -> list[list[int]]:
    """Sequence-level knowledge distillation (Kim & Rush 2016), the data step of NAT training:
    the autoregressive ``teacher`` decodes every training source (greedy, or beam search with
    ``num_beams``) and its outputs replace the references as the NAT's targets.

    Sources are decoded in batches of similar length (sorted by length; every row is decoded
    independently of its batch, so the order does not change the outputs).

    Args:
        teacher: an :class:`~graphattn.models.EncoderDecoder` (eval mode), or any
            :class:`Decodable` over source ids.
        sources: ``N`` source id lists (or ``[N, S]`` right-padded ids).
        batch_size: sources per :func:`generate` call.
        num_beams: 1 for greedy search.
        max_new_tokens: the longest output (EOS included); default ``2 * max source length + 10``.
        pad_id: the source padding id (default ``teacher.pad_id``, else 0).
        progress: a tqdm bar over the batches.

    Returns:
        ``N`` target token lists without BOS / EOS, in the order of ``sources``; as training
        pairs: ``[(src, [BOS] + out + [EOS]) for src, out in zip(sources, outputs)]``.
    """
    batch_size = _positive_int(batch_size, "batch_size")
    pad = getattr(teacher, "pad_id", 0) if pad_id is None else pad_id
    eos = getattr(teacher, "eos_id", None)
    if isinstance(sources, Tensor):
        if sources.dim() != 2:
            raise ValueError(f"Expected sources as [N, S] ids or a list of id lists, got {list(sources.shape)}")
        rows = [[int(v) for v in row if v != pad] for row in sources.tolist()]
    else:
        rows = [list(map(int, row)) for row in sources]
    if any(not row for row in rows):
        raise ValueError("Expected every source to have at least one token, got an empty one")
    if not rows:
        return []
    longest = max(len(row) for row in rows)
    max_new_tokens = 2 * longest + 10 if max_new_tokens is None else _positive_int(max_new_tokens, "max_new_tokens")
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    device = next(iter(teacher.parameters())).device if hasattr(teacher, "parameters") else None
    outputs: list[list[int]] = [[] for _ in rows]
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="distill", disable=not progress):
        chunk = order[start:start + batch_size]
        width = max(len(rows[i]) for i in chunk)
        src = torch.full((len(chunk), width), pad, dtype=torch.long, device=device)
        for r, i in enumerate(chunk):
            src[r, : len(rows[i])] = torch.tensor(rows[i], dtype=torch.long)
        result = generate(teacher, src, max_new_tokens=max_new_tokens, num_beams=num_beams)
        for r, (row, length) in enumerate(zip(result.sequences.tolist(), result.lengths.tolist())):
            tokens = row[:length]
            outputs[chunk[r]] = tokens[:-1] if tokens and eos is not None and tokens[-1] == eos else tokens
    return outputs


@torch.no_grad()
def levenshtein_decode(
    model: Any, src: Any, *, max_iterations: int = 10, max_length: int | None = None
) -> NonAutoregressiveOutput:
    """Iterative refinement with a :class:`~graphattn.models.LevenshteinTransformer`: from the
    empty canvas ``[BOS, EOS]``, every iteration (1) deletes the tokens the deletion head marks,
    (2) inserts as many ``[MASK]`` placeholders into every gap as the placeholder head predicts
    (arg-max; the canvas capped at ``max_length`` tokens), (3) fills every placeholder with the
    token head's arg-max. A row stops when an iteration leaves its output unchanged, or after
    ``max_iterations``. Rows are decoded independently of the batch.

    Args:
        model: a :class:`~graphattn.models.LevenshteinTransformer` (eval mode).
        src: ``[B, S]`` source ids (or Vectors).
        max_iterations: ``>= 1``.
        max_length: the longest output (default ``2 * S_b + 10`` for a source of ``S_b`` tokens).

    Returns:
        :class:`NonAutoregressiveOutput` (``scores``: mean log-probability of every output token
        when it was written; ``iterations``: iterations run).
    """
    for name in ("encode", "states", "deletion_logits", "insertion_logits", "token_logits", "canvas"):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"levenshtein_decode needs a graphattn.models.LevenshteinTransformer, got {type(model).__name__}")
    max_iterations = _positive_int(max_iterations, "max_iterations")
    encoding = model.encode(src)
    batch = encoding.lengths.numel()
    device = encoding.lengths.device
    caps = [2 * s + 10 for s in encoding.lengths.tolist()] if max_length is None else [_positive_int(max_length, "max_length")] * batch
    mask_id = model.config.mask_id
    banned = model.banned_ids()
    outputs: list[list[int]] = [[] for _ in range(batch)]
    confidence: list[list[float]] = [[] for _ in range(batch)]
    iterations = [0] * batch
    active = list(range(batch))
    for _ in range(max_iterations):
        rows = torch.tensor(active, dtype=torch.long, device=device)
        sub = encoding.select(rows)
        before = [list(outputs[b]) for b in active]
        # 1. deletion
        canvas, lengths = model.canvas([outputs[b] for b in active], device)
        delete = model.deletion_logits(model.states(sub, canvas, lengths)).argmax(-1).tolist()
        for r, b in enumerate(active):
            keep = [i for i in range(len(outputs[b])) if not delete[r][i + 1]]
            outputs[b] = [outputs[b][i] for i in keep]
            confidence[b] = [confidence[b][i] for i in keep]
        # 2. placeholders
        canvas, lengths = model.canvas([outputs[b] for b in active], device)
        counts = model.insertion_logits(model.states(sub, canvas, lengths)).argmax(-1).tolist()
        placed: list[list[int]] = []
        for r, b in enumerate(active):
            room = caps[b] - len(outputs[b])
            row, scores = [], []
            for k in range(len(outputs[b]) + 1):
                add = min(counts[r][k], max(room, 0))
                room -= add
                row += [mask_id] * add
                scores += [math.nan] * add
                if k < len(outputs[b]):
                    row.append(outputs[b][k])
                    scores.append(confidence[b][k])
            placed.append(row)
            outputs[b], confidence[b] = row, scores
        # 3. tokens
        if any(mask_id in row for row in placed):
            canvas, lengths = model.canvas(placed, device)
            log_probs = _ban_ids(model.token_logits(model.states(sub, canvas, lengths)), banned)
            best, chosen = log_probs.max(-1)
            best, chosen = best.tolist(), chosen.tolist()
            for r, b in enumerate(active):
                for i, token in enumerate(outputs[b]):
                    if token == mask_id:
                        outputs[b][i] = chosen[r][i + 1]
                        confidence[b][i] = best[r][i + 1]
        still = []
        for r, b in enumerate(active):
            iterations[b] += 1
            if outputs[b] != before[r]:
                still.append(b)
        active = still
        if not active:
            break
    lengths = torch.tensor([len(o) for o in outputs], dtype=torch.long, device=device)
    sequences = torch.full((batch, max(int(lengths.max()), 1)), model.config.pad_id, dtype=torch.long, device=device)
    for b, row in enumerate(outputs):
        if row:
            sequences[b, : len(row)] = torch.tensor(row, dtype=torch.long, device=device)
    scores = torch.tensor([sum(c) / len(c) if c else 0.0 for c in confidence], device=device)
    return NonAutoregressiveOutput(sequences, lengths, scores, torch.tensor(iterations, dtype=torch.long, device=device))


def insertion_decode(model: Any, src: Any, *, max_steps: int | None = None, max_length: int | None = None
                     ) -> NonAutoregressiveOutput:
    """Parallel decoding of an :class:`~graphattn.models.InsertionTransformer`: from the empty
    canvas, every step scores every slot and inserts, all at once, the arg-max token of each slot
    whose arg-max is not EOS (EOS = insert nothing); a row stops when no slot inserts anything,
    when its output reaches ``max_length`` tokens (the first slots' insertions are kept), or
    after ``max_steps`` steps. PAD, BOS and MASK are never inserted. Rows are decoded
    independently of the batch.

    Args:
        model: an :class:`~graphattn.models.InsertionTransformer` (eval mode).
        src: ``[B, S]`` source ids (or Vectors).
        max_steps: the most insertion steps (default: ``max_length``).
        max_length: the longest output (default ``2 * S_b + 10`` for a source of ``S_b`` tokens).

    Returns:
        :class:`NonAutoregressiveOutput` (``scores``: mean log-probability of the output tokens
        when they were inserted; ``iterations``: decoder passes run, the final pass that inserts
        nothing included).
    """
    for name in ("encode", "slot_logits", "canvas", "banned_ids"):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"insertion_decode needs a graphattn.models.InsertionTransformer, got {type(model).__name__}")
    encoding = model.encode(src)
    batch = encoding.lengths.numel()
    device = encoding.lengths.device
    caps = ([2 * s + 10 for s in encoding.lengths.tolist()] if max_length is None
            else [_positive_int(max_length, "max_length")] * batch)
    steps_cap = max(caps) if max_steps is None else _positive_int(max_steps, "max_steps")
    banned, eos = model.banned_ids(), model.config.eos_id
    outputs: list[list[int]] = [[] for _ in range(batch)]
    confidence: list[list[float]] = [[] for _ in range(batch)]
    steps = [0] * batch
    active = list(range(batch))
    for _ in range(steps_cap):
        if not active:
            break
        rows = torch.tensor(active, dtype=torch.long, device=device)
        canvas, lengths = model.canvas([outputs[b] for b in active], device)
        log_probs = _ban_ids(model.slot_logits(encoding.select(rows), canvas, lengths), banned)
        best, chosen = log_probs.max(-1)
        best, chosen = best.tolist(), chosen.tolist()
        still = []
        for r, b in enumerate(active):
            steps[b] += 1
            room = caps[b] - len(outputs[b])
            row, scores, inserted = [], [], 0
            for slot in range(len(outputs[b]) + 1):
                token = chosen[r][slot]
                if token != eos and inserted < room:
                    row.append(token)
                    scores.append(best[r][slot])
                    inserted += 1
                if slot < len(outputs[b]):
                    row.append(outputs[b][slot])
                    scores.append(confidence[b][slot])
            outputs[b], confidence[b] = row, scores
            if inserted and len(row) < caps[b]:
                still.append(b)
        active = still
    lengths = torch.tensor([len(o) for o in outputs], dtype=torch.long, device=device)
    sequences = torch.full((batch, max(int(lengths.max()), 1)), model.config.pad_id, dtype=torch.long, device=device)
    for b, row in enumerate(outputs):
        if row:
            sequences[b, : len(row)] = torch.tensor(row, dtype=torch.long, device=device)
    scores = torch.tensor([sum(c) / len(c) if c else 0.0 for c in confidence], device=device)
    return NonAutoregressiveOutput(sequences, lengths, scores, torch.tensor(steps, dtype=torch.long, device=device))
