"""graphattn.nn.efficient and graphattn.ops.lowrank: the defining property of every mechanism, in float64."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from graphattn.nn.efficient import (
    CompressedAttention,
    LinearAttention,
    LinformerAttention,
    PerformerAttention,
    SynthesizerAttention,
)
from graphattn.nn.mechanism import AttentionMechanism, SequenceLayout
from graphattn.ops.lowrank import (
    compress,
    compress_mask,
    compressed_length,
    linformer_attention,
    linformer_project,
    masked_softmax,
    softmax_attention,
)

DOUBLE = torch.float64
H, D, DV = 2, 4, 3  # heads, query/key head size, value head size

FACTORIES = {
    "linear": lambda: LinearAttention(chunk_size=3),
    "performer": lambda: PerformerAttention(D, num_features=16, chunk_size=3),
    "performer_iid": lambda: PerformerAttention(D, num_features=16, orthogonal=False),
    "linformer": lambda: LinformerAttention(max_length=12, projected_length=5),
    "linformer_shared": lambda: LinformerAttention(max_length=12, projected_length=5, share_kv=True),
    "compressed": lambda: CompressedAttention(D, stride=2, value_head_dim=DV),
    "compressed_overlap": lambda: CompressedAttention(D, stride=2, kernel_size=3, value_head_dim=DV),
    "synthesizer_dense": lambda: SynthesizerAttention("dense", 12, H, D, hidden=5),
    "synthesizer_random": lambda: SynthesizerAttention("random", 12, H),
}
NAMES = list(FACTORIES)
CAUSAL_NAMES = [name for name in NAMES if FACTORIES[name]().supports_causal]
USES_QUERY = {name: name != "synthesizer_random" for name in NAMES}
USES_KEY = {name: not name.startswith("synthesizer") for name in NAMES}


def _make(name: str) -> AttentionMechanism:
    torch.manual_seed(0)
    return FACTORIES[name]().double()


def _inputs(batch=2, length_q=9, length_k=9, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, length_q, H, D, generator=gen, dtype=DOUBLE)
    k = torch.randn(batch, length_k, H, D, generator=gen, dtype=DOUBLE)
    v = torch.randn(batch, length_k, H, DV, generator=gen, dtype=DOUBLE)
    return tuple(t.requires_grad_(requires_grad) for t in (q, k, v))


def _layout(query_lengths, key_lengths, causal=False) -> SequenceLayout:
    return SequenceLayout(torch.tensor(query_lengths), torch.tensor(key_lengths), causal)


# ---------------------------------------------------------------------------------- every mechanism
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("causal", [False, True])
def test_shape_and_padded_query_rows_are_zero(name, causal):
    mechanism = _make(name)
    if causal and not mechanism.supports_causal:
        with pytest.raises(ValueError, match="has no causal variant"):
            mechanism(*_inputs(), _layout([9, 6], [9, 6], causal=True))
        return
    q, k, v = _inputs()
    out = mechanism(q, k, v, _layout([9, 6], [9, 6], causal))
    assert out.shape == (2, 9, H, DV) and out.dtype == DOUBLE
    assert torch.isfinite(out).all()
    assert torch.equal(out[1, 6:], torch.zeros_like(out[1, 6:]))
    assert out[0].abs().sum() > 0 and out[1, :6].abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_cross_attention_lengths(name):
    mechanism = _make(name)
    assert mechanism.supports_cross
    q, k, v = _inputs(length_q=5, length_k=8)
    out = mechanism(q, k, v, _layout([5, 3], [8, 4]))
    assert out.shape == (2, 5, H, DV)
    assert torch.equal(out[1, 3:], torch.zeros_like(out[1, 3:]))


@pytest.mark.parametrize("name, causal", [(name, False) for name in NAMES] + [(name, True) for name in CAUSAL_NAMES])
def test_padded_keys_have_no_influence(name, causal):
    mechanism = _make(name).eval()  # Performer: no redraw between the two calls
    q, k, v = _inputs()
    layout = _layout([9, 6], [9, 6], causal)
    out = mechanism(q, k, v, layout)
    k2, v2 = k.clone(), v.clone()
    k2[1, 6:] = float("nan")
    v2[1, 6:] = float("inf")
    out2 = mechanism(q, k2, v2, layout)
    assert torch.isfinite(out2).all()
    assert torch.allclose(out[1], out2[1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", CAUSAL_NAMES)
@pytest.mark.parametrize("t", [0, 3, 7])
def test_causal_leaks_nothing_from_the_future(name, t):
    mechanism = _make(name).eval()
    q, k, v = _inputs()
    layout = _layout([9, 9], [9, 9], causal=True)
    out = mechanism(q, k, v, layout)
    gen = torch.Generator().manual_seed(5)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[:, t + 1 :] = torch.randn(q2[:, t + 1 :].shape, generator=gen, dtype=DOUBLE) * 3
    k2[:, t + 1 :] = torch.randn(k2[:, t + 1 :].shape, generator=gen, dtype=DOUBLE) * 3
    v2[:, t + 1 :] = torch.randn(v2[:, t + 1 :].shape, generator=gen, dtype=DOUBLE) * 100
    out2 = mechanism(q2, k2, v2, layout)
    # Performer's key stabilizer (a max over the sequence) cancels only up to rounding
    assert torch.allclose(out[:, : t + 1], out2[:, : t + 1], atol=1e-12, rtol=1e-10)
    assert not torch.allclose(out[:, t + 1 :], out2[:, t + 1 :])


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_inputs_and_parameters(name):
    mechanism = _make(name).train()
    q, k, v = _inputs(requires_grad=True)
    causal = mechanism.supports_causal
    out = mechanism(q, k, v, _layout([9, 6], [9, 6], causal))
    out.square().sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0
    assert torch.equal(v.grad[1, 6:], torch.zeros_like(v.grad[1, 6:]))  # padded values get nothing
    if USES_QUERY[name]:
        assert q.grad.abs().sum() > 0
        assert torch.equal(q.grad[1, 6:], torch.zeros_like(q.grad[1, 6:]))  # padded queries neither
    else:
        assert q.grad is None or q.grad.abs().sum() == 0
    if USES_KEY[name]:
        assert k.grad.abs().sum() > 0
    else:
        assert k.grad is None or k.grad.abs().sum() == 0
    for param_name, param in mechanism.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck(name):
    mechanism = _make(name).eval()
    q, k, v = _inputs(batch=2, length_q=5, length_k=5, requires_grad=True)
    layout = _layout([5, 3], [5, 4], causal=False)
    assert gradcheck(lambda q, k, v: mechanism(q, k, v, layout), (q, k, v))


@pytest.mark.parametrize("name", NAMES)
def test_check_inputs_errors(name):
    mechanism = _make(name)
    q, k, v = _inputs()
    layout = _layout([9, 9], [9, 9])
    with pytest.raises(ValueError, match=r"expected 'q' of shape \[B, L, H, D\]"):
        mechanism(q[0], k, v, layout)
    with pytest.raises(ValueError, match="expected q"):
        mechanism(q, k[:, :, :1], v, layout)
    with pytest.raises(ValueError, match="query_lengths and key_lengths"):
        mechanism(q, k, v, _layout([9], [9]))


@pytest.mark.parametrize("name", NAMES)
def test_reset_parameters_is_deterministic_under_a_seed(name):
    a, b = _make(name), _make(name)
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), key
    assert isinstance(repr(a), str) and type(a).__name__ in repr(a)


def test_reprs():
    assert repr(LinearAttention()) == "LinearAttention(feature_map='elu', eps=1e-06, chunk_size=64)"
    assert (
        repr(PerformerAttention(8, num_features=32, redraw_every=None))
        == "PerformerAttention(head_dim=8, num_features=32, redraw_every=None, orthogonal=True, seed=0)"
    )
    assert (
        repr(LinformerAttention(64, 16, share_kv=True))
        == "LinformerAttention(max_length=64, projected_length=16, share_kv=True)"
    )
    assert repr(CompressedAttention(8, 3)) == "CompressedAttention(head_dim=8, stride=3)"
    assert repr(SynthesizerAttention("random", 32, 4)) == "SynthesizerAttention('random', max_length=32, num_heads=4)"
    assert (
        repr(SynthesizerAttention("dense", 32, 4, 8))
        == "SynthesizerAttention('dense', max_length=32, num_heads=4, head_dim=8, hidden=8)"
    )


def test_constructor_errors():
    with pytest.raises(ValueError, match="Unknown feature_map 'relu'"):
        LinearAttention("relu")
    with pytest.raises(ValueError, match="head_dim"):
        PerformerAttention(0)
    with pytest.raises(ValueError, match="redraw_every"):
        PerformerAttention(4, redraw_every=-1)
    with pytest.raises(ValueError, match="projected_length"):
        LinformerAttention(8, projected_length=0)
    with pytest.raises(ValueError, match="stride"):
        CompressedAttention(4, stride=0)
    with pytest.raises(ValueError, match="Unknown kind 'sparse'"):
        SynthesizerAttention("sparse", 8, 2)
    with pytest.raises(ValueError, match="needs head_dim"):
        SynthesizerAttention("dense", 8, 2)


# ---------------------------------------------------------------------------------- dense softmax (the oracle)
def test_softmax_attention_matches_sdpa_and_zeroes_empty_rows():
    q, k, v = _inputs(length_q=6, length_k=9)
    key_mask = torch.arange(9) < torch.tensor([9, 4])[:, None]
    out = softmax_attention(q, k, v, key_mask=key_mask)
    expected = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=key_mask[:, None, None, :]
    ).transpose(1, 2)
    assert torch.allclose(out, expected)
    causal = softmax_attention(q[:, :6], k[:, :6], v[:, :6], causal=True)
    expected = F.scaled_dot_product_attention(
        q.transpose(1, 2), k[:, :6].transpose(1, 2), v[:, :6].transpose(1, 2), is_causal=True
    ).transpose(1, 2)
    assert torch.allclose(causal, expected)
    empty = softmax_attention(q, k, v, key_mask=torch.zeros(2, 9, dtype=torch.bool))
    assert torch.equal(empty, torch.zeros_like(empty))


def test_masked_softmax_rows():
    scores = torch.randn(3, 5, dtype=DOUBLE)
    allowed = torch.tensor([[True, False, True, True, False], [False] * 5, [True] * 5])
    weights = masked_softmax(scores, allowed)
    assert torch.allclose(weights.sum(-1), torch.tensor([1.0, 0.0, 1.0], dtype=DOUBLE))
    assert torch.equal(weights[~allowed], torch.zeros_like(weights[~allowed]))
    assert torch.allclose(weights[2], torch.softmax(scores[2], -1))


# ---------------------------------------------------------------------------------- Performer
def test_performer_approaches_softmax_attention():
    q, k, v = (t * 0.5 for t in _inputs())
    for causal in (False, True):
        layout = _layout([9, 6], [9, 6], causal)
        exact = softmax_attention(q, k, v, key_mask=layout.key_mask(9), causal=causal)
        exact = exact.masked_fill(~layout.query_mask(9)[:, :, None, None], 0.0)
        approx = PerformerAttention(D, num_features=4096).double()(q, k, v, layout)
        assert ((approx - exact).norm() / exact.norm()).item() < 0.05


def _train_calls(mechanism: PerformerAttention, calls: int) -> list[torch.Tensor]:
    q, k, v = _inputs(batch=1, length_q=3, length_k=3)
    projections = []
    for _ in range(calls):
        mechanism(q, k, v, _layout([3], [3]))
        projections.append(mechanism.projection.clone())
    return projections


def test_performer_redraw_schedule():
    mechanism = PerformerAttention(D, num_features=8, redraw_every=3).train()
    initial = mechanism.projection.clone()
    seen = _train_calls(mechanism, 7)
    # calls 0-2 use draw 0, calls 3-5 draw 1, call 6 draw 2
    assert all(torch.equal(p, initial) for p in seen[:3])
    assert not torch.equal(seen[3], initial)
    assert torch.equal(seen[3], seen[5])
    assert not torch.equal(seen[6], seen[5])
    assert int(mechanism.forward_calls) == 7 and int(mechanism.draws) == 2
    # evaluation neither counts nor redraws
    mechanism.eval()
    _train_calls(mechanism, 5)
    assert int(mechanism.forward_calls) == 7 and torch.equal(mechanism.projection, seen[6])
    # never redraw
    fixed = PerformerAttention(D, num_features=8, redraw_every=None)
    assert all(torch.equal(p, fixed.projection) for p in _train_calls(fixed, 4))


def test_performer_redraws_are_reproducible_and_seeded():
    a = PerformerAttention(D, num_features=8, redraw_every=2, seed=3)
    b = PerformerAttention(D, num_features=8, redraw_every=2, seed=3)
    c = PerformerAttention(D, num_features=8, redraw_every=2, seed=4)
    seen_a, seen_b, seen_c = _train_calls(a, 5), _train_calls(b, 5), _train_calls(c, 5)
    assert all(torch.equal(x, y) for x, y in zip(seen_a, seen_b))
    assert not any(torch.equal(x, y) for x, y in zip(seen_a, seen_c))
    manual = PerformerAttention(D, num_features=8, seed=3)
    manual.redraw_projection()
    assert torch.equal(manual.projection, seen_a[2]) and int(manual.draws) == 1
    a.reset_parameters()
    assert torch.equal(a.projection, seen_a[0]) and int(a.forward_calls) == 0


def test_performer_schedule_survives_state_dict():
    original = PerformerAttention(D, num_features=8, redraw_every=3)
    _train_calls(original, 4)  # draw 1 in use, one call into it
    restored = PerformerAttention(D, num_features=8, redraw_every=3)
    restored.load_state_dict(original.state_dict())
    assert torch.equal(restored.projection, original.projection)
    assert set(original.state_dict()) == {"projection", "forward_calls", "draws"}
    continued_original = _train_calls(original, 5)
    continued_restored = _train_calls(restored, 5)
    assert all(torch.equal(x, y) for x, y in zip(continued_original, continued_restored))
    assert int(restored.draws) == int(original.draws) == 2  # redraws at calls 3 and 6


def test_performer_head_dim_mismatch():
    with pytest.raises(ValueError, match="construct it with head_dim=4"):
        PerformerAttention(8).double()(*_inputs(), _layout([9, 9], [9, 9]))


# ---------------------------------------------------------------------------------- Linformer
def test_linformer_with_identity_projections_is_full_attention():
    mechanism = LinformerAttention(max_length=9, projected_length=9).double()
    with torch.no_grad():
        mechanism.key_projection.copy_(torch.eye(9))
        mechanism.value_projection.copy_(torch.eye(9))
    q, k, v = _inputs()
    out = mechanism(q, k, v, _layout([9, 9], [9, 9]))
    assert torch.allclose(out, softmax_attention(q, k, v))
    # (with padding it is not: the slots that hold only padded keys are zero vectors that keep weight)
    shared = LinformerAttention(max_length=9, projected_length=9, share_kv=True).double()
    with torch.no_grad():
        shared.key_projection.copy_(torch.eye(9))
    assert torch.allclose(shared(q, k, v, _layout([9, 9], [9, 9])), softmax_attention(q, k, v))


def test_linformer_short_sequences_use_the_first_columns():
    mechanism = _make("linformer")
    q, k, v = _inputs(length_q=7, length_k=7)
    layout = _layout([7, 5], [7, 5])
    key_mask = layout.key_mask(7)
    expected = linformer_attention(
        q, k, v, mechanism.key_projection[:, :7], mechanism.value_projection[:, :7], key_mask=key_mask
    )
    assert torch.allclose(mechanism(q, k, v, layout)[0], expected[0])
    with pytest.raises(ValueError, match="construct it with max_length >= 13"):
        mechanism(*_inputs(length_q=13, length_k=13), _layout([13, 13], [13, 13]))


def test_linformer_project_masks_and_checks():
    _, k, v = _inputs()
    e = torch.randn(4, 9, dtype=DOUBLE)
    key_mask = torch.arange(9) < torch.tensor([9, 5])[:, None]
    k_proj, v_proj = linformer_project(k, v, e, e, key_mask)
    assert k_proj.shape == (2, 4, H, D) and v_proj.shape == (2, 4, H, DV)
    assert torch.allclose(k_proj[1], torch.einsum("pl,lhd->phd", e[:, :5], k[1, :5]))
    with pytest.raises(ValueError, match=r"proj\[:, :L\]"):
        linformer_project(k, v, e[:, :8], e, key_mask)
    empty = linformer_attention(*_inputs(), e, e, key_mask=torch.zeros(2, 9, dtype=torch.bool))
    assert torch.equal(empty, torch.zeros_like(empty))


# ---------------------------------------------------------------------------------- compressed keys
def test_compressed_with_stride_one_identity_is_full_attention():
    mechanism = CompressedAttention(D, stride=1, value_head_dim=DV).double()
    with torch.no_grad():
        mechanism.key_weight.copy_(torch.eye(D)[:, :, None])
        mechanism.value_weight.copy_(torch.eye(DV)[:, :, None])
        mechanism.key_bias.zero_()
        mechanism.value_bias.zero_()
    q, k, v = _inputs(length_q=6, length_k=9)
    layout = _layout([6, 4], [9, 5])
    expected = softmax_attention(q, k, v, key_mask=layout.key_mask(9))
    expected = expected.masked_fill(~layout.query_mask(6)[:, :, None, None], 0.0)
    assert torch.allclose(mechanism(q, k, v, layout), expected)


@pytest.mark.parametrize("kernel_size, stride", [(2, 2), (3, 2), (3, 3), (4, 4), (5, 2), (1, 1)])
def test_compress_is_a_strided_window_sum(kernel_size, stride):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, H, D, generator=gen, dtype=DOUBLE)
    weight = torch.randn(DV, D, kernel_size, generator=gen, dtype=DOUBLE)
    bias = torch.randn(DV, generator=gen, dtype=DOUBLE)
    key_mask = torch.arange(7) < torch.tensor([7, 4])[:, None]
    out = compress(x, weight, bias, stride, key_mask)
    slots = compressed_length(7, kernel_size, stride)
    assert out.shape == (2, slots, H, DV)
    x_masked = x * key_mask[..., None, None]
    for s in range(slots):
        expected = bias.expand(2, H, DV).clone()
        for tap in range(kernel_size):
            position = s * stride + tap
            if position < 7:
                expected = expected + torch.einsum("oi,bhi->bho", weight[:, :, tap], x_masked[:, position])
        assert torch.allclose(out[:, s], expected)
    mask = compress_mask(key_mask, kernel_size, stride)
    for s in range(slots):
        window = key_mask[:, s * stride : s * stride + kernel_size]
        assert torch.equal(mask[:, s], window.any(-1))
    # every key falls in some window
    covered = torch.zeros(7, dtype=torch.bool)
    for s in range(slots):
        covered[s * stride : s * stride + kernel_size] = True
    assert covered.all()


def test_compressed_length():
    assert [compressed_length(n, 4, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]
    assert [compressed_length(n, 3, 2) for n in (1, 3, 4, 5, 7)] == [1, 1, 2, 2, 3]


def test_compressed_shape_errors():
    with pytest.raises(ValueError, match="kernel_size >= stride"):
        CompressedAttention(D, stride=3, kernel_size=2)
    with pytest.raises(ValueError, match="kernel_size >= stride"):
        compress(_inputs()[1], torch.randn(4, 4, 1, dtype=DOUBLE), None, 2)
    with pytest.raises(ValueError, match="value_head_dim=3"):
        CompressedAttention(D, stride=2).double()(*_inputs(), _layout([9, 9], [9, 9]))
    with pytest.raises(ValueError, match=r"expected 'weight' of shape \[D_out, D, kernel_size\] with D = 4"):
        compress(_inputs()[1], torch.randn(4, 3, 2, dtype=DOUBLE), None, 2)


# ---------------------------------------------------------------------------------- Synthesizer
def _attention_rows(mechanism, q, k, layout) -> torch.Tensor:
    """The [B, Lq, H, Lk] attention matrix, read off with one-hot values (v_j = e_j)."""
    length_k = k.size(1)
    one_hot = torch.eye(length_k, dtype=DOUBLE)[None, :, None, :].expand(q.size(0), length_k, H, length_k)
    return mechanism(q, k, one_hot, layout)


@pytest.mark.parametrize("kind", ["dense", "random"])
@pytest.mark.parametrize("causal", [False, True])
def test_synthesizer_rows_are_distributions_over_real_keys(kind, causal):
    mechanism = SynthesizerAttention(kind, 12, H, D).double()
    q, k, _ = _inputs()
    layout = _layout([9, 6], [9, 6], causal)
    rows = _attention_rows(mechanism, q, k, layout)  # [B, Lq, H, Lk]
    allowed = layout.key_mask(9)[:, None, None, :].expand(2, 9, H, 9).clone()
    if causal:
        allowed &= torch.ones(9, 9, dtype=torch.bool).tril()[None, :, None, :]
    allowed &= layout.query_mask(9)[:, :, None, None]
    assert torch.all(rows >= 0)
    assert torch.equal(rows[~allowed], torch.zeros_like(rows[~allowed]))
    sums = rows.sum(-1)
    real_queries = layout.query_mask(9)[:, :, None].expand_as(sums)
    assert torch.allclose(sums[real_queries], torch.ones_like(sums[real_queries]))
    assert torch.equal(sums[~real_queries], torch.zeros_like(sums[~real_queries]))


def test_dense_synthesizer_is_a_per_head_mlp_of_the_query():
    mechanism = _make("synthesizer_dense")
    q, k, _ = _inputs()
    rows = _attention_rows(mechanism, q, k, _layout([9, 9], [9, 9]))
    b, i, h = 1, 4, 1
    hidden = torch.relu(q[b, i, h] @ mechanism.hidden_weight[h] + mechanism.hidden_bias[h])
    logits = hidden @ mechanism.logit_weight[h] + mechanism.logit_bias[h]
    assert torch.allclose(rows[b, i, h], torch.softmax(logits[:9], -1))
    # the keys' content is not used, the queries' is
    q2, k2, _ = _inputs(seed=1)
    assert torch.allclose(_attention_rows(mechanism, q, k2, _layout([9, 9], [9, 9])), rows)
    assert not torch.allclose(_attention_rows(mechanism, q2, k, _layout([9, 9], [9, 9])), rows)


def test_random_synthesizer_ignores_the_input_content():
    mechanism = _make("synthesizer_random")
    layout = _layout([9, 6], [9, 6], causal=True)
    q, k, v = _inputs(seed=0)
    q2, k2, _ = _inputs(seed=1)
    assert torch.equal(mechanism(q, k, v, layout), mechanism(q2, k2, v, layout))
    rows = _attention_rows(mechanism, q, k, _layout([9, 9], [9, 9]))
    expected = torch.softmax(mechanism.logits[:, :9, :9], -1).permute(1, 0, 2)  # [Lq, H, Lk]
    assert torch.allclose(rows[0], expected) and torch.allclose(rows[1], expected)


def test_synthesizer_length_and_head_errors():
    with pytest.raises(ValueError, match="construct it with max_length >= 9"):
        SynthesizerAttention("random", 8, H).double()(*_inputs(), _layout([9, 9], [9, 9]))
    with pytest.raises(ValueError, match="construct it with max_length >= 9"):
        SynthesizerAttention("dense", 8, H, D).double()(*_inputs(), _layout([9, 9], [9, 9]))
    dense_short = SynthesizerAttention("dense", 8, H, D).double()  # dense: only keys are bounded
    q, k, v = _inputs(length_q=11, length_k=8)
    assert dense_short(q, k, v, _layout([11, 11], [8, 8])).shape == (2, 11, H, DV)
    with pytest.raises(ValueError, match="expected 3 heads"):
        SynthesizerAttention("random", 12, 3).double()(*_inputs(), _layout([9, 9], [9, 9]))


@pytest.mark.parametrize(
    "factory",
    [
        lambda: LinformerAttention(12, 5, dropout=0.5),
        lambda: CompressedAttention(D, stride=2, value_head_dim=DV, dropout=0.5),
        lambda: SynthesizerAttention("dense", 12, H, D, dropout=0.5),
        lambda: SynthesizerAttention("random", 12, H, dropout=0.5),
    ],
    ids=["linformer", "compressed", "synthesizer_dense", "synthesizer_random"],
)
def test_attention_dropout_in_training_only(factory):
    torch.manual_seed(0)
    with_dropout = factory().double()
    without = type(with_dropout)(**{**_init_kwargs(with_dropout), "dropout": 0.0}).double()
    without.load_state_dict(with_dropout.state_dict())
    q, k, v = _inputs()
    layout = _layout([9, 6], [9, 6])
    assert "dropout=0.5" in repr(with_dropout)
    assert torch.equal(with_dropout.eval()(q, k, v, layout), without.eval()(q, k, v, layout))
    dropped = with_dropout.train()(q, k, v, layout)
    assert not torch.allclose(dropped, without(q, k, v, layout))
    assert torch.isfinite(dropped).all() and torch.equal(dropped[1, 6:], torch.zeros_like(dropped[1, 6:]))
    with pytest.raises(ValueError, match="0 <= dropout < 1"):
        type(with_dropout)(**{**_init_kwargs(with_dropout), "dropout": 1.0})


def _init_kwargs(mechanism) -> dict:
    if isinstance(mechanism, LinformerAttention):
        return dict(max_length=mechanism.max_length, projected_length=mechanism.projected_length)
    if isinstance(mechanism, CompressedAttention):
        return dict(head_dim=mechanism.head_dim, stride=mechanism.stride, value_head_dim=mechanism.value_head_dim)
    return dict(kind=mechanism.kind, max_length=mechanism.max_length, num_heads=mechanism.num_heads,
                head_dim=mechanism.head_dim)
