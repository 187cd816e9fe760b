"""Argument checks shared by the modules of :mod:`graphattn.train`."""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["check_int", "check_choice"]


def check_int(value: object, name: str, *, minimum: int) -> int:
    """``value`` if it is an int (not a bool) >= ``minimum``, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Expected '{name}' to be an int >= {minimum}, got {value!r}")
    return value


def check_choice(value: object, choices: Sequence[str], what: str) -> str:
    """``value`` if it is one of ``choices``, else a ValueError naming ``what`` and the choices."""
    if value not in choices:
        raise ValueError(f"Unknown {what} {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value
