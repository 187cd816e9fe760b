"""LSH (Reformer) and k-means routing (Routing Transformer): graphs and mechanisms.

Every edge set is checked against a brute-force Python construction, and every output against a
float64 dense softmax over the same keys.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from graphattn import attention, patterns
from graphattn.graph import AttentionGraph
from graphattn.nn.clustered import LSHAttention, RoutingAttention
from graphattn.nn.mechanism import HeadGroups, SequenceLayout, SoftmaxAttention
from graphattn.patterns.clustered import (
    kmeans_routing_graph,
    lsh_buckets,
    lsh_graph,
    lsh_rotations,
    merge_rounds,
    round_union,
    routing_members,
)

DOUBLE = torch.float64


# ---------------------------------------------------------------------------- references
def dense_softmax(q, k, v, mask, bias=None):
    """float64 oracle: q [Nq, H, D], k [Nk, H, D], v [Nk, H, Dv], mask [Nq, Nk] bool, bias
    [H, Nq, Nk] -> (out [Nq, H, Dv], lse [Nq, H]); empty rows give zeros and lse = -inf."""
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.size(-1))
    if bias is not None:
        scores = scores + bias
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # [H, Nq]
    probs = torch.exp(scores - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))[..., None])
    out = torch.einsum("hqk,khd->qhd", probs, v)
    return out, lse.t()


def fold(x):
    """[B, L, H, D] -> [B * H * L, 1, D], the mechanisms' node order."""
    b, l, h, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(b * h * l, 1, d)


def unfold(x, b, l, h):
    return x.view(b, h, l, -1).permute(0, 2, 1, 3)


def real_mask(lengths, slots):
    return torch.arange(slots) < torch.as_tensor(lengths)[:, None]


def reference_lsh_edges(buckets, chunk, lengths, causal, chunking):
    """Brute force: per (sequence, round) sets of (query, key) positions, before the self rule."""
    batch, rounds, _ = buckets.shape
    edges = {}
    for b in range(batch):
        n = int(lengths[b])
        for r in range(rounds):
            ids = [int(x) for x in buckets[b, r, :n]]
            order = sorted(range(n), key=lambda i: (ids[i], i))
            if chunking == "sorted":
                chunks = [order[s:s + chunk] for s in range(0, n, chunk)]
                neighbours = {}
                for c, members in enumerate(chunks):
                    keys = members + (chunks[c - 1] if c > 0 else [])
                    for i in members:
                        neighbours[i] = keys
            else:
                neighbours = {}
                for bucket in set(ids):
                    members = [i for i in order if ids[i] == bucket]
                    chunks = [members[s:s + chunk] for s in range(0, len(members), chunk)]
                    for c, part in enumerate(chunks):
                        keys = part + (chunks[c - 1] if c > 0 else [])
                        for i in part:
                            neighbours[i] = keys
            edges[b, r] = {(i, j) for i in range(n) for j in neighbours[i] if not causal or j <= i}
    return edges


def union_with_self_rule(edges, batch, rounds, exclude_self=True):
    union = {}
    for b in range(batch):
        pairs = set().union(*(edges[b, r] for r in range(rounds)))
        if exclude_self:
            has_other = {i for i, j in pairs if i != j}
            pairs = {(i, j) for i, j in pairs if i != j or i not in has_other}
        union[b] = pairs
    return union


def to_mask(pairs_per_sequence, batch, slots):
    mask = torch.zeros(batch * slots, batch * slots, dtype=torch.bool)
    for b, pairs in pairs_per_sequence.items():
        for i, j in pairs:
            mask[b * slots + i, b * slots + j] = True
    return mask


# ---------------------------------------------------------------------------- LSH buckets
def test_lsh_buckets_are_permutation_consistent_and_angular(generator):
    x = torch.randn(2, 10, 6, generator=generator, dtype=DOUBLE)
    x[:, 7] = x[:, 3]  # the same vector ...
    x[:, 8] = 2.5 * x[:, 1]  # ... and a longer one pointing the same way
    rotations = lsh_rotations(6, num_buckets=8, num_rounds=3, generator=torch.Generator().manual_seed(1))
    buckets = lsh_buckets(x, 8, 3, rotations=rotations)
    assert buckets.shape == (2, 3, 10) and buckets.dtype == torch.long
    assert int(buckets.min()) >= 0 and int(buckets.max()) < 8
    perm = torch.randperm(10, generator=generator)
    assert torch.equal(lsh_buckets(x[:, perm], 8, 3, rotations=rotations), buckets[..., perm])
    assert torch.equal(buckets[..., 7], buckets[..., 3])
    assert torch.equal(buckets[..., 8], buckets[..., 1])
    # rotations drawn in float32 then converted: every dtype hashes alike
    assert torch.equal(lsh_buckets(x.float(), 8, 3, rotations=rotations), buckets)
    # per-head rotations broadcast against [B, H, L, D]
    per_head = lsh_rotations(6, 8, 3, batch_shape=(4,), generator=torch.Generator().manual_seed(2))
    xh = torch.randn(2, 4, 10, 6, generator=generator)
    heads = lsh_buckets(xh, 8, 3, rotations=per_head)
    assert heads.shape == (2, 4, 3, 10)
    assert torch.equal(heads[:, 2], lsh_buckets(xh[:, 2], 8, 3, rotations=per_head[2]))


def test_lsh_buckets_errors():
    x = torch.randn(5, 4)
    with pytest.raises(ValueError, match="even 'num_buckets'"):
        lsh_rotations(4, 3)
    with pytest.raises(ValueError, match=r"\[\.\.\., R, D, nb / 2\]"):
        lsh_buckets(x, 4, 2, rotations=torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"\[\.\.\., L, D\]"):
        lsh_buckets(torch.arange(5), 4)
    assert torch.equal(lsh_buckets(x, 1, 2), torch.zeros(2, 5, dtype=torch.long))


# ---------------------------------------------------------------------------- LSH graph
@pytest.mark.parametrize("chunking,causal", [("sorted", False), ("bucket", False), ("bucket", True)])
def test_lsh_graph_matches_brute_force(generator, chunking, causal):
    batch, rounds, slots, chunk = 3, 3, 11, 3
    buckets = torch.randint(0, 4, (batch, rounds, slots), generator=generator)
    lengths = torch.tensor([11, 7, 1])
    graphs = lsh_graph(buckets, chunk, lengths=lengths, causal=causal, chunking=chunking)
    expected = reference_lsh_edges(buckets, chunk, lengths, causal, chunking)
    union = union_with_self_rule(expected, batch, rounds)
    assert torch.equal(graphs.union.to_dense(), to_mask(union, batch, slots))
    graphs.union.validate()
    # the rounds: their own edges, less the self edges the union drops; counts = rounds holding the edge
    union_mask = graphs.union.to_dense()
    for r, (graph, counts) in enumerate(zip(graphs.rounds, graphs.counts)):
        graph.validate()
        expected_round = to_mask({b: expected[b, r] for b in range(batch)}, batch, slots) & union_mask
        assert torch.equal(graph.to_dense(), expected_round)
        for e, (i, j) in enumerate(zip(graph.row.tolist(), graph.col.tolist())):
            b, qi, kj = i // slots, i % slots, j % slots
            assert counts[e] == sum((qi, kj) in expected[b, s] for s in range(rounds))
    assert torch.equal(graphs.union.query_ptr, torch.arange(batch + 1) * slots)


def test_lsh_graph_respects_sequences_padding_and_causality(generator):
    batch, slots = 3, 12
    buckets = torch.randint(0, 6, (batch, 2, slots), generator=generator)
    lengths = torch.tensor([12, 5, 0])
    for causal in (False, True):
        graph = lsh_graph(buckets, 2, lengths=lengths, causal=causal).union
        row, col = graph.row, graph.col
        assert torch.equal(row // slots, col // slots), "an edge crosses sequences"
        assert bool((row % slots < lengths[row // slots]).all()) and bool((col % slots < lengths[col // slots]).all())
        real = real_mask(lengths, slots).flatten()
        assert torch.equal(graph.degrees > 0, real), "every real query has a key, padding none"
        if causal:
            assert bool((col <= row).all())
        assert bool((graph.degrees <= 2 * 2 * 2).all())  # 2 rounds x 2 chunks of 2


def test_lsh_graph_one_chunk_is_full_without_self():
    lengths = torch.tensor([6, 4])
    buckets = torch.zeros(2, 2, 6, dtype=torch.long)
    real = real_mask(lengths, 6)
    block = torch.block_diag(*[(real[b][:, None] & real[b][None, :]) for b in range(2)])
    eye = torch.eye(12, dtype=torch.bool)
    assert torch.equal(lsh_graph(buckets, 6, lengths=lengths).union.to_dense(), block & ~eye)
    causal = lsh_graph(buckets, 6, lengths=lengths, causal=True).union.to_dense()
    first = torch.zeros(12, 12, dtype=torch.bool)
    first[0, 0] = first[6, 6] = True  # the first token has only itself
    assert torch.equal(causal, (block & torch.ones(12, 12, dtype=torch.bool).tril(-1)) | first)
    assert torch.equal(lsh_graph(buckets, 6, lengths=lengths, exclude_self=False).union.to_dense(), block)
    # [R, L] input: one sequence, no batch offsets
    single = lsh_graph(buckets[0], 6)
    assert single.union.num_queries == 6 and single.union.query_ptr is None


def test_lsh_graph_errors():
    buckets = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="chunking='sorted' cannot be causal"):
        lsh_graph(buckets, 2, causal=True, chunking="sorted")
    with pytest.raises(ValueError, match=r"integer tensor \[B, R, L\]"):
        lsh_graph(buckets.float(), 2)
    with pytest.raises(ValueError, match="chunk_size"):
        lsh_graph(buckets, 0)
    with pytest.raises(ValueError, match=r"'lengths' in \[0, 5\]"):
        lsh_graph(buckets[None], 2, lengths=torch.tensor([6]))
    with pytest.raises(ValueError, match="chunking in"):
        lsh_graph(buckets, 2, chunking="chunks")


# ---------------------------------------------------------------------------- merging rounds
def _round_outputs(graphs, q, k, v, corrected=True):
    outs, lses = [], []
    heads = q.size(1)
    for r, graph in enumerate(graphs.rounds):
        bias = None
        if corrected:
            bias = torch.zeros(heads, graph.num_queries, graph.num_keys, dtype=q.dtype)
            bias[:, graph.row, graph.col] = graphs.duplicate_bias(r, heads, q.dtype).t()
        out, lse = dense_softmax(q, k, v, graph.to_dense(), bias)
        outs.append(out)
        lses.append(lse)
    return merge_rounds(torch.stack(outs), torch.stack(lses))


def _random_graph(n, density, generator):
    mask = torch.rand(n, n, generator=generator) < density
    return AttentionGraph.from_dense(mask)


@pytest.mark.parametrize("case", ["disjoint", "identical", "overlapping"])
def test_logsumexp_merge_equals_softmax_over_union(generator, case):
    n, heads = 9, 2
    q, k, v = (torch.randn(n, heads, 4, generator=generator, dtype=DOUBLE) for _ in range(3))
    if case == "disjoint":
        mask = torch.rand(n, n, generator=generator) < 0.7
        split = torch.rand(n, n, generator=generator) < 0.5
        rounds = [AttentionGraph.from_dense(mask & split), AttentionGraph.from_dense(mask & ~split)]
    elif case == "identical":
        rounds = [_random_graph(n, 0.5, generator)] * 3
    else:
        rounds = [_random_graph(n, 0.5, generator) for _ in range(3)]
    graphs = round_union(rounds)
    expected_counts = {"disjoint": 1, "identical": 3}
    if case in expected_counts:
        assert all(bool((c == expected_counts[case]).all()) for c in graphs.counts)
    union_mask = torch.stack([g.to_dense() for g in rounds]).any(0)
    assert torch.equal(graphs.union.to_dense(), union_mask)
    expected, _ = dense_softmax(q, k, v, union_mask)
    torch.testing.assert_close(_round_outputs(graphs, q, k, v), expected)
    torch.testing.assert_close(attention(q, k, v, graphs.union, backend="csr"), expected)
    if case == "overlapping":  # the correction matters: counting shared keys twice is another softmax
        assert not torch.allclose(_round_outputs(graphs, q, k, v, corrected=False), expected)
    if case == "identical":  # identical rounds merge to the one round, corrected or not
        torch.testing.assert_close(_round_outputs(graphs, q, k, v, corrected=False), expected)


def test_lsh_rounds_merge_to_union(generator):
    batch, slots = 2, 10
    buckets = torch.randint(0, 4, (batch, 3, slots), generator=generator)
    graphs = lsh_graph(buckets, 2, lengths=torch.tensor([10, 6]))
    n = batch * slots
    q, k, v = (torch.randn(n, 2, 3, generator=generator, dtype=DOUBLE) for _ in range(3))
    expected, _ = dense_softmax(q, k, v, graphs.union.to_dense())
    torch.testing.assert_close(_round_outputs(graphs, q, k, v), expected)
    assert not torch.allclose(_round_outputs(graphs, q, k, v, corrected=False), expected)


def test_merge_rounds_empty_rows_are_zero():
    outputs = torch.randn(2, 3, 1, 4, dtype=DOUBLE)
    lse = torch.tensor([[0.0, float("-inf"), 1.0], [2.0, float("-inf"), float("-inf")]], dtype=DOUBLE)[..., None]
    merged = merge_rounds(outputs, lse)
    assert torch.equal(merged[1], torch.zeros(1, 4, dtype=DOUBLE))
    torch.testing.assert_close(merged[2], outputs[0, 2])
    weight = torch.softmax(lse[:, 0, 0], 0)
    torch.testing.assert_close(merged[0, 0], weight[0] * outputs[0, 0, 0] + weight[1] * outputs[1, 0, 0])
    with pytest.raises(ValueError, match=r"log_sum_exp \[R, N, H\]"):
        merge_rounds(outputs, lse[..., 0])


# ---------------------------------------------------------------------------- LSHAttention
def _lsh_reference(q, v, graph):
    """Dense float64 attention of shared q over RMS-normalized keys, masked by ``graph`` (folded)."""
    b, l, h, _ = q.shape
    keys = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + 1e-6)
    out, _ = dense_softmax(fold(q), fold(keys), fold(v), graph.to_dense())
    return unfold(out, b, l, h)


# (causal attention chunks within buckets, so only one bucket gives full causal attention)
@pytest.mark.parametrize("num_buckets,causal", [(1, False), (4, False), (1, True)])
def test_lsh_one_chunk_equals_full_attention_without_self(generator, num_buckets, causal):
    b, l, h = 2, 7, 2
    q = torch.randn(b, l, h, 5, generator=generator, dtype=DOUBLE)
    v = torch.randn(b, l, h, 3, generator=generator, dtype=DOUBLE)
    lengths = torch.tensor([7, 4])
    layout = SequenceLayout(lengths, lengths, causal=causal)
    lsh = LSHAttention(num_buckets=num_buckets, chunk_size=l, num_rounds=2, backend="csr").eval()
    out = lsh(q, q, v, layout)
    keys = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + 1e-6)
    for s in range(b):
        n = int(lengths[s])
        mask = ~torch.eye(n, dtype=torch.bool)
        if causal:
            mask &= torch.ones(n, n, dtype=torch.bool).tril()
            mask[0, 0] = True  # the first token has no other key
        expected, _ = dense_softmax(q[s, :n], keys[s, :n], v[s, :n], mask)
        torch.testing.assert_close(out[s, :n], expected)
        assert torch.equal(out[s, n:], torch.zeros_like(out[s, n:]))


def test_lsh_attention_equals_logsumexp_merge_of_its_rounds(generator):
    b, l, h, d = 2, 12, 2, 4
    q = torch.randn(b, l, h, d, generator=generator, dtype=DOUBLE)
    v = torch.randn(b, l, h, 3, generator=generator, dtype=DOUBLE)
    lengths = torch.tensor([12, 9])
    layout = SequenceLayout(lengths, lengths)
    lsh = LSHAttention(num_buckets=4, chunk_size=2, num_rounds=3, seed=5, backend="csr").eval()
    out = lsh(q, q, v, layout)
    buckets = lsh_buckets(q.permute(0, 2, 1, 3), 4, 3, rotations=lsh.rotations(h, d, l))
    graphs = lsh_graph(buckets.flatten(0, 1), 2, lengths=lengths.repeat_interleave(h))
    keys = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + 1e-6)
    merged = _round_outputs(graphs, fold(q), fold(keys), fold(v))
    torch.testing.assert_close(out, unfold(merged, b, l, h))
    torch.testing.assert_close(out, _lsh_reference(q, v, graphs.union))
    assert graphs.union.density < 0.5  # a real sparse pattern, not full attention
    assert torch.equal(out[1, 9:], torch.zeros_like(out[1, 9:]))


def test_lsh_causal_ignores_future_tokens(generator):
    b, l, h, d, cut = 2, 16, 2, 4, 9
    q = torch.randn(b, l, h, d, generator=generator, dtype=DOUBLE)
    v = torch.randn(b, l, h, 3, generator=generator, dtype=DOUBLE)
    layout = SequenceLayout.full(b, l, causal=True)
    lsh = LSHAttention(num_buckets=4, chunk_size=2, num_rounds=2).eval()
    out = lsh(q, q, v, layout)
    q2, v2 = q.clone(), v.clone()
    q2[:, cut:] = torch.randn(b, l - cut, h, d, generator=generator, dtype=DOUBLE)
    v2[:, cut:] += 1.0
    out2 = lsh(q2, q2, v2, layout)
    torch.testing.assert_close(out2[:, :cut], out[:, :cut])
    assert not torch.allclose(out2[:, cut:], out[:, cut:])


def test_lsh_training_rotations_are_seeded_and_eval_is_fixed(generator):
    q = torch.randn(1, 16, 2, 4, generator=generator, dtype=DOUBLE)
    v = torch.randn(1, 16, 2, 4, generator=generator, dtype=DOUBLE)
    layout = SequenceLayout.full(1, 16)
    first, second = (LSHAttention(num_buckets=8, chunk_size=2, num_rounds=1, seed=3) for _ in range(2))
    steps = [first(q, q, v, layout) for _ in range(3)]
    assert int(first.step) == 3
    for expected in steps:  # the same seed replays the same rotations step by step
        torch.testing.assert_close(second(q, q, v, layout), expected, rtol=0, atol=0)
    assert not torch.allclose(steps[0], steps[1]) or not torch.allclose(steps[1], steps[2])
    assert "step" in first.state_dict()
    first.eval()
    torch.testing.assert_close(first(q, q, v, layout), first(q, q, v, layout), rtol=0, atol=0)
    assert int(first.step) == 3
    other_seed = LSHAttention(num_buckets=8, chunk_size=2, num_rounds=1, seed=4).eval()
    assert not torch.equal(other_seed.rotations(2, 4, 16), first.rotations(2, 4, 16))


def test_lsh_gradcheck(generator):
    q = torch.randn(2, 6, 2, 3, generator=generator, dtype=DOUBLE, requires_grad=True)
    v = torch.randn(2, 6, 2, 2, generator=generator, dtype=DOUBLE, requires_grad=True)
    layout = SequenceLayout(torch.tensor([6, 4]), torch.tensor([6, 4]))
    lsh = LSHAttention(num_buckets=2, chunk_size=2, num_rounds=2, backend="csr").eval()
    assert torch.autograd.gradcheck(lambda q, v: lsh(q, q, v, layout), (q, v))


def test_lsh_errors_and_repr():
    lsh = LSHAttention(num_buckets=4, chunk_size=2)
    q = torch.randn(1, 4, 2, 3)
    layout = SequenceLayout.full(1, 4)
    with pytest.raises(ValueError, match="expected k = q"):
        lsh(q, torch.randn(1, 5, 2, 3), torch.randn(1, 5, 2, 3), SequenceLayout(torch.tensor([4]), torch.tensor([5])))
    with pytest.raises(ValueError, match=r"shape \[B, L, H, D\]"):
        lsh(q[0], q[0], q[0], layout)
    with pytest.raises(ValueError, match="even 'num_buckets'"):
        LSHAttention(num_buckets=3)
    with pytest.raises(ValueError, match="chunk_size"):
        LSHAttention(chunk_size=0)
    assert LSHAttention.shared_query_key and LSHAttention.supports_causal and not LSHAttention.supports_cross
    assert repr(lsh) == (
        "LSHAttention(num_buckets=4, chunk_size=2, num_rounds=2, seed=0, dropout=0.0, backend='auto')"
    )
    assert LSHAttention(chunk_size=4).buckets_for(30) == 16


# ---------------------------------------------------------------------------- routing graph
def test_routing_members_are_balanced_top_w(generator):
    scores = torch.randn(3, 4, 9, generator=generator)
    lengths = torch.tensor([9, 5, 2])
    members = routing_members(scores, 3, lengths=lengths)
    assert members.shape == (3, 4, 3)
    for b in range(3):
        n = int(lengths[b])
        for c in range(4):
            taken = members[b, c][members[b, c] >= 0]
            assert taken.numel() == min(3, n), "each centroid takes exactly w real tokens"
            assert taken.unique().numel() == taken.numel() and bool((taken < n).all())
            expected = scores[b, c, :n].topk(min(3, n)).indices
            assert set(taken.tolist()) == set(expected.tolist())


def _reference_routing(q_scores, k_scores, window, q_lengths, k_lengths, causal):
    batch, clusters, lq = q_scores.shape
    lk = k_scores.size(2)
    mask = torch.zeros(batch * lq, batch * lk, dtype=torch.bool)
    for b in range(batch):
        nq, nk = int(q_lengths[b]), int(k_lengths[b])
        if causal:
            qc, kc = q_scores[b].argmax(0), k_scores[b].argmax(0)
            for i in range(nq):
                same = [j for j in range(min(i + 1, nk)) if kc[j] == qc[i]]
                for j in same[-window:]:
                    mask[b * lq + i, b * lk + j] = True
            continue
        for c in range(clusters):
            qm = q_scores[b, c, :nq].topk(min(window, nq)).indices
            km = k_scores[b, c, :nk].topk(min(window, nk)).indices
            for i in qm.tolist():
                for j in km.tolist():
                    mask[b * lq + i, b * lk + j] = True
    return mask


@pytest.mark.parametrize("causal", [False, True])
def test_kmeans_routing_graph_matches_brute_force(generator, causal):
    lq = 10
    lk = 10 if causal else 7
    q_scores = torch.randn(2, 3, lq, generator=generator)
    k_scores = torch.randn(2, 3, lk, generator=generator)
    q_lengths, k_lengths = torch.tensor([10, 6]), torch.tensor([lk, 5])
    graph = kmeans_routing_graph(q_scores, k_scores, 3, query_lengths=q_lengths, key_lengths=k_lengths, causal=causal)
    graph.validate()
    expected = _reference_routing(q_scores, k_scores, 3, q_lengths, k_lengths, causal)
    assert torch.equal(graph.to_dense(), expected)
    assert torch.equal(graph.key_ptr, torch.arange(3) * lk)


def test_kmeans_routing_one_cluster_is_full():
    lengths = torch.tensor([5, 3])
    scores = torch.randn(2, 1, 5)
    real = real_mask(lengths, 5)
    block = torch.block_diag(*[(real[b][:, None] & real[b][None, :]) for b in range(2)])
    assert torch.equal(kmeans_routing_graph(scores, window=5, query_lengths=lengths).to_dense(), block)
    causal = kmeans_routing_graph(scores, window=5, query_lengths=lengths, causal=True).to_dense()
    assert torch.equal(causal, block & torch.ones(10, 10, dtype=torch.bool).tril())


def test_kmeans_routing_errors():
    with pytest.raises(ValueError, match=r"\[B, C, L\]"):
        kmeans_routing_graph(torch.randn(3, 4))
    with pytest.raises(ValueError, match="same B and C"):
        kmeans_routing_graph(torch.randn(1, 2, 4), torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match="Lq == Lk"):
        kmeans_routing_graph(torch.randn(1, 2, 4), torch.randn(1, 2, 5), causal=True)
    with pytest.raises(ValueError, match="window"):
        routing_members(torch.randn(1, 2, 4), 0)


# ---------------------------------------------------------------------------- RoutingAttention
def _routing(heads=2, dim=4, **kwargs):
    kwargs.setdefault("backend", "csr")
    return RoutingAttention(num_heads=heads, head_dim=dim, **kwargs).double()


@pytest.mark.parametrize("causal", [False, True])
def test_routing_one_cluster_equals_full_attention(generator, causal):
    b, l, h, d = 2, 6, 2, 4
    q, k = (torch.randn(b, l, h, d, generator=generator, dtype=DOUBLE) for _ in range(2))
    v = torch.randn(b, l, h, 3, generator=generator, dtype=DOUBLE)
    lengths = torch.tensor([6, 4])
    routing = _routing(num_clusters=1, window=l).eval()
    out = routing(q, k, v, SequenceLayout(lengths, lengths, causal=causal))
    for s in range(b):
        n = int(lengths[s])
        mask = torch.ones(n, n, dtype=torch.bool)
        if causal:
            mask = mask.tril()
        expected, _ = dense_softmax(q[s, :n], k[s, :n], v[s, :n], mask)
        torch.testing.assert_close(out[s, :n], expected)
        assert torch.equal(out[s, n:], torch.zeros_like(out[s, n:]))


def test_routing_attends_its_graph_and_supports_cross_attention(generator):
    b, lq, lk, h, d = 2, 5, 8, 2, 4
    q = torch.randn(b, lq, h, d, generator=generator, dtype=DOUBLE)
    k = torch.randn(b, lk, h, d, generator=generator, dtype=DOUBLE)
    v = torch.randn(b, lk, h, 3, generator=generator, dtype=DOUBLE)
    layout = SequenceLayout(torch.tensor([5, 3]), torch.tensor([8, 6]))
    routing = _routing(num_clusters=3, window=2).eval()
    out = routing(q, k, v, layout)
    graph = routing.graph(q, k, layout)
    assert graph.num_queries == b * h * lq and graph.num_keys == b * h * lk
    expected, _ = dense_softmax(fold(q), fold(k), fold(v), graph.to_dense())
    torch.testing.assert_close(out, unfold(expected, b, lq, h))


def test_routing_ema_moves_centroids_toward_assigned_means_in_training_only(generator):
    b, l, h, d = 2, 6, 2, 4
    q, k = (torch.randn(b, l, h, d, generator=generator, dtype=DOUBLE) for _ in range(2))
    v = torch.randn(b, l, h, 3, generator=generator, dtype=DOUBLE)
    lengths = torch.tensor([6, 3])
    layout = SequenceLayout(lengths, lengths)
    routing = _routing(num_clusters=3, ema_decay=0.9)
    before = routing.centroids.clone()
    routing.eval()
    routing(q, k, v, layout)
    assert torch.equal(routing.centroids, before), "eval must not move the centroids"
    # reference: every real normalized query and key joins its nearest centroid (cosine)
    unit = lambda x: F.normalize(F.layer_norm(x, (d,)), dim=-1)  # noqa: E731
    real = real_mask(lengths, l)
    vectors = torch.cat([unit(q)[real], unit(k)[real]])  # [M, H, D]
    nearest = torch.einsum("mhd,hcd->mhc", vectors, F.normalize(before, dim=-1)).argmax(-1)
    expected = before.clone()
    for head in range(h):
        for c in range(3):
            members = vectors[nearest[:, head] == c, head]
            if len(members):
                expected[head, c] = 0.9 * before[head, c] + 0.1 * members.mean(0)
    routing.train()
    out = routing(q.requires_grad_(), k, v, layout)
    assert not routing.centroids.requires_grad
    torch.testing.assert_close(routing.centroids, expected)
    assert not torch.equal(routing.centroids, before)
    moved = [(head, c) for head in range(h) for c in range(3) if (nearest[:, head] == c).any()]
    for head, c in moved:
        target = vectors[nearest[:, head] == c, head].mean(0)
        assert (routing.centroids[head, c] - target).norm() < (before[head, c] - target).norm()
    out.sum().backward()  # the update is outside autograd
    assert q.grad is not None and bool(torch.isfinite(q.grad).all())


def test_routing_causal_ignores_future_tokens(generator):
    b, l, h, d, cut = 2, 12, 2, 4, 7
    q, k = (torch.randn(b, l, h, d, generator=generator, dtype=DOUBLE) for _ in range(2))
    v = torch.randn(b, l, h, 3, generator=generator, dtype=DOUBLE)
    layout = SequenceLayout.full(b, l, causal=True)
    routing = _routing(num_clusters=3, window=2).eval()
    out = routing(q, k, v, layout)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for t in (q2, k2, v2):
        t[:, cut:] = torch.randn(b, l - cut, h, t.size(-1), generator=generator, dtype=DOUBLE)
    out2 = routing(q2, k2, v2, layout)
    torch.testing.assert_close(out2[:, :cut], out[:, :cut])
    assert not torch.allclose(out2[:, cut:], out[:, cut:])


def test_routing_gradcheck(generator):
    q, k = (torch.randn(2, 5, 2, 3, generator=generator, dtype=DOUBLE, requires_grad=True) for _ in range(2))
    v = torch.randn(2, 5, 2, 2, generator=generator, dtype=DOUBLE, requires_grad=True)
    layout = SequenceLayout(torch.tensor([5, 3]), torch.tensor([5, 3]))
    routing = _routing(heads=2, dim=3, num_clusters=2, window=3).eval()
    assert torch.autograd.gradcheck(lambda q, k, v: routing(q, k, v, layout), (q, k, v))


def test_routing_errors_and_repr():
    routing = RoutingAttention(4, 2, num_heads=2, head_dim=3)
    x = torch.randn(1, 4, 3, 3)
    with pytest.raises(ValueError, match="built for 2 heads of size 3"):
        routing(x, x, x, SequenceLayout.full(1, 4))
    with pytest.raises(ValueError, match="causal attention needs Lq == Lk"):
        y = torch.randn(1, 4, 2, 3)
        routing(y, torch.randn(1, 5, 2, 3), torch.randn(1, 5, 2, 3),
                SequenceLayout(torch.tensor([4]), torch.tensor([5]), causal=True))
    with pytest.raises(ValueError, match="ema_decay"):
        RoutingAttention(4, num_heads=1, head_dim=2, ema_decay=1.5)
    assert routing.centroids.shape == (2, 4, 3)
    torch.testing.assert_close(routing.centroids.norm(dim=-1), torch.ones(2, 4))
    assert repr(routing) == (
        "RoutingAttention(num_clusters=4, window=2, num_heads=2, head_dim=3, ema_decay=0.999, dropout=0.0, "
        "backend='auto')"
    )


# ---------------------------------------------------------------------------- both mechanisms
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", ["lsh", "routing"])
def test_a_sequence_alone_equals_it_in_a_padded_batch(generator, kind, causal):
    b, l, h, d = 3, 9, 2, 4
    q, k = (torch.randn(b, l, h, d, generator=generator, dtype=DOUBLE) for _ in range(2))
    v = torch.randn(b, l, h, 3, generator=generator, dtype=DOUBLE)
    if kind == "lsh":
        k = q
        module = LSHAttention(num_buckets=4, chunk_size=2, num_rounds=2, backend="csr").eval()
    else:
        module = _routing(num_clusters=3, window=2).eval()
    lengths = torch.tensor([9, 5, 7])
    out = module(q, k, v, SequenceLayout(lengths, lengths, causal=causal))
    for s in range(b):
        n = int(lengths[s])
        alone = module(q[s:s + 1, :n], k[s:s + 1, :n], v[s:s + 1, :n], SequenceLayout.full(1, n, causal=causal))
        torch.testing.assert_close(out[s, :n], alone[0])
        assert torch.equal(out[s, n:], torch.zeros_like(out[s, n:]))


def test_routing_heads_mix_with_local_heads(generator):
    """The Routing Transformer's mix: local attention in some heads, routing in the others."""
    b, l, h, d = 2, 6, 4, 3
    q, k = (torch.randn(b, l, h, d, generator=generator, dtype=DOUBLE) for _ in range(2))
    v = torch.randn(b, l, h, 2, generator=generator, dtype=DOUBLE)
    local = patterns.batch(*[patterns.local(l, 1)] * b)
    layout = SequenceLayout(torch.tensor([l, l]), torch.tensor([l, l]), graph=local)
    routing = _routing(heads=2, dim=3, num_clusters=2, window=3).eval()
    mixed = HeadGroups([SoftmaxAttention(), routing])
    out = mixed(q, k, v, layout)
    torch.testing.assert_close(out[:, :, :2], SoftmaxAttention()(q[:, :, :2], k[:, :, :2], v[:, :, :2], layout))
    torch.testing.assert_close(out[:, :, 2:], routing(q[:, :, 2:], k[:, :, 2:], v[:, :, 2:], layout))
