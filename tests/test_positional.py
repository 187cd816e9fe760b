"""Tests for graphattn.nn.positional: every encoding against hand-computed tables, formulas
re-derived from the papers (float64), independent re-implementations, PyG's transforms and
dense numpy decompositions; batched == per-graph; gradients; error messages."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import graphattn.nn.positional as positional
from graphattn import AttentionGraph
from graphattn.nn.positional import (
    ALiBi,
    LaplacianPositionalEncoding,
    LearnedPositionalEmbedding,
    RandomWalkPositionalEncoding,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionalEmbedding,
    alibi_slopes,
    graph_positions,
    laplacian_eigenvector_pe,
    random_walk_pe,
)
from graphattn.patterns import causal, full

DTYPE = torch.float64


# ---------------------------------------------------------------------------------------- helpers
def undirected(pairs: list[tuple[int, int]]) -> torch.Tensor:
    """[2, 2P] edge_index with both directions of every (u, v) pair."""
    edges = torch.tensor(pairs, dtype=torch.long).t()
    return torch.cat([edges, edges.flip(0)], dim=1)


def cycle(n: int, offset: int = 0) -> torch.Tensor:
    return undirected([(offset + i, offset + (i + 1) % n) for i in range(n)])


def path(n: int, offset: int = 0) -> torch.Tensor:
    return undirected([(offset + i, offset + i + 1) for i in range(n - 1)])


def random_connected(n: int, extra: int, seed: int, offset: int = 0) -> torch.Tensor:
    """A random spanning tree plus ``extra`` random chords, undirected, no duplicates or loops."""
    rng = np.random.default_rng(seed)
    pairs = {(int(rng.integers(0, i)), i) for i in range(1, n)}
    while len(pairs) < n - 1 + extra:
        u, v = sorted(rng.choice(n, 2, replace=False).tolist())
        pairs.add((u, v))
    return undirected([(offset + u, offset + v) for u, v in sorted(pairs)])


def numpy_normalized_laplacian(edge_index: torch.Tensor, n: int) -> np.ndarray:
    """I - D^-1/2 A D^-1/2 written out densely (A[i, j] = edges i -> j, D = out-degrees)."""
    adjacency = np.zeros((n, n))
    for i, j in edge_index.t().tolist():
        if i != j:
            adjacency[i, j] += 1.0
    degree = adjacency.sum(1)
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-300)), 0.0)
    return np.eye(n) - inv_sqrt[:, None] * adjacency * inv_sqrt[None, :]


def assert_same_subspaces(actual: np.ndarray, expected: np.ndarray, values: np.ndarray) -> None:
    """Columns agree up to sign for simple eigenvalues, and span the same space for repeated ones."""
    groups: list[list[int]] = []
    for c in range(len(values)):
        if groups and abs(values[c] - values[groups[-1][-1]]) < 1e-8:
            groups[-1].append(c)
        else:
            groups.append([c])
    for group in groups:
        a, e = actual[:, group], expected[:, group]
        np.testing.assert_allclose(a @ a.T, e @ e.T, atol=1e-5)


# ---------------------------------------------------------------------------------------- sinusoidal
def sinusoidal_by_hand(positions: list[int], dim: int, base: float = 10000.0) -> torch.Tensor:
    """The paper's formula, one scalar at a time, in float64."""
    rows = []
    for p in positions:
        row = []
        for c in range(dim):
            i = c // 2
            angle = p / base ** (2 * i / dim)
            row.append(math.sin(angle) if c % 2 == 0 else math.cos(angle))
        rows.append(row)
    return torch.tensor(rows, dtype=DTYPE)


@pytest.mark.parametrize("dim", [1, 6, 7, 64])
def test_sinusoidal_matches_the_paper_formula(dim: int) -> None:
    positions = [0, 1, 2, 5, 99, 1000, 54321, -3]
    out = SinusoidalPositionalEmbedding(dim)(torch.tensor(positions), dtype=DTYPE)
    # angles up to 5e4 rad: float64 rounding of p * base^-x vs p / base^x differs by ~1e-11
    torch.testing.assert_close(out, sinusoidal_by_hand(positions, dim), rtol=0, atol=1e-10)


def test_sinusoidal_known_values_interleaved_and_odd_dim() -> None:
    out = SinusoidalPositionalEmbedding(5)(torch.tensor([0, 1]), dtype=DTYPE)
    # position 0: sin 0 = 0 in even columns, cos 0 = 1 in odd columns
    assert out[0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    w1, w2 = 10000.0 ** (-2 / 5), 10000.0 ** (-4 / 5)
    expected = [math.sin(1), math.cos(1), math.sin(w1), math.cos(w1), math.sin(w2)]  # ends with a sine
    torch.testing.assert_close(out[1], torch.tensor(expected, dtype=DTYPE))


def test_sinusoidal_shapes_dtypes_and_no_state() -> None:
    embed = SinusoidalPositionalEmbedding(8, base=100.0)
    positions = torch.arange(6).view(2, 3)
    assert embed(positions).shape == (2, 3, 8) and embed(positions).dtype == torch.float32
    assert embed(positions, dtype=torch.bfloat16).dtype == torch.bfloat16
    torch.testing.assert_close(
        embed(positions, dtype=DTYPE), sinusoidal_by_hand(list(range(6)), 8, base=100.0).view(2, 3, 8)
    )
    assert list(embed.parameters()) == [] and list(embed.buffers()) == [] and embed.state_dict() == {}
    assert embed(torch.tensor(10**7, dtype=torch.int32)).shape == (8,)  # any position, no maximum
    assert repr(embed) == "SinusoidalPositionalEmbedding(dim=8, base=100)"


def test_sinusoidal_errors() -> None:
    with pytest.raises(TypeError, match=r"'positions' to be of integer type \(got 'torch.float32'\).*\.long\(\)"):
        SinusoidalPositionalEmbedding(4)(torch.zeros(3))
    with pytest.raises(TypeError, match="integer tensor"):
        SinusoidalPositionalEmbedding(4)([0, 1])
    with pytest.raises(TypeError, match="floating point 'dtype'"):
        SinusoidalPositionalEmbedding(4)(torch.arange(3), dtype=torch.int64)
    with pytest.raises(ValueError, match="'dim' to be a positive int, got 0"):
        SinusoidalPositionalEmbedding(0)
    with pytest.raises(ValueError, match="'base' to be a positive finite number"):
        SinusoidalPositionalEmbedding(4, base=-1.0)


# ---------------------------------------------------------------------------------------- learned
def test_learned_embedding_lookup_gradient_and_init() -> None:
    torch.manual_seed(0)
    embed = LearnedPositionalEmbedding(512, 64)
    assert embed.weight.shape == (512, 64)
    assert abs(embed.weight.std().item() - 0.02) < 0.001 and abs(embed.weight.mean().item()) < 0.001
    positions = torch.tensor([[0, 5, 511], [5, 5, 1]])
    out = embed(positions)
    assert out.shape == (2, 3, 64)
    torch.testing.assert_close(out, embed.weight[positions])
    out.sum().backward()
    counts = torch.bincount(positions.flatten(), minlength=512).float()
    torch.testing.assert_close(embed.weight.grad, counts[:, None].expand(512, 64))
    assert repr(embed) == "LearnedPositionalEmbedding(max_positions=512, dim=64)"
    double = LearnedPositionalEmbedding(4, 2, dtype=DTYPE)
    assert double.weight.dtype == DTYPE


def test_learned_embedding_errors() -> None:
    embed = LearnedPositionalEmbedding(16, 4)
    fix = r"below max_positions=16, got position 16; raise max_positions in the model config"
    with pytest.raises(ValueError, match=fix):
        embed(torch.arange(17))
    with pytest.raises(ValueError, match="non-negative positions, got position -1"):
        embed(torch.tensor([-1, 0]))
    with pytest.raises(TypeError, match="integer type"):
        embed(torch.tensor([True, False]))
    with pytest.raises(ValueError, match="'max_positions' to be a positive int"):
        LearnedPositionalEmbedding(0, 4)
    assert embed(torch.zeros(0, dtype=torch.long)).shape == (0, 4)


# ---------------------------------------------------------------------------------------- T5 buckets
# Hand-derived from T5's definition: with n buckets per direction and e = n // 2 exact ones, a
# distance d >= e lands in e + floor(log(d / e) / log(max_distance / e) * (n - e)), at most n - 1.
# bidirectional, 32 buckets, max_distance 128: n = 16, e = 8: 8 + floor(2 log2(d / 8));
# positive relative positions (key after query) add 16.
T5_BIDIRECTIONAL_32_128 = {
    0: 0, -1: 1, -7: 7, -8: 8, -11: 8, -12: 9, -16: 10, -22: 10, -23: 11, -32: 12, -45: 12,
    -46: 13, -64: 14, -90: 14, -91: 15, -127: 15, -128: 15, -1000: 15, -(10**9): 15,
    1: 17, 7: 23, 8: 24, 12: 25, 16: 26, 23: 27, 32: 28, 46: 29, 64: 30, 91: 31, 128: 31, 10**6: 31,
}
# unidirectional, 32 buckets, max_distance 128: n = 32, e = 16: 16 + floor(16 log(d / 16) / log 8);
# keys after the query count as distance 0.
T5_UNIDIRECTIONAL_32_128 = {
    5: 0, 1: 0, 0: 0, -1: 1, -15: 15, -16: 16, -20: 17, -22: 18, -24: 19, -32: 21, -64: 26,
    -127: 31, -128: 31, -5000: 31,
}
# bidirectional, 8 buckets, max_distance 16: n = 4, e = 2: 2 + floor(2 log(d / 2) / log 8)
T5_BIDIRECTIONAL_8_16 = {0: 0, -1: 1, -2: 2, -5: 2, -6: 3, -16: 3, 1: 5, 2: 6, 6: 7, 100: 7}


@pytest.mark.parametrize(
    "table, bidirectional, num_buckets, max_distance",
    [
        (T5_BIDIRECTIONAL_32_128, True, 32, 128),
        (T5_UNIDIRECTIONAL_32_128, False, 32, 128),
        (T5_BIDIRECTIONAL_8_16, True, 8, 16),
    ],
)
def test_t5_buckets_match_hand_table(table: dict, bidirectional: bool, num_buckets: int, max_distance: int) -> None:
    relative = torch.tensor(list(table))
    buckets = RelativePositionBias.bucket(relative, bidirectional, num_buckets, max_distance)
    assert buckets.dtype == torch.long
    assert buckets.tolist() == list(table.values())


def t5_bucket_scalar(relative: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """T5's bucket of one relative position, written from the definition with numpy float32 scalars
    (T5 and Hugging Face take the logarithm in float32)."""
    offset = 0
    if bidirectional:
        num_buckets //= 2
        offset = num_buckets if relative > 0 else 0
        distance = abs(relative)
    else:
        distance = max(-relative, 0)
    exact = num_buckets // 2
    if distance < exact:
        return offset + distance
    ratio = np.float32(np.log(np.float32(distance) / np.float32(exact)))
    scaled = ratio / np.float32(math.log(max_distance / exact)) * np.float32(num_buckets - exact)
    return offset + min(exact + int(scaled), num_buckets - 1)


@pytest.mark.parametrize(
    "bidirectional, num_buckets, max_distance",
    [(True, 32, 128), (False, 32, 128), (True, 16, 64), (False, 8, 20), (True, 4, 10), (True, 33, 50), (False, 2, 3)],
)
def test_t5_buckets_match_independent_implementation(bidirectional: bool, num_buckets: int, max_distance: int) -> None:
    relative = torch.arange(-400, 401)
    buckets = RelativePositionBias.bucket(relative, bidirectional, num_buckets, max_distance)
    expected = [t5_bucket_scalar(r, bidirectional, num_buckets, max_distance) for r in relative.tolist()]
    assert buckets.tolist() == expected
    assert int(buckets.min()) >= 0 and int(buckets.max()) < num_buckets
    # and the float64 formula agrees wherever it is not within rounding of a bucket boundary
    half = num_buckets // 2 if bidirectional else num_buckets
    exact = half // 2
    for r, b in zip(relative.tolist(), buckets.tolist()):
        d = abs(r) if bidirectional else max(-r, 0)
        if d >= exact:
            value = math.log(d / exact) / math.log(max_distance / exact) * (half - exact)
            if abs(value - round(value)) > 1e-4:
                offset = half if (bidirectional and r > 0) else 0
                assert b == offset + min(exact + math.floor(value), half - 1)


def test_t5_bucket_errors() -> None:
    with pytest.raises(ValueError, match=r"num_buckets >= 4 \(bidirectional=True"):
        RelativePositionBias(2, num_buckets=2)
    with pytest.raises(ValueError, match=r"max_distance > 8 .*got 8; raise max_distance"):
        RelativePositionBias(2, num_buckets=32, max_distance=8)
    with pytest.raises(TypeError, match="'relative_position' to be of integer type"):
        RelativePositionBias.bucket(torch.tensor([0.5]))


# ---------------------------------------------------------------------------------------- T5 bias on graphs
def dense_relative_bias(weight: torch.Tensor, query_positions, key_positions, **settings) -> torch.Tensor:
    """[Nq, Nk, H] bias of every (query, key) pair, one scalar bucket at a time."""
    nq, nk = len(query_positions), len(key_positions)
    out = torch.empty(nq, nk, weight.size(1), dtype=weight.dtype)
    for i in range(nq):
        for j in range(nk):
            out[i, j] = weight[t5_bucket_scalar(int(key_positions[j] - query_positions[i]), **settings)]
    return out


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_bias_per_edge_equals_dense_reference(
    bidirectional: bool, generator: torch.Generator
) -> None:
    module = RelativePositionBias(3, num_buckets=8, max_distance=12, bidirectional=bidirectional)
    mask = torch.rand(7, 9, generator=generator) < 0.5
    graph = AttentionGraph.from_dense(mask)
    query_positions = torch.tensor([0, 3, 4, 9, 15, 20, 40])
    key_positions = torch.tensor([2, 0, 1, 5, 30, 8, 13, 50, 14])
    bias = module(graph, query_positions, key_positions)
    assert bias.shape == (graph.num_edges, 3)
    dense = dense_relative_bias(
        module.relative_attention_bias.weight.detach(), query_positions, key_positions,
        bidirectional=bidirectional, num_buckets=8, max_distance=12,
    )
    torch.testing.assert_close(bias.detach(), dense[mask])  # boolean indexing is row-major = CSR order
    # gradient: every edge adds 1 to its bucket's row, for every head
    bias.sum().backward()
    buckets = RelativePositionBias.bucket(key_positions[graph.col] - query_positions[graph.row], bidirectional, 8, 12)
    counts = torch.bincount(buckets, minlength=8).float()
    torch.testing.assert_close(module.relative_attention_bias.weight.grad, counts[:, None].expand(8, 3))


def test_relative_position_bias_batch_and_incremental_decoding() -> None:
    module = RelativePositionBias(2, num_buckets=16, max_distance=32, bidirectional=False)
    first, second = causal(5), causal(3)
    batched = AttentionGraph.batch([first, second])
    query_positions, key_positions = graph_positions(batched)
    expected = torch.cat(
        [module(first, torch.arange(5), torch.arange(5)), module(second, torch.arange(3), torch.arange(3))]
    )
    torch.testing.assert_close(module(batched, query_positions, key_positions), expected)
    # decoding step t = 4: one query at position 4 over a cache of keys 0..4 == last row of the full causal bias
    step = AttentionGraph.from_edge_index(torch.stack([torch.arange(5), torch.zeros(5, dtype=torch.long)]), 1, 5)
    last_row = module(first, torch.arange(5), torch.arange(5))[first.row == 4]
    torch.testing.assert_close(module(step, torch.tensor([4]), torch.arange(5)), last_row)


def test_relative_position_bias_errors_and_repr() -> None:
    module = RelativePositionBias(4)
    graph = full(5, 3)
    with pytest.raises(ValueError, match=r"'query_positions' of shape \[Nq\] = \[5\].*got \[3\]"):
        module(graph, torch.arange(3), torch.arange(3))
    with pytest.raises(ValueError, match=r"'key_positions' of shape \[Nk\] = \[3\].*got \[1, 3\]"):
        module(graph, torch.arange(5), torch.arange(3)[None])
    with pytest.raises(TypeError, match="'query_positions' to be of integer type"):
        module(graph, torch.arange(5.0), torch.arange(3))
    with pytest.raises(TypeError, match="'graph' to be an AttentionGraph, got Tensor"):
        module(torch.ones(5, 3, dtype=torch.bool), torch.arange(5), torch.arange(3))
    assert repr(module) == (
        "RelativePositionBias(\n  num_heads=4, num_buckets=32, max_distance=128, bidirectional=True\n"
        "  (relative_attention_bias): Embedding(32, 4)\n)"
    )


# ---------------------------------------------------------------------------------------- rotary
def rotary_by_complex_numbers(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE as a complex multiplication: pair (x[i], x[i + D/2]) is z_i, rotated by exp(i p theta_i)."""
    half = x.size(-1) // 2
    z = torch.complex(x[..., :half], x[..., half:])
    theta = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / x.size(-1))
    rotation = torch.polar(torch.ones_like(theta), positions.double()[..., None] * theta)  # [..., D/2]
    rotated = z * rotation.unsqueeze(-2)                                                     # over heads
    return torch.cat([rotated.real, rotated.imag], dim=-1)


def test_rotary_equals_complex_formulation(generator: torch.Generator) -> None:
    rope = RotaryEmbedding(8, base=500.0)
    x = torch.randn(6, 3, 8, generator=generator, dtype=DTYPE)
    positions = torch.tensor([0, 1, 2, 7, 100, 12345])
    torch.testing.assert_close(rope(x, positions), rotary_by_complex_numbers(x, positions, 500.0))


def test_rotary_scores_depend_only_on_relative_position(generator: torch.Generator) -> None:
    rope = RotaryEmbedding(16)
    q = torch.randn(1, 4, 16, generator=generator, dtype=DTYPE)
    k = torch.randn(1, 4, 16, generator=generator, dtype=DTYPE)

    def score(m: int, n: int) -> torch.Tensor:
        return (rope(q, torch.tensor([m])) * rope(k, torch.tensor([n]))).sum(-1)  # [1, H]

    for m, n in [(0, 0), (5, 2), (2, 5), (30, 1)]:
        reference = score(m, n)
        for shift in [1, 3, 17, 1000]:
            torch.testing.assert_close(score(m + shift, n + shift), reference)
    # and it does change with the relative position
    assert not torch.allclose(score(5, 2), score(5, 3))


def test_rotary_norm_identity_and_layouts(generator: torch.Generator) -> None:
    rope = RotaryEmbedding(6)
    x = torch.randn(2, 5, 3, 6, generator=generator, dtype=DTYPE)       # [B, L, H, D]
    positions = torch.tensor([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
    out = rope(x, positions)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
    assert torch.equal(rope(x, torch.zeros(2, 5, dtype=torch.long)), x)
    # [B, L, H, D] == each sequence as [N, H, D]; positions [L] broadcast over the batch
    for b in range(2):
        torch.testing.assert_close(out[b], rope(x[b], positions[b]))
    torch.testing.assert_close(rope(x, torch.arange(5)), torch.stack([rope(x[b], torch.arange(5)) for b in range(2)]))


def test_rotary_dtypes(generator: torch.Generator) -> None:
    rope = RotaryEmbedding(8)
    x = torch.randn(4, 2, 8, generator=generator)
    positions = torch.tensor([0, 3, 50, 400])
    reference = rotary_by_complex_numbers(x.double(), positions)
    torch.testing.assert_close(rope(x, positions), reference.float(), rtol=1e-5, atol=1e-4)
    half = rope(x.bfloat16(), positions)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.double(), reference, rtol=0.05, atol=0.05)
    cos, sin = rope.cos_sin(positions, torch.float32)
    assert cos.shape == sin.shape == (4, 8) and cos.dtype == torch.float32


def test_rotary_gradcheck(generator: torch.Generator) -> None:
    rope = RotaryEmbedding(4)
    x = torch.randn(3, 2, 4, generator=generator, dtype=DTYPE, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: rope(t, torch.tensor([0, 2, 5])), (x,))


def test_rotary_errors_and_repr() -> None:
    with pytest.raises(ValueError, match="even head_dim.*got head_dim=5"):
        RotaryEmbedding(5)
    rope = RotaryEmbedding(4)
    with pytest.raises(ValueError, match=r"D = head_dim = 4, got \[3, 2, 6\]"):
        rope(torch.randn(3, 2, 6), torch.arange(3))
    with pytest.raises(ValueError, match=r"'positions' broadcastable to x.shape\[:-2\] = \[2, 3\].*got shape \[4\]"):
        rope(torch.randn(2, 3, 2, 4), torch.arange(4))
    with pytest.raises(ValueError, match=r"broadcastable to x.shape\[:-2\] = \[3\].*got shape \[2, 3\]"):
        rope(torch.randn(3, 2, 4), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="'positions' to be of integer type"):
        rope(torch.randn(3, 2, 4), torch.arange(3.0))
    with pytest.raises(TypeError, match="floating point tensor"):
        rope(torch.ones(3, 2, 4, dtype=torch.long), torch.arange(3))
    assert repr(rope) == "RotaryEmbedding(head_dim=4, base=10000)"


# ---------------------------------------------------------------------------------------- ALiBi
def test_alibi_slopes_written_out() -> None:
    assert ALiBi(8).slopes.tolist() == [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 256]
    # 6 heads: the 4-head sequence 2^-2, 2^-4, 2^-6, 2^-8, then every other of the 8-head one: 2^-1, 2^-3
    assert ALiBi(6).slopes.tolist() == [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]
    # 12 heads: the 8-head sequence, then the 1st, 3rd, 5th, 7th of the 16-head one (2^-0.5h)
    expected_12 = [2.0**-h for h in range(1, 9)] + [2**-0.5, 2**-1.5, 2**-2.5, 2**-3.5]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(expected_12, dtype=DTYPE), rtol=1e-15, atol=0)
    assert alibi_slopes(1).tolist() == [1 / 256]
    torch.testing.assert_close(alibi_slopes(16), torch.tensor([2 ** (-h / 2) for h in range(1, 17)], dtype=DTYPE))


def test_alibi_bias_causal_symmetric_and_batched() -> None:
    alibi = ALiBi(4)                                                       # slopes 1/4, 1/16, 1/64, 1/256
    graph = causal(5)
    bias = alibi(graph, torch.arange(5), torch.arange(5))
    expected = torch.tensor([[-(i - j) * 4.0**-h for h in range(1, 5)] for i in range(5) for j in range(i + 1)])
    torch.testing.assert_close(bias, expected)
    # bidirectional: the symmetric form -slope * |i - j|
    full_bias = alibi(full(3), torch.arange(3), torch.arange(3))
    expected = torch.tensor([[-abs(i - j) * 4.0**-h for h in range(1, 5)] for i in range(3) for j in range(3)])
    torch.testing.assert_close(full_bias, expected)
    # batches restart positions; decoding uses the query's own position
    batched = AttentionGraph.batch([causal(5), causal(2)])
    torch.testing.assert_close(
        alibi(batched, *graph_positions(batched)),
        torch.cat([bias, alibi(causal(2), torch.arange(2), torch.arange(2))]),
    )
    step = causal(1, 5)                                                    # the last query over 5 keys
    torch.testing.assert_close(alibi(step, torch.tensor([4]), torch.arange(5)), bias[graph.row == 4])


def test_alibi_buffer_dtype_errors_and_repr() -> None:
    alibi = ALiBi(3)
    assert alibi.state_dict() == {} and list(alibi.parameters()) == []
    assert [name for name, _ in alibi.named_buffers()] == ["slopes"]
    double = ALiBi(3).double()
    assert double(causal(2), torch.arange(2), torch.arange(2)).dtype == DTYPE
    with pytest.raises(ValueError, match="'num_heads' to be a positive int, got 0"):
        ALiBi(0)
    with pytest.raises(ValueError, match=r"'key_positions' of shape \[Nk\] = \[2\]"):
        alibi(causal(2), torch.arange(2), torch.arange(3))
    assert repr(alibi) == "ALiBi(num_heads=3)"


def test_graph_positions() -> None:
    single = full(3, 4)
    query_positions, key_positions = graph_positions(single)
    assert query_positions.tolist() == [0, 1, 2] and key_positions.tolist() == [0, 1, 2, 3]
    batched = AttentionGraph.batch([full(2, 3), full(1, 1), full(3, 2)])
    query_positions, key_positions = graph_positions(batched)
    assert query_positions.tolist() == [0, 1, 0, 0, 1, 2]
    assert key_positions.tolist() == [0, 1, 2, 0, 0, 1]
    with pytest.raises(TypeError, match="Expected an AttentionGraph"):
        graph_positions(torch.ones(2, 2))


# ---------------------------------------------------------------------------------------- Laplacian PE
def test_laplacian_pe_matches_dense_numpy_decomposition() -> None:
    n, k = 9, 5
    edge_index = random_connected(n, extra=6, seed=3)
    pe = laplacian_eigenvector_pe(edge_index, n, k, dtype=DTYPE)
    values, vectors = np.linalg.eigh(numpy_normalized_laplacian(edge_index, n))
    assert np.min(np.diff(values)) > 1e-6                                  # simple spectrum here
    expected = vectors[:, 1 : k + 1]
    signs = np.sign(np.sum(pe.numpy() * expected, axis=0))
    np.testing.assert_allclose(pe.numpy(), expected * signs, atol=1e-8)
    # default float32
    torch.testing.assert_close(laplacian_eigenvector_pe(edge_index, n, k), pe.float())


def test_laplacian_pe_matches_pyg_transform_up_to_sign() -> None:
    from torch_geometric.data import Data
    from torch_geometric.transforms import AddLaplacianEigenvectorPE

    n, k = 8, 3
    edge_index = random_connected(n, extra=4, seed=11)
    pyg = AddLaplacianEigenvectorPE(k, is_undirected=True)(Data(edge_index=edge_index, num_nodes=n))
    ours = laplacian_eigenvector_pe(edge_index, n, k, dtype=DTYPE)
    theirs = pyg.laplacian_eigenvector_pe.double()
    signs = torch.sign((ours * theirs).sum(0))
    torch.testing.assert_close(ours, theirs * signs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("n", [6, 7])
def test_laplacian_pe_cycle_known_spectrum_and_degenerate_subspaces(n: int) -> None:
    # normalized Laplacian of the n-cycle: eigenvalues 1 - cos(2 pi j / n), mostly in pairs
    k = n - 1
    edge_index = cycle(n)
    pe = laplacian_eigenvector_pe(edge_index, n, k, dtype=DTYPE).numpy()
    laplacian = numpy_normalized_laplacian(edge_index, n)
    known = np.sort(1 - np.cos(2 * np.pi * np.arange(n) / n))[1:]
    np.testing.assert_allclose(laplacian @ pe, pe * known, atol=1e-10)        # eigenvectors with the known values
    np.testing.assert_allclose(pe.T @ pe, np.eye(k), atol=1e-10)              # orthonormal
    values, vectors = np.linalg.eigh(laplacian)
    assert_same_subspaces(pe, vectors[:, 1:], values[1:])


def test_laplacian_pe_path_known_eigenvalues() -> None:
    # normalized Laplacian of the path on n nodes: eigenvalues 1 - cos(pi j / (n - 1)), all simple
    n = 6
    pe = laplacian_eigenvector_pe(path(n), n, n - 1, dtype=DTYPE).numpy()
    laplacian = numpy_normalized_laplacian(path(n), n)
    rayleigh = np.einsum("ic,ij,jc->c", pe, laplacian, pe)
    np.testing.assert_allclose(rayleigh, 1 - np.cos(np.pi * np.arange(1, n) / (n - 1)), atol=1e-10)
    # the deterministic sign: each column's first clearly non-zero entry is positive
    for column in pe.T:
        first = column[np.abs(column) > 1e-6][0]
        assert first > 0


def test_laplacian_pe_batch_equals_per_graph_loop_and_pads_tiny_graphs() -> None:
    k = 3
    parts = [  # (edge_index with local ids, number of nodes)
        (random_connected(7, extra=3, seed=1), 7),
        (torch.zeros(2, 0, dtype=torch.long), 1),                              # one node: all zeros
        (path(2), 2),                                                          # one non-trivial vector
        (random_connected(7, extra=2, seed=2), 7),                             # same size as the first
        (path(3), 3),                                                          # two non-trivial vectors
        (random_connected(5, extra=1, seed=4), 5),
    ]
    offsets = np.cumsum([0] + [size for _, size in parts])
    edge_index = torch.cat([edges + int(offsets[g]) for g, (edges, _) in enumerate(parts)], dim=1)
    batch = torch.repeat_interleave(torch.arange(len(parts)), torch.tensor([size for _, size in parts]))
    batched = laplacian_eigenvector_pe(edge_index, int(offsets[-1]), k, batch=batch, dtype=DTYPE)
    singles = torch.cat([laplacian_eigenvector_pe(edges, size, k, dtype=DTYPE) for edges, size in parts])
    torch.testing.assert_close(batched, singles, atol=1e-10, rtol=0)
    assert batched[offsets[1] : offsets[2]].abs().sum() == 0                  # 1 node
    two = batched[offsets[2] : offsets[3]]
    torch.testing.assert_close(two[:, 0], torch.tensor([1, -1], dtype=DTYPE) / math.sqrt(2))
    assert two[:, 1:].abs().sum() == 0
    three = batched[offsets[4] : offsets[5]]
    assert three[:, :2].abs().sum() > 0 and three[:, 2].abs().sum() == 0
    # nodes of different graphs interleaved (batch not sorted): the same per-graph result, up to
    # the sign of each (graph, column), since the sign convention looks at the first node
    permutation = torch.randperm(len(batch), generator=torch.Generator().manual_seed(5))
    inverse = torch.argsort(permutation)
    shuffled = laplacian_eigenvector_pe(inverse[edge_index], len(batch), k, batch=batch[permutation], dtype=DTYPE)
    expected = batched[permutation]
    signs = torch.zeros(len(parts), k, dtype=DTYPE).index_add_(0, batch[permutation], shuffled * expected).sign()
    signs[signs == 0] = 1
    torch.testing.assert_close(shuffled, expected * signs[batch[permutation]], atol=1e-10, rtol=0)


def test_laplacian_pe_disconnected_and_isolated_nodes() -> None:
    # two triangles in one graph plus an isolated node: eigenvalues 0, 0, 1, 1.5 (x4)
    edge_index = torch.cat([cycle(3), cycle(3, offset=3)], dim=1)
    pe = laplacian_eigenvector_pe(edge_index, 7, 3, dtype=DTYPE).numpy()
    laplacian = numpy_normalized_laplacian(edge_index, 7)
    assert laplacian[6, 6] == 1.0
    values, vectors = np.linalg.eigh(laplacian)
    np.testing.assert_allclose(values[:3], [0, 0, 1], atol=1e-12)
    # after dropping one zero eigenvalue: the other zero one, then the isolated node's 1
    np.testing.assert_allclose(np.einsum("ic,ij,jc->c", pe, laplacian, pe), [0, 1, 1.5], atol=1e-10)
    np.testing.assert_allclose(np.abs(pe[:, 1]), np.eye(7)[6], atol=1e-10)


def test_laplacian_pe_sparse_path_matches_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    n, k = 40, 4
    edge_index = torch.cat(
        [random_connected(n, extra=20, seed=7), random_connected(8, extra=3, seed=8, offset=n)], dim=1
    )
    batch = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(8, dtype=torch.long)])
    dense = laplacian_eigenvector_pe(edge_index, n + 8, k, batch=batch, dtype=DTYPE)
    monkeypatch.setattr(positional, "DENSE_EIGEN_MAX_NODES", 10)             # the 40-node graph -> ARPACK
    calls = []
    arpack = positional._sparse_eigenvectors
    monkeypatch.setattr(positional, "_sparse_eigenvectors", lambda *args: calls.append(args[1]) or arpack(*args))
    sparse = laplacian_eigenvector_pe(edge_index, n + 8, k, batch=batch, dtype=DTYPE)
    assert calls == [n]
    signs = torch.sign((sparse[:n] * dense[:n]).sum(0))
    assert bool((signs != 0).all())
    torch.testing.assert_close(sparse[:n], dense[:n] * signs, atol=1e-6, rtol=0)
    torch.testing.assert_close(sparse[n:], dense[n:])                          # the small graph stays dense


def test_laplacian_pe_directed() -> None:
    # a directed graph: the general eigensolver on the non-symmetric L, real parts, as PyG
    from torch_geometric.data import Data
    from torch_geometric.transforms import AddLaplacianEigenvectorPE

    # an undirected path 0 - 1 - 2 - 3 - 4 plus the one-way edge 4 -> 1: real, simple spectrum
    edge_index = torch.cat([path(5), torch.tensor([[4], [1]])], dim=1)
    with pytest.raises(ValueError, match="undirected graph.*to_undirected, or pass is_undirected=False"):
        laplacian_eigenvector_pe(edge_index, 5, 2)
    ours = laplacian_eigenvector_pe(edge_index, 5, 3, is_undirected=False, dtype=DTYPE)
    theirs = AddLaplacianEigenvectorPE(3)(Data(edge_index=edge_index, num_nodes=5)).laplacian_eigenvector_pe
    laplacian = numpy_normalized_laplacian(edge_index, 5)
    assert not np.allclose(laplacian, laplacian.T)
    values = np.linalg.eigvals(laplacian)
    assert np.all(np.abs(values.imag) < 1e-12) and np.min(np.diff(np.sort(values.real))) > 1e-6
    np.testing.assert_allclose(laplacian @ ours.numpy(), ours.numpy() * np.sort(values.real)[1:4], atol=1e-10)
    # eigenvectors of a non-symmetric matrix are normalized but not orthogonal: compare up to sign
    signs = torch.sign((ours * theirs.double()).sum(0))
    torch.testing.assert_close(ours, theirs.double() * signs, atol=1e-6, rtol=0)


def test_laplacian_pe_errors() -> None:
    edges = path(3)
    with pytest.raises(ValueError, match=r"node indices in \[0, 1\] \(num_nodes = 2\), found 2"):
        laplacian_eigenvector_pe(edges, 2, 1)
    with pytest.raises(ValueError, match="'k' to be a positive int, got 0"):
        laplacian_eigenvector_pe(edges, 3, 0)
    with pytest.raises(ValueError, match=r"'batch' of shape \[N\] = \[3\].*got \[2\]"):
        laplacian_eigenvector_pe(edges, 3, 1, batch=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"edge 0 \(0 -> 1\) connects graphs 0 and 1"):
        laplacian_eigenvector_pe(edges, 3, 1, batch=torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match=r"shape \[2, E\].*got \[4, 2\]; a list of pairs"):
        laplacian_eigenvector_pe(edges.t(), 3, 1)
    with pytest.raises(TypeError, match="'edge_index' to be of integer type"):
        laplacian_eigenvector_pe(edges.float(), 3, 1)
    assert laplacian_eigenvector_pe(torch.zeros(2, 0, dtype=torch.long), 0, 2).shape == (0, 2)


# ---------------------------------------------------------------------------------------- random walk PE
def test_random_walk_pe_matches_pyg_transform() -> None:
    from torch_geometric.data import Data
    from torch_geometric.transforms import AddRandomWalkPE

    # directed edges, a self-loop and a node without out-edges, no duplicates
    edge_index = torch.tensor([[0, 0, 1, 2, 2, 3, 3, 4, 5, 1], [1, 2, 2, 0, 3, 3, 4, 0, 4, 5]])
    expected = AddRandomWalkPE(6)(Data(edge_index=edge_index, num_nodes=7)).random_walk_pe
    torch.testing.assert_close(random_walk_pe(edge_index, 7, 6), expected)
    undirected_edges = random_connected(10, extra=5, seed=9)
    expected = AddRandomWalkPE(5)(Data(edge_index=undirected_edges, num_nodes=10)).random_walk_pe
    torch.testing.assert_close(random_walk_pe(undirected_edges, 10, 5), expected)


def test_random_walk_pe_hand_values() -> None:
    # 6-cycle: a walk returns only after an even number of steps; after 2t steps with probability
    # (closed walks) / 2^2t: 2/4, 6/16, (20 + 2 wrap-arounds)/64
    pe = random_walk_pe(cycle(6), 6, 6, dtype=DTYPE)
    torch.testing.assert_close(pe, torch.tensor([[0, 1 / 2, 0, 6 / 16, 0, 22 / 64]], dtype=DTYPE).expand(6, 6))
    # path 0 - 1 - 2 plus an isolated node 3: the middle node returns after 2 steps surely
    pe = random_walk_pe(path(3), 4, 3, dtype=DTYPE)
    torch.testing.assert_close(
        pe, torch.tensor([[0, 0.5, 0], [0, 1, 0], [0, 0.5, 0], [0, 0, 0]], dtype=DTYPE)
    )


def test_random_walk_pe_batch_equals_per_graph() -> None:
    parts = [(cycle(5), 5), (path(4), 4), (random_connected(6, extra=3, seed=2), 6)]
    offsets = np.cumsum([0] + [size for _, size in parts])
    edge_index = torch.cat([edges + int(offsets[g]) for g, (edges, _) in enumerate(parts)], dim=1)
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([5, 4, 6]))
    batched = random_walk_pe(edge_index, 15, 7, batch=batch)
    singles = torch.cat([random_walk_pe(edges, size, 7) for edges, size in parts])
    torch.testing.assert_close(batched, singles)
    assert batched.dtype == torch.float32 and batched.shape == (15, 7)
    with pytest.raises(ValueError, match="connects graphs 0 and 1"):
        random_walk_pe(edge_index, 15, 7, batch=torch.repeat_interleave(torch.arange(3), torch.tensor([4, 5, 6])))
    with pytest.raises(ValueError, match="'walk_length' to be a positive int, got 0"):
        random_walk_pe(edge_index, 15, 0)


# ---------------------------------------------------------------------------------------- encoders
def identity_encoder(k: int) -> LaplacianPositionalEncoding:
    encoder = LaplacianPositionalEncoding(k, k)
    with torch.no_grad():
        encoder.linear.weight.copy_(torch.eye(k))
        encoder.linear.bias.zero_()
    return encoder


def test_laplacian_encoding_eval_is_deterministic(generator: torch.Generator) -> None:
    encoder = LaplacianPositionalEncoding(4, 6).eval()
    eigvecs = torch.randn(5, 4, generator=generator)
    batch = torch.tensor([0, 0, 1, 1, 1])
    out = encoder(eigvecs, batch)
    torch.testing.assert_close(out, encoder.linear(eigvecs))
    torch.testing.assert_close(encoder(eigvecs, batch), out)
    assert out.shape == (5, 6)


def test_laplacian_encoding_training_flips_signs_per_graph_and_column(generator: torch.Generator) -> None:
    k = 3
    encoder = identity_encoder(k).train()
    eigvecs = torch.rand(6, k, generator=generator) + 0.5                  # all positive
    batch = torch.tensor([0, 0, 1, 1, 2, 2])
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        out = encoder(eigvecs, batch).detach()
        ratio = out / eigvecs
        torch.testing.assert_close(ratio.abs(), torch.ones_like(ratio))
        signs = ratio.round()                                              # [N, k] of +-1
        assert torch.equal(signs[0], signs[1]) and torch.equal(signs[2], signs[3]) and torch.equal(signs[4], signs[5])
        # the documented draw from the global generator
        torch.manual_seed(seed)
        drawn = 2 * torch.randint(0, 2, (3, k)) - 1
        assert torch.equal(signs[::2], drawn.float())
        seen.add(tuple(signs[::2].flatten().tolist()))
    assert len(seen) > 10                                                  # graphs and columns vary independently
    # seedable: the same seed gives the same output
    torch.manual_seed(123)
    first = encoder(eigvecs, batch)
    torch.manual_seed(123)
    torch.testing.assert_close(encoder(eigvecs, batch), first)
    # without batch: one graph, one sign per column
    torch.manual_seed(0)
    single = encoder(eigvecs).detach() / eigvecs
    assert torch.equal(single.round(), single[:1].round().expand(6, k))


def test_laplacian_encoding_gradient_errors_and_repr() -> None:
    encoder = LaplacianPositionalEncoding(2, 4)
    eigvecs = torch.randn(3, 2, requires_grad=True)
    encoder(eigvecs).sum().backward()
    assert eigvecs.grad is not None and encoder.linear.weight.grad is not None
    with pytest.raises(ValueError, match=r"'eigvecs' of shape \[N, k\] = \[N, 2\], got \[3, 3\]"):
        encoder(torch.randn(3, 3))
    with pytest.raises(TypeError, match="floating point tensor"):
        encoder(torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"'batch' of shape \[N\] = \[3\]"):
        encoder(torch.randn(3, 2), torch.tensor([0, 1]))
    assert repr(encoder) == (
        "LaplacianPositionalEncoding(\n  k=2, dim=4\n"
        "  (linear): Linear(in_features=2, out_features=4, bias=True)\n)"
    )


def test_random_walk_encoding(generator: torch.Generator) -> None:
    encoder = RandomWalkPositionalEncoding(5, 8)
    encoding = torch.rand(4, 5, generator=generator)
    torch.testing.assert_close(encoder(encoding), encoder.linear(encoding))
    assert encoder(encoding).shape == (4, 8)
    with pytest.raises(ValueError, match=r"'encoding' of shape \[N, walk_length\] = \[N, 5\], got \[4, 6\]"):
        encoder(torch.rand(4, 6))
    assert "walk_length=5, dim=8" in repr(encoder)
    # end to end with the functional encoding
    out = encoder(random_walk_pe(cycle(4), 4, 5))
    assert out.shape == (4, 8) and torch.allclose(out, out[:1].expand(4, 8))  # all nodes of a cycle alike
