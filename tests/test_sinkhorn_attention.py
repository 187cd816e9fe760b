"""Sparse Sinkhorn attention: the sorting matrix, sorted-bucket attention and the mechanism,
checked against float64 dense references."""
import math

import pytest
import torch

from graphattn.nn.mechanism import SequenceLayout
from graphattn.nn.sinkhorn import SinkhornAttention, sinkhorn, sorted_bucket_attention, sorting_mask

DOUBLE = torch.float64


def dense_softmax(q, k, v, mask):
    """float64 oracle over [L, H, D] tensors and a [L, L'] bool mask; empty rows give zeros."""
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return torch.einsum("hqk,khd->qhd", probs, v)


def bucket_reference(q, k, v, lengths, bucket_size, partner):
    """Each real query of bucket i attends the real keys of bucket i and of bucket partner[i]."""
    batch, length = q.shape[:2]
    out = torch.zeros(batch, length, q.size(2), v.size(-1), dtype=q.dtype)
    bucket = torch.arange(length) // bucket_size
    for b in range(batch):
        n = int(lengths[b])
        partner_bucket = torch.as_tensor(partner)[bucket[:n]]
        mask = (bucket[:n, None] == bucket[None, :n]) | (partner_bucket[:, None] == bucket[None, :n])
        out[b, :n] = dense_softmax(q[b, :n], k[b, :n], v[b, :n], mask)
    return out


def make(generator, batch=2, length=10, heads=2, dim=4, value_dim=3):
    q, k = (torch.randn(batch, length, heads, dim, generator=generator, dtype=DOUBLE) for _ in range(2))
    v = torch.randn(batch, length, heads, value_dim, generator=generator, dtype=DOUBLE)
    return q, k, v


def mechanism(bucket_size=3, max_length=12, heads=2, dim=4, **kwargs):
    kwargs.setdefault("backend", "csr")
    return SinkhornAttention(bucket_size, max_length, num_heads=heads, head_dim=dim, **kwargs).double()


# ---------------------------------------------------------------------------- sinkhorn
def test_sinkhorn_is_doubly_stochastic(generator):
    logits = 2.0 * torch.randn(2, 3, 5, 5, generator=generator, dtype=DOUBLE)
    matrix = sinkhorn(logits, 300)
    torch.testing.assert_close(matrix.sum(-1), torch.ones(2, 3, 5, dtype=DOUBLE))
    torch.testing.assert_close(matrix.sum(-2), torch.ones(2, 3, 5, dtype=DOUBLE))
    assert bool((matrix >= 0).all())
    # few iterations: rows exact (the last step), columns approach 1 as iterations grow
    few = sinkhorn(logits, 3)
    torch.testing.assert_close(few.sum(-1), torch.ones(2, 3, 5, dtype=DOUBLE))
    column_error = lambda m: float((m.sum(-2) - 1).abs().max())  # noqa: E731
    assert column_error(sinkhorn(logits, 30)) < column_error(few) < 0.5
    # masked cells stay zero
    mask = sorting_mask(5, torch.tensor([3]))[0]
    masked = sinkhorn(logits[0, 0].masked_fill(~mask, float("-inf")), 20)
    assert torch.equal(masked[~mask], torch.zeros_like(masked[~mask]))
    torch.testing.assert_close(masked[3:, 3:], torch.eye(2, dtype=DOUBLE))


@pytest.mark.parametrize("iterations,column_tolerance", [(8, 0.05), (300, 1e-7)])
def test_sorting_matrix_is_doubly_stochastic_on_real_buckets(generator, iterations, column_tolerance):
    sink = mechanism(bucket_size=3, max_length=12, sinkhorn_iterations=iterations)
    _, k, _ = make(generator, length=12)
    lengths = torch.tensor([12, 7])
    for training in (False, True):  # with and without Gumbel noise
        sink.train(training)
        matrix = sink.sorting_matrix(k, lengths)
        assert matrix.shape == (2, 2, 4, 4)
        ones = torch.ones(2, 2, 4, dtype=DOUBLE)
        torch.testing.assert_close(matrix.sum(-1), ones)
        torch.testing.assert_close(matrix.sum(-2), ones, atol=column_tolerance, rtol=0)
        # sequence 1 has 3 real buckets (7 keys): bucket 3 maps to itself, the rest sort among themselves
        torch.testing.assert_close(matrix[1, :, 3], torch.tensor([0.0, 0, 0, 1], dtype=DOUBLE).expand(2, 4))
        assert torch.equal(matrix[1, :, :3, 3], torch.zeros(2, 3, dtype=DOUBLE))
    sink.eval()
    torch.testing.assert_close(sink.sorting_matrix(k, lengths), sink.sorting_matrix(k, lengths), rtol=0, atol=0)


def test_sorting_mask():
    mask = sorting_mask(3, torch.tensor([3, 1, 0]))
    assert torch.equal(mask[0], torch.ones(3, 3, dtype=torch.bool))
    assert torch.equal(mask[1], torch.tensor([[True, False, False], [False, True, False], [False, False, True]]))
    assert torch.equal(mask[2], torch.eye(3, dtype=torch.bool))


# ---------------------------------------------------------------------------- sorted-bucket attention
def test_identity_sorting_is_block_local_attention(generator):
    q, k, v = make(generator, length=10)
    lengths = torch.tensor([10, 5])
    layout = SequenceLayout(lengths, lengths)
    identity = torch.eye(4, dtype=DOUBLE).expand(2, 2, 4, 4)  # ceil(10 / 3) = 4 buckets
    out = sorted_bucket_attention(q, k, v, identity, 3, layout, backend="csr")
    torch.testing.assert_close(out, bucket_reference(q, k, v, lengths, 3, partner=[0, 1, 2, 3]))
    assert torch.equal(out[1, 5:], torch.zeros_like(out[1, 5:]))


def test_hard_permutation_attends_own_and_partner_bucket(generator):
    q, k, v = make(generator, length=12)
    layout = SequenceLayout.full(2, 12)
    partner = [2, 0, 3, 1]
    permutation = torch.zeros(4, 4, dtype=DOUBLE)
    permutation[torch.arange(4), torch.tensor(partner)] = 1.0
    out = sorted_bucket_attention(q, k, v, permutation.expand(2, 2, 4, 4), 3, layout, backend="reference")
    torch.testing.assert_close(out, bucket_reference(q, k, v, torch.tensor([12, 12]), 3, partner))


def test_sorted_keys_mix_only_real_keys(generator):
    """A soft sort over a padded sequence equals attention over explicitly mixed real keys."""
    q, k, v = make(generator, batch=1, length=5, heads=1)
    lengths = torch.tensor([5])  # buckets of 3: slots 0-2 and 3-4 (+1 padding slot)
    matrix = torch.tensor([[0.25, 0.75], [0.75, 0.25]], dtype=DOUBLE).expand(1, 1, 2, 2)
    out = sorted_bucket_attention(q, k, v, matrix, 3, SequenceLayout(lengths, lengths), backend="reference")
    blocks_k = torch.nn.functional.pad(k[0], (0, 0, 0, 0, 0, 1)).view(2, 3, 1, 4)
    blocks_v = torch.nn.functional.pad(v[0], (0, 0, 0, 0, 0, 1)).view(2, 3, 1, 3)
    for i in range(2):
        w = matrix[0, 0, i]
        # slots 0, 1 mix both buckets; slot 2 only bucket 0 (bucket 1's slot 2 is padding)
        sorted_k = torch.stack([w[0] * blocks_k[0, t] + w[1] * blocks_k[1, t] for t in range(2)] + [blocks_k[0, 2]])
        sorted_v = torch.stack([w[0] * blocks_v[0, t] + w[1] * blocks_v[1, t] for t in range(2)] + [blocks_v[0, 2]])
        own = slice(3 * i, min(3 * i + 3, 5))
        keys = torch.cat([k[0, own], sorted_k])
        values = torch.cat([v[0, own], sorted_v])
        expected = dense_softmax(q[0, own], keys, values, torch.ones(own.stop - own.start, len(keys), dtype=torch.bool))
        torch.testing.assert_close(out[0, own], expected)


# ---------------------------------------------------------------------------- the mechanism
def test_padding_is_ignored_and_padded_queries_are_zero(generator):
    sink = mechanism().eval()
    q, k, v = make(generator, length=10)
    layout = SequenceLayout(torch.tensor([10, 4]), torch.tensor([10, 4]))
    out = sink(q, k, v, layout)
    assert torch.equal(out[1, 4:], torch.zeros_like(out[1, 4:]))
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for t in (q2, k2, v2):
        t[1, 4:] = 100.0
    torch.testing.assert_close(sink(q2, k2, v2, layout), out)
    # a sequence alone equals the same sequence in a padded batch
    alone = sink(q[1:, :4], k[1:, :4], v[1:, :4], SequenceLayout.full(1, 4))
    torch.testing.assert_close(alone[0], out[1, :4])


def test_gradients_reach_every_parameter_and_input(generator):
    sink = mechanism().train()
    q, k, v = (t.requires_grad_() for t in make(generator, length=10))
    out = sink(q, k, v, SequenceLayout(torch.tensor([10, 7]), torch.tensor([10, 7])))
    (out * torch.randn(out.shape, generator=generator, dtype=DOUBLE)).sum().backward()
    for name, tensor in [("q", q), ("k", k), ("v", v), *sink.named_parameters()]:
        assert tensor.grad is not None and bool(torch.isfinite(tensor.grad).all()), name
        assert float(tensor.grad.abs().sum()) > 1e-8, f"no gradient reaches {name}"


def test_gradcheck_inputs_and_sorting_network(generator):
    sink = mechanism(bucket_size=2, max_length=6, heads=1, dim=3, sinkhorn_iterations=4).eval()
    q, k, v = (t.requires_grad_() for t in make(generator, batch=2, length=5, heads=1, dim=3, value_dim=2))
    layout = SequenceLayout(torch.tensor([5, 3]), torch.tensor([5, 3]))
    names = [name for name, _ in sink.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in sink.parameters()]

    def run(q, k, v, *weights):
        return torch.func.functional_call(sink, dict(zip(names, weights)), (q, k, v, layout))

    assert torch.autograd.gradcheck(run, (q, k, v, *params))


def test_errors_and_repr(generator):
    sink = mechanism(bucket_size=3, max_length=9)
    q, k, v = make(generator, length=9)
    with pytest.raises(ValueError, match="no causal variant"):
        sink(q, k, v, SequenceLayout.full(2, 9, causal=True))
    long = make(generator, length=12)
    with pytest.raises(ValueError, match="max_length >= 12"):
        sink(*long, SequenceLayout.full(2, 12))
    with pytest.raises(ValueError, match="built for 2 heads of size 4"):
        sink(q[:, :, :1], k[:, :, :1], v[:, :, :1], SequenceLayout.full(2, 9))
    with pytest.raises(ValueError, match="one length"):
        sink(q, k[:, :6], v[:, :6], SequenceLayout(torch.tensor([9, 9]), torch.tensor([6, 6])))
    with pytest.raises(ValueError, match=r"'sort_matrix' of shape \[B, H, nb, nb\]"):
        sorted_bucket_attention(q, k, v, torch.eye(2).expand(2, 2, 2, 2), 3, SequenceLayout.full(2, 9))
    with pytest.raises(ValueError, match="temperature > 0"):
        SinkhornAttention(3, 9, num_heads=1, head_dim=2, temperature=0.0)
    with pytest.raises(ValueError, match="square 'logits'"):
        sinkhorn(torch.randn(2, 3), 2)
    assert not SinkhornAttention.supports_causal and not SinkhornAttention.supports_cross
    assert repr(SinkhornAttention(4, 16, num_heads=2, head_dim=8)) == (
        "SinkhornAttention(bucket_size=4, max_length=16, num_heads=2, head_dim=8, sinkhorn_iterations=8, "
        "temperature=0.75, dropout=0.0, backend='auto')"
    )
