"""The pattern library: pure functions that return an :class:`~graphattn.graph.AttentionGraph`.

Sequences (:mod:`~graphattn.patterns.sequence`): :func:`full`, :func:`causal`, :func:`local`,
:func:`strided`, :func:`block`, :func:`global_tokens`, :func:`add_global_tokens`,
:func:`random`, :func:`bigbird`, :func:`longformer`.

Images (:mod:`~graphattn.patterns.image`, row-major pixels ``r * width + c``): :func:`grid2d`,
:func:`dilated2d`, :func:`axial`.

Graphs (:mod:`~graphattn.patterns.graph`, PyG edge direction): :func:`adjacency`,
:func:`k_hop`, :func:`full_per_graph`.

Combinators (:mod:`~graphattn.patterns.combine`): :func:`union`, :func:`intersect`,
:func:`difference`, :func:`per_head`, :func:`batch`.

Specs (:mod:`~graphattn.patterns.spec`, what model configs store): :class:`PatternSpec` (a
pattern by name, built for any length), :func:`sequence_batch` (one pattern per padded
sequence), :func:`gather_rows` (rows of a pattern, for key/value-cache decoding).

Pictures (:mod:`~graphattn.patterns.plot`, matplotlib imported lazily): :func:`plot`,
:func:`plot_patterns`, :func:`pattern_image`.

Example:
    >>> from graphattn import patterns
    >>> g = patterns.union(patterns.local(8, 1), patterns.global_tokens(8, [0]))
    >>> g
    AttentionGraph(num_queries=8, num_keys=8, num_edges=34, density=0.531)
"""
from graphattn.patterns.combine import batch, difference, intersect, per_head, union
from graphattn.patterns.graph import adjacency, full_per_graph, k_hop
from graphattn.patterns.image import axial, dilated2d, grid2d
from graphattn.patterns.plot import pattern_image, plot, plot_patterns
from graphattn.patterns.sequence import (
    add_global_tokens,
    bigbird,
    block,
    causal,
    full,
    global_tokens,
    local,
    longformer,
    random,
    strided,
)
from graphattn.patterns.spec import PATTERN_NAMES, PatternSpec, as_pattern_spec, embed, gather_rows, sequence_batch
from graphattn.patterns.clustered import kmeans_routing_graph, lsh_buckets, lsh_graph

__all__ = [
    # sequences
    "full",
    "causal",
    "local",
    "strided",
    "block",
    "global_tokens",
    "add_global_tokens",
    "random",
    "bigbird",
    "longformer",
    # images
    "grid2d",
    "dilated2d",
    "axial",
    # graphs
    "adjacency",
    "k_hop",
    "full_per_graph",
    # combinators
    "union",
    "intersect",
    "difference",
    "per_head",
    "batch",
    # data dependent (clustered attention)
    "lsh_buckets",
    "lsh_graph",
    "kmeans_routing_graph",
    # specs
    "PatternSpec",
    "PATTERN_NAMES",
    "as_pattern_spec",
    "sequence_batch",
    "gather_rows",
    "embed",
    # pictures
    "plot",
    "plot_patterns",
    "pattern_image",
]
