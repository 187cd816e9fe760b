"""graphattn.ops.linear: kernelized linear attention against its dense float64 reference."""
from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from graphattn.ops import linear
from graphattn.ops.linear import (
    elu_feature_map,
    favor_features,
    linear_attention,
    linear_attention_reference,
    orthogonal_random_matrix,
)
from graphattn.ops.lowrank import softmax_attention

DOUBLE = torch.float64


def _features(*shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return elu_feature_map(torch.randn(*shape, generator=gen, dtype=DOUBLE))


def _values(*shape: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=DOUBLE)


def _batched_inputs(batch=2, length_q=9, length_k=9, heads=2, features=3, value_dim=4):
    q = _features(batch, length_q, heads, features, seed=0).requires_grad_()
    k = _features(batch, length_k, heads, features, seed=1).requires_grad_()
    v = _values(batch, length_k, heads, value_dim, seed=2).requires_grad_()
    return q, k, v


def _lengths_mask(lengths: list[int], slots: int) -> torch.Tensor:
    return torch.arange(slots) < torch.tensor(lengths)[:, None]


def _assert_same_values_and_grads(fast, slow, inputs):
    assert torch.allclose(fast, slow, atol=1e-12, rtol=1e-10)
    cotangent = _values(*fast.shape, seed=7)
    grads_fast = torch.autograd.grad(fast, inputs, cotangent, retain_graph=True)
    grads_slow = torch.autograd.grad(slow, inputs, cotangent, retain_graph=True)
    for a, b in zip(grads_fast, grads_slow):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-10)


# ---------------------------------------------------------------------------------- feature maps
def test_elu_feature_map_is_elu_plus_one_and_positive():
    x = torch.linspace(-30, 5, 50, dtype=DOUBLE)
    phi = elu_feature_map(x)
    assert torch.all(phi > 0)
    assert torch.allclose(phi, torch.where(x > 0, x + 1, torch.exp(x)))


@pytest.mark.parametrize("num_features, dim", [(8, 4), (10, 4), (3, 5)])
def test_orthogonal_random_matrix_rows_orthogonal_within_blocks(num_features, dim):
    w = orthogonal_random_matrix(num_features, dim, generator=torch.Generator().manual_seed(0), dtype=DOUBLE)
    assert w.shape == (num_features, dim)
    for start in range(0, num_features, dim):
        block = w[start : start + dim]
        gram = block @ block.t()
        assert torch.allclose(gram - torch.diag(torch.diagonal(gram)), torch.zeros_like(gram), atol=1e-12)
    assert torch.all(w.norm(dim=1) > 0)


def test_orthogonal_random_matrix_rows_look_gaussian():
    # each row has a Gaussian vector's marginal law: E|w|^2 = dim, E[w] = 0, E[w w^T] = I
    w = orthogonal_random_matrix(4000, 4, generator=torch.Generator().manual_seed(1), dtype=DOUBLE)
    assert abs(w.square().sum(1).mean().item() - 4) < 0.2
    assert w.mean(0).abs().max() < 0.1  # a Q factor without sign correction fails this
    assert torch.allclose(w.t() @ w / 4000, torch.eye(4, dtype=DOUBLE), atol=0.1)


def test_orthogonal_random_matrix_is_reproducible():
    draw = lambda seed: orthogonal_random_matrix(6, 3, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))
    assert draw(3).dtype == torch.get_default_dtype()


def test_favor_features_formula_and_stabilizers():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 4, generator=gen, dtype=DOUBLE) * 0.5  # [B, L, H, D]
    w = torch.randn(7, 4, generator=gen, dtype=DOUBLE)
    raw = torch.exp(x @ w.t() - x.square().sum(-1, keepdim=True) / 2) / math.sqrt(7)
    projected = x @ w.t()
    as_query = favor_features(x, w, is_query=True)
    as_key = favor_features(x, w, is_query=False)
    assert as_query.shape == (2, 5, 3, 7)
    assert torch.allclose(as_query, raw * torch.exp(-projected.amax(-1, keepdim=True)))
    assert torch.allclose(as_key, raw * torch.exp(-projected.amax(dim=(1, 3), keepdim=True)))
    assert torch.all(as_query > 0) and torch.all(as_key > 0)
    # no overflow on large inputs: the largest exponent is at most 0
    assert torch.isfinite(favor_features(x * 100, w, is_query=True)).all()
    assert torch.isfinite(favor_features(x * 100, w, is_query=False)).all()


def test_favor_features_segment_stabilizer_is_per_graph():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 2, 4, generator=gen, dtype=DOUBLE)
    w = torch.randn(5, 4, generator=gen, dtype=DOUBLE)
    ptr = torch.tensor([0, 3, 7])
    together = favor_features(x, w, is_query=False, segments=ptr)
    assert torch.allclose(together[:3], favor_features(x[:3], w, is_query=False))
    assert torch.allclose(together[3:], favor_features(x[3:], w, is_query=False))


@pytest.mark.parametrize("causal", [False, True])
def test_favor_approaches_softmax_attention_with_many_features(causal):
    gen = torch.Generator().manual_seed(0)
    batch, length, heads, dim = 2, 8, 2, 4
    q, k, v = (torch.randn(batch, length, heads, dim, generator=gen, dtype=DOUBLE) * 0.5 for _ in range(3))
    exact = softmax_attention(q, k, v, causal=causal)
    errors = {}
    for num_features in (16, 4096):
        w = orthogonal_random_matrix(num_features, dim, generator=torch.Generator().manual_seed(1), dtype=DOUBLE)
        scale = dim**-0.25
        approx = linear_attention(
            favor_features(q * scale, w, is_query=True),
            favor_features(k * scale, w, is_query=False),
            v,
            causal=causal,
            eps=0.0,
        )
        errors[num_features] = ((approx - exact).norm() / exact.norm()).item()
    assert errors[4096] < 0.05
    assert errors[4096] < errors[16]


# ---------------------------------------------------------------------------------- linear attention == reference
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_linear_attention_matches_reference(causal, masked, chunk_size):
    q, k, v = _batched_inputs()
    key_mask = _lengths_mask([9, 5], 9) if masked else None
    fast = linear_attention(q, k, v, key_mask=key_mask, causal=causal, chunk_size=chunk_size)
    slow = linear_attention_reference(q, k, v, key_mask=key_mask, causal=causal)
    assert fast.shape == (2, 9, 2, 4)
    _assert_same_values_and_grads(fast, slow, (q, k, v))


def test_linear_attention_cross_lengths_match_reference():
    q, k, v = _batched_inputs(length_q=4, length_k=7)
    key_mask = _lengths_mask([7, 3], 7)
    fast = linear_attention(q, k, v, key_mask=key_mask)
    _assert_same_values_and_grads(fast, linear_attention_reference(q, k, v, key_mask=key_mask), (q, k, v))
    assert fast.shape == (2, 4, 2, 4)


def test_linear_attention_is_the_kernel_weighted_average():
    # definition, written out for one query: sum_j k(q, k_j) v_j / sum_j k(q, k_j)
    q, k, v = _batched_inputs()
    out = linear_attention(q, k, v, eps=0.0)
    b, i, h = 1, 4, 0
    weights = k[b, :, h] @ q[b, i, h]  # [L]
    assert torch.allclose(out[b, i, h], (weights[:, None] * v[b, :, h]).sum(0) / weights.sum())


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_gradcheck(causal):
    q, k, v = _batched_inputs(batch=2, length_q=5, length_k=5, heads=1, features=2, value_dim=2)
    key_mask = _lengths_mask([5, 3], 5)
    assert gradcheck(
        lambda q, k, v: linear_attention(q, k, v, key_mask=key_mask, causal=causal, chunk_size=2), (q, k, v)
    )


def test_rows_without_keys_are_zero_not_nan():
    q, k, v = _batched_inputs()
    key_mask = _lengths_mask([9, 0], 9)
    k_bad = k.detach().clone()
    v_bad = v.detach().clone()
    k_bad[1] = float("nan")  # excluded keys are ignored even when non-finite
    v_bad[1] = float("inf")
    k_bad.requires_grad_()
    v_bad.requires_grad_()
    for causal in (False, True):
        out = linear_attention(q, k_bad, v_bad, key_mask=key_mask, causal=causal)
        assert torch.equal(out[1], torch.zeros_like(out[1]))
        assert torch.isfinite(out).all()
        grads = torch.autograd.grad(out.sum(), (q, k_bad, v_bad))
        assert all(torch.isfinite(g).all() for g in grads)
    # causal: with masked keys first, the early queries have no keys either
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[:, :3] = False
    out = linear_attention(q, k, v, key_mask=mask, causal=True)
    assert torch.equal(out[:, :3], torch.zeros_like(out[:, :3]))
    assert torch.allclose(out, linear_attention_reference(q, k, v, key_mask=mask, causal=True))


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_causal_linear_attention_leaks_nothing_from_the_future(chunk_size):
    q, k, v = (t.detach() for t in _batched_inputs(length_q=10, length_k=10))
    out = linear_attention(q, k, v, causal=True, chunk_size=chunk_size)
    t = 5
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[:, t + 1 :] = _features(2, 4, 2, 3, seed=11)
    k2[:, t + 1 :] = _features(2, 4, 2, 3, seed=12) * 100
    v2[:, t + 1 :] = 1e6
    out2 = linear_attention(q2, k2, v2, causal=True, chunk_size=chunk_size)
    assert torch.equal(out[:, : t + 1], out2[:, : t + 1])
    assert not torch.allclose(out[:, t + 1 :], out2[:, t + 1 :])


def test_half_precision_sums_in_float32():
    q, k, v = (t.detach() for t in _batched_inputs())
    exact = linear_attention(q, k, v, causal=True)
    half = linear_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True)
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.double(), exact, atol=0.05, rtol=0.05)


# ---------------------------------------------------------------------------------- segments (batched graphs)
SEGMENT_PTRS = {
    "three_graphs": [0, 3, 7, 11],
    "with_empty_graph": [0, 4, 4, 11],
    "one_graph": [0, 11],
}


@pytest.mark.parametrize("ptr", SEGMENT_PTRS.values(), ids=SEGMENT_PTRS.keys())
@pytest.mark.parametrize("causal", [False, True])
def test_segments_equal_per_graph_loop_and_reference(ptr, causal):
    nodes, heads = 11, 2
    q = _features(nodes, heads, 3, seed=0).requires_grad_()
    k = _features(nodes, heads, 3, seed=1).requires_grad_()
    v = _values(nodes, heads, 4, seed=2).requires_grad_()
    segments = torch.tensor(ptr)
    out = linear_attention(q, k, v, segments=segments, causal=causal, chunk_size=2)
    assert out.shape == (nodes, heads, 4)
    loop = []
    for start, end in zip(ptr[:-1], ptr[1:]):
        if end > start:
            one = linear_attention(q[None, start:end], k[None, start:end], v[None, start:end], causal=causal)
            loop.append(one[0])
    _assert_same_values_and_grads(out, torch.cat(loop), (q, k, v))
    reference = linear_attention_reference(q, k, v, segments=segments, causal=causal)
    _assert_same_values_and_grads(out, reference, (q, k, v))


def test_segments_do_not_mix_graphs():
    q, k = _features(7, 1, 3, seed=0), _features(7, 1, 3, seed=1)
    v = _values(7, 1, 2)
    segments = torch.tensor([0, 3, 7])
    out = linear_attention(q, k, v, segments=segments)
    v2 = v.clone()
    v2[3:] = 1e3
    k2 = k.clone()
    k2[3:] = 50.0
    out2 = linear_attention(q, k2, v2, segments=segments)
    assert torch.equal(out[:3], out2[:3])


@pytest.mark.parametrize("causal", [False, True])
def test_segments_with_key_mask(causal):
    q = _features(8, 2, 3, seed=0).requires_grad_()
    k = _features(8, 2, 3, seed=1).requires_grad_()
    v = _values(8, 2, 2).requires_grad_()
    segments = torch.tensor([0, 3, 8])
    key_mask = torch.tensor([True, False, True, False, False, True, True, False])
    out = linear_attention(q, k, v, segments=segments, key_mask=key_mask, causal=causal)
    reference = linear_attention_reference(q, k, v, segments=segments, key_mask=key_mask, causal=causal)
    _assert_same_values_and_grads(out, reference, (q, k, v))


def test_segments_chunked_path_matches(monkeypatch):
    # force many node chunks (and activation checkpointing of the gathered states)
    monkeypatch.setattr(linear, "_SEGMENT_CHUNK_ELEMENTS", 2 * 3 * 4 * 2)
    q = _features(11, 2, 3, seed=0).requires_grad_()
    k = _features(11, 2, 3, seed=1).requires_grad_()
    v = _values(11, 2, 4).requires_grad_()
    segments = torch.tensor([0, 3, 7, 11])
    out = linear_attention(q, k, v, segments=segments)
    _assert_same_values_and_grads(out, linear_attention_reference(q, k, v, segments=segments), (q, k, v))


@pytest.mark.parametrize("causal", [False, True])
def test_segments_gradcheck(causal):
    q = _features(6, 1, 2, seed=0).requires_grad_()
    k = _features(6, 1, 2, seed=1).requires_grad_()
    v = _values(6, 1, 2).requires_grad_()
    segments = torch.tensor([0, 2, 6])
    assert gradcheck(lambda q, k, v: linear_attention(q, k, v, segments=segments, causal=causal), (q, k, v))


# ---------------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_with_expected_and_got():
    q, k, v = (t.detach() for t in _batched_inputs())
    with pytest.raises(ValueError, match=r"expected q_features, k_features, v of shapes"):
        linear_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="need segments=ptr"):
        linear_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="expected q_features, k_features, v"):
        linear_attention(q, k[..., :2], v)
    with pytest.raises(ValueError, match="causal attention needs Lq == Lk"):
        linear_attention(q[:, :4], k, v, causal=True)
    with pytest.raises(ValueError, match=r"expected bool 'key_mask' of shape \[2, 9\]"):
        linear_attention(q, k, v, key_mask=torch.ones(2, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_mask"):
        linear_attention(q, k, v, key_mask=torch.ones(2, 9))
    with pytest.raises(TypeError, match="floating point"):
        linear_attention(q.long(), k, v)
    with pytest.raises(ValueError, match="eps >= 0"):
        linear_attention(q, k, v, eps=-1.0)
    with pytest.raises(ValueError, match="chunk_size"):
        linear_attention(q, k, v, chunk_size=0)
    with pytest.raises(ValueError, match=r"ptr\[-1\] = N = 9"):
        linear_attention(q[0], k[0], v[0], segments=torch.tensor([0, 4, 8]))
    with pytest.raises(ValueError, match="non-decreasing"):
        linear_attention(q[0], k[0], v[0], segments=torch.tensor([0, 6, 4, 9]))
    with pytest.raises(TypeError, match="integer dtype"):
        linear_attention(q[0], k[0], v[0], segments=torch.tensor([0.0, 9.0]))
    with pytest.raises(ValueError, match=r"expected 'projection' of shape \[M, D\] with D = 3"):
        favor_features(q, torch.randn(5, 4, dtype=DOUBLE), is_query=True)
    with pytest.raises(ValueError, match="num_features"):
        orthogonal_random_matrix(0, 3)
