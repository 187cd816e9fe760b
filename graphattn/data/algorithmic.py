"""Algorithmic sequence-to-sequence tasks, generated on the fly: copy, reverse, sort, addition,
and copy with unknown words (for the copy mechanism).

Every task uses one token layout: ``PAD = 0``, ``BOS = 1``, ``EOS = 2``, ``UNK = 3``, then the
task's symbols from id 4. A source is a list of symbol ids; a target is
``[BOS, y1, ..., yn, EOS]``. :func:`collate` pads a list of examples into right-padded
``(src [B, S], tgt [B, T])`` tensors, the batch format of :class:`graphattn.train.Seq2SeqLoss`.

Tasks (``n`` drawn uniformly from ``[min_length, max_length]``):

* ``copy``: ``y = x`` for ``n`` random symbols.
* ``reverse``: ``y = x[::-1]``.
* ``sort``: ``y = sorted(x)`` (by symbol id).
* ``addition``: ``x`` = the digits of ``a``, ``+``, the digits of ``b``, ``y`` = the digits of
  ``a + b``; every number is written **least significant digit first** (the carry then flows
  left to right, in decoding order -- the usual formulation for sequence models), and the
  operand lengths are chosen so that the source has ``n`` tokens.
* ``copy_unknown``: like ``copy``, but each position is, with probability ``unknown_rate``, a
  word from a large pool outside the vocabulary. Unknown source words get *extended ids*
  ``V + k`` (``k``-th distinct unknown word of that example, ``V`` = vocabulary size), the
  convention of :class:`graphattn.models.EncoderDecoder` with ``copy=True``; with
  ``extended=False`` they are ``UNK`` in the source and the target, which is all a model
  without a copy mechanism can produce.

Example:
    >>> task = make_task("reverse", 2, min_length=3, max_length=3, num_symbols=5, seed=0)
    >>> [(src, tgt[1:-1] == src[::-1]) for src, tgt in task]
    [([7, 4, 6], True), ([7, 6, 7], True)]
"""
from __future__ import annotations

import random as _random
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "PAD", "BOS", "EOS", "UNK", "FIRST_SYMBOL", "PLUS", "TASKS", "TaskSpec", "make_task", "collate", "vocab_size",
    "segment_positions",
]

PAD, BOS, EOS, UNK = 0, 1, 2, 3
FIRST_SYMBOL = 4
PLUS = FIRST_SYMBOL + 10  # the addition task's '+'
TASKS = ("copy", "reverse", "sort", "addition", "copy_unknown")

Example = tuple[list[int], list[int]]


@dataclass(frozen=True)
class TaskSpec:
    """A task and its sizes (what an experiment records next to its results)."""

    name: str
    min_length: int = 20
    max_length: int = 40
    num_symbols: int = 20
    unknown_rate: float = 0.1
    unknown_pool: int = 1000


def vocab_size(name: str, num_symbols: int = 20) -> int:
    """Size of the model vocabulary of a task: the 4 specials + its symbols (addition: 10 digits
    and ``+``)."""
    if name == "addition":
        return FIRST_SYMBOL + 11
    return FIRST_SYMBOL + num_symbols


def make_task(
    name: str,
    num_examples: int,
    *,
    min_length: int = 20,
    max_length: int = 40,
    num_symbols: int = 20,
    seed: int = 0,
    unknown_rate: float = 0.1,
    unknown_pool: int = 1000,
    extended: bool = True,
) -> list[Example]:
    """``num_examples`` examples ``(source ids, target ids)`` of task ``name``.

    Args:
        name: one of :data:`TASKS`.
        num_examples: how many.
        min_length, max_length: source length range (inclusive).
        num_symbols: symbol count (ignored by ``addition``, whose symbols are 10 digits and ``+``).
        seed: everything is drawn from ``random.Random(seed)``.
        unknown_rate, unknown_pool, extended: ``copy_unknown`` only (see the module docstring).

    Returns:
        A list of ``(src, tgt)``; ``tgt`` starts with ``BOS`` and ends with ``EOS``.
    """
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; expected one of {', '.join(TASKS)}")
    if not 1 <= min_length <= max_length:
        raise ValueError(f"Expected 1 <= min_length <= max_length, got {min_length}, {max_length}")
    if name == "addition" and min_length < 3:
        raise ValueError("addition needs min_length >= 3 (a digit, '+', a digit)")
    if num_symbols < 1:
        raise ValueError(f"Expected num_symbols >= 1, got {num_symbols}")
    rng = _random.Random(seed)
    out = []
    for _ in range(num_examples):
        n = rng.randint(min_length, max_length)
        if name == "addition":
            src, tgt = _addition(rng, n)
        elif name == "copy_unknown":
            src, tgt = _copy_unknown(rng, n, num_symbols, unknown_rate, unknown_pool, extended)
        else:
            src = [FIRST_SYMBOL + rng.randrange(num_symbols) for _ in range(n)]
            tgt = {"copy": list(src), "reverse": src[::-1], "sort": sorted(src)}[name]
        out.append((src, [BOS] + tgt + [EOS]))
    return out


def _addition(rng: _random.Random, n: int) -> tuple[list[int], list[int]]:
    digits_a = rng.randint(1, n - 2)
    digits_b = n - 1 - digits_a
    a, b = (_random_number(rng, d) for d in (digits_a, digits_b))
    plus = PLUS

    def tokens(value: int) -> list[int]:
        return [FIRST_SYMBOL + int(c) for c in reversed(str(value))]

    return tokens(a) + [plus] + tokens(b), tokens(a + b)


def _random_number(rng: _random.Random, digits: int) -> int:
    if digits == 1:
        return rng.randrange(10)
    return rng.randrange(10 ** (digits - 1), 10**digits)


def _copy_unknown(
    rng: _random.Random, n: int, num_symbols: int, rate: float, pool: int, extended: bool
) -> tuple[list[int], list[int]]:
    vocab = FIRST_SYMBOL + num_symbols
    words: list[int] = []  # known symbol ids, or -1 - (index into the unknown pool)
    for _ in range(n):
        if rng.random() < rate:
            words.append(-1 - rng.randrange(pool))
        else:
            words.append(FIRST_SYMBOL + rng.randrange(num_symbols))
    slots: dict[int, int] = {}
    src = []
    for word in words:
        if word >= 0:
            src.append(word)
        elif extended:
            src.append(vocab + slots.setdefault(word, len(slots)))
        else:
            src.append(UNK)
    return src, list(src)


def collate(examples: Sequence[Example], pad: int = PAD) -> tuple[Tensor, Tensor]:
    """Right-pad examples into ``(src [B, S], tgt [B, T])`` int64 tensors."""
    if not examples:
        raise ValueError("Expected at least one example to collate")
    return _pad([src for src, _ in examples], pad), _pad([tgt for _, tgt in examples], pad)


def _pad(rows: Sequence[Sequence[int]], pad: int) -> Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def segment_positions(src: Tensor, separators: Sequence[int], pad: int = PAD) -> Tensor:
    """Position ids ``[B, S]`` that restart after every separator token: the ``i``-th token of a
    segment gets ``i`` and the separator closing it gets the segment's length (padding: 0).

    For the addition task (numbers least significant digit first) with ``separators=(PLUS,
    EOS)`` every digit's id is its place value, so the two digits to add share an id -- the
    Abacus embeddings of McLeish et al. (2024); pass them as the encoder-decoder's
    ``source_positions``.

    Example:
        >>> segment_positions(torch.tensor([[5, 6, PLUS, 7, EOS, PAD]]), (PLUS, EOS)).tolist()
        [[0, 1, 2, 0, 1, 0]]
    """
    if src.dim() != 2 or src.dtype.is_floating_point:
        raise ValueError(f"Expected src as integer token ids [B, S], got {src.dtype} {list(src.shape)}")
    is_separator = torch.zeros_like(src, dtype=torch.bool)
    for token in separators:
        is_separator |= src == token
    # segment index of every slot: separators seen strictly before it
    segment = torch.cumsum(is_separator.long(), dim=1) - is_separator.long()
    index = torch.arange(src.size(1), device=src.device).expand_as(src)
    # first slot of every (row, segment): the minimum index over the segment
    first = torch.full_like(src, src.size(1)).scatter_reduce(1, segment, index, reduce="amin")
    positions = index - first.gather(1, segment)
    return torch.where(src == pad, 0, positions)
