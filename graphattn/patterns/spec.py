"""Patterns described by name, built for any length: what model configs store.

A model does not know its sequence lengths in advance, so its config cannot hold an
:class:`~graphattn.graph.AttentionGraph`. It holds a :class:`PatternSpec` -- a pattern
builder's name and keyword arguments, or a combinator over other specs -- and builds the graph
for each length it meets (cached). A spec prints as, and parses from, a Python-call string, so it
fits in a JSON config or on a command line::

    local(window=8, causal=True)
    union(local(window=4), global_tokens(positions=(0,)))
    per_head(local(window=2), strided(stride=4), full(), full())

Every sequence builder accepts ``causal=True``; builders without a causal form of their own are
intersected with :func:`~graphattn.patterns.causal`. Causal random keys (``random``, ``bigbird``)
are drawn per row among earlier positions, so every causal spec is *prefix-stable*: the pattern
of a prefix is the prefix of the pattern, as incremental decoding needs.

For batches of sequences, :func:`sequence_batch` places one pattern per sequence (built for that
sequence's own length) into padded slots, and :func:`gather_rows` picks single rows of a pattern
for incremental decoding with a key/value cache.

Example:
    >>> from graphattn.patterns import PatternSpec
    >>> spec = PatternSpec.parse("local(window=1, causal=True)")
    >>> spec
    PatternSpec('local(causal=True, window=1)')
    >>> spec.build(4).to_dense().int()
    tensor([[1, 0, 0, 0],
            [1, 1, 0, 0],
            [0, 1, 1, 0],
            [0, 0, 1, 1]], dtype=torch.int32)
"""
from __future__ import annotations

import collections
import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from graphattn._callspec import Call, format_call, parse_call
from graphattn.graph import AttentionGraph
from graphattn.patterns import combine, image, sequence

__all__ = ["PatternSpec", "as_pattern_spec", "embed", "sequence_batch", "gather_rows", "PATTERN_NAMES"]


def _square(name: str, nq: int, nk: int) -> int:
    if nq != nk:
        raise ValueError(
            f"Pattern '{name}' is defined over one sequence (num_queries == num_keys), got "
            f"{nq} queries and {nk} keys; use 'full' or 'random' for cross attention"
        )
    return nq


def _image_height(name: str, nq: int, nk: int, width: int) -> int:
    """Rows of an image of ``nq`` pixels laid out row-major in ``width`` columns."""
    n = _square(name, nq, nk)
    if isinstance(width, bool) or not isinstance(width, int) or width <= 0 or n % width:
        raise ValueError(
            f"Pattern '{name}' needs the image width: {n} pixels are not a whole number of rows of width={width!r}; "
            f"give width= such that height * width = {n}"
        )
    return n // width


def _causal_or_intersect(graph: AttentionGraph, causal: bool) -> AttentionGraph:
    if not causal:
        return graph
    return combine.intersect(graph, sequence.causal(graph.num_queries, graph.num_keys, device=graph.device))


# name -> builder(num_queries, num_keys, device, **kwargs); each takes causal=False.
_BUILDERS: dict[str, Callable[..., AttentionGraph]] = {
    "full": lambda nq, nk, device, causal=False: (
        sequence.causal(nq, nk, device=device) if causal else sequence.full(nq, nk, device=device)
    ),
    "causal": lambda nq, nk, device, causal=True: sequence.causal(nq, nk, device=device),
    "local": lambda nq, nk, device, window, causal=False: sequence.local(
        _square("local", nq, nk), window, causal, device=device
    ),
    "strided": lambda nq, nk, device, stride, causal=False, window=None: sequence.strided(
        _square("strided", nq, nk), stride, causal, window=window, device=device
    ),
    "block": lambda nq, nk, device, size, causal=False: sequence.block(
        _square("block", nq, nk), size, causal, device=device
    ),
    "bigbird": lambda nq, nk, device, window, num_global, num_random, seed=0, causal=False: sequence.bigbird(
        _square("bigbird", nq, nk), window, min(num_global, nq), num_random if causal else min(num_random, nq), seed,
        causal=causal, device=device,
    ),
    "longformer": lambda nq, nk, device, window, positions=(), causal=False: _causal_or_intersect(
        sequence.longformer(
            _square("longformer", nq, nk), window, [p for p in positions if p < nq], device=device
        ),
        causal,
    ),
    "random": lambda nq, nk, device, k, seed=0, causal=False: sequence.random(
        nq, k if causal else min(k, nk), seed, num_keys=nk, causal=causal, device=device
    ),
    # images: nodes are the pixels row-major; the spec gives the width, the height follows from n
    "grid2d": lambda nq, nk, device, width, radius=1, metric="chebyshev", causal=False: image.grid2d(
        _image_height("grid2d", nq, nk, width), width, radius, metric, causal=causal, device=device
    ),
    "dilated2d": lambda nq, nk, device, width, radius=1, dilation=2, metric="chebyshev", causal=False: image.dilated2d(
        _image_height("dilated2d", nq, nk, width), width, radius, dilation, metric, causal=causal, device=device
    ),
    "axial": lambda nq, nk, device, width, axis="both", causal=False: _causal_or_intersect(
        image.axial(_image_height("axial", nq, nk, width), width, axis, device=device), causal
    ),
    "global_tokens": lambda nq, nk, device, positions, causal=False: _causal_or_intersect(
        sequence.global_tokens(_square("global_tokens", nq, nk), [p for p in positions if p < nq], device=device),
        causal,
    ),
}
_COMBINATORS: dict[str, Callable[..., AttentionGraph]] = {
    "union": combine.union,
    "intersect": combine.intersect,
    "difference": combine.difference,
    "per_head": combine.per_head,
}
PATTERN_NAMES = tuple(_BUILDERS) + tuple(_COMBINATORS)
"""Every name a :class:`PatternSpec` may use."""


def _freeze(value: Any) -> Any:
    """Lists -> tuples (recursively), so a spec is hashable; other values unchanged."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Tensor):
        return tuple(value.tolist()) if value.dim() else value.item()
    return value


@dataclass(frozen=True)
class PatternSpec:
    """A pattern by name: a builder of :mod:`graphattn.patterns` and its keyword arguments, or
    a combinator (``union``, ``intersect``, ``difference``, ``per_head``) over other specs.

    Build one with :meth:`of` or :meth:`parse`; :meth:`build` returns the
    :class:`~graphattn.graph.AttentionGraph` for given sizes (cached per spec, size and device, so
    reuse is free). Builders take the sequence length from :meth:`build`, not from the spec:
    ``local(window=8)`` is ``patterns.local(n, window=8)`` for every ``n``. Positions that fall
    outside a short sequence (global positions, more random keys than keys) are clipped to it.

    Attributes:
        name: one of :data:`PATTERN_NAMES`.
        kwargs: the builder's keyword arguments as sorted ``(name, value)`` pairs.
        parts: the specs a combinator combines (empty for builders).
    """

    name: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    parts: tuple["PatternSpec", ...] = ()

    def __post_init__(self) -> None:
        if self.name in _COMBINATORS:
            if not self.parts:
                raise ValueError(f"Pattern combinator '{self.name}' needs at least one part, e.g. {self.name}(local(window=2), full())")
            if self.kwargs:
                raise ValueError(f"Pattern combinator '{self.name}' takes parts, not keyword arguments (got {dict(self.kwargs)})")
            for part in self.parts:
                if not isinstance(part, PatternSpec):
                    raise TypeError(f"Expected the parts of '{self.name}' to be PatternSpecs, got {type(part).__name__}")
        elif self.name in _BUILDERS:
            if self.parts:
                raise ValueError(f"Pattern '{self.name}' takes keyword arguments, not parts")
        else:
            raise ValueError(f"Unknown pattern {self.name!r}; expected one of {', '.join(PATTERN_NAMES)}")
        object.__setattr__(self, "kwargs", tuple(sorted((str(k), _freeze(v)) for k, v in self.kwargs)))
        object.__setattr__(self, "parts", tuple(self.parts))

    # ------------------------------------------------------------------ construction
    @classmethod
    def of(cls, name: str, *parts: "PatternSpec | str", **kwargs: Any) -> "PatternSpec":
        """``PatternSpec.of("local", window=8)``; combinators take parts:
        ``PatternSpec.of("union", "local(window=2)", PatternSpec.of("full"))``."""
        return cls(name, tuple(kwargs.items()), tuple(as_pattern_spec(p) for p in parts))

    @classmethod
    def parse(cls, text: str) -> "PatternSpec":
        """Parse ``"name(key=value, ...)"``, a bare ``"name"``, or a combinator over such calls.

        Values are Python literals (numbers, booleans, None, tuples/lists of them).
        """
        examples = "'causal', 'local(window=8, causal=True)' or 'union(local(window=2), global_tokens(positions=(0,)))'"
        return cls._from_call(parse_call(text, "pattern", examples))

    @classmethod
    def _from_call(cls, call: Call) -> "PatternSpec":
        name, kwargs, parts = call
        return cls(name, kwargs, tuple(cls._from_call(part) for part in parts))

    # ------------------------------------------------------------------ use
    def build(
        self, num_queries: int, num_keys: int | None = None, *, device: torch.device | str | None = None
    ) -> AttentionGraph:
        """The graph for ``num_queries`` queries and ``num_keys`` (default ``num_queries``) keys.

        Cached: the same spec, sizes and device return the same graph object, so structures
        cached on the graph (transposes, tile plans, dense layouts) are reused across steps.
        """
        num_keys = num_queries if num_keys is None else num_keys
        device = torch.device("cpu") if device is None else torch.device(device)
        return _build_cached(self, int(num_queries), int(num_keys), device)

    @property
    def is_causal(self) -> bool:
        """Whether every graph this spec builds lets query ``i`` attend only keys ``j <= i``
        (checked on a small example and a longer one; image patterns on 1 and 3 rows)."""
        return _spec_is_causal(self)

    def __str__(self) -> str:
        return format_call(self.name, self.kwargs, tuple(str(part) for part in self.parts))

    def __repr__(self) -> str:
        return f"PatternSpec({str(self)!r})"


def as_pattern_spec(value: "PatternSpec | str") -> PatternSpec:
    """A :class:`PatternSpec` from a spec or its string form."""
    if isinstance(value, PatternSpec):
        return value
    if isinstance(value, str):
        return PatternSpec.parse(value)
    raise TypeError(
        f"Expected a PatternSpec or a pattern string like 'local(window=8)', got {type(value).__name__}"
    )


class GraphCache:
    """A least-recently-used cache of built graphs, bounded by entries **and by edges**.

    Counting entries alone is not enough: a full pattern over 2,000 tokens has 4M edges (tens of
    MB with its row index and the structures cached on it), so 256 of them -- one per sequence
    length a long-document data set meets -- would pin tens of GB. A graph larger than
    ``max_edges`` is built but not kept.
    """

    def __init__(self, max_entries: int, max_edges: int) -> None:
        self.max_entries, self.max_edges = max_entries, max_edges
        self._graphs: collections.OrderedDict[Any, AttentionGraph] = collections.OrderedDict()
        self._edges = 0

    def get(self, key: Any, build: Callable[[], AttentionGraph]) -> AttentionGraph:
        graph = self._graphs.get(key)
        if graph is not None:
            self._graphs.move_to_end(key)
            return graph
        graph = build()
        if graph.num_edges <= self.max_edges:
            self._graphs[key] = graph
            self._edges += graph.num_edges
            while len(self._graphs) > self.max_entries or self._edges > self.max_edges:
                _, dropped = self._graphs.popitem(last=False)
                self._edges -= dropped.num_edges
        return graph

    def clear(self) -> None:
        self._graphs.clear()
        self._edges = 0

    def __len__(self) -> int:
        return len(self._graphs)

    @property
    def edges(self) -> int:
        """Edges of the graphs kept."""
        return self._edges


# built patterns, and batches of sequences of mixed lengths (each at most ~2**24 edges kept in all)
_PATTERNS = GraphCache(max_entries=256, max_edges=1 << 24)
_MIXED_BATCHES = GraphCache(max_entries=64, max_edges=1 << 24)


def _build_cached(spec: PatternSpec, num_queries: int, num_keys: int, device: torch.device) -> AttentionGraph:
    return _PATTERNS.get((spec, num_queries, num_keys, device), lambda: _build(spec, num_queries, num_keys, device))


def _build(spec: PatternSpec, num_queries: int, num_keys: int, device: torch.device) -> AttentionGraph:
    if spec.name in _COMBINATORS:
        graphs = [part.build(num_queries, num_keys, device=device) for part in spec.parts]
        if spec.name == "difference":
            return combine.difference(graphs[0], *graphs[1:])
        return _COMBINATORS[spec.name](graphs)
    try:
        return _BUILDERS[spec.name](num_queries, num_keys, device, **dict(spec.kwargs))
    except TypeError as error:
        raise TypeError(f"Could not build pattern {str(spec)!r} for {num_queries}x{num_keys}: {error}") from None


def _widths(spec: PatternSpec) -> set[int]:
    found = {value for key, value in spec.kwargs if key == "width" and isinstance(value, int) and value > 0}
    for part in spec.parts:
        found |= _widths(part)
    return found


@functools.lru_cache(maxsize=256)
def _spec_is_causal(spec: PatternSpec) -> bool:
    sizes = [7, 64] + [w * rows for w in sorted(_widths(spec)) for rows in (1, 3)]
    checked = False
    for n in sizes:
        try:
            graph = spec.build(n)
        except ValueError:  # e.g. an image pattern on a size that is not whole rows
            continue
        checked = True
        if not _is_lower_triangular(graph):
            return False
    if not checked:
        raise ValueError(f"Could not build pattern {spec} on any of the sizes {sizes} to check whether it is causal")
    return True


def _is_lower_triangular(graph: AttentionGraph) -> bool:
    return graph.num_edges == 0 or bool((graph.col <= graph.row).all())


# ---------------------------------------------------------------------- batches of sequences
def embed(graph: AttentionGraph, num_queries: int, num_keys: int) -> AttentionGraph:
    """``graph`` inside larger slots: queries ``>= graph.num_queries`` get no edges and keys
    ``>= graph.num_keys`` are never attended (padding). Cached on ``graph``."""
    if num_queries < graph.num_queries or num_keys < graph.num_keys:
        raise ValueError(
            f"Cannot embed a {graph.num_queries}x{graph.num_keys} graph in {num_queries}x{num_keys} slots"
        )
    if (num_queries, num_keys) == (graph.num_queries, graph.num_keys):
        return graph

    def build() -> AttentionGraph:
        crow = torch.cat([graph.crow, graph.crow[-1:].expand(num_queries - graph.num_queries)])
        out = AttentionGraph(crow, graph.col, num_queries, num_keys, head_mask=graph.head_mask, validate=False)
        if "row" in graph._cache:
            out.cached("row", lambda: graph.row)
        return out

    return graph.cached(("graphattn.embed", num_queries, num_keys), build)


def sequence_batch(
    spec: PatternSpec,
    query_lengths: Sequence[int] | Tensor,
    key_lengths: Sequence[int] | Tensor | None = None,
    *,
    query_slots: int,
    key_slots: int | None = None,
    device: torch.device | str | None = None,
) -> AttentionGraph:
    """Block-diagonal graph over ``B`` right-padded sequences: sequence ``b``'s queries occupy
    nodes ``b * query_slots + [0, Lq_b)`` and its keys ``b * key_slots + [0, Lk_b)``, with the
    pattern built for **its own** lengths ``(Lq_b, Lk_b)``; padded slots have no edges.

    Building each sequence's pattern for its own length (rather than cutting the pattern of the
    padded length) keeps every sequence's result independent of what it is batched with, also
    for length-dependent patterns (random keys, global positions). When every length equals the
    slot size the result replicates one graph (``replicated_from``), which the dense backend runs
    as plain ``[B, L]`` attention.

    Args:
        spec: the pattern.
        query_lengths: ``[B]`` real query count per sequence.
        key_lengths: ``[B]`` real key count (default ``query_lengths``: self attention).
        query_slots: ``Lq`` slots per sequence (``>= max(query_lengths)``).
        key_slots: ``Lk`` slots per sequence (default ``query_slots``).
        device: where the graph lives.

    Returns:
        An AttentionGraph over ``B * query_slots`` queries and ``B * key_slots`` keys.
    """
    key_slots = query_slots if key_slots is None else key_slots
    q_lengths = _lengths(query_lengths, "query_lengths")
    k_lengths = q_lengths if key_lengths is None else _lengths(key_lengths, "key_lengths")
    if len(k_lengths) != len(q_lengths):
        raise ValueError(f"Expected as many key lengths as query lengths, got {len(k_lengths)} and {len(q_lengths)}")
    if not q_lengths:
        raise ValueError("Expected at least one sequence")
    if max(q_lengths) > query_slots or max(k_lengths) > key_slots:
        raise ValueError(
            f"Sequence lengths (max {max(q_lengths)} queries, {max(k_lengths)} keys) exceed the slots "
            f"({query_slots}, {key_slots})"
        )
    pairs = list(zip(q_lengths, k_lengths))
    if all(pair == (query_slots, key_slots) for pair in pairs):
        pattern = spec.build(query_slots, key_slots, device=device)
        return pattern.cached(
            ("graphattn.replicated_batch", len(pairs)), lambda: AttentionGraph.batch([pattern] * len(pairs))
        )
    return _mixed_batch(spec, tuple(pairs), query_slots, key_slots, torch.device("cpu") if device is None else torch.device(device))


def _mixed_batch(
    spec: PatternSpec, pairs: tuple[tuple[int, int], ...], query_slots: int, key_slots: int, device: torch.device
) -> AttentionGraph:
    def build() -> AttentionGraph:
        graphs = [embed(spec.build(lq, lk, device=device), query_slots, key_slots) for lq, lk in pairs]
        return AttentionGraph.batch(graphs)

    return _MIXED_BATCHES.get((spec, pairs, query_slots, key_slots, device), build)


def _lengths(values: Sequence[int] | Tensor, name: str) -> list[int]:
    if isinstance(values, Tensor):
        values = values.tolist()
    out = [int(v) for v in values]
    if any(v < 0 for v in out):
        raise ValueError(f"Expected non-negative '{name}', got {out}")
    return out


def gather_rows(graph: AttentionGraph, rows: Tensor, key_offsets: Tensor, num_keys: int) -> AttentionGraph:
    """A graph whose query ``r`` has the edges of ``graph``'s row ``rows[r]``, with its keys
    shifted by ``key_offsets[r]``: incremental decoding with a key/value cache.

    With a pattern built for the longest sequence and a cache of ``B`` sequences laid out in
    slots of ``T`` keys each, ``gather_rows(pattern, positions, b * T, B * T)`` lets the token at
    ``positions[b]`` of sequence ``b`` attend exactly the keys its row of the pattern allows.

    Args:
        graph: the pattern (rows = positions), e.g. built by :meth:`PatternSpec.build`.
        rows: ``[R]`` int64 row of ``graph`` for every new query.
        key_offsets: ``[R]`` int64 added to the key indices of query ``r``.
        num_keys: number of keys of the result (``>= max(key_offsets + graph.num_keys)``).

    Returns:
        An AttentionGraph with ``R`` queries and ``num_keys`` keys (head mask carried over).
    """
    rows = rows.to(graph.device)
    key_offsets = key_offsets.to(graph.device)
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= graph.num_queries):
        raise ValueError(
            f"Expected rows in [0, {graph.num_queries - 1}] of the pattern, got {rows.tolist()}; "
            f"build the pattern for the longest sequence"
        )
    start, count = graph.crow[rows], graph.crow[rows + 1] - graph.crow[rows]  # [R]
    crow = torch.cat([count.new_zeros(1), count.cumsum(0)])
    num_edges = int(crow[-1])
    new_row = torch.repeat_interleave(torch.arange(rows.numel(), device=graph.device), count, output_size=num_edges)
    edge = torch.arange(num_edges, device=graph.device) - crow[:-1][new_row] + start[new_row]  # [E'] old edge ids
    col = graph.col[edge] + key_offsets[new_row]
    head_mask = None if graph.head_mask is None else graph.head_mask[edge]
    out = AttentionGraph(crow, col, rows.numel(), num_keys, head_mask=head_mask, validate=False)
    out.cached("row", lambda: new_row)
    return out
