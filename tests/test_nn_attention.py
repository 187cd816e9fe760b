"""Tests for graphattn.nn.MultiheadAttention: torch MHA / PyG TransformerConv / hand-written
equivalences in float64, invariants (batching, permutation, empty rows), gradients and errors."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from graphattn import AttentionGraph
from graphattn.nn import SCORES, AttentionOutput, MultiheadAttention, TorchCompatibleMultiheadAttention
import graphattn.nn.attention as attention_module

BACKENDS = ["reference", "dense", "csr", "auto"]
DTYPE = torch.float64


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=DTYPE)


def band(length: int, width: int) -> torch.Tensor:
    """[L, L] bool, True = may attend, |i - j| <= width."""
    index = torch.arange(length)
    return (index[:, None] - index[None, :]).abs() <= width


def randomize_biases(module: nn.Module) -> None:
    """Projection biases start at zero; make them non-zero so they are actually compared."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("bias"):
                parameter.normal_()


def manual_sequence_attention(
    module: MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    allowed: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense masked multi-head scaled-dot attention written out by hand.

    allowed: [B or 1, H or 1, Lq, Lk] bool (True = may attend); bias: [B, H, Lq, Lk] or None.
    Returns output [B, Lq, E] (zeros at rows without keys) and weights [B, H, Lq, Lk].
    """
    b, lq, _ = query.shape
    lk = key.size(1)
    h, d, dv = module.num_heads, module.head_dim, module.value_head_dim
    q = (query @ module.q_proj.weight.T + module.q_proj.bias).view(b, lq, h, d).transpose(1, 2)
    k = (key @ module.k_proj.weight.T + module.k_proj.bias).view(b, lk, h, d).transpose(1, 2)
    v = (value @ module.v_proj.weight.T + module.v_proj.bias).view(b, lk, h, dv).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # [B, H, Lq, Lk]
    if bias is not None:
        scores = scores + bias
    allowed = allowed.expand(b, h, lq, lk)
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1).nan_to_num(0.0)
    heads = (weights @ v).transpose(1, 2).reshape(b, lq, h * dv)
    out = heads @ module.out_proj.weight.T + module.out_proj.bias
    empty = ~allowed.any(-1).any(1)  # [B, Lq]
    return out.masked_fill(empty.unsqueeze(-1), 0.0), weights


# ---------------------------------------------------------------------- torch.nn.MultiheadAttention
B, L, S, E, H = 3, 4, 5, 8, 2

TORCH_CASES = {
    # name: (torch MHA kwargs, masks)
    "plain": (dict(batch_first=True), {}),
    "seq_first_padding": (dict(batch_first=False), {"kpm": "bool"}),
    "padding_float": (dict(batch_first=True), {"kpm": "float"}),
    "attn_bool_2d": (dict(batch_first=False), {"attn": "bool2d", "kpm": "bool"}),
    "attn_float_2d": (dict(batch_first=True), {"attn": "float2d"}),
    "attn_bool_3d": (dict(batch_first=True), {"attn": "bool3d", "kpm": "bool"}),
    "attn_float_3d": (dict(batch_first=False), {"attn": "float3d", "kpm": "float"}),
    "kdim_vdim": (dict(batch_first=False, kdim=5, vdim=3), {"kpm": "bool", "attn": "bool2d"}),
    "bias_kv_zero_attn": (dict(batch_first=True, add_bias_kv=True, add_zero_attn=True), {"kpm": "bool", "attn": "bool2d"}),
    "no_bias": (dict(batch_first=True, bias=False), {"attn": "bool2d"}),
}


def torch_masks(spec: dict) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """PyTorch-polarity masks for TORCH_CASES, and blocked [B, H, L, S] (True = not allowed)."""
    blocked = torch.zeros(B, H, L, S, dtype=torch.bool)
    kpm = attn = None
    if "kpm" in spec:
        pad = torch.zeros(B, S, dtype=torch.bool)
        pad[0, 3:] = True
        pad[2, :] = True  # a fully padded sequence: torch gives NaN, we give zeros
        blocked |= pad[:, None, None, :]
        if spec["kpm"] == "bool":
            kpm = pad
        else:
            kpm = randn(B, S).masked_fill(pad, float("-inf"))
    if "attn" in spec:
        kind = spec["attn"]
        shape = (L, S) if kind.endswith("2d") else (B * H, L, S)
        block = torch.rand(shape) < 0.4
        block[..., 1, :] = True  # a query that may attend nothing
        blocked |= block if kind.endswith("2d") else block.view(B, H, L, S)
        if kind.startswith("bool"):
            attn = block
        else:
            attn = randn(*shape).masked_fill(block, float("-inf"))
    return kpm, attn, blocked


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_from_torch_matches_torch_multihead_attention(case: str, backend: str) -> None:
    torch.manual_seed(0)
    kwargs, spec = TORCH_CASES[case]
    reference = nn.MultiheadAttention(E, H, dtype=DTYPE, **kwargs).eval()
    randomize_biases(reference)
    ours = MultiheadAttention.from_torch(reference, backend=backend)
    assert isinstance(ours, TorchCompatibleMultiheadAttention)
    kdim, vdim = kwargs.get("kdim", E), kwargs.get("vdim", E)
    batch_first = kwargs["batch_first"]
    query = randn(B, L, E) if batch_first else randn(L, B, E)
    key = randn(B, S, kdim) if batch_first else randn(S, B, kdim)
    value = randn(B, S, vdim) if batch_first else randn(S, B, vdim)
    kpm, attn, blocked = torch_masks(spec)
    if ours.bias_k is not None or ours.add_zero_attn:
        blocked = torch.zeros_like(blocked)  # the extra keys are always attended

    for average in (True, False):
        expected, expected_weights = reference(
            query, key, value, key_padding_mask=kpm, attn_mask=attn, average_attn_weights=average
        )
        got, weights = ours(query, key, value, key_padding_mask=kpm, attn_mask=attn, average_attn_weights=average)
        assert got.shape == expected.shape and weights.shape == expected_weights.shape
        assert torch.isfinite(got).all() and torch.isfinite(weights).all()
        finite = torch.isfinite(expected)
        torch.testing.assert_close(got[finite], expected[finite], atol=1e-5, rtol=1e-5)
        finite_weights = torch.isfinite(expected_weights)
        torch.testing.assert_close(weights[finite_weights], expected_weights[finite_weights], atol=1e-5, rtol=1e-5)

    empty = blocked.all(-1).all(1)  # [B, L]: no key in any head
    got_batch_first = got if batch_first else got.transpose(0, 1)
    assert (got_batch_first[empty] == 0).all()
    if spec:
        assert empty.any() or ours.bias_k is not None, "the case should contain a fully masked row"
    # need_weights=False takes torch's SDPA path; same output, no weights
    out, no_weights = ours(query, key, value, key_padding_mask=kpm, need_weights=False, attn_mask=attn)
    assert no_weights is None
    torch.testing.assert_close(out, got)


@pytest.mark.parametrize("batch_first", [True, False])
def test_from_torch_unbatched_input(batch_first: bool) -> None:
    torch.manual_seed(1)
    reference = nn.MultiheadAttention(E, H, dtype=DTYPE, batch_first=batch_first).eval()
    randomize_biases(reference)
    ours = MultiheadAttention.from_torch(reference, backend="csr")
    query, key = randn(L, E), randn(S, E)
    pad = torch.tensor([False, True, False, False, True])
    expected, expected_weights = reference(query, key, key, key_padding_mask=pad, average_attn_weights=False)
    got, weights = ours(query, key, key, key_padding_mask=pad, average_attn_weights=False)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, expected_weights, atol=1e-5, rtol=1e-5)


def test_from_torch_copies_configuration() -> None:
    reference = nn.MultiheadAttention(E, H, dropout=0.25, kdim=5, vdim=3, batch_first=True, dtype=DTYPE)
    ours = MultiheadAttention.from_torch(reference)
    assert (ours.kdim, ours.vdim, ours.dropout, ours.batch_first, ours.training) == (5, 3, 0.25, True, True)
    assert ours.q_proj.weight.dtype == DTYPE
    torch.testing.assert_close(ours.k_proj.weight, reference.k_proj_weight)
    ours.q_proj.weight.data.add_(1.0)  # copies, not shared storage
    assert not torch.equal(ours.q_proj.weight, reference.q_proj_weight)


# ---------------------------------------------------------------------- sequences vs hand-written
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["self_local", "cross_per_head_bias"])
def test_sequence_pattern_matches_hand_written_dense_attention(variant: str, backend: str) -> None:
    torch.manual_seed(2)
    batch, length = 2, 6
    if variant == "self_local":
        module = MultiheadAttention(E, H, backend=backend, dtype=DTYPE)
        query = randn(batch, length, E)
        key = value = query
        allowed = band(length, 1)
        pattern = AttentionGraph.from_dense(allowed)
        dense_allowed = allowed[None, None]
        edge_bias, dense_bias = None, None
    else:  # cross attention, kdim/vdim/value_head_dim differ, per-head pattern, edge bias
        module = MultiheadAttention(E, H, kdim=5, vdim=3, head_dim=3, value_head_dim=5, backend=backend, dtype=DTYPE)
        key_length = 7
        query, key, value = randn(batch, length, E), randn(batch, key_length, 5), randn(batch, key_length, 3)
        allowed = torch.rand(H, length, key_length) < 0.5
        allowed[:, 2] = False  # query 2 attends nothing
        allowed[0, 4] = False  # query 4 only through head 1
        allowed[1, 4, 0] = True
        pattern = AttentionGraph.from_dense(allowed)
        dense_allowed = allowed[None]
        edge_bias = randn(pattern.num_edges, H)
        dense_bias = torch.zeros(H, length, key_length, dtype=DTYPE)
        dense_bias[:, pattern.row, pattern.col] = edge_bias.T
        dense_bias = dense_bias.expand(batch, -1, -1, -1)
    randomize_biases(module)
    pad = torch.zeros(batch, key.size(1), dtype=torch.bool)
    pad[1, -2:] = True
    expected, expected_weights = manual_sequence_attention(
        module, query, key, value, dense_allowed & ~pad[:, None, None, :], dense_bias
    )
    got, weights = module(query, key, value, pattern=pattern, key_padding_mask=pad, edge_bias=edge_bias, need_weights=True)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(weights, expected_weights, atol=1e-10, rtol=1e-10)
    if variant != "self_local":
        assert (got[:, 2] == 0).all()


def test_full_pattern_is_default_and_batch_first_false() -> None:
    torch.manual_seed(3)
    module = MultiheadAttention(E, H, backend="csr", dtype=DTYPE)
    randomize_biases(module)
    x = randn(2, 5, E)
    full = AttentionGraph.from_dense(torch.ones(5, 5, dtype=torch.bool))
    expected = module(x, pattern=full)
    torch.testing.assert_close(module(x), expected)
    module.batch_first = False
    torch.testing.assert_close(module(x.transpose(0, 1)).transpose(0, 1), expected)


# ---------------------------------------------------------------------- PyG TransformerConv
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bipartite", [False, True])
def test_matches_pyg_transformer_conv(bipartite: bool, backend: str) -> None:
    pyg_nn = pytest.importorskip("torch_geometric.nn")
    torch.manual_seed(4)
    out_channels, heads = 4, 2
    embed_dim = heads * out_channels  # so that out_proj can be the identity
    num_queries, num_keys, key_dim = (5, 7, 6) if bipartite else (7, 7, embed_dim)
    in_channels = (key_dim, embed_dim) if bipartite else embed_dim  # PyG: (source, target)
    conv = pyg_nn.TransformerConv(in_channels, out_channels, heads=heads, concat=True, root_weight=False).double()
    module = MultiheadAttention(embed_dim, heads, kdim=key_dim, backend=backend, dtype=DTYPE)
    with torch.no_grad():
        for ours, theirs in ((module.q_proj, conv.lin_query), (module.k_proj, conv.lin_key), (module.v_proj, conv.lin_value)):
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias.normal_())
        module.out_proj.weight.copy_(torch.eye(embed_dim))
        module.out_proj.bias.zero_()
    # directed edges in PyG direction, row 0 = source = key j, row 1 = target = query i;
    # unsorted, no duplicates, and query num_queries - 1 has no incoming edge.
    cells = torch.randperm(num_keys * (num_queries - 1))[:15]
    edge_index = torch.stack([cells % num_keys, cells // num_keys])
    x_query = randn(num_queries, embed_dim)
    x_key = randn(num_keys, key_dim) if bipartite else x_query

    pyg_x = (x_key, x_query) if bipartite else x_query
    expected, (_, expected_weights) = conv(pyg_x, edge_index, return_attention_weights=True)
    if bipartite:
        got, weights = module.forward_graph(x_query, edge_index, x_key=x_key, need_weights=True)
    else:
        got, weights = module(x_query, edge_index, need_weights=True)  # PyG calling convention
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(weights, expected_weights, atol=1e-10, rtol=1e-10)  # input edge order
    assert (got[-1] == 0).all()
    # the graph path honours the direction: with an AttentionGraph the same edges give the same
    # output, and reversing self-attention edges changes it
    graph = AttentionGraph.from_edge_index(edge_index, num_queries, num_keys)
    torch.testing.assert_close(module.forward_graph(x_query, graph, x_key=x_key), expected, atol=1e-10, rtol=1e-10)
    if not bipartite:
        assert not torch.allclose(module(x_query, edge_index.flip(0)), expected)


# ---------------------------------------------------------------------- invariants
@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_sequences_equal_per_sequence_loop(backend: str) -> None:
    torch.manual_seed(5)
    module = MultiheadAttention(E, H, backend=backend, dtype=DTYPE)
    randomize_biases(module)
    batch, length = 3, 6
    x = randn(batch, length, E)
    pattern = AttentionGraph.from_dense(band(length, 2) & (torch.rand(length, length) < 0.8))
    pad = torch.rand(batch, length) < 0.3
    edge_bias = randn(batch, pattern.num_edges, H)
    out, weights = module(x, pattern=pattern, key_padding_mask=pad, edge_bias=edge_bias, need_weights=True)
    for b in range(batch):
        one, one_weights = module(
            x[b : b + 1], pattern=pattern, key_padding_mask=pad[b : b + 1], edge_bias=edge_bias[b], need_weights=True
        )
        torch.testing.assert_close(out[b : b + 1], one, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(weights[b : b + 1], one_weights, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_graphs_equal_per_graph_loop(backend: str) -> None:
    torch.manual_seed(6)
    module = MultiheadAttention(E, H, backend=backend, dtype=DTYPE)
    graphs = [AttentionGraph.from_dense(torch.rand(n, n) < 0.5) for n in (3, 5, 4)]
    xs = [randn(g.num_queries, E) for g in graphs]
    biases = [randn(g.num_edges, H) for g in graphs]
    batched = AttentionGraph.batch(graphs)
    out = module.forward_graph(torch.cat(xs), batched, edge_bias=torch.cat(biases))
    expected = torch.cat([module.forward_graph(x, g, edge_bias=b) for x, g, b in zip(xs, graphs, biases)])
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_node_permutation_permutes_output(backend: str) -> None:
    torch.manual_seed(7)
    module = MultiheadAttention(E, H, backend=backend, dtype=DTYPE)
    randomize_biases(module)
    n = 8
    x = randn(n, E)
    edge_index = (torch.rand(n, n) < 0.4).nonzero().T  # some nodes may have no in-edges
    edge_bias = randn(edge_index.size(1), H)
    out, weights = module(x, edge_index, edge_bias=edge_bias, need_weights=True)
    perm = torch.randperm(n)  # new node a is old node perm[a]
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(n)
    out_perm, weights_perm = module(x[perm], inverse[edge_index], edge_bias=edge_bias, need_weights=True)
    torch.testing.assert_close(out_perm, out[perm], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(weights_perm, weights, atol=1e-10, rtol=1e-10)  # same input edge order


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("score", SCORES)
def test_queries_without_keys_output_zeros(score: str, backend: str) -> None:
    torch.manual_seed(8)
    module = MultiheadAttention(E, H, score=score, backend=backend, dtype=DTYPE)
    randomize_biases(module)  # out_proj.bias != 0, yet empty rows stay exactly zero
    graph = AttentionGraph.from_edge_index(torch.tensor([[0, 1, 2], [1, 1, 3]]), 4, 3)  # queries 0, 2 empty
    x = randn(4, E).requires_grad_()
    out = module.forward_graph(x, graph, x_key=randn(3, E))
    assert (out[[0, 2]] == 0).all() and (out[[1, 3]] != 0).all()
    sequences = randn(2, 4, E)
    pad = torch.tensor([[True] * 4, [False, True, False, True]])
    seq_out = module(sequences, key_padding_mask=pad)
    assert (seq_out[0] == 0).all() and torch.isfinite(seq_out).all()
    (out.sum() + seq_out.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters()) and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------- scoring functions
TINY_EDGES = torch.tensor([[0, 2, 1, 0, 3, 2], [0, 0, 1, 2, 2, 2]])  # (key j, query i); query 3 empty


def manual_graph_attention(module: MultiheadAttention, x: torch.Tensor, edge_index: torch.Tensor, edge_bias: torch.Tensor):
    """Edge-by-edge loop with the textbook score formulas (tiny graphs only)."""
    h, d = module.num_heads, module.head_dim
    q = module.q_proj(x).view(-1, h, d)
    k = module.k_proj(x).view(-1, h, d)
    v = module.v_proj(x).view(-1, h, module.value_head_dim)
    scores = []
    for e, (j, i) in enumerate(edge_index.T.tolist()):
        if module.score == "scaled_dot":
            s = (q[i] * k[j]).sum(-1) / math.sqrt(d)
        elif module.score == "dot":
            s = (q[i] * k[j]).sum(-1)
        elif module.score == "bilinear":
            s = torch.stack([q[i, hh] @ module.bilinear_weight[hh] @ k[j, hh] for hh in range(h)])
        else:  # additive (Bahdanau)
            s = torch.stack([module.additive_weight[hh] @ torch.tanh(q[i, hh] + k[j, hh]) for hh in range(h)])
        scores.append(s + edge_bias[e])
    scores = torch.stack(scores)  # [E, H]
    heads = torch.zeros(x.size(0), h, module.value_head_dim, dtype=x.dtype)
    weights = torch.zeros_like(scores)
    for i in range(x.size(0)):
        incoming = (edge_index[1] == i).nonzero().flatten()
        if incoming.numel():
            w = torch.softmax(scores[incoming], 0)  # [deg, H]
            weights[incoming] = w
            heads[i] = (w.unsqueeze(-1) * v[edge_index[0, incoming]]).sum(0)
    out = module.out_proj(heads.reshape(x.size(0), -1))
    has_keys = torch.bincount(edge_index[1], minlength=x.size(0)) > 0
    return out * has_keys.unsqueeze(1), weights


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("score", SCORES)
def test_score_function_matches_formula(score: str, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(9)
    monkeypatch.setattr(attention_module, "_ADDITIVE_CHUNK_ELEMENTS", 2 * H * 3)  # 2 edges per chunk
    module = MultiheadAttention(6, H, score=score, backend=backend, dtype=DTYPE)
    randomize_biases(module)
    with torch.no_grad():
        if module.bilinear_weight is not None:
            module.bilinear_weight.normal_()  # not the identity it starts as
    x = randn(4, 6)
    edge_bias = randn(TINY_EDGES.size(1), H)
    expected, expected_weights = manual_graph_attention(module, x, TINY_EDGES, edge_bias)
    got, weights = module(x, TINY_EDGES, edge_bias=edge_bias, need_weights=True)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(weights, expected_weights, atol=1e-10, rtol=1e-10)


def test_fresh_bilinear_scores_like_scaled_dot() -> None:
    torch.manual_seed(10)
    bilinear = MultiheadAttention(E, H, score="bilinear", backend="csr", dtype=DTYPE)
    scaled = MultiheadAttention(E, H, backend="csr", dtype=DTYPE)
    scaled.load_state_dict({k: v for k, v in bilinear.state_dict().items() if k != "bilinear_weight"})
    x = randn(2, 5, E)
    torch.testing.assert_close(bilinear(x), scaled(x))
    dot = MultiheadAttention(E, H, score="dot", backend="csr", dtype=DTYPE)
    assert (dot.scale, scaled.scale) == (1.0, 1 / math.sqrt(E // H))


def test_additive_chunked_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(attention_module, "_ADDITIVE_CHUNK_ELEMENTS", 3 * 2 * 2)  # 3 edges per chunk
    torch.manual_seed(11)
    module = MultiheadAttention(4, 2, score="additive", backend="csr", dtype=DTYPE)
    randomize_biases(module)
    x = randn(4, 4).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: module(x, TINY_EDGES), (x,))


@pytest.mark.parametrize("score", SCORES)
def test_gradients_reach_every_parameter(score: str) -> None:
    torch.manual_seed(12)
    module = MultiheadAttention(E, H, score=score, kdim=5, vdim=3, backend="csr", dtype=DTYPE)
    query, key, value = randn(2, 4, E), randn(2, 6, 5), randn(2, 6, 3)
    pattern = AttentionGraph.from_dense(torch.rand(4, 6) < 0.6)
    module(query, key, value, pattern=pattern).square().sum().backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_gradients_reach_bias_kv_of_torch_compatible_module() -> None:
    torch.manual_seed(13)
    ours = MultiheadAttention.from_torch(nn.MultiheadAttention(E, H, add_bias_kv=True, dtype=DTYPE), backend="csr")
    x = randn(L, B, E)
    ours(x, x, x)[0].square().sum().backward()
    for name, parameter in ours.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------- module behaviour
def test_dropout_only_in_training() -> None:
    torch.manual_seed(14)
    module = MultiheadAttention(E, H, dropout=0.5, backend="reference", dtype=DTYPE)
    x = randn(2, 5, E)
    module.eval()
    evaluated = module(x)
    module.dropout = 0.0
    torch.testing.assert_close(module(x), evaluated)
    module.dropout = 0.5
    module.train()
    assert not torch.allclose(module(x), evaluated)


def test_weights_are_returned_not_stored() -> None:
    module = MultiheadAttention(E, H, dtype=DTYPE)
    before = dict(vars(module))
    result = module(randn(2, 3, E), need_weights=True)
    assert isinstance(result, AttentionOutput) and result.weights.shape == (2, H, 3, 3)
    assert dict(vars(module)).keys() == before.keys()
    assert all(vars(module)[k] is v for k, v in before.items() if not isinstance(v, dict))


def test_replicated_batch_is_cached_on_the_pattern() -> None:
    pattern = AttentionGraph.from_dense(band(5, 1))
    first = attention_module._replicated_batch(pattern, 3)
    assert attention_module._replicated_batch(pattern, 3) is first and first.replicated_from is pattern
    assert first.num_queries == 15 and first.num_edges == 3 * pattern.num_edges


def test_repr() -> None:
    module = MultiheadAttention(16, 4, kdim=8, value_head_dim=2, score="additive", dropout=0.1, backend="csr")
    text = repr(module)
    assert text.startswith(
        "MultiheadAttention(\n  16, num_heads=4, head_dim=4, value_head_dim=2, kdim=8, vdim=8, "
        "score='additive', dropout=0.1, backend='csr'\n"
    )
    assert "(out_proj): Linear(in_features=8, out_features=16, bias=True)" in text
    assert "add_bias_kv=True" in repr(TorchCompatibleMultiheadAttention(8, 2, add_bias_kv=True))


def test_reset_parameters() -> None:
    module = MultiheadAttention(E, H, score="bilinear")
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.fill_(3.0)
    module.reset_parameters()
    assert (module.q_proj.bias == 0).all() and (module.out_proj.bias == 0).all()
    assert module.q_proj.weight.abs().max() < 1.0
    torch.testing.assert_close(module.bilinear_weight[1], torch.eye(4) / 2)


# ---------------------------------------------------------------------- bad input
def _errors():
    m = MultiheadAttention(E, H, kdim=5)
    x, k = torch.randn(2, 4, E), torch.randn(2, 6, 5)
    nodes = torch.randn(4, E)
    edges = torch.tensor([[0, 1], [1, 2]])
    compat = TorchCompatibleMultiheadAttention(E, H, batch_first=True)
    return [
        ("embed_dim not divisible", lambda: MultiheadAttention(10, 3), ValueError, "divisible"),
        ("bad num_heads", lambda: MultiheadAttention(8, 0), ValueError, "num_heads"),
        ("bad score", lambda: MultiheadAttention(8, 2, score="cosine"), ValueError, "Unknown score"),
        ("bad backend", lambda: MultiheadAttention(8, 2, backend="fast"), ValueError, "Unknown backend"),
        ("bad dropout", lambda: MultiheadAttention(8, 2, dropout=1.0), ValueError, "dropout"),
        ("query dims", lambda: m(torch.randn(2, 3, 4, E), k), ValueError, r"\[B, L, E\]"),
        ("query embed dim", lambda: m(torch.randn(2, 4, 7), k), ValueError, "embed_dim = 8"),
        ("key dim", lambda: m(x, torch.randn(2, 6, E)), ValueError, "kdim = 5"),
        ("integer query", lambda: m(torch.ones(2, 4, E, dtype=torch.long), k), TypeError, "floating"),
        ("batch mismatch", lambda: m(x, torch.randn(3, 6, 5)), ValueError, "batch size"),
        ("pattern size", lambda: m(x, k, pattern=AttentionGraph.from_dense(band(4, 1))), ValueError, "num_keys = Lk = 6"),
        ("pattern type", lambda: m(x, k, pattern=torch.ones(4, 6, dtype=torch.bool)), TypeError, "AttentionGraph"),
        ("pattern heads", lambda: m(x, k, pattern=AttentionGraph.from_dense(torch.ones(3, 4, 6, dtype=torch.bool))), ValueError, "3 heads"),
        ("padding shape", lambda: m(x, k, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)), ValueError, r"\[2, 6\]"),
        ("padding dtype", lambda: m(x, k, key_padding_mask=torch.zeros(2, 6)), TypeError, "True = padding"),
        ("edge bias shape", lambda: m(x, k, edge_bias=torch.zeros(5, H)), ValueError, "edge_bias"),
        ("graph as key of a sequence", lambda: m(x, AttentionGraph.from_dense(band(4, 1))), TypeError, "pattern="),
        ("2-D query without graph", lambda: m(nodes), ValueError, "needs a graph"),
        ("2-D query with float key", lambda: m(nodes, torch.randn(4, 5)), ValueError, "unsqueeze"),
        ("node feature dim", lambda: m.forward_graph(torch.randn(4, 7), edges), ValueError, "embed_dim = 8"),
        ("x_key dim", lambda: m.forward_graph(nodes, edges, x_key=torch.randn(4, E)), ValueError, "kdim = 5"),
        ("graph size", lambda: m.forward_graph(nodes, AttentionGraph.from_dense(band(3, 1)), x_key=torch.randn(3, 5)), ValueError, "does not match"),
        ("edge index range", lambda: m.forward_graph(nodes, torch.tensor([[0], [9]]), x_key=torch.randn(3, 5)), ValueError, "num_queries"),
        ("edge index dtype", lambda: m.forward_graph(nodes, edges.float(), x_key=torch.randn(3, 5)), TypeError, "integer"),
        ("graph type", lambda: m.forward_graph(nodes, [[0, 1], [1, 2]], x_key=torch.randn(3, 5)), TypeError, "edge_index"),
        ("graph edge bias", lambda: m.forward_graph(nodes, edges, x_key=torch.randn(3, 5), edge_bias=torch.zeros(3, H)), ValueError, r"\[E_in, H\]"),
        ("from_torch type", lambda: MultiheadAttention.from_torch(nn.Linear(2, 2)), TypeError, "torch.nn.MultiheadAttention"),
        ("torch 2-D mask shape", lambda: compat(x, x, x, attn_mask=torch.zeros(4, 3, dtype=torch.bool)), ValueError, r"\[L, S\] = \[4, 4\]"),
        ("torch 3-D mask shape", lambda: compat(x, x, x, attn_mask=torch.zeros(2, 4, 4, dtype=torch.bool)), ValueError, r"\[B \* H, L, S\]"),
        ("torch mask dtype", lambda: compat(x, x, x, attn_mask=torch.zeros(4, 4, dtype=torch.long)), TypeError, "bool mask"),
        ("torch is_causal without mask", lambda: compat(x, x, x, is_causal=True), ValueError, "needs attn_mask"),
        ("torch padding shape", lambda: compat(x, x, x, key_padding_mask=torch.zeros(2, 3)), ValueError, "key_padding_mask"),
    ]


@pytest.mark.parametrize("name,call,error,match", _errors(), ids=[e[0] for e in _errors()])
def test_bad_input_raises(name: str, call, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("bias", [True, False])
def test_fused_self_projection_equals_separate_projections(bias: bool) -> None:
    torch.manual_seed(0)
    attn = MultiheadAttention(12, 3, bias=bias).double()
    x = torch.randn(7, 12, dtype=torch.float64, requires_grad=True)
    fused = attn.project(x, x, x)  # one matrix product
    separate = (attn.project_query(x), *attn.project_key_value(x, x.clone()))  # distinct tensors: unfused
    for a, b in zip(fused, separate):
        torch.testing.assert_close(a, b)
    grads = torch.autograd.grad(sum((t * t).sum() for t in fused), [x, attn.q_proj.weight, attn.v_proj.weight])
    expected = torch.autograd.grad(sum((t * t).sum() for t in separate), [x, attn.q_proj.weight, attn.v_proj.weight])
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b)


def test_stacked_inference_weights_follow_every_parameter_change() -> None:
    """Without gradients the stacked q/k/v weights are reused; an optimizer step, load_state_dict
    or a replaced parameter must still be seen at once."""
    torch.manual_seed(0)
    attn = MultiheadAttention(12, 3).double()
    x = torch.randn(5, 12, dtype=torch.float64)

    def check() -> None:
        with torch.no_grad():
            fused = attn.project(x, x, x)
            separate = (attn.project_query(x), *attn.project_key_value(x, x.clone()))
        for a, b in zip(fused, separate):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)

    check()
    with torch.no_grad():
        first = attn._stacked_parameters((attn.q_proj, attn.k_proj, attn.v_proj), True)[0]
        assert attn._stacked_parameters((attn.q_proj, attn.k_proj, attn.v_proj), True)[0] is first  # reused
    optimizer = torch.optim.SGD(attn.parameters(), lr=0.1)
    attn.project(x, x, x)[2].sum().backward()
    optimizer.step()  # in place: the version counter moves
    check()
    attn.load_state_dict({k: torch.randn_like(v) for k, v in attn.state_dict().items()})
    check()
    attn.k_proj.weight = torch.nn.Parameter(torch.randn(12, 12, dtype=torch.float64))  # a new tensor
    check()
    with torch.inference_mode():
        torch.testing.assert_close(attn.project(x, x, x)[1], attn.k_proj(x).unflatten(-1, (3, 4)))
