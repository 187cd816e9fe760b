"""Tests for graphattn.patterns.spec: parsing and printing specs, building them against the
pattern functions, causal forms, prefix stability, batches of padded sequences, row gathering."""
from __future__ import annotations

import pytest
import torch

from graphattn import AttentionGraph, patterns
from graphattn.patterns import PatternSpec, as_pattern_spec, gather_rows, sequence_batch


@pytest.mark.parametrize(
    "text, build",
    [
        ("full", lambda n: patterns.full(n)),
        ("causal", lambda n: patterns.causal(n)),
        ("local(window=2)", lambda n: patterns.local(n, 2)),
        ("local(window=2, causal=True)", lambda n: patterns.local(n, 2, causal=True)),
        ("strided(stride=3, window=6)", lambda n: patterns.strided(n, 3, window=6)),
        ("block(size=4, causal=True)", lambda n: patterns.block(n, 4, causal=True)),
        ("bigbird(window=1, num_global=2, num_random=3, seed=5)", lambda n: patterns.bigbird(n, 1, min(2, n), min(3, n), 5)),
        ("longformer(window=2, positions=(0, 5))", lambda n: patterns.longformer(n, 2, [p for p in (0, 5) if p < n])),
        ("random(k=3, seed=2)", lambda n: patterns.random(n, min(3, n), 2)),
        ("global_tokens(positions=[1])", lambda n: patterns.global_tokens(n, [1] if n > 1 else [])),
        (
            "union(local(window=1), global_tokens(positions=(0,)))",
            lambda n: patterns.union(patterns.local(n, 1), patterns.global_tokens(n, [0])),
        ),
        (
            "per_head(local(window=1), full, causal, strided(stride=2))",
            lambda n: patterns.per_head(patterns.local(n, 1), patterns.full(n), patterns.causal(n), patterns.strided(n, 2)),
        ),
        (
            "difference(full, local(window=1))",
            lambda n: patterns.difference(patterns.full(n), patterns.local(n, 1)),
        ),
    ],
)
def test_spec_builds_the_named_pattern(text, build) -> None:
    spec = PatternSpec.parse(text)
    assert PatternSpec.parse(str(spec)) == spec  # printing round-trips
    assert hash(spec) == hash(PatternSpec.parse(str(spec)))
    for n in (1, 9, 16):  # positions / counts beyond a short sequence are clipped to it
        assert spec.build(n).equals(build(n)), (text, n)
    assert spec.build(9) is spec.build(9)  # cached


def test_causal_option_everywhere_is_lower_triangular() -> None:
    for text in [
        "full(causal=True)", "local(window=3, causal=True)", "strided(stride=2, causal=True)",
        "block(size=3, causal=True)", "bigbird(window=1, num_global=1, num_random=2, causal=True)",
        "longformer(window=1, positions=(0, 4), causal=True)", "random(k=2, causal=True)",
        "global_tokens(positions=(2,), causal=True)",
    ]:
        spec = PatternSpec.parse(text)
        assert spec.is_causal, text
        graph = spec.build(12)
        assert bool((graph.col <= graph.row).all())
        # causal forms of the non-random builders are the builder intersected with causal
        if "random" not in text and "bigbird" not in text:
            plain = PatternSpec.parse(text.replace(", causal=True", "").replace("causal=True", "")).build(12)
            assert graph.equals(patterns.intersect(plain, patterns.causal(12)))
    assert not PatternSpec.parse("local(window=1)").is_causal


@pytest.mark.parametrize(
    "text", ["random(k=3, seed=4, causal=True)", "bigbird(window=1, num_global=1, num_random=3, seed=2, causal=True)"]
)
def test_causal_random_patterns_are_prefix_stable(text) -> None:
    spec = PatternSpec.parse(text)
    long = spec.build(40).to_dense()
    for n in (1, 5, 17, 39):
        assert torch.equal(spec.build(n).to_dense(), long[:n, :n])


def test_causal_random_draws_distinct_uniform_earlier_keys() -> None:
    graph = patterns.random(400, 3, seed=9, causal=True)
    counts = graph.degrees
    assert counts.tolist()[:4] == [1, 2, 3, 3] and bool((counts[2:] == 3).all())
    assert bool((graph.col <= graph.row).all())
    # uniform over the earlier positions: row i's keys average about i / 2
    mean_fraction = (graph.col.double() / graph.row.clamp(min=1).double())[graph.row > 50].mean()
    assert abs(float(mean_fraction) - 0.5) < 0.03
    assert not graph.equals(patterns.random(400, 3, seed=10, causal=True))


def test_parse_errors() -> None:
    with pytest.raises(ValueError, match="Unknown pattern 'lokal'"):
        PatternSpec.parse("lokal(window=2)")
    with pytest.raises(ValueError, match="Could not parse pattern"):
        PatternSpec.parse("local(window=")
    with pytest.raises(ValueError, match="must be a literal"):
        PatternSpec.parse("local(window=n)")
    with pytest.raises(ValueError, match="needs at least one part"):
        PatternSpec.parse("union()")
    with pytest.raises(TypeError, match="Could not build pattern 'local\\(\\)'"):
        PatternSpec.parse("local").build(5)
    with pytest.raises(ValueError, match="one sequence"):
        PatternSpec.parse("local(window=1)").build(3, 4)
    with pytest.raises(TypeError, match="pattern string"):
        as_pattern_spec(3)


def test_spec_of_matches_parse() -> None:
    assert PatternSpec.of("local", window=2, causal=True) == PatternSpec.parse("local(causal=True, window=2)")
    assert PatternSpec.of("union", "causal", PatternSpec.of("full")) == PatternSpec.parse("union(causal, full)")


def test_cross_attention_specs() -> None:
    assert PatternSpec.parse("full").build(3, 5).equals(patterns.full(3, 5))
    graph = PatternSpec.parse("random(k=2)").build(4, 6)
    assert graph.num_keys == 6 and bool((graph.degrees == 2).all())


def test_sequence_batch_builds_each_sequence_for_its_length() -> None:
    spec = PatternSpec.parse("bigbird(window=1, num_global=1, num_random=2, seed=1)")
    graph = sequence_batch(spec, [6, 3, 5], query_slots=6)
    dense = graph.to_dense()
    expected = torch.zeros(18, 18, dtype=torch.bool)
    for b, length in enumerate([6, 3, 5]):
        expected[b * 6:b * 6 + length, b * 6:b * 6 + length] = spec.build(length).to_dense()
    assert torch.equal(dense, expected)
    assert graph.uniform_blocks == (3, 6, 6)
    # equal lengths: a replicated batch (the dense backend's fast path), cached
    same = sequence_batch(spec, [6, 6, 6], query_slots=6)
    assert same.replicated_from is spec.build(6)
    assert same is sequence_batch(spec, [6, 6, 6], query_slots=6)


def test_sequence_batch_cross_and_errors() -> None:
    graph = sequence_batch(PatternSpec("full"), [2, 1], [3, 4], query_slots=2, key_slots=4)
    expected = torch.zeros(4, 8, dtype=torch.bool)
    expected[0:2, 0:3] = True
    expected[2:3, 4:8] = True
    assert torch.equal(graph.to_dense(), expected)
    with pytest.raises(ValueError, match="exceed the slots"):
        sequence_batch(PatternSpec("full"), [5], query_slots=4)
    with pytest.raises(ValueError, match="as many key lengths"):
        sequence_batch(PatternSpec("full"), [2, 2], [2], query_slots=2)


def test_gather_rows() -> None:
    pattern = patterns.per_head(patterns.local(8, 2, causal=True), patterns.causal(8))
    graph = gather_rows(pattern, torch.tensor([5, 0, 7]), torch.tensor([0, 8, 16]), 24)
    dense = graph.to_dense()  # [H, 3, 24]
    full = pattern.to_dense()
    for r, (row, offset) in enumerate([(5, 0), (0, 8), (7, 16)]):
        expected = torch.zeros(2, 24, dtype=torch.bool)
        expected[:, offset:offset + 8] = full[:, row]
        assert torch.equal(dense[:, r], expected)
    with pytest.raises(ValueError, match="rows in \\[0, 7\\]"):
        gather_rows(pattern, torch.tensor([8]), torch.tensor([0]), 8)


def test_embed() -> None:
    graph = patterns.local(3, 1)
    big = patterns.embed(graph, 5, 6)
    assert isinstance(big, AttentionGraph) and (big.num_queries, big.num_keys) == (5, 6)
    expected = torch.zeros(5, 6, dtype=torch.bool)
    expected[:3, :3] = graph.to_dense()
    assert torch.equal(big.to_dense(), expected)
    with pytest.raises(ValueError, match="Cannot embed"):
        patterns.embed(graph, 2, 3)


def test_image_pattern_specs_take_the_width_and_build_for_the_image_size() -> None:
    from graphattn import patterns

    spec = PatternSpec.parse("grid2d(width=4, radius=1)")
    assert str(spec) == "grid2d(radius=1, width=4)"
    assert spec.build(12).to_dense().equal(patterns.grid2d(3, 4, 1).to_dense())
    axial = PatternSpec.parse("axial(width=3)").build(6)
    assert axial.to_dense().equal(patterns.axial(2, 3).to_dense())
    dilated = PatternSpec.parse("dilated2d(width=4, dilation=2)").build(16)
    assert dilated.to_dense().equal(patterns.dilated2d(4, 4, 1, 2).to_dense())
    causal = PatternSpec.parse("grid2d(width=4, causal=True)").build(8).to_dense()
    assert not causal.triu(1).any()
    with pytest.raises(ValueError, match="not a whole number of rows of width=5"):
        spec.__class__.parse("grid2d(width=5)").build(12)


def test_is_causal_works_for_image_patterns() -> None:
    assert PatternSpec.parse("grid2d(width=5, causal=True)").is_causal
    assert not PatternSpec.parse("grid2d(width=5)").is_causal
    assert not PatternSpec.parse("union(axial(width=6), grid2d(width=6))").is_causal


def test_the_pattern_caches_are_bounded_by_edges_not_only_entries() -> None:
    """Long documents meet many lengths: the built full patterns (L^2 edges each) must not pile up."""
    from graphattn.patterns import spec as spec_module

    cache = spec_module.GraphCache(max_entries=100, max_edges=10_000)
    full = PatternSpec.parse("full")
    for n in range(40, 80):  # 1,600 .. 6,241 edges each
        graph = cache.get(("test", n), lambda n=n: full.build(n))
        assert graph.num_edges == n * n
        assert cache.edges <= 10_000
    assert len(cache) <= 6
    assert cache.get(("test", 79), lambda: pytest.fail("rebuilt a cached graph")).num_edges == 79 * 79
    big = cache.get(("test", "big"), lambda: full.build(200))  # larger than the whole budget: built, not kept
    assert big.num_edges == 40_000 and cache.edges <= 10_000
    assert spec_module._PATTERNS.max_edges <= 1 << 24 and spec_module._MIXED_BATCHES.max_edges <= 1 << 24
