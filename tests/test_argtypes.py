"""Tests for graphattn._argtypes: the argparse converters of the subcommands."""
from __future__ import annotations

import argparse

import pytest

from graphattn._argtypes import non_negative_int, positive_float, positive_int


def test_converters_accept_valid_text() -> None:
    assert positive_int("3") == 3
    assert non_negative_int("0") == 0
    assert positive_float("0.25") == 0.25


@pytest.mark.parametrize("convert, text, message", [
    (positive_int, "0", "positive integer, got 0"),
    (positive_int, "x", "positive integer, got 'x'"),
    (non_negative_int, "-1", "non-negative integer, got -1"),
    (positive_float, "inf", "positive number, got 'inf'"),
    (positive_float, "-2", "positive number, got '-2'"),
])
def test_converters_reject_bad_text(convert, text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        convert(text)
