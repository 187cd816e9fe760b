"""Call strings such as ``"local(window=8, causal=True)"`` or ``"heads(softmax, lsh(num_rounds=2))"``:
the text form of :class:`graphattn.patterns.PatternSpec` and
:class:`graphattn.nn.mechanism.MechanismSpec` (parsed with :mod:`ast`, never evaluated)."""
from __future__ import annotations

import ast
from typing import Any

__all__ = ["Call", "parse_call", "format_call"]

Call = tuple[str, tuple[tuple[str, Any], ...], tuple["Call", ...]]
"""``(name, keyword arguments, positional parts)``; parts are calls themselves."""


def parse_call(text: str, what: str, examples: str) -> Call:
    """Parse ``"name"``, ``"name(key=literal, ...)"`` or ``"name(part, part, ..., key=literal)"``.

    Args:
        text: the string.
        what: what it describes, for errors (``"pattern"``).
        examples: valid examples, for errors.

    Raises:
        TypeError: ``text`` is not a string.
        ValueError: a syntax error, something other than name(...) calls, ``**`` arguments, or
            a keyword value that is not a Python literal.

    Example:
        >>> parse_call("union(local(window=2), full)", "pattern", "'full'")
        ('union', (), (('local', (('window', 2),), ()), ('full', (), ())))
    """
    if not isinstance(text, str):
        raise TypeError(f"Expected a {what} string like {examples}, got {type(text).__name__}")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as error:
        raise ValueError(f"Could not parse {what} {text!r} ({error.msg}); expected e.g. {examples}") from None
    return _from_ast(tree, text, what)


def _from_ast(node: ast.AST, text: str, what: str) -> Call:
    if isinstance(node, ast.Name):
        return node.id, (), ()
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise ValueError(f"Could not parse {what} {text!r}: expected name(...) calls, found {ast.unparse(node)!r}")
    kwargs = []
    for keyword in node.keywords:
        if keyword.arg is None:
            raise ValueError(f"Could not parse {what} {text!r}: '**' arguments are not allowed")
        try:
            kwargs.append((keyword.arg, ast.literal_eval(keyword.value)))
        except ValueError:
            raise ValueError(
                f"Could not parse {what} {text!r}: the value of '{keyword.arg}' must be a literal "
                f"(number, string, bool, None, tuple), got {ast.unparse(keyword.value)!r}"
            ) from None
    return node.func.id, tuple(kwargs), tuple(_from_ast(arg, text, what) for arg in node.args)


def format_call(name: str, kwargs: tuple[tuple[str, Any], ...], parts: tuple[str, ...], *, bare: bool = False) -> str:
    """``name(part, ..., key=repr(value), ...)``; just ``name`` without arguments when ``bare``."""
    inner = list(parts) + [f"{k}={v!r}" for k, v in kwargs]
    return name if bare and not inner else f"{name}({', '.join(inner)})"
