"""Every pattern builder against an explicit reference mask (numpy formulas / brute force)."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from graphattn.graph import AttentionGraph
from graphattn.patterns import (
    add_global_tokens,
    adjacency,
    axial,
    batch,
    bigbird,
    block,
    causal,
    difference,
    dilated2d,
    full,
    full_per_graph,
    global_tokens,
    grid2d,
    intersect,
    k_hop,
    local,
    longformer,
    pattern_image,
    per_head,
    random,
    strided,
    union,
)


def check(graph: AttentionGraph, reference: np.ndarray) -> None:
    """CSR invariants hold (builders skip validation) and the dense mask equals the reference."""
    assert isinstance(graph, AttentionGraph)
    graph.validate()
    rows = torch.repeat_interleave(torch.arange(graph.num_queries), graph.crow.diff())
    assert torch.equal(graph.row, rows)  # a cached row, if any, matches the CSR
    reference = np.asarray(reference, dtype=bool)
    assert (graph.num_queries, graph.num_keys) == reference.shape[-2:]
    np.testing.assert_array_equal(graph.to_dense().numpy(), reference)


def positions(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Query index column ``i`` and key index row ``j`` for broadcasting."""
    return np.arange(n)[:, None], np.arange(n)[None, :]


def random_mask(shape: tuple[int, ...], density: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator) < density


SIZES = [0, 1, 2, 7, 12]


# ---------------------------------------------------------------------------- sequences
@pytest.mark.parametrize("num_queries, num_keys", [(0, None), (1, None), (4, None), (3, 5), (5, 3), (0, 3), (3, 0)])
def test_full(num_queries, num_keys):
    expected_keys = num_queries if num_keys is None else num_keys
    graph = full(num_queries, num_keys)
    check(graph, np.ones((num_queries, expected_keys)))
    assert graph.is_full


@pytest.mark.parametrize("num_queries, num_keys", [(0, None), (1, None), (6, None), (3, 7), (7, 3)])
def test_causal(num_queries, num_keys):
    n_k = num_queries if num_keys is None else num_keys
    i, j = np.arange(num_queries)[:, None], np.arange(n_k)[None, :]
    graph = causal(num_queries, num_keys)
    check(graph, j <= i + (n_k - num_queries))
    if num_keys is None:
        assert graph.is_causal


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("window", [0, 1, 3, 20])
@pytest.mark.parametrize("is_causal", [False, True])
def test_local(n, window, is_causal):
    i, j = positions(n)
    reference = (i - j >= 0) & (i - j <= window) if is_causal else np.abs(i - j) <= window
    check(local(n, window, causal=is_causal), reference)


def test_local_large_is_banded():
    graph = local(4096, 64)
    degrees = graph.degrees
    assert int(degrees.max()) == 129 and int(degrees[0]) == 65
    assert graph.num_edges == 4096 * 129 - 2 * sum(range(1, 65))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("stride", [1, 2, 3, 5])
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("window", [None, 0, 4, 7])
def test_strided(n, stride, is_causal, window):
    i, j = positions(n)
    reference = (i - j) % stride == 0
    if is_causal:
        reference &= j <= i
    if window is not None:
        reference &= np.abs(i - j) <= window
    check(strided(n, stride, causal=is_causal, window=window), reference)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("size", [1, 2, 3, 20])
@pytest.mark.parametrize("is_causal", [False, True])
def test_block(n, size, is_causal):
    i, j = positions(n)
    reference = i // size == j // size
    if is_causal:
        reference &= j <= i
    check(block(n, size, causal=is_causal), reference)


@pytest.mark.parametrize(
    "n, chosen",
    [(0, []), (1, [0]), (5, []), (5, [0]), (5, [4, 1]), (6, [2, 2, 5]), (6, torch.tensor([3])), (4, 2),
     (4, np.int64(3)), (4, np.array([0, 3]))],
)
def test_global_tokens(n, chosen):
    i, j = positions(n)
    is_global = np.isin(np.arange(n), np.atleast_1d(np.asarray(chosen, dtype=np.int64)))
    check(global_tokens(n, chosen), is_global[i] | is_global[j])


@pytest.mark.parametrize("n", [0, 1, 6])
@pytest.mark.parametrize("window", [0, 2])
def test_longformer(n, window):
    i, j = positions(n)
    chosen = [0, n - 1] if n else []
    is_global = np.isin(np.arange(n), chosen)
    check(longformer(n, window, chosen), (np.abs(i - j) <= window) | is_global[i] | is_global[j])


def padded_with_global(mask: np.ndarray, num_global: int) -> np.ndarray:
    n_q, n_k = mask.shape
    out = np.ones((n_q + num_global, n_k + num_global), dtype=bool)
    out[:n_q, :n_k] = mask
    return out


@pytest.mark.parametrize("num_global", [0, 1, 3])
@pytest.mark.parametrize("base", ["local", "cross", "empty", "random"])
def test_add_global_tokens(num_global, base):
    graph = {
        "local": local(6, 1),
        "cross": AttentionGraph.from_dense(random_mask((4, 7), 0.4, seed=1)),
        "empty": full(0),
        "random": AttentionGraph.from_dense(random_mask((5, 5), 0.3, seed=2)),
    }[base]
    out = add_global_tokens(graph, num_global)
    check(out, padded_with_global(graph.to_dense().numpy(), num_global))


def test_add_global_tokens_keeps_head_mask():
    per_head_mask = random_mask((3, 5, 5), 0.4, seed=3)
    graph = AttentionGraph.from_dense(per_head_mask)
    out = add_global_tokens(graph, 2)
    expected = np.stack([padded_with_global(m.numpy(), 2) for m in per_head_mask])
    np.testing.assert_array_equal(out.to_dense().numpy(), expected)
    out.validate()


@pytest.mark.parametrize(
    "num_queries, k, num_keys",
    [(0, 0, None), (1, 1, None), (9, 0, None), (9, 3, None), (9, 9, None), (10, 9, None), (40, 25, None),
     (6, 4, 30), (30, 2, 5)],
)
def test_random_has_k_distinct_keys_per_row(num_queries, k, num_keys):
    n_k = num_queries if num_keys is None else num_keys
    graph = random(num_queries, k, seed=7, num_keys=num_keys)
    graph.validate()  # sorted, no duplicate key within a row, keys in range
    assert (graph.num_queries, graph.num_keys) == (num_queries, n_k)
    assert graph.degrees.tolist() == [k] * num_queries


@pytest.mark.parametrize("k, num_keys", [(3, 10), (9, 10)])  # Floyd sampling / top-k of random scores
def test_random_is_reproducible_and_uniform(k, num_keys):
    first = random(3000, k, seed=11, num_keys=num_keys)
    assert first.equals(random(3000, k, seed=11, num_keys=num_keys))
    assert not first.equals(random(3000, k, seed=12, num_keys=num_keys))
    # Every key is equally likely: expected count 3000 * k / num_keys per key.
    counts = torch.bincount(first.col, minlength=num_keys).double()
    expected = 3000 * k / num_keys
    assert float((counts - expected).abs().max()) < 0.1 * expected
    # Rows are not all the same set of keys.
    assert len({tuple(first.col[first.crow[r]: first.crow[r + 1]].tolist()) for r in range(50)}) > 5


def test_random_ignores_global_rng():
    torch.manual_seed(0)
    a = random(20, 3, seed=5)
    torch.manual_seed(1)
    assert a.equals(random(20, 3, seed=5))


@pytest.mark.parametrize("n, window, num_global, num_random", [(0, 1, 0, 0), (1, 0, 1, 1), (16, 2, 2, 3), (16, 0, 0, 16)])
def test_bigbird(n, window, num_global, num_random):
    graph = bigbird(n, window, num_global, num_random, seed=3)
    i, j = positions(n)
    is_global = np.arange(n) < num_global
    random_part = random(n, num_random, seed=3).to_dense().numpy()
    check(graph, (np.abs(i - j) <= window) | is_global[i] | is_global[j] | random_part)
    assert graph.equals(bigbird(n, window, num_global, num_random, seed=3))
    if n == 16 and 0 < num_random < n:
        assert not graph.equals(bigbird(n, window, num_global, num_random, seed=4))


# ---------------------------------------------------------------------------- images
def pixel_coordinates(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``dr[q, k]`` and ``dc[q, k]``: key pixel minus query pixel, nodes row-major."""
    rows, cols = np.divmod(np.arange(height * width), max(width, 1))
    return rows[None, :] - rows[:, None], cols[None, :] - cols[:, None]


def within(dr: np.ndarray, dc: np.ndarray, radius: float, metric: str) -> np.ndarray:
    if metric == "chebyshev":
        return np.maximum(np.abs(dr), np.abs(dc)) <= radius
    if metric == "manhattan":
        return np.abs(dr) + np.abs(dc) <= radius
    return np.sqrt(dr**2 + dc**2) <= radius + 1e-9


IMAGE_SIZES = [(0, 0), (0, 3), (1, 1), (3, 4), (5, 2), (4, 6)]


@pytest.mark.parametrize("height, width", IMAGE_SIZES)
@pytest.mark.parametrize("radius", [0, 1, 1.5, 2, 9])
@pytest.mark.parametrize("metric", ["chebyshev", "manhattan", "euclidean"])
def test_grid2d(height, width, radius, metric):
    dr, dc = pixel_coordinates(height, width)
    check(grid2d(height, width, radius, metric), within(dr, dc, radius, metric))


@pytest.mark.parametrize("height, width", [(3, 4), (5, 5)])
def test_grid2d_causal_is_raster_order(height, width):
    dr, dc = pixel_coordinates(height, width)
    i, j = positions(height * width)
    check(grid2d(height, width, 2, causal=True), within(dr, dc, 2, "chebyshev") & (j <= i))


@pytest.mark.parametrize("height, width", IMAGE_SIZES + [(7, 9)])
@pytest.mark.parametrize("radius, dilation", [(0, 2), (1, 1), (1, 2), (2, 3)])
@pytest.mark.parametrize("metric", ["chebyshev", "manhattan"])
def test_dilated2d(height, width, radius, dilation, metric):
    dr, dc = pixel_coordinates(height, width)
    on_lattice = (dr % dilation == 0) & (dc % dilation == 0)
    reference = on_lattice & within(dr // dilation, dc // dilation, radius, metric)
    check(dilated2d(height, width, radius, dilation, metric), reference)


def test_dilated2d_with_dilation_one_is_grid2d():
    assert dilated2d(4, 5, 1, 1).equals(grid2d(4, 5, 1))


@pytest.mark.parametrize("height, width", IMAGE_SIZES)
@pytest.mark.parametrize("axis", ["row", "column", "both"])
def test_axial(height, width, axis):
    dr, dc = pixel_coordinates(height, width)
    reference = {"row": dr == 0, "column": dc == 0, "both": (dr == 0) | (dc == 0)}[axis]
    check(axial(height, width, axis), reference)


# ---------------------------------------------------------------------------- graphs
EDGE_INDEX = torch.tensor(
    # source (key) row, target (query) row; with a duplicate (0->1 twice) and a self loop (2->2)
    [[0, 0, 1, 2, 2, 3, 0],
     [1, 2, 2, 2, 0, 1, 1]]
)


@pytest.mark.parametrize("self_loops", [True, False, "keep"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("num_nodes", [None, 6])
def test_adjacency_matches_pyg(self_loops, symmetric, num_nodes):
    pyg_utils = pytest.importorskip("torch_geometric.utils")
    n = 4 if num_nodes is None else num_nodes
    edge_index = pyg_utils.to_undirected(EDGE_INDEX, num_nodes=n) if symmetric else EDGE_INDEX
    if self_loops is True:
        edge_index, _ = pyg_utils.add_remaining_self_loops(edge_index, num_nodes=n)
    elif self_loops is False:
        edge_index, _ = pyg_utils.remove_self_loops(edge_index)
    # to_dense_adj: adj[source, target]; our mask is [query = target, key = source].
    reference = pyg_utils.to_dense_adj(edge_index, max_num_nodes=n)[0].t() > 0
    graph = adjacency(EDGE_INDEX, num_nodes, self_loops=self_loops, symmetric=symmetric)
    check(graph, reference.numpy())


def test_adjacency_explicit():
    i, j = positions(4)
    check(adjacency(EDGE_INDEX, self_loops=False), np.array(
        [[0, 0, 1, 0],
         [1, 0, 0, 1],
         [1, 1, 0, 0],
         [0, 0, 0, 0]], dtype=bool))
    keep = adjacency(EDGE_INDEX, self_loops="keep").to_dense().numpy()
    assert keep[2, 2] and not keep[0, 0]
    assert adjacency(EDGE_INDEX, self_loops="keep").num_edges == 6  # the duplicate merged
    assert np.all(np.diag(adjacency(EDGE_INDEX).to_dense().numpy()))


def test_adjacency_aligns_given_edge_values():
    graph = adjacency(EDGE_INDEX, self_loops=True)
    values = torch.arange(1.0, EDGE_INDEX.size(1) + 1)  # one value per given edge
    aligned = graph.align_edge_values(values)
    dense = torch.zeros(4, 4)
    dense[graph.row, graph.col] = aligned
    expected = torch.zeros(4, 4)
    for e, (source, target) in enumerate(EDGE_INDEX.t().tolist()):
        expected[target, source] += values[e]  # duplicates sum; added self loops stay 0
    assert torch.equal(dense, expected)
    assert adjacency(EDGE_INDEX, self_loops=False).input_edge_map is None  # a given edge dropped


def reachable_within(edge_index: torch.Tensor, n: int, k: int, symmetric: bool) -> np.ndarray:
    adjacency_matrix = np.zeros((n, n), dtype=np.int64)
    source, target = edge_index.numpy()
    adjacency_matrix[target, source] = 1  # [query, key]
    if symmetric:
        adjacency_matrix[source, target] = 1
    step = np.minimum(adjacency_matrix + np.eye(n, dtype=np.int64), 1)
    return np.linalg.matrix_power(step, k) > 0


@pytest.mark.parametrize("k", [0, 1, 2, 3, 6])
@pytest.mark.parametrize("self_loops", [True, False])
@pytest.mark.parametrize("symmetric", [False, True])
def test_k_hop_matches_matrix_power(k, self_loops, symmetric):
    generator = torch.Generator().manual_seed(k)
    n = 9
    edge_index = torch.randint(0, n, (2, 12), generator=generator)
    reference = reachable_within(edge_index, n, k, symmetric)
    if not self_loops:
        np.fill_diagonal(reference, False)
    check(k_hop(edge_index, n, k, self_loops=self_loops, symmetric=symmetric), reference)


def test_k_hop_one_equals_adjacency_and_path_graph():
    assert k_hop(EDGE_INDEX, 5, 1).equals(adjacency(EDGE_INDEX, 5))
    path = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    i, j = positions(5)
    check(k_hop(path, None, 2), (i - j >= 0) & (i - j <= 2))
    check(k_hop(torch.zeros(2, 0, dtype=torch.long), 3, 2), np.eye(3))


@pytest.mark.parametrize(
    "graph_ids", [[], [0], [0, 0, 0], [0, 0, 1, 1, 1, 2], [0, 2, 2], [1, 0, 1, 2, 0]]  # gaps, unsorted
)
def test_full_per_graph_from_batch(graph_ids):
    ids = np.array(graph_ids, dtype=int)
    graph = full_per_graph(torch.tensor(graph_ids, dtype=torch.long))
    check(graph, ids[:, None] == ids[None, :])
    if len(ids) and np.all(np.diff(ids) >= 0):
        expected_ptr = np.concatenate([[0], np.cumsum(np.bincount(ids))])
        assert graph.query_ptr.tolist() == graph.key_ptr.tolist() == expected_ptr.tolist()
    if len(ids) and np.any(np.diff(ids) < 0):
        assert graph.query_ptr is None


@pytest.mark.parametrize("ptr", [[0], [0, 3], [0, 2, 2, 5], [0, 0, 1]])
def test_full_per_graph_from_ptr(ptr):
    ids = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    graph = full_per_graph(ptr=torch.tensor(ptr))
    check(graph, ids[:, None] == ids[None, :])
    assert graph.query_ptr.tolist() == ptr


def test_full_per_graph_matches_batch_of_full():
    assert full_per_graph(ptr=torch.tensor([0, 2, 5])).equals(batch(full(2), full(3)))


# ---------------------------------------------------------------------------- combinators
def dense_graphs(seed: int, count: int = 3, shape=(5, 6)) -> list[AttentionGraph]:
    return [AttentionGraph.from_dense(random_mask(shape, 0.4, seed + s)) for s in range(count)]


@pytest.mark.parametrize("seed", [0, 1])
def test_union_and_intersect_are_logical_or_and(seed):
    graphs = dense_graphs(seed)
    masks = [g.to_dense().numpy() for g in graphs]
    check(union(*graphs), np.logical_or.reduce(masks))
    check(union(graphs), np.logical_or.reduce(masks))  # a list works too
    check(intersect(*graphs), np.logical_and.reduce(masks))
    check(difference(graphs[0], graphs[1], graphs[2]), masks[0] & ~masks[1] & ~masks[2])
    assert union(graphs[0]) is graphs[0]
    assert union(graphs).input_edge_map is None


def test_combinators_with_head_masks():
    # graph a: per-head (H = 2); graph b: all heads; graph c: per-head.
    a_mask, c_mask = random_mask((2, 6, 6), 0.5, seed=4), random_mask((2, 6, 6), 0.5, seed=5)
    b_mask = random_mask((6, 6), 0.5, seed=6)
    a, b, c = AttentionGraph.from_dense(a_mask), AttentionGraph.from_dense(b_mask), AttentionGraph.from_dense(c_mask)
    a_np, b_np, c_np = a_mask.numpy(), b_mask.numpy()[None], c_mask.numpy()

    def check_heads(graph, expected):
        graph.validate()
        assert graph.num_heads == 2
        np.testing.assert_array_equal(graph.to_dense().numpy(), expected)
        assert bool(graph.head_mask.any(1).all())  # no edge that no head uses

    check_heads(union(a, b, c), a_np | b_np | c_np)
    check_heads(intersect(a, b, c), a_np & b_np & c_np)
    check_heads(intersect(a, b), a_np & b_np)
    check_heads(difference(a, c), a_np & ~c_np)
    check_heads(difference(b, a), np.broadcast_to(b_np, (2, 6, 6)) & ~a_np)
    np.testing.assert_array_equal(difference(a, b).to_dense().numpy(), a_np & ~b_np)


def test_combinators_reject_mismatches():
    with pytest.raises(ValueError, match=r"same size .*\[4, 4\].*graph 1 is \[5, 5\]"):
        union(local(4, 1), local(5, 1))
    with pytest.raises(ValueError, match="same size"):
        intersect(full(3, 4), full(4, 3))
    with pytest.raises(ValueError, match="same size"):
        per_head([local(4, 1), local(6, 1)])
    with pytest.raises(ValueError, match=r"agree on the number of heads .*\[2, 3\]"):
        union(AttentionGraph.from_dense(random_mask((2, 4, 4), 0.5, 0)), AttentionGraph.from_dense(random_mask((3, 4, 4), 0.5, 0)))
    with pytest.raises(TypeError, match="Expected an AttentionGraph at position 1"):
        union(local(4, 1), np.ones((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="at least 1"):
        union()
    with pytest.raises(ValueError, match="at least 1"):
        batch([])
    with pytest.raises(ValueError, match="without a head mask"):
        per_head([per_head([local(4, 1), causal(4)]), causal(4)])


def test_per_head_head_mask():
    n = 10
    heads = [local(n, 1), strided(n, 3), causal(n), global_tokens(n, [0])]
    graph = per_head(heads)
    graph.validate()
    assert graph.num_heads == 4
    expected = np.stack([h.to_dense().numpy() for h in heads])
    np.testing.assert_array_equal(graph.to_dense().numpy(), expected)
    check(graph.head(0), heads[0].to_dense().numpy())
    assert graph.head(1).equals(heads[1])
    assert per_head(local(n, 1)).num_heads == 1


def test_batch_and_block_offsets():
    graphs = [causal(2), local(3, 1), full(1)]
    batched = batch(*graphs)
    assert batched.query_ptr.tolist() == [0, 2, 5, 6]
    reference = np.zeros((6, 6), dtype=bool)
    reference[0:2, 0:2] = np.tril(np.ones((2, 2)))
    reference[2:5, 2:5] = np.abs(np.arange(3)[:, None] - np.arange(3)[None, :]) <= 1
    reference[5, 5] = True
    check(batched, reference)
    assert batch(graphs).equals(batched)
    # Combining with a graph that stays inside the blocks keeps the offsets ...
    per_graph = full_per_graph(ptr=torch.tensor([0, 2, 5, 6]))
    inside = union(local(6, 0), per_graph)
    assert inside.query_ptr.tolist() == [0, 2, 5, 6]
    assert per_head([per_graph, local(6, 0)]).key_ptr.tolist() == [0, 2, 5, 6]
    # ... one that crosses them drops the offsets; intersect and difference keep them.
    assert union(local(6, 1), per_graph).query_ptr is None
    assert intersect(local(6, 1), per_graph).query_ptr.tolist() == [0, 2, 5, 6]
    assert difference(per_graph, local(6, 0)).query_ptr.tolist() == [0, 2, 5, 6]
    assert add_global_tokens(per_graph, 1).query_ptr is None


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: full(-1), ValueError, r"'num_queries' to be an int >= 0 \(got -1\)"),
        (lambda: full(3, -2), ValueError, "'num_keys'"),
        (lambda: full(2.0), TypeError, r"'num_queries' to be an int >= 0 \(got 2.0 of type float\)"),
        (lambda: causal("3"), TypeError, "'num_queries'"),
        (lambda: local(True, 1), TypeError, "'n'"),
        (lambda: local(5, -1), ValueError, "'window' to be an int >= 0.*window = 0 means"),
        (lambda: local(5, 1.5), TypeError, "'window'"),
        (lambda: strided(5, 0), ValueError, "'stride' to be an int >= 1"),
        (lambda: strided(5, 2, window=-1), ValueError, "'window'"),
        (lambda: block(5, 0), ValueError, "'size' to be an int >= 1"),
        (lambda: global_tokens(5, [5]), ValueError, r"in \[0, 4\].*found 5"),
        (lambda: global_tokens(5, [-1]), ValueError, "negative indices are not wrapped"),
        (lambda: global_tokens(5, [[0, 1]]), ValueError, "1-D"),
        (lambda: global_tokens(5, [0.5]), TypeError, "integer type"),
        (lambda: global_tokens(5, True), TypeError, "integer type"),
        (lambda: add_global_tokens(np.ones((2, 2)), 1), TypeError, "AttentionGraph"),
        (lambda: add_global_tokens(local(3, 1), -1), ValueError, "'num_global'"),
        (lambda: random(5, 6), ValueError, r"k <= num_keys = 5.*got k = 6.*min\(k, 5\)"),
        (lambda: random(5, 2, num_keys=1), ValueError, "k <= num_keys = 1"),
        (lambda: random(5, -1), ValueError, "'k'"),
        (lambda: random(5, 1, seed=-3), ValueError, "'seed'"),
        (lambda: bigbird(5, 1, 6, 1), ValueError, "num_global <= n = 5.*add_global_tokens"),
        (lambda: bigbird(5, 1, 1, 6), ValueError, "k <= num_keys"),
        (lambda: longformer(5, 1, [7]), ValueError, r"\[0, 4\]"),
        (lambda: full(3, device="nonsense"), TypeError, "'device'"),
        (lambda: grid2d(3, -1, 1), ValueError, "'width'"),
        (lambda: grid2d(3, 3, -1), ValueError, "'radius' >= 0"),
        (lambda: grid2d(3, 3, "1"), TypeError, "'radius'"),
        (lambda: grid2d(3, 3, 1, "cosine"), ValueError, "'metric' in"),
        (lambda: dilated2d(3, 3, 1, 0), ValueError, "'dilation' to be an int >= 1"),
        (lambda: axial(3, 3, "diagonal"), ValueError, "'axis' in"),
        (lambda: adjacency(torch.tensor([[0, 1, 2]])), ValueError, r"shape \[2, E\].*got shape \[1, 3\]"),
        (lambda: adjacency(torch.tensor([[0, 1], [1, 0], [2, 2]])), ValueError, r"edge_index.t\(\)"),
        (lambda: adjacency(torch.tensor([[0.0, 1.0], [1.0, 0.0]])), TypeError, "integer type"),
        (lambda: adjacency(torch.tensor([[0, 5], [1, 0]]), 3), ValueError, r"in \[0, 2\].*found 5.*larger num_nodes"),
        (lambda: adjacency(torch.tensor([[0, -1], [1, 0]])), ValueError, "found -1"),
        (lambda: adjacency(EDGE_INDEX, self_loops="yes"), ValueError, "True, False or 'keep'"),
        (lambda: adjacency(EDGE_INDEX, self_loops=1), ValueError, "True, False or 'keep'"),
        (lambda: k_hop(EDGE_INDEX, 4, -1), ValueError, "'k' to be an int >= 0"),
        (lambda: k_hop(EDGE_INDEX, 4, 1, self_loops="keep"), TypeError, "'self_loops' to be True or False"),
        (lambda: k_hop(EDGE_INDEX, 2, 1), ValueError, "larger num_nodes"),
        (lambda: full_per_graph(), ValueError, "exactly one of 'batch'.*neither"),
        (lambda: full_per_graph(torch.tensor([0]), ptr=torch.tensor([0, 1])), ValueError, "both"),
        (lambda: full_per_graph(torch.tensor([0, -1])), ValueError, "non-negative graph ids"),
        (lambda: full_per_graph(torch.zeros(2, 2, dtype=torch.long)), ValueError, r"shape \[N\]"),
        (lambda: full_per_graph(ptr=torch.tensor([1, 2])), ValueError, "starting at 0"),
        (lambda: full_per_graph(ptr=torch.tensor([0, 3, 2])), ValueError, "non-decreasing"),
        (lambda: full_per_graph(torch.tensor([0.0, 1.0])), TypeError, "integer type"),
    ],
)
def test_bad_input(build, error, match):
    with pytest.raises(error, match=match):
        build()


# ---------------------------------------------------------------------------- devices
def all_patterns(device: str) -> dict[str, AttentionGraph]:
    edge_index = EDGE_INDEX.to(device)
    return {
        "full": full(3, 5, device=device),
        "causal": causal(4, 6, device=device),
        "local": local(9, 2, device=device),
        "strided": strided(9, 3, window=6, device=device),
        "block": block(9, 4, causal=True, device=device),
        "global_tokens": global_tokens(9, [0, 4], device=device),
        "add_global_tokens": add_global_tokens(per_head([local(5, 1, device=device), causal(5, device=device)]), 2),
        "random": random(9, 3, seed=1, device=device),
        "bigbird": bigbird(9, 1, 1, 2, device=device),
        "longformer": longformer(9, 1, [3], device=device),
        "grid2d": grid2d(3, 4, 1.5, "euclidean", device=device),
        "dilated2d": dilated2d(5, 5, 1, 2, device=device),
        "axial": axial(3, 4, device=device),
        "adjacency": adjacency(edge_index, 5, symmetric=True),
        "k_hop": k_hop(edge_index, 5, 2),
        "full_per_graph": full_per_graph(torch.tensor([0, 1, 0, 1], device=device)),
        "intersect": intersect(local(6, 2, device=device), causal(6, device=device)),
        "difference": difference(local(6, 2, device=device), causal(6, device=device)),
    }


def test_device_argument_places_tensors():
    for name, graph in all_patterns("cpu").items():
        assert graph.crow.device.type == graph.col.device.type == "cpu", name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_patterns_on_cuda_equal_cpu():
    on_cpu, on_cuda = all_patterns("cpu"), all_patterns("cuda")
    for name in on_cpu:
        graph = on_cuda[name]
        assert graph.crow.is_cuda and graph.col.is_cuda and graph.row.is_cuda, name
        assert graph.equals(on_cpu[name]), name


# ---------------------------------------------------------------------------- pictures
def test_pattern_image_exact_and_binned():
    graph = local(12, 2)
    assert torch.equal(pattern_image(graph), graph.to_dense().float())
    assert torch.equal(pattern_image(full(7, 5), max_pixels=2), torch.ones(2, 2))
    binned = pattern_image(local(8, 0), max_pixels=4)  # 2x2 cells on the diagonal: 2 of 4 pairs
    assert torch.equal(binned, torch.eye(4) * 0.5)
    odd = pattern_image(full(5), max_pixels=2)  # bins of 3 and a border bin of 2
    assert torch.equal(odd, torch.ones(2, 2))
    heads = per_head([local(6, 0), causal(6)])
    assert torch.equal(pattern_image(heads, head=1), causal(6).to_dense().float())
    assert torch.equal(pattern_image(heads), causal(6).to_dense().float())  # union of heads
    with pytest.raises(ValueError, match=r"'head' in \[0, 1\]"):
        pattern_image(heads, head=2)
    with pytest.raises(ValueError, match="per-head pattern"):
        pattern_image(graph, head=0)


def test_plot_draws_the_mask(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from graphattn.patterns import plot, plot_patterns

    graph = longformer(10, 1, [0])
    ax = Figure().subplots()
    assert plot(graph, ax=ax, title="longformer") is ax
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), graph.to_dense().numpy())
    assert ax.get_title() == "longformer"

    path = plot_patterns(
        {"local": local(16, 2), "causal": causal(16), "bigbird": bigbird(16, 1, 1, 2)},
        tmp_path / "figures" / "patterns.png",
        columns=2,
        dpi=50,
    )
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = pytest.importorskip("matplotlib.image").imread(path)
    # 2 columns x 2 rows of 3.2 x 3.4 inch panels at 50 dpi.
    assert image.shape[:2] == (round(3.4 * 2 * 50), round(3.2 * 2 * 50))
    assert image[..., :3].std() > 0.05  # something was drawn
    with pytest.raises(ValueError, match="non-empty mapping"):
        plot_patterns({}, tmp_path / "empty.png")
    with pytest.raises(TypeError, match="pattern 'bad'"):
        plot_patterns({"bad": np.eye(3)}, tmp_path / "bad.png")
