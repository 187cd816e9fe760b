"""argparse ``type=`` converters shared by the ``graphattn`` subcommands (no graphattn imports, so
every command module may use them)."""
from __future__ import annotations

import argparse
import math

__all__ = ["positive_int", "non_negative_int", "positive_float", "non_negative_float"]


def _integer(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """``"3"`` -> 3; zero, negatives and non-integers are argparse errors."""
    value = _integer(text, "positive")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """``"0"`` -> 0; negatives and non-integers are argparse errors."""
    value = _integer(text, "non-negative")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _finite(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {what} number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a {what} number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """``"0.5"`` -> 0.5; zero, negatives, inf / nan and non-numbers are argparse errors."""
    value = _finite(text, "positive")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """``"0"`` -> 0.0; negatives, inf / nan and non-numbers are argparse errors."""
    value = _finite(text, "non-negative")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value
