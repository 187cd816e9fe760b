"""graphattn: attention as sparse message passing over a set of vectors.

Tokens, speech frames, pixels and atoms are nodes; which node may attend to which is an edge
set (:class:`AttentionGraph`); :func:`attention` runs softmax attention over those edges on one
sparse core with several backends.
"""
from graphattn.graph import AttentionGraph
from graphattn.ops import attention, explain
from graphattn import nn, patterns

__version__ = "0.1.0"

__all__ = ["AttentionGraph", "attention", "explain", "nn", "patterns", "__version__"]
