"""Tests for graphattn.data.algorithmic: every task's targets against independent definitions."""
from __future__ import annotations

import pytest
import torch

from graphattn.data import algorithmic
from graphattn.data.algorithmic import BOS, EOS, FIRST_SYMBOL, PAD, UNK, collate, make_task, vocab_size


def symbols(tokens):
    return [t - FIRST_SYMBOL for t in tokens]


@pytest.mark.parametrize("name", ["copy", "reverse", "sort"])
def test_symbol_tasks(name: str) -> None:
    examples = make_task(name, 200, min_length=20, max_length=40, num_symbols=12, seed=3)
    lengths = set()
    for src, tgt in examples:
        assert tgt[0] == BOS and tgt[-1] == EOS
        lengths.add(len(src))
        assert all(FIRST_SYMBOL <= t < FIRST_SYMBOL + 12 for t in src)
        expected = {"copy": src, "reverse": list(reversed(src)), "sort": sorted(src)}[name]
        assert tgt[1:-1] == expected
    assert min(lengths) == 20 and max(lengths) == 40
    assert make_task(name, 5, seed=3) == make_task(name, 5, seed=3)
    assert make_task(name, 5, seed=3) != make_task(name, 5, seed=4)


def test_addition_is_integer_addition_least_significant_digit_first() -> None:
    plus = FIRST_SYMBOL + 10
    for src, tgt in make_task("addition", 300, min_length=5, max_length=30, seed=1):
        assert 5 <= len(src) <= 30 and src.count(plus) == 1
        split = src.index(plus)
        a = int("".join(str(d) for d in reversed(symbols(src[:split]))))
        b = int("".join(str(d) for d in reversed(symbols(src[split + 1:]))))
        total = int("".join(str(d) for d in reversed(symbols(tgt[1:-1]))))
        assert total == a + b
        assert symbols(tgt[1:-1])[-1] != 0 or a + b == 0  # no leading zeros in the sum
    assert vocab_size("addition") == FIRST_SYMBOL + 11


def test_copy_unknown_extended_ids() -> None:
    v = vocab_size("copy_unknown", 10)
    examples = make_task("copy_unknown", 300, num_symbols=10, unknown_rate=0.2, seed=2)
    plain = make_task("copy_unknown", 300, num_symbols=10, unknown_rate=0.2, seed=2, extended=False)
    unknown = 0
    for (src, tgt), (src_plain, tgt_plain) in zip(examples, plain):
        assert tgt[1:-1] == src
        extended = [t for t in src if t >= v]
        unknown += len(extended)
        # extended ids number the distinct unknown words of the example in order of appearance
        order = list(dict.fromkeys(extended))
        assert order == list(range(v, v + len(order)))
        assert [UNK if t >= v else t for t in src] == src_plain == tgt_plain[1:-1]
    total = sum(len(src) for src, _ in examples)
    assert 0.15 < unknown / total < 0.25


def test_collate_right_pads() -> None:
    src, tgt = collate([([5, 6, 7], [BOS, 7, EOS]), ([8], [BOS, 8, 9, EOS])])
    assert src.tolist() == [[5, 6, 7], [8, PAD, PAD]]
    assert tgt.tolist() == [[BOS, 7, EOS, PAD], [BOS, 8, 9, EOS]]
    assert src.dtype == torch.long


def test_errors() -> None:
    with pytest.raises(ValueError, match="Unknown task 'add'"):
        make_task("add", 1)
    with pytest.raises(ValueError, match="min_length <= max_length"):
        make_task("copy", 1, min_length=5, max_length=4)
    with pytest.raises(ValueError, match="at least one example"):
        collate([])
    assert algorithmic.TASKS == ("copy", "reverse", "sort", "addition", "copy_unknown")


def test_segment_positions_give_addition_digits_their_place_value() -> None:
    from graphattn.data.algorithmic import EOS, PLUS, segment_positions

    examples = [(src + [EOS], tgt) for src, tgt in make_task("addition", 50, min_length=3, max_length=12, seed=7)]
    src, _ = collate(examples)
    positions = segment_positions(src, (PLUS, EOS))
    for row, (tokens, _) in enumerate(examples):
        plus = tokens.index(PLUS)
        expected = list(range(plus + 1)) + list(range(len(tokens) - plus - 1))
        assert positions[row, :len(tokens)].tolist() == expected
        assert positions[row, len(tokens):].eq(0).all()
    with pytest.raises(ValueError, match="integer token ids"):
        segment_positions(src.float(), (PLUS,))
