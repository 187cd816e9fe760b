"""graphattn: attention as sparse message passing over a set of vectors.

Tokens, speech frames, pixels and atoms are nodes; which node may attend to which is an edge
set (:class:`AttentionGraph`); :func:`attention` runs softmax attention over those edges on one
sparse core with several backends.

Subpackages: :mod:`graphattn.patterns` (edge sets), :mod:`graphattn.nn` (layers, positions),
:mod:`graphattn.models` (Transformers), :mod:`graphattn.decoding` (``generate``),
:mod:`graphattn.train` (``fit``), :mod:`graphattn.data` (data sets). The last four are imported
on first use (``graphattn.models`` works after ``import graphattn``).
"""
import importlib

from graphattn.graph import AttentionGraph
from graphattn.ops import attention, explain
from graphattn import nn, patterns

__version__ = "0.1.0"

__all__ = ["AttentionGraph", "attention", "explain", "nn", "patterns", "models", "decoding", "train", "data", "__version__"]

_LAZY = ("models", "decoding", "train", "data")


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f"graphattn.{name}")
    raise AttributeError(f"module 'graphattn' has no attribute {name!r}")
