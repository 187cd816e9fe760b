"""graphattn.attention: every backend against the dense float64 reference."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import graphattn
from graphattn import AttentionGraph, attention, explain, patterns
from graphattn.ops.csr import choose_kernel, tiled_plan

GRAD_BACKENDS = ["dense", "csr.tiled", "csr.sparse", "csr", "auto"]


def _edge_index_ring(n: int) -> torch.Tensor:
    i = torch.arange(n)
    return torch.stack([torch.cat([i, (i + 1) % n]), torch.cat([(i + 1) % n, i])])


def _pattern_families() -> dict[str, AttentionGraph]:
    n = 40
    ring = _edge_index_ring(n)
    return {
        "full": patterns.full(n),
        "causal": patterns.causal(n),
        "local": patterns.local(n, 3),
        "local_causal": patterns.local(n, 4, causal=True),
        "strided": patterns.strided(n, 5),
        "block": patterns.block(n, 8),
        "global+local": patterns.union(patterns.local(n, 2), patterns.global_tokens(n, [0, 17])),
        "longformer": patterns.longformer(n, 2, [0, 39]),
        "random": patterns.random(n, 5, seed=1),
        "bigbird": patterns.bigbird(n, window=2, num_global=2, num_random=3, seed=2),
        "grid2d": patterns.grid2d(5, 8, 1),
        "axial": patterns.axial(5, 8),
        "dilated2d": patterns.dilated2d(5, 8, 1, 2),
        "adjacency": patterns.adjacency(ring, n, self_loops=True),
        "k_hop": patterns.k_hop(ring, n, 2),
        "per_head": patterns.per_head([patterns.local(n, 1), patterns.strided(n, 4), patterns.causal(n)]),
        "bipartite": AttentionGraph.from_dense(torch.rand(n, 23, generator=torch.Generator().manual_seed(3)) < 0.3),
        "batch": patterns.batch([patterns.full(7), patterns.local(13, 2), patterns.causal(20)]),
    }


PATTERNS = _pattern_families()


def _inputs(graph: AttentionGraph, heads: int = 3, dim: int = 6, value_dim: int = 5, bias: bool = True, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    heads = graph.num_heads or heads

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()

    q = rand(graph.num_queries, heads, dim)
    k = rand(graph.num_keys, heads, dim)
    v = rand(graph.num_keys, heads, value_dim)
    b = rand(graph.num_edges, heads) if bias else None
    return q, k, v, b


def _values_and_grads(q, k, v, b, graph, backend, **kwargs):
    out = attention(q, k, v, graph, bias=b, backend=backend, **kwargs)
    weights = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).view_as(out)
    inputs = [t for t in (q, k, v, b) if t is not None]
    grads = torch.autograd.grad((out * weights).sum(), inputs, allow_unused=True, materialize_grads=True)
    return out, grads


@pytest.mark.parametrize("backend", GRAD_BACKENDS)
@pytest.mark.parametrize("name", list(PATTERNS))
def test_backend_matches_reference_values_and_gradients(name, backend):
    graph = PATTERNS[name]
    q, k, v, b = _inputs(graph, bias=name not in ("full",))
    out_ref, grads_ref = _values_and_grads(q, k, v, b, graph, "reference")
    out, grads = _values_and_grads(q, k, v, b, graph, backend)
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("backend", ["csr.tiled", "csr.sparse", "reference"])
@pytest.mark.parametrize("name", ["local", "per_head", "bipartite", "random"])
def test_returned_weights_match_reference_and_sum_to_one(name, backend):
    graph = PATTERNS[name]
    q, k, v, b = _inputs(graph)
    ref = attention(q, k, v, graph, bias=b, backend="reference", return_weights=True)
    res = attention(q, k, v, graph, bias=b, backend=backend, return_weights=True)
    assert res.weights.shape == (graph.num_edges, q.size(1))
    torch.testing.assert_close(res.weights, ref.weights, rtol=1e-10, atol=1e-12)
    # weights of each (query, head) sum to 1 over the edges that head uses
    used = res.weights if graph.head_mask is None else res.weights * graph.head_mask
    sums = torch.zeros(graph.num_queries, q.size(1), dtype=used.dtype).index_add_(0, graph.row, used)
    has_edges = torch.zeros_like(sums).index_add_(
        0, graph.row, torch.ones_like(used) if graph.head_mask is None else graph.head_mask.double()
    ) > 0
    torch.testing.assert_close(sums[has_edges], torch.ones_like(sums[has_edges]))


@pytest.mark.parametrize("name", ["local", "per_head", "bipartite", "global+local", "batch", "grid2d"])
def test_flex_forward_matches_reference_on_cpu(name):
    pytest.importorskip("torch.nn.attention.flex_attention")
    graph = PATTERNS[name]
    q, k, v, b = _inputs(graph, dim=16)
    with torch.no_grad():
        ref = attention(q, k, v, graph, bias=b, backend="reference")
        out = attention(q, k, v, graph, bias=b, backend="flex")
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)


def test_flex_refuses_cpu_backward_with_clear_error():
    graph = PATTERNS["local"]
    q, k, v, _ = _inputs(graph, dim=16)
    with pytest.raises(ValueError, match="no CPU backward"):
        attention(q, k, v, graph, backend="flex")


@pytest.mark.parametrize("backend", ["csr.tiled", "csr.sparse"])
def test_gradcheck_tiny_graph_with_empty_row_and_bias(backend):
    mask = torch.tensor(
        [[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1]], dtype=torch.bool
    )
    graph = AttentionGraph.from_dense(mask)
    q, k, v, b = _inputs(graph, heads=2, dim=3, value_dim=2)

    def fn(q, k, v, b):
        return attention(q, k, v, graph, bias=b, backend=backend)

    assert torch.autograd.gradcheck(fn, (q, k, v, b))


@pytest.mark.parametrize("backend", ["csr.tiled", "csr.sparse", "dense"])
def test_gradcheck_per_head_pattern(backend):
    graph = AttentionGraph.from_dense(torch.rand(2, 5, 6, generator=torch.Generator().manual_seed(5)) < 0.5)
    q, k, v, b = _inputs(graph, dim=3, value_dim=2)
    assert torch.autograd.gradcheck(lambda *x: attention(*x[:3], graph, bias=x[3], backend=backend), (q, k, v, b))


@pytest.mark.parametrize("backend", ["csr.tiled", "csr.sparse"])
def test_dropout_gradients_are_consistent_with_forward(backend):
    graph = PATTERNS["local"]
    q, k, v, _ = _inputs(graph, heads=2, dim=3, value_dim=2)
    q, k, v = (t[:12].detach().requires_grad_() for t in (q, k, v))
    graph = patterns.local(12, 2)

    def fn(q, k, v):
        torch.manual_seed(1234)  # same dropout mask at every evaluation
        return attention(q, k, v, graph, dropout=0.4, backend=backend)

    assert torch.autograd.gradcheck(fn, (q, k, v))
    with torch.no_grad():
        plain = attention(q, k, v, graph, backend=backend)
        dropped = fn(q, k, v)
        assert not torch.allclose(plain, dropped)
        mean = torch.stack([attention(q, k, v, graph, dropout=0.4, backend=backend) for _ in range(400)]).mean(0)
    assert (mean - plain).abs().max() < 0.25 * plain.abs().max()


@settings(max_examples=25, deadline=None)
@given(
    num_queries=st.integers(1, 12),
    num_keys=st.integers(1, 12),
    density=st.floats(0.0, 1.0),
    heads=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_random_graphs_all_kernels_match_reference(num_queries, num_keys, density, heads, seed):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(num_queries, num_keys, generator=gen) < density
    graph = AttentionGraph.from_dense(mask)
    q, k, v, b = _inputs(graph, heads=heads, dim=4, value_dim=3, seed=seed)
    out_ref, grads_ref = _values_and_grads(q, k, v, b, graph, "reference")
    for backend in ("csr.tiled", "csr.sparse", "dense"):
        out, grads = _values_and_grads(q, k, v, b, graph, backend)
        torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-10)
        for got, want in zip(grads, grads_ref):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("backend", ["reference", "dense", "csr.tiled", "csr.sparse", "auto"])
def test_seed_document_hand_computed_example(backend):
    # seed 004: X = three 5-d vectors, softmax(X X^T) X with scale 1
    x = torch.tensor([[1, 2, 1, 2, 1], [1, 1, 1, 2, 1], [3, 2, 1, 1, 1]], dtype=torch.float64)
    xh = x.unsqueeze(1)  # [3, 1, 5]
    out = attention(xh, xh, xh, patterns.full(3), scale=1.0, backend=backend)[:, 0]
    expected = torch.tensor(
        [[1.94, 1.94, 1, 1.53, 1], [1.84, 1.84, 1, 1.58, 1], [2.98, 2, 1, 1.01, 1]], dtype=torch.float64
    )
    assert torch.equal(torch.round(out, decimals=2), expected)


@pytest.mark.parametrize("backend", ["reference", "dense", "csr.tiled", "csr.sparse", "auto"])
def test_empty_rows_give_zeros_and_finite_gradients(backend):
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[0, :3] = True
    mask[4, 2:] = True
    graph = AttentionGraph.from_dense(mask)
    q, k, v, b = _inputs(graph)
    out, grads = _values_and_grads(q, k, v, b, graph, backend)
    assert torch.all(out[[1, 2, 3, 5]] == 0)
    assert all(torch.isfinite(g).all() for g in grads)
    assert torch.all(grads[0][[1, 2, 3, 5]] == 0)


@pytest.mark.parametrize("backend", ["reference", "dense", "csr.tiled", "csr.sparse", "auto"])
def test_graph_without_edges(backend):
    graph = AttentionGraph.from_edge_index(torch.empty(2, 0, dtype=torch.long), 4, 3)
    q, k, v, _ = _inputs(graph, bias=False)
    out = attention(q, k, v, graph, backend=backend)
    assert out.shape == (4, 3, 5) and torch.all(out == 0)
    out.sum().backward()
    assert torch.all(q.grad == 0) and torch.all(v.grad == 0)


def test_full_pattern_equals_sdpa_and_auto_runs_sdpa():
    graph = patterns.full(9, 11)
    q, k, v, _ = _inputs(graph, bias=False)
    expected = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)).transpose(0, 1)
    for backend in ("auto", "csr", "reference"):
        torch.testing.assert_close(attention(q, k, v, graph, backend=backend), expected)
    assert explain(q, k, v, graph).backend == "dense"


def test_causal_pattern_equals_sdpa_is_causal():
    graph = patterns.causal(10)
    q, k, v, _ = _inputs(graph, bias=False)
    expected = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True
    ).transpose(0, 1)
    for backend in ("auto", "csr.tiled", "csr.sparse"):
        torch.testing.assert_close(attention(q, k, v, graph, backend=backend), expected)


def test_replicated_batch_runs_dense_per_sequence_and_matches_loop():
    pattern = patterns.local(16, 3)
    graph = patterns.batch([pattern] * 4)
    assert graph.replicated_from is pattern
    q, k, v, _ = _inputs(graph, bias=False)
    for backend in ("dense", "csr", "auto"):
        out = attention(q, k, v, graph, backend=backend)
        for i in range(4):
            s = slice(16 * i, 16 * (i + 1))
            torch.testing.assert_close(out[s], attention(q[s], k[s], v[s], pattern, backend="reference"))


@pytest.mark.parametrize("backend", ["csr.tiled", "csr.sparse", "dense"])
def test_batched_equals_per_graph_loop(backend):
    parts = [patterns.local(9, 2), patterns.random(14, 3, seed=0), patterns.full(5, 8)]
    graph = patterns.batch(parts)
    q, k, v, b = _inputs(graph)
    out = attention(q, k, v, graph, bias=b, backend=backend)
    edge_start = 0
    for part, qs, ks in zip(parts, graph.query_ptr.tolist()[:-1], graph.key_ptr.tolist()[:-1]):
        bs = b[edge_start : edge_start + part.num_edges]
        edge_start += part.num_edges
        want = attention(
            q[qs : qs + part.num_queries], k[ks : ks + part.num_keys], v[ks : ks + part.num_keys], part,
            bias=bs, backend="reference",
        )
        torch.testing.assert_close(out[qs : qs + part.num_queries], want)


@pytest.mark.parametrize("backend", ["csr.tiled", "csr.sparse", "dense"])
def test_node_permutation_permutes_output(backend):
    graph = PATTERNS["k_hop"]
    q, k, v, _ = _inputs(graph, bias=False)
    perm = torch.randperm(graph.num_queries, generator=torch.Generator().manual_seed(7))
    inverse = torch.argsort(perm)
    # node perm[i] of the old graph becomes node i of the new one
    edge_index = inverse[graph.edge_index]
    permuted = AttentionGraph.from_edge_index(edge_index, graph.num_queries, graph.num_keys)
    out = attention(q, k, v, graph, backend=backend)
    out_perm = attention(q[perm], k[perm], v[perm], permuted, backend=backend)
    torch.testing.assert_close(out_perm, out[perm])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["csr.tiled", "csr.sparse", "dense"])
def test_half_precision_close_to_float64_golden(dtype, backend):
    graph = patterns.union(patterns.local(64, 4), patterns.global_tokens(64, [0]))
    q, k, v, b = _inputs(graph, heads=2, dim=16, value_dim=16)
    with torch.no_grad():
        golden = attention(q, k, v, graph, bias=b, backend="reference")
        # large scores: softmax statistics must not overflow in half precision
        q16, k16, v16, b16 = (t.to(dtype) for t in (q * 8, k, v, b))
        golden_big = attention(q * 8, k, v, graph, bias=b, backend="reference")
        out = attention(q16, k16, v16, graph, bias=b16, backend=backend)
    assert out.dtype == dtype and torch.isfinite(out).all()
    eps = torch.finfo(dtype).eps
    error = (out.double() - golden_big).norm() / golden_big.norm()
    assert error < 8 * eps, f"relative error {error} vs eps {eps}"
    assert golden.shape == out.shape


def test_saved_tensors_are_per_edge_never_per_edge_feature_or_dense():
    n, heads, dim = 512, 2, 32
    graph = patterns.local(n, 8)
    q, k, v, _ = _inputs(graph, heads=heads, dim=dim, value_dim=dim, bias=False)
    for backend in ("csr.tiled", "csr.sparse"):
        sizes = []

        def pack(t):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = attention(q, k, v, graph, backend=backend)
        largest_input = max(q.numel(), k.numel(), v.numel())
        per_edge_limit = 2 * tiled_plan(graph, 64).num_cells * heads  # padded [E, H]
        assert sizes, "no tensors saved"
        assert max(sizes) <= max(largest_input, per_edge_limit), (backend, sizes)
        assert max(sizes) < graph.num_edges * heads * dim  # never [E, H, D]
        assert max(sizes) < n * n * heads  # never dense
        out.sum().backward()


def test_auto_picks_tiled_for_local_and_sparse_for_scattered_graphs():
    q = torch.randn(2048, 2, 8)
    local = patterns.local(2048, 32)
    scattered = patterns.random(2048, 8, seed=0)
    assert explain(q, q, q, local).backend == "csr.tiled"
    assert explain(q, q, q, scattered).backend == "csr.sparse"
    assert choose_kernel(scattered, 2)[0] == "sparse"
    assert "tiles" in explain(q, q, q, local).reason


def test_default_scale_is_inverse_sqrt_head_dim():
    graph = patterns.local(10, 2)
    q, k, v, _ = _inputs(graph, bias=False, dim=9)
    torch.testing.assert_close(
        attention(q, k, v, graph), attention(q, k, v, graph, scale=1 / math.sqrt(9), backend="reference")
    )


def test_graph_on_other_device_is_moved_and_package_exports():
    assert graphattn.attention is attention
    assert "attention" in graphattn.__all__ and "AttentionGraph" in graphattn.__all__


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda q, k, v, g: attention(q[0], k, v, g), ValueError, r"\[N, H, D\]"),
        (lambda q, k, v, g: attention(q, k[:, :2], v, g), ValueError, "number of heads"),
        (lambda q, k, v, g: attention(q, k[..., :3], v, g), ValueError, "head dim"),
        (lambda q, k, v, g: attention(q[:5], k, v, g), ValueError, "does not match"),
        (lambda q, k, v, g: attention(q, k, v[:4], g), ValueError, "same number of nodes"),
        (lambda q, k, v, g: attention(q, k, v, g.edge_index), TypeError, "AttentionGraph"),
        (lambda q, k, v, g: attention(q.float(), k, v, g), TypeError, "one dtype"),
        (lambda q, k, v, g: attention(q.long(), k.long(), v.long(), g), TypeError, "floating point"),
        (lambda q, k, v, g: attention(q, k, v, g, bias=torch.zeros(3, 3, dtype=q.dtype)), ValueError, r"\[E, H\]"),
        (lambda q, k, v, g: attention(q, k, v, g, backend="fast"), ValueError, "Unknown backend"),
        (lambda q, k, v, g: attention(q, k, v, g, dropout=1.0), ValueError, "dropout"),
        (lambda q, k, v, g: attention(q, k, v, patterns.per_head([g, g])), ValueError, "Per-head pattern has 2"),
        (lambda q, k, v, g: attention(q, k, v, g, return_weights=True, backend="flex"), ValueError, "weights"),
    ],
)
def test_bad_inputs_raise_clear_errors(make, error, match):
    graph = patterns.local(8, 1)
    q, k, v, _ = _inputs(graph, bias=False)
    with torch.no_grad():
        with pytest.raises(error, match=match):
            make(q, k, v, graph)


def _equal_block_batch(per_head: bool) -> AttentionGraph:
    gen = torch.Generator().manual_seed(11)
    shape = (2, 6, 5) if per_head else (6, 5)
    parts = [AttentionGraph.from_dense(torch.rand(*shape, generator=gen) < 0.6) for _ in range(3)]
    parts[1] = AttentionGraph.from_dense(torch.zeros(*shape, dtype=torch.bool))  # a block without edges
    return patterns.batch(parts)


@pytest.mark.parametrize("per_head", [False, True])
def test_dense_runs_equal_size_blocks_as_batched_sdpa(per_head):
    graph = _equal_block_batch(per_head)
    assert graph.uniform_blocks == (3, 6, 5) and graph.replicated_from is None
    q, k, v, b = _inputs(graph, heads=2)
    out_ref, grads_ref = _values_and_grads(q, k, v, b, graph, "reference")
    out, grads = _values_and_grads(q, k, v, b, graph, "dense")
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    # the dense layout is per block, never one [B*L, B*S] mask
    allowed = graph.cached(("dense_block_layout", 2), lambda: None)[0]
    assert allowed.shape[0] == 3 and allowed.shape[-2:] == (6, 5)


def test_auto_uses_dense_for_padded_full_batches_and_csr_for_sparse_blocks():
    keep = torch.ones(4, 256, dtype=torch.bool)
    keep[1, 200:] = False  # padding of sequence 1
    mask = keep[:, None, :].expand(4, 256, 256)
    graph = patterns.batch([AttentionGraph.from_dense(m) for m in mask])
    q = torch.randn(graph.num_queries, 2, 8)
    choice = explain(q, q, q, graph)
    assert choice.backend == "dense" and "cheaper than any csr kernel" in choice.reason
    # decided from a lower bound, without the pass over the edges that tile statistics need
    assert not any(isinstance(key, tuple) and key[0] == "tile_stats" for key in graph._cache)
    sparse_blocks = patterns.batch([patterns.local(1024, 2)] + [patterns.local(1024, 3)] * 3)
    q = torch.randn(sparse_blocks.num_queries, 2, 8)
    assert explain(q, q, q, sparse_blocks).backend.startswith("csr")


@pytest.mark.parametrize("per_head", [False, True])
def test_dense_runs_unequal_graphs_padded_to_the_largest(per_head):
    gen = torch.Generator().manual_seed(12)
    sizes = [(4, 3), (7, 7), (2, 5), (6, 1)]
    parts = [
        AttentionGraph.from_dense(torch.rand(*((2,) if per_head else ()), nq, nk, generator=gen) < 0.7)
        for nq, nk in sizes
    ]
    graph = patterns.batch(parts)
    assert graph.uniform_blocks is None
    q, k, v, b = _inputs(graph, heads=2)
    out_ref, grads_ref = _values_and_grads(q, k, v, b, graph, "reference")
    out, grads = _values_and_grads(q, k, v, b, graph, "dense")
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_auto_runs_molecule_like_full_per_graph_batches_dense():
    sizes = torch.randint(15, 33, (128,), generator=torch.Generator().manual_seed(0))  # 128 molecules
    graph = patterns.full_per_graph(torch.repeat_interleave(torch.arange(128), sizes))
    q = torch.randn(graph.num_queries, 2, 8)
    choice = explain(q, q, q, graph)
    assert choice.backend == "dense" and "padded" in choice.reason


@pytest.mark.parametrize("tile", [16, 32, 64, 128])
@pytest.mark.parametrize(
    "name, make",
    [
        ("band", lambda: patterns.local(256, 20)),
        ("band_causal", lambda: patterns.local(256, 33, causal=True)),
        ("band+global", lambda: patterns.longformer(256, 9, [0, 100])),
        ("ragged", lambda: patterns.local(250, 7)),
        ("dilated", lambda: patterns.strided(256, 3, window=4)),
    ],
)
def test_tiled_kernel_at_every_tile_size_with_strided_inputs(name, make, tile):
    graph = make()
    graph._cache["tile_size"] = tile  # force the tile size the cost model would pick
    base = torch.randn(3, graph.num_queries, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(tile))
    q = base.transpose(0, 1).detach().requires_grad_()  # non-contiguous [N, H, D]
    k, v, b = _inputs(graph, heads=3, dim=8, value_dim=4)[1:]
    for bias in (b, None):  # with bias: explicit softmax; without: the fused softmax path
        out_ref, grads_ref = _values_and_grads(q, k, v, bias, graph, "reference")
        out, grads = _values_and_grads(q, k, v, bias, graph, "csr.tiled")
        torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-10)
        for got, want in zip(grads, grads_ref):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    plan = tiled_plan(graph, tile, torch.float64)
    if name.startswith("band") and tile <= 64:
        assert any(g.key_run is not None for g in plan.groups)  # the view path ran


def test_auto_falls_back_to_csr_with_a_warning_when_flex_fails(monkeypatch):
    import graphattn.ops as ops

    graph = patterns.local(64, 4)
    q, k, v, _ = _inputs(graph, bias=False)
    monkeypatch.setattr(ops, "_FLEX_FAILURES", [])
    monkeypatch.setattr(ops, "_choose", lambda *a, **kw: ops.BackendChoice("flex", "test") if a[-1] == "auto" else ops.BackendChoice("csr.tiled", "fallback"))

    def broken(*args, **kwargs):
        raise RuntimeError("no triton")

    import graphattn.ops.flex as flex

    monkeypatch.setattr(flex, "flex_attention_graph", broken)
    with pytest.warns(RuntimeWarning, match="FlexAttention failed.*no triton"):
        out = attention(q, k, v, graph)
    torch.testing.assert_close(out, attention(q, k, v, graph, backend="reference"))
    assert ops._FLEX_FAILURES and "no triton" in ops._FLEX_FAILURES[0]


def test_auto_sends_small_molecule_bond_graphs_to_the_sparse_kernel():
    """A batch of 32 molecule-sized graphs (~800 atoms, bonds + self loops): the tiled kernel's
    per-tile overhead loses to the sparse kernel there (measured 6-8 ms vs 2-3 ms forward+backward)."""
    generator = torch.Generator().manual_seed(0)
    edges, offset = [], 0
    for _ in range(32):  # random trees with ring closures, 15-35 atoms (as in experiments/calibrate_csr.py)
        n = int(torch.randint(15, 36, (1,), generator=generator))
        tree = [(int(torch.randint(0, i, (1,), generator=generator)), i) for i in range(1, n)]
        rings = [(i, i + 5) for i in range(0, n - 5, 10)]
        edges.append(torch.tensor(tree + rings).t() + offset)  # one edge_index over the batch, as a
        offset += n  # PyG Batch gives it (no block metadata)
    bonds = patterns.adjacency(torch.cat(edges, 1), offset, symmetric=True)
    q = torch.randn(bonds.num_queries, 4, 16)
    assert explain(q, q, q, bonds).backend == "csr.sparse"
