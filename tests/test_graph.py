"""Tests for graphattn.graph.AttentionGraph: constructors, conversions, transpose, batching, errors.

Every structural result is compared against a dense boolean mask built by plain indexing
(``mask[query, key] = True``), the layout the rest of the library uses as its reference.
"""
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphattn.graph import AttentionGraph, iter_graph_slices


def dense_from_edges(edge_index, num_queries: int, num_keys: int) -> torch.Tensor:
    """Reference mask ``[Nq, Nk]``: True at ``[edge_index[1], edge_index[0]]`` (PyG direction)."""
    edge_index = torch.as_tensor(edge_index, dtype=torch.long).reshape(2, -1)
    mask = torch.zeros(num_queries, num_keys, dtype=torch.bool)
    mask[edge_index[1], edge_index[0]] = True
    return mask


def assert_csr_invariants(graph: AttentionGraph) -> None:
    """crow/col consistent, sorted by (query, key), no duplicates, in range."""
    assert graph.crow.dtype == torch.long and graph.col.dtype == torch.long
    assert graph.crow.shape == (graph.num_queries + 1,)
    assert int(graph.crow[0]) == 0 and int(graph.crow[-1]) == graph.num_edges
    graph.validate()


# ---------------------------------------------------------------------------- from_edge_index
def test_from_edge_index_pyg_direction_row0_keys_row1_queries():
    # one edge 0 -> 2: node 2 (query) attends node 0 (key)
    graph = AttentionGraph.from_edge_index(torch.tensor([[0], [2]]))
    dense = graph.to_dense()
    assert dense.shape == (3, 3)
    assert bool(dense[2, 0]) and not bool(dense[0, 2])
    assert int(dense.sum()) == 1
    assert graph.row.tolist() == [2] and graph.col.tolist() == [0]
    assert graph.edge_index.tolist() == [[0], [2]]


def test_from_edge_index_docstring_example():
    graph = AttentionGraph.from_edge_index(torch.tensor([[0, 1, 1], [1, 0, 1]]))
    assert repr(graph) == "AttentionGraph(num_queries=2, num_keys=2, num_edges=3, density=0.750)"
    assert graph.to_dense().tolist() == [[False, True], [True, True]]


def test_from_edge_index_sorts_unsorted_input():
    # (key, query) pairs: (2, 1), (0, 2), (1, 0), (0, 0)
    edge_index = torch.tensor([[2, 0, 1, 0], [1, 2, 0, 0]])
    graph = AttentionGraph.from_edge_index(edge_index)
    assert graph.crow.tolist() == [0, 2, 3, 4]
    assert graph.col.tolist() == [0, 1, 2, 0]
    assert graph.row.tolist() == [0, 0, 1, 2]
    assert torch.equal(graph.to_dense(), dense_from_edges(edge_index, 3, 3))
    # input edge i became CSR edge input_edge_map[i]
    assert graph.input_edge_map.tolist() == [2, 3, 1, 0]
    assert_csr_invariants(graph)


def test_from_edge_index_merges_duplicates():
    edge_index = torch.tensor([[1, 1, 0, 1, 2], [0, 0, 0, 0, 2]])
    graph = AttentionGraph.from_edge_index(edge_index)
    assert graph.num_edges == 3
    assert graph.crow.tolist() == [0, 2, 2, 3]
    assert graph.col.tolist() == [0, 1, 2]
    assert graph.input_edge_map.tolist() == [1, 1, 0, 1, 2]
    assert torch.equal(graph.to_dense(), dense_from_edges(edge_index, 3, 3))


def test_align_edge_values_reductions_hand_computed():
    edge_index = torch.tensor([[1, 1, 0, 1], [0, 0, 0, 0]])  # CSR edges: (q0, k0), (q0, k1)
    graph = AttentionGraph.from_edge_index(edge_index, 1, 2)
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert graph.align_edge_values(values).tolist() == [3.0, 7.0]
    assert graph.align_edge_values(values, reduce="sum").tolist() == [3.0, 7.0]
    assert torch.allclose(graph.align_edge_values(values, reduce="mean"), torch.tensor([3.0, 7.0 / 3]))
    assert graph.align_edge_values(values, reduce="amax").tolist() == [3.0, 4.0]
    assert graph.align_edge_values(values, reduce="amin").tolist() == [3.0, 1.0]


@pytest.mark.parametrize("reduce", ["sum", "mean", "amax", "amin"])
def test_align_edge_values_matches_loop_reference(reduce, generator):
    num_nodes, num_input_edges, heads = 6, 40, 3
    edge_index = torch.randint(0, num_nodes, (2, num_input_edges), generator=generator)
    values = torch.randn(num_input_edges, heads, generator=generator, dtype=torch.float64)
    graph = AttentionGraph.from_edge_index(edge_index, num_nodes, num_nodes)
    aligned = graph.align_edge_values(values, reduce=reduce)
    assert aligned.shape == (graph.num_edges, heads)
    combine = {
        "sum": lambda v: v.sum(0),
        "mean": lambda v: v.mean(0),
        "amax": lambda v: v.amax(0),
        "amin": lambda v: v.amin(0),
    }[reduce]
    for e, (query, key) in enumerate(zip(graph.row.tolist(), graph.col.tolist())):
        same = (edge_index[1] == query) & (edge_index[0] == key)
        assert same.any()
        assert torch.allclose(aligned[e], combine(values[same]))


def test_align_edge_values_with_unique_edges_is_a_permutation(generator):
    perm = torch.randperm(9, generator=generator)
    keys, queries = torch.arange(9) % 3, torch.arange(9) // 3
    edge_index = torch.stack([keys[perm], queries[perm]])
    graph = AttentionGraph.from_edge_index(edge_index)
    values = torch.arange(9.0)  # value i belongs to input edge i
    aligned = graph.align_edge_values(values)
    # the CSR edge of (query, key) must carry the value of the input edge that was (query, key)
    expected = torch.empty(9)
    expected[queries[perm] * 3 + keys[perm]] = values
    assert torch.equal(aligned, expected)


def test_size_defaults_square_from_max_index():
    graph = AttentionGraph.from_edge_index(torch.tensor([[0], [3]]))
    assert (graph.num_queries, graph.num_keys) == (4, 4)
    graph = AttentionGraph.from_edge_index(torch.tensor([[4], [0]]))
    assert (graph.num_queries, graph.num_keys) == (5, 5)
    assert graph.crow.tolist() == [0, 1, 1, 1, 1, 1]


def test_size_defaults_one_given_copies_the_other():
    edge_index = torch.tensor([[0, 1], [1, 0]])
    graph = AttentionGraph.from_edge_index(edge_index, num_queries=6)
    assert (graph.num_queries, graph.num_keys) == (6, 6)
    graph = AttentionGraph.from_edge_index(edge_index, num_keys=7)
    assert (graph.num_queries, graph.num_keys) == (7, 7)


def test_bipartite_sizes():
    edge_index = torch.tensor([[4, 0, 2], [0, 1, 1]])  # keys up to 4, queries up to 1
    graph = AttentionGraph.from_edge_index(edge_index, num_queries=2, num_keys=5)
    assert (graph.num_queries, graph.num_keys) == (2, 5)
    assert torch.equal(graph.to_dense(), dense_from_edges(edge_index, 2, 5))
    assert graph.density == pytest.approx(3 / 10)
    assert_csr_invariants(graph)


@pytest.mark.parametrize(
    "edge_index", [torch.empty(2, 0, dtype=torch.long), torch.empty(2, 0, dtype=torch.int32), [[], []]]
)
def test_empty_edge_set(edge_index):
    graph = AttentionGraph.from_edge_index(edge_index)
    assert (graph.num_queries, graph.num_keys, graph.num_edges) == (0, 0, 0)
    assert graph.crow.tolist() == [0]
    assert graph.density == 0.0
    graph = AttentionGraph.from_edge_index(edge_index, num_queries=3, num_keys=2)
    assert graph.crow.tolist() == [0, 0, 0, 0]
    assert graph.to_dense().shape == (3, 2) and not graph.to_dense().any()
    assert graph.edge_index.shape == (2, 0)
    assert graph.degrees.tolist() == [0, 0, 0]
    assert graph.transpose().to_dense().shape == (2, 3)
    assert not graph.is_full
    assert_csr_invariants(graph)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8, torch.int64])
def test_integer_dtypes_accepted(dtype):
    edge_index = torch.tensor([[2, 0, 1], [0, 1, 1]], dtype=dtype)
    graph = AttentionGraph.from_edge_index(edge_index)
    assert graph.crow.dtype == torch.long and graph.col.dtype == torch.long
    assert torch.equal(graph.to_dense(), dense_from_edges(edge_index.long(), 3, 3))


def test_array_like_inputs_accepted():
    as_list = AttentionGraph.from_edge_index([[2, 0, 1], [0, 1, 1]])
    as_numpy = AttentionGraph.from_edge_index(np.array([[2, 0, 1], [0, 1, 1]], dtype=np.int32))
    assert as_list.equals(as_numpy)
    # numpy integer sizes are fine too
    graph = AttentionGraph.from_edge_index(np.array([[0], [1]]), np.int64(4), np.int32(5))
    assert (graph.num_queries, graph.num_keys) == (4, 5)
    assert isinstance(graph.num_queries, int)


def test_head_mask_duplicates_merged_with_logical_or():
    edge_index = torch.tensor([[1, 1, 0, 2], [0, 0, 0, 1]])
    head_mask = torch.tensor([[True, False, False], [False, False, True], [False, True, False], [True, True, True]])
    graph = AttentionGraph.from_edge_index(edge_index, 2, 3, head_mask=head_mask)
    assert graph.num_heads == 3
    # CSR edges: (q0, k0) <- input 2, (q0, k1) <- inputs 0 | 1, (q1, k2) <- input 3
    assert graph.head_mask.tolist() == [[False, True, False], [True, False, True], [True, True, True]]
    expected = torch.zeros(3, 2, 3, dtype=torch.bool)
    for e in range(4):
        for h in range(3):
            if head_mask[e, h]:
                expected[h, edge_index[1, e], edge_index[0, e]] = True
    assert torch.equal(graph.to_dense(), expected)


# ---------------------------------------------------------------------------- other constructors
def test_from_dense_2d_round_trip(generator):
    mask = torch.rand(5, 7, generator=generator) < 0.4
    graph = AttentionGraph.from_dense(mask)
    assert (graph.num_queries, graph.num_keys) == (5, 7)
    assert graph.num_edges == int(mask.sum())
    assert graph.head_mask is None
    assert torch.equal(graph.to_dense(), mask)
    assert torch.equal(graph.degrees, mask.sum(1))
    assert_csr_invariants(graph)


def test_from_dense_3d_per_head(generator):
    mask = torch.rand(3, 4, 6, generator=generator) < 0.4
    mask[1] = False  # a head with no edge at all
    graph = AttentionGraph.from_dense(mask)
    assert graph.num_heads == 3 and graph.head_mask.shape == (graph.num_edges, 3)
    assert graph.num_edges == int(mask.any(0).sum())
    assert torch.equal(graph.to_dense(), mask)
    for h in range(3):
        assert torch.equal(graph.head(h).to_dense(), mask[h])
    assert_csr_invariants(graph)


def test_from_scipy_csr_coo_and_explicit_zeros():
    sp = pytest.importorskip("scipy.sparse")
    # stored entries: (0, 1) = 1, (0, 3) = 0 (explicit zero), (1, 0) = 2; shape [2, 4]
    matrix = sp.csr_array((np.array([1.0, 0.0, 2.0]), np.array([1, 3, 0]), np.array([0, 2, 3])), shape=(2, 4))
    graph = AttentionGraph.from_scipy(matrix)
    assert (graph.num_queries, graph.num_keys) == (2, 4)
    # every stored entry is an edge, explicit zeros included (documented)
    assert graph.num_edges == 3 and bool(graph.to_dense()[0, 3])
    expected = torch.zeros(2, 4, dtype=torch.bool)
    expected[0, 1] = expected[0, 3] = expected[1, 0] = True
    assert torch.equal(graph.to_dense(), expected)
    matrix.eliminate_zeros()
    pruned = AttentionGraph.from_scipy(matrix)
    assert pruned.num_edges == 2 and not bool(pruned.to_dense()[0, 3])
    # coo with duplicate and unsorted entries
    coo = sp.coo_matrix((np.ones(4), (np.array([1, 0, 1, 1]), np.array([2, 1, 0, 2]))), shape=(2, 3))
    graph = AttentionGraph.from_scipy(coo)
    assert graph.num_edges == 3
    assert torch.equal(graph.to_dense(), torch.from_numpy(coo.toarray() != 0))


def test_scipy_round_trip(generator):
    pytest.importorskip("scipy.sparse")
    mask = torch.rand(4, 6, generator=generator) < 0.5
    graph = AttentionGraph.from_dense(mask)
    matrix = graph.to_scipy()
    assert matrix.shape == (4, 6)
    assert np.array_equal(matrix.toarray(), mask.numpy())
    assert AttentionGraph.from_scipy(matrix).equals(graph)


def test_from_networkx_directed_with_string_labels():
    nx = pytest.importorskip("networkx")
    digraph = nx.DiGraph()
    digraph.add_nodes_from(["a", "b", "c", "lonely"])
    digraph.add_edges_from([("a", "b"), ("c", "b"), ("b", "a")])
    graph = AttentionGraph.from_networkx(digraph)
    assert (graph.num_queries, graph.num_keys) == (4, 4)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[1, 0] = expected[1, 2] = True  # b attends a and c
    expected[0, 1] = True  # a attends b
    assert torch.equal(graph.to_dense(), expected)


def test_from_networkx_undirected_gives_both_directions():
    nx = pytest.importorskip("networkx")
    graph = AttentionGraph.from_networkx(nx.path_graph(["x", "y", "z"]))
    expected = torch.tensor([[False, True, False], [True, False, True], [False, True, False]])
    assert torch.equal(graph.to_dense(), expected)
    # self loop appears once; an edgeless graph keeps its nodes
    looped = nx.Graph([(0, 0), (0, 1)])
    assert AttentionGraph.from_networkx(looped).to_dense().tolist() == [[True, True], [True, False]]
    empty = nx.Graph()
    empty.add_nodes_from(range(3))
    graph = AttentionGraph.from_networkx(empty)
    assert (graph.num_queries, graph.num_edges) == (3, 0)


def test_from_networkx_matches_pyg_from_networkx():
    nx = pytest.importorskip("networkx")
    pyg_utils = pytest.importorskip("torch_geometric.utils")
    digraph = nx.gnp_random_graph(8, 0.3, seed=1, directed=True)
    ours = AttentionGraph.from_networkx(digraph)
    theirs = AttentionGraph.from_edge_index(pyg_utils.from_networkx(digraph).edge_index, 8, 8)
    assert ours.equals(theirs)


def test_from_pyg_data():
    data_module = pytest.importorskip("torch_geometric.data")
    edge_index = torch.tensor([[0, 2, 2], [1, 1, 0]])
    data = data_module.Data(edge_index=edge_index, num_nodes=5)
    graph = AttentionGraph.from_pyg(data)
    assert (graph.num_queries, graph.num_keys) == (5, 5)
    assert torch.equal(graph.to_dense(), dense_from_edges(edge_index, 5, 5))
    with pytest.raises(ValueError, match="edge_index"):
        AttentionGraph.from_pyg(data_module.Data(x=torch.zeros(3, 1)))


def test_from_csr_fixes_unsorted_and_duplicate_columns():
    crow = torch.tensor([0, 3, 3, 5])
    col = torch.tensor([2, 0, 2, 1, 0])
    graph = AttentionGraph.from_csr(crow, col, num_keys=3)
    assert graph.crow.tolist() == [0, 2, 2, 4]
    assert graph.col.tolist() == [0, 2, 0, 1]
    assert_csr_invariants(graph)
    # int32 arrays and a bipartite key count
    graph = AttentionGraph.from_csr(crow.int(), col.int(), num_keys=4)
    assert (graph.num_queries, graph.num_keys) == (3, 4)


def test_from_csr_errors():
    with pytest.raises(ValueError, match="non-decreasing"):
        AttentionGraph.from_csr(torch.tensor([0, 2, 1, 2]), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="col"):
        AttentionGraph.from_csr(torch.tensor([0, 1, 3]), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="crow"):
        AttentionGraph.from_csr(torch.tensor([[0, 1]]), torch.tensor([0]), 2)
    with pytest.raises(ValueError, match="3"):
        AttentionGraph.from_csr(torch.tensor([0, 1]), torch.tensor([3]), 2)
    with pytest.raises(TypeError, match="float"):
        AttentionGraph.from_csr(torch.tensor([0.0, 1.0]), torch.tensor([0]), 2)


# ---------------------------------------------------------------------------- properties
def test_counts_degrees_and_edge_index(generator):
    mask = torch.rand(6, 5, generator=generator) < 0.5
    graph = AttentionGraph.from_dense(mask)
    assert graph.num_edges == int(mask.sum())
    assert graph.density == pytest.approx(int(mask.sum()) / 30)
    assert torch.equal(graph.degrees, mask.sum(1))
    edge_index = graph.edge_index
    assert edge_index.shape == (2, graph.num_edges)
    assert mask[edge_index[1], edge_index[0]].all()
    assert AttentionGraph.from_edge_index(edge_index, 6, 5).equals(graph)
    assert graph.row is graph.row  # cached


def test_is_full():
    assert AttentionGraph.from_dense(torch.ones(3, 3, dtype=torch.bool)).is_full
    assert AttentionGraph.from_dense(torch.ones(2, 4, dtype=torch.bool)).is_full
    almost = torch.ones(3, 3, dtype=torch.bool)
    almost[1, 2] = False
    assert not AttentionGraph.from_dense(almost).is_full
    # a per-head pattern is never "full", even when its union is
    per_head = torch.ones(2, 3, 3, dtype=torch.bool)
    per_head[0, 0, 0] = False
    assert not AttentionGraph.from_dense(per_head).is_full


def test_is_causal():
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    assert AttentionGraph.from_dense(causal).is_causal
    assert AttentionGraph.from_dense(torch.ones(1, 1, dtype=torch.bool)).is_causal
    assert not AttentionGraph.from_dense(causal.t().contiguous()).is_causal  # same edge count
    strict = torch.ones(4, 4, dtype=torch.bool).tril(-1)
    assert not AttentionGraph.from_dense(strict).is_causal
    moved = causal.clone()
    moved[3, 0], moved[0, 1] = False, True  # same count, one edge above the diagonal
    assert not AttentionGraph.from_dense(moved).is_causal
    assert not AttentionGraph.from_dense(torch.ones(4, 4, dtype=torch.bool)).is_causal
    # non-square lower triangle, and per-head patterns
    assert not AttentionGraph.from_dense(torch.ones(3, 4, dtype=torch.bool).tril()).is_causal
    assert not AttentionGraph.from_dense(causal.expand(2, 4, 4).contiguous()).is_causal


# ---------------------------------------------------------------------------- transpose / head
def test_transpose_matches_dense_transpose(generator):
    mask = torch.rand(4, 7, generator=generator) < 0.4
    graph = AttentionGraph.from_dense(mask)
    transposed = graph.transpose()
    assert (transposed.num_queries, transposed.num_keys) == (7, 4)
    assert torch.equal(transposed.to_dense(), mask.t())
    assert_csr_invariants(transposed)
    assert transposed.transpose().equals(graph)


def test_transpose_permutation_moves_edge_values(generator):
    mask = torch.rand(5, 6, generator=generator) < 0.5
    graph = AttentionGraph.from_dense(mask)
    cell_values = torch.randn(5, 6, generator=generator)
    edge_values = cell_values[graph.row, graph.col]  # [E] in graph's CSR order
    transposed, perm = graph.transpose(), graph.transpose_permutation()
    assert sorted(perm.tolist()) == list(range(graph.num_edges))
    assert torch.equal(edge_values[perm], cell_values.t()[transposed.row, transposed.col])


def test_transpose_is_cached():
    graph = AttentionGraph.from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]))
    assert graph.transpose() is graph.transpose()
    assert graph.transpose_permutation() is graph.transpose_permutation()


def test_transpose_per_head_and_batch(generator):
    mask = torch.rand(2, 3, 5, generator=generator) < 0.5
    graph = AttentionGraph.from_dense(mask)
    assert torch.equal(graph.transpose().to_dense(), mask.transpose(1, 2))
    a = AttentionGraph.from_dense(torch.ones(2, 3, dtype=torch.bool))
    b = AttentionGraph.from_dense(torch.ones(1, 4, dtype=torch.bool))
    batch = AttentionGraph.batch([a, b])
    transposed = batch.transpose()
    assert transposed.query_ptr.tolist() == [0, 3, 7]
    assert transposed.key_ptr.tolist() == [0, 2, 3]
    assert torch.equal(transposed.to_dense(), batch.to_dense().t())


def test_head(generator):
    mask = torch.rand(3, 4, 4, generator=generator) < 0.5
    graph = AttentionGraph.from_dense(mask)
    for h in range(3):
        part = graph.head(h)
        assert part.head_mask is None
        assert torch.equal(part.to_dense(), mask[h])
        assert_csr_invariants(part)
    assert torch.equal(graph.head(-1).to_dense(), mask[2])
    plain = AttentionGraph.from_dense(mask[0])
    assert plain.head(0) is plain
    with pytest.raises(ValueError, match=r"head index in \[0, 2\].*got 3"):
        graph.head(3)
    batched = AttentionGraph.batch([graph, graph])
    assert batched.head(1).query_ptr.tolist() == [0, 4, 8]
    assert torch.equal(batched.head(1).to_dense(), torch.block_diag(mask[1], mask[1]))


# ---------------------------------------------------------------------------- batch
def test_batch_block_diagonal_with_offsets(generator):
    masks = [
        torch.rand(3, 3, generator=generator) < 0.5,
        torch.rand(2, 2, generator=generator) < 0.5,
        torch.rand(2, 4, generator=generator) < 0.5,  # bipartite part
    ]
    parts = [AttentionGraph.from_dense(m) for m in masks]
    batch = AttentionGraph.batch(parts)
    assert torch.equal(batch.to_dense(), torch.block_diag(*masks))
    assert batch.query_ptr.tolist() == [0, 3, 5, 7]
    assert batch.key_ptr.tolist() == [0, 3, 5, 9]
    assert batch.num_graphs == 3
    assert batch.num_edges == sum(p.num_edges for p in parts)
    assert batch.replicated_from is None
    assert_csr_invariants(batch)
    slices = list(iter_graph_slices(batch))
    assert slices == [(slice(0, 3), slice(0, 3)), (slice(3, 5), slice(3, 5)), (slice(5, 7), slice(5, 9))]
    for (q, k), mask in zip(slices, masks):
        assert torch.equal(batch.to_dense()[q, k], mask)


def test_batch_per_head_parts(generator):
    per_head = torch.rand(2, 3, 3, generator=generator) < 0.5
    plain = torch.rand(2, 2, generator=generator) < 0.5
    batch = AttentionGraph.batch([AttentionGraph.from_dense(per_head), AttentionGraph.from_dense(plain)])
    assert batch.num_heads == 2
    expected = torch.stack([torch.block_diag(per_head[h], plain) for h in range(2)])
    assert torch.equal(batch.to_dense(), expected)


def test_batch_replicated_from_only_for_the_same_object():
    graph = AttentionGraph.from_edge_index(torch.tensor([[0, 1], [1, 1]]))
    replicated = AttentionGraph.batch([graph, graph, graph])
    assert replicated.replicated_from is graph
    assert replicated.num_graphs == 3
    twin = AttentionGraph.from_edge_index(torch.tensor([[0, 1], [1, 1]]))
    assert twin.equals(graph)
    assert AttentionGraph.batch([graph, twin]).replicated_from is None
    assert AttentionGraph.batch([graph, graph, twin]).replicated_from is None


def test_batch_of_batches_flattens_offsets():
    a = AttentionGraph.from_dense(torch.ones(2, 2, dtype=torch.bool))
    b = AttentionGraph.from_dense(torch.ones(3, 1, dtype=torch.bool))
    inner = AttentionGraph.batch([a, b])
    outer = AttentionGraph.batch([inner, a])
    assert outer.num_graphs == 3
    assert outer.query_ptr.tolist() == [0, 2, 5, 7]
    assert outer.key_ptr.tolist() == [0, 2, 3, 5]
    assert torch.equal(outer.to_dense(), torch.block_diag(a.to_dense(), b.to_dense(), a.to_dense()))
    # repeating a replicated batch still replicates the single graph; a mixed batch does not
    replicated = AttentionGraph.batch([a, a])
    again = AttentionGraph.batch([replicated, replicated])
    assert again.replicated_from is a and again.num_graphs == 4
    assert AttentionGraph.batch([inner, inner]).replicated_from is None


def test_batch_errors():
    graph = AttentionGraph.from_dense(torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one graph"):
        AttentionGraph.batch([])
    two_heads = AttentionGraph.from_dense(torch.ones(2, 2, 2, dtype=torch.bool))
    three_heads = AttentionGraph.from_dense(torch.ones(3, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"head counts \[2, 3\]"):
        AttentionGraph.batch([two_heads, graph, three_heads])
    with pytest.raises(TypeError, match="position 1"):
        AttentionGraph.batch([graph, torch.ones(2, 2)])


# ---------------------------------------------------------------------------- misc API
def test_to_same_device_returns_self():
    graph = AttentionGraph.from_edge_index(torch.tensor([[0, 1], [1, 0]]))
    assert graph.to("cpu") is graph
    assert graph.to(torch.device("cpu")) is graph
    assert graph.device == torch.device("cpu")


def test_equals():
    graph = AttentionGraph.from_edge_index(torch.tensor([[0, 1], [1, 0]]))
    assert graph.equals(AttentionGraph.from_edge_index(torch.tensor([[1, 0], [0, 1]])))
    assert not graph.equals(AttentionGraph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), 2, 3))
    assert not graph.equals(AttentionGraph.from_edge_index(torch.tensor([[0, 1], [0, 0]])))
    with_heads = AttentionGraph.from_edge_index(
        torch.tensor([[0, 1], [1, 0]]), head_mask=torch.tensor([[True, False], [True, True]])
    )
    assert not graph.equals(with_heads) and not with_heads.equals(graph)
    assert not with_heads.equals(
        AttentionGraph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), head_mask=torch.ones(2, 2, dtype=torch.bool))
    )
    assert with_heads.equals(with_heads.transpose().transpose())


def test_validate_catches_broken_csr():
    crow = torch.tensor([0, 2, 3])
    ok = AttentionGraph(crow, torch.tensor([0, 1, 1]), 2, 2)
    assert ok.validate() is ok
    with pytest.raises(ValueError, match="sorted"):
        AttentionGraph(crow, torch.tensor([1, 0, 1]), 2, 2)  # unsorted within row 0
    with pytest.raises(ValueError, match="duplicates"):
        AttentionGraph(crow, torch.tensor([1, 1, 0]), 2, 2)
    with pytest.raises(ValueError, match="found index 5"):
        AttentionGraph(crow, torch.tensor([0, 5, 1]), 2, 2)
    with pytest.raises(ValueError, match="crow"):
        AttentionGraph(torch.tensor([0, 3]), torch.tensor([0, 1, 1]), 2, 2)
    with pytest.raises(ValueError, match="start at 0"):
        AttentionGraph(torch.tensor([1, 2, 3]), torch.tensor([0, 1, 1]), 2, 2)
    with pytest.raises(TypeError, match="int64"):
        AttentionGraph(crow.int(), torch.tensor([0, 1, 1]), 2, 2)
    with pytest.raises(ValueError, match="head_mask"):
        AttentionGraph(crow, torch.tensor([0, 1, 1]), 2, 2, head_mask=torch.ones(2, 2, dtype=torch.bool))
    # validate=False skips the checks; an explicit validate() still finds the problem
    broken = AttentionGraph(crow, torch.tensor([1, 0, 1]), 2, 2, validate=False)
    with pytest.raises(ValueError, match="sorted"):
        broken.validate()


def test_repr():
    graph = AttentionGraph.from_dense(torch.ones(2, 4, dtype=torch.bool).tril())
    assert repr(graph) == "AttentionGraph(num_queries=2, num_keys=4, num_edges=3, density=0.375)"
    per_head = AttentionGraph.from_dense(torch.ones(3, 2, 2, dtype=torch.bool))
    assert repr(per_head) == "AttentionGraph(num_queries=2, num_keys=2, num_edges=4, density=1.000, num_heads=3)"
    batch = AttentionGraph.batch([graph, graph])
    assert repr(batch) == "AttentionGraph(num_queries=4, num_keys=8, num_edges=6, density=0.188, num_graphs=2)"


def test_cached_builds_once():
    graph = AttentionGraph.from_edge_index(torch.tensor([[0], [0]]))
    calls = []
    assert graph.cached("key", lambda: calls.append(1) or 42) == 42
    assert graph.cached("key", lambda: calls.append(1) or 43) == 42
    assert calls == [1]


# ---------------------------------------------------------------------------- hypothesis
@st.composite
def edge_lists(draw):
    num_queries = draw(st.integers(1, 20))
    num_keys = draw(st.integers(1, 20))
    pairs = draw(
        st.lists(st.tuples(st.integers(0, num_keys - 1), st.integers(0, num_queries - 1)), max_size=60)
    )
    if pairs and draw(st.booleans()):
        pairs = pairs + pairs[: draw(st.integers(1, len(pairs)))]  # force duplicates
    return num_queries, num_keys, pairs


@settings(max_examples=60, deadline=None)
@given(edge_lists())
def test_random_edge_lists_match_dense_reference(case):
    num_queries, num_keys, pairs = case
    edge_index = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).t()
    graph = AttentionGraph.from_edge_index(edge_index, num_queries, num_keys)
    dense = dense_from_edges(edge_index, num_queries, num_keys)
    assert torch.equal(graph.to_dense(), dense)
    assert graph.num_edges == int(dense.sum())
    assert torch.equal(graph.degrees, dense.sum(1))
    assert_csr_invariants(graph)
    transposed = graph.transpose()
    assert torch.equal(transposed.to_dense(), dense.t())
    assert transposed.transpose().equals(graph)
    perm = graph.transpose_permutation()
    assert torch.equal(graph.row[perm], transposed.col) and torch.equal(graph.col[perm], transposed.row)
    # every input edge maps to the CSR edge with the same (query, key)
    m = graph.input_edge_map
    assert torch.equal(graph.row[m], edge_index[1]) and torch.equal(graph.col[m], edge_index[0])


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_non_integer_edge_index_is_a_type_error(dtype):
    edge_index = torch.tensor([[0, 1], [1, 0]]).to(dtype)
    with pytest.raises(TypeError, match=re.escape(f"got '{dtype}'")):
        AttentionGraph.from_edge_index(edge_index)


@pytest.mark.parametrize("shape", [(3, 2), (3,), (2, 2, 1), (1, 4)])
def test_wrong_edge_index_shape(shape):
    edge_index = torch.zeros(shape, dtype=torch.long)
    with pytest.raises(ValueError, match=re.escape("[2, E]")) as info:
        AttentionGraph.from_edge_index(edge_index)
    assert str(list(shape)) in str(info.value)


def test_out_of_range_indices_name_index_and_size():
    with pytest.raises(ValueError, match=r"found index 5.*num_keys") as info:
        AttentionGraph.from_edge_index(torch.tensor([[0, 5], [1, 0]]), 3, 3)
    assert "num_keys = 3" in str(info.value)
    with pytest.raises(ValueError, match=r"num_queries = 2.*found index 2"):
        AttentionGraph.from_edge_index(torch.tensor([[0, 1], [2, 0]]), 2, 4)
    with pytest.raises(ValueError, match="found index -1"):
        AttentionGraph.from_edge_index(torch.tensor([[0, -1], [1, 0]]))
    with pytest.raises(ValueError, match="found index -3"):
        AttentionGraph.from_edge_index(torch.tensor([[-3], [-2]]))


def test_bad_sizes():
    edge_index = torch.tensor([[0], [0]])
    with pytest.raises(ValueError, match=r"'num_queries'.*-1"):
        AttentionGraph.from_edge_index(edge_index, num_queries=-1)
    with pytest.raises(ValueError, match=r"'num_keys'.*-2"):
        AttentionGraph.from_edge_index(edge_index, 1, num_keys=-2)
    with pytest.raises(TypeError, match="num_queries"):
        AttentionGraph.from_edge_index(edge_index, num_queries=2.5)
    with pytest.raises(TypeError, match="num_keys"):
        AttentionGraph.from_edge_index(edge_index, 1, num_keys=True)


def test_from_dense_bad_input():
    with pytest.raises(TypeError, match=r"bool tensor.*float32"):
        AttentionGraph.from_dense(torch.ones(2, 2))
    with pytest.raises(TypeError, match="int64"):
        AttentionGraph.from_dense(torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[Nq, Nk\] or \[H, Nq, Nk\]"):
        AttentionGraph.from_dense(torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[Nq, Nk\] or \[H, Nq, Nk\]"):
        AttentionGraph.from_dense(torch.ones(1, 2, 2, 2, dtype=torch.bool))


def test_other_constructors_reject_wrong_types():
    with pytest.raises(TypeError, match="scipy.sparse"):
        AttentionGraph.from_scipy(np.ones((2, 2)))
    pytest.importorskip("networkx")
    with pytest.raises(TypeError, match="networkx"):
        AttentionGraph.from_networkx([(0, 1)])


def test_bad_head_mask():
    edge_index = torch.tensor([[0, 1, 1], [1, 0, 1]])
    with pytest.raises(ValueError, match=re.escape("[E, H] = [3, H]")):
        AttentionGraph.from_edge_index(edge_index, head_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=re.escape("[E, H] = [3, H]")):
        AttentionGraph.from_edge_index(edge_index, head_mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"bool tensor.*float32"):
        AttentionGraph.from_edge_index(edge_index, head_mask=torch.ones(3, 2))


def test_align_edge_values_errors():
    graph = AttentionGraph.from_edge_index(torch.tensor([[0, 1, 1], [1, 0, 0]]))
    with pytest.raises(ValueError, match=r"3 rows.*\[2\]"):
        graph.align_edge_values(torch.ones(2))
    with pytest.raises(ValueError, match="reduce"):
        graph.align_edge_values(torch.ones(3), reduce="max")
    with pytest.raises(TypeError, match="tensor"):
        graph.align_edge_values([1.0, 2.0, 3.0])
    dense_built = AttentionGraph.from_dense(torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="not built by from_edge_index"):
        dense_built.align_edge_values(torch.ones(4))
