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
