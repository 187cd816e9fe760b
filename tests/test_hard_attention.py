"""Hard attention (graphattn.nn.hard): the choice, its log-probability, REINFORCE and the baseline."""
from __future__ import annotations

import math

import pytest
import torch

import graphattn
from graphattn.graph import AttentionGraph
from graphattn.nn.hard import (
    HardMultiheadAttention,
    MovingAverageBaseline,
    edge_scores,
    hard_attention,
    reinforce_loss,
)
from graphattn.patterns import full


def _random_graph(num_queries: int, num_keys: int, density: float, seed: int, empty_rows: bool = True) -> AttentionGraph:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(num_queries, num_keys, generator=g) < density
    if empty_rows:
        mask[0] = False  # one query without keys
    return AttentionGraph.from_dense(mask)


def _qkv(nq: int, nk: int, heads: int = 2, d: int = 4, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(nq, heads, d, generator=g, dtype=dtype, requires_grad=True)
    k = torch.randn(nk, heads, d, generator=g, dtype=dtype, requires_grad=True)
    v = torch.randn(nk, heads, 3, generator=g, dtype=dtype, requires_grad=True)
    return q, k, v


def _dense_log_softmax(q, k, graph, bias=None):
    """Reference: dense scores [H, Nq, Nk] masked by the graph, log-softmax over keys."""
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.size(-1))
    if bias is not None:
        dense_bias = torch.zeros_like(scores)
        dense_bias[:, graph.row, graph.col] = bias.t()
        scores = scores + dense_bias
    mask = graph.to_dense().unsqueeze(0)
    return scores.masked_fill(~mask, float("-inf")).log_softmax(-1), mask


def test_argmax_picks_the_best_allowed_key_and_reads_its_value() -> None:
    graph = _random_graph(7, 9, 0.5, seed=1)
    q, k, v = _qkv(7, 9)
    bias = torch.randn(graph.num_edges, 2, dtype=torch.float64)
    out = hard_attention(q, k, v, graph, mode="argmax", bias=bias)
    log_p, mask = _dense_log_softmax(q, k, graph, bias)
    for i in range(7):
        for h in range(2):
            if not mask[0, i].any():
                assert out.choice[i, h] == -1
                assert torch.all(out.output[i, h] == 0) and out.log_prob[i, h] == 0 and out.entropy[i, h] == 0
                continue
            best = int(log_p[h, i].argmax())
            assert out.choice[i, h] == best
            torch.testing.assert_close(out.output[i, h], v[best, h])
            torch.testing.assert_close(out.log_prob[i, h], log_p[h, i, best])
            p = log_p[h, i].exp()
            entropy = -(p[mask[0, i]] * log_p[h, i][mask[0, i]]).sum()
            torch.testing.assert_close(out.entropy[i, h], entropy)


def test_argmax_ties_go_to_the_lowest_key() -> None:
    q = torch.zeros(1, 1, 2)
    k = torch.randn(4, 1, 2)
    v = torch.arange(4.0).view(4, 1, 1)
    graph = AttentionGraph.from_dense(torch.tensor([[False, True, True, True]]))
    out = hard_attention(q, k, v, graph)  # every score 0
    assert out.choice.item() == 1
    torch.testing.assert_close(out.log_prob, torch.tensor([[math.log(1 / 3)]]))


def test_log_prob_and_entropy_gradients_match_the_dense_reference() -> None:
    graph = _random_graph(5, 6, 0.6, seed=2)
    q, k, v = _qkv(5, 6, seed=3)
    out = hard_attention(q, k, v, graph, mode="sample", generator=torch.Generator().manual_seed(0))
    weights = torch.randn(5, 2, dtype=torch.float64)
    (out.log_prob * weights).sum().add(out.entropy.sum()).backward()
    grads = q.grad.clone(), k.grad.clone()
    q.grad = k.grad = None
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.size(-1))
    mask = graph.to_dense().unsqueeze(0)
    log_p = scores.masked_fill(~mask, -1e4).log_softmax(-1)  # finite off the graph: no 0 * inf in backward
    chosen = out.choice.clamp(min=0)
    rows = torch.arange(5).unsqueeze(1).expand(-1, 2)
    heads = torch.arange(2).expand(5, -1)
    picked = log_p[heads, rows, chosen] * (out.choice >= 0)
    p = log_p.exp()
    entropy = (-(p * log_p * mask).sum(-1)) * mask.any(-1)  # [H, Nq]; 0 for the query without keys
    (picked * weights).sum().add(entropy.sum()).backward()
    torch.testing.assert_close(grads[0], q.grad)
    torch.testing.assert_close(grads[1], k.grad)


def test_values_get_gradients_but_only_the_chosen_ones() -> None:
    graph = full(3, 5)
    q, k, v = _qkv(3, 5, seed=4)
    out = hard_attention(q, k, v, graph)
    out.output.sum().backward()
    chosen = torch.zeros(5, 2, dtype=torch.bool)
    chosen[out.choice, torch.arange(2).expand(3, -1)] = True
    assert torch.all(v.grad[chosen] != 0) and torch.all(v.grad[~chosen] == 0)
    assert q.grad is None  # the choice itself has no gradient: that is what REINFORCE is for


def test_samples_follow_the_softmax() -> None:
    torch.manual_seed(0)
    graph = AttentionGraph.from_dense(torch.tensor([[True, True, False, True], [False, True, True, False]]))
    q = torch.randn(2, 1, 3)
    k = torch.randn(4, 1, 3)
    v = torch.zeros(4, 1, 1)
    generator = torch.Generator().manual_seed(123)
    draws = 20000
    counts = torch.zeros(2, 4)
    for _ in range(draws // 100):
        # 100 independent copies of the 2 queries per call
        big = AttentionGraph.batch([graph] * 100)
        out = hard_attention(q.repeat(100, 1, 1), k.repeat(100, 1, 1), v.repeat(100, 1, 1), big, mode="sample",
                             generator=generator)
        choice = out.choice.view(100, 2) - (torch.arange(100) * 4).unsqueeze(1)
        for i in range(2):
            counts[i] += torch.bincount(choice[:, i], minlength=4).float()
    log_p, _ = _dense_log_softmax(q.double(), k.double(), graph)
    expected = log_p[0].exp().float()
    freq = counts / draws
    # binomial standard error at 20000 draws is <= 0.0036; allow 4.5 of them
    assert torch.all((freq - expected).abs() < 0.016), (freq, expected)
    assert torch.all(freq[~graph.to_dense()] == 0)


def test_sampling_is_reproducible_with_a_generator() -> None:
    graph = full(6, 8)
    q, k, v = _qkv(6, 8, dtype=torch.float32)
    a = hard_attention(q, k, v, graph, mode="sample", generator=torch.Generator().manual_seed(7)).choice
    b = hard_attention(q, k, v, graph, mode="sample", generator=torch.Generator().manual_seed(7)).choice
    assert torch.equal(a, b)


def test_graph_without_edges() -> None:
    graph = AttentionGraph.from_dense(torch.zeros(2, 3, dtype=torch.bool))
    q, k, v = _qkv(2, 3)
    out = hard_attention(q, k, v, graph, mode="sample")
    assert torch.all(out.choice == -1) and torch.all(out.output == 0) and torch.all(out.log_prob == 0)


def test_edge_scores_match_the_core() -> None:
    graph = _random_graph(4, 5, 0.7, seed=5, empty_rows=False)
    q, k, v = _qkv(4, 5, seed=6)
    scores = edge_scores(q, k, graph)
    _, weights = graphattn.attention(q, k, v, graph, backend="reference", return_weights=True)
    # softmax of our scores per query == the core's weights
    row = graph.row
    for i in range(4):
        torch.testing.assert_close(scores[row == i].softmax(0), weights[row == i])


def test_reinforce_estimate_is_unbiased_and_the_baseline_reduces_its_variance() -> None:
    """Two-armed choice per query: the average REINFORCE gradient equals the exact gradient of the
    expected reward, with and without a baseline; the baseline shrinks the variance."""
    torch.manual_seed(0)
    graph = full(1, 3)
    k = torch.eye(3, dtype=torch.float64).unsqueeze(1)  # [3, 1, 3]
    v = torch.zeros(3, 1, 1, dtype=torch.float64)
    rewards = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64)  # reward of choosing key j
    q0 = torch.tensor([[[0.3, -0.2, 0.1]]], dtype=torch.float64)
    # exact gradient of E[R] = sum_j softmax(q.k_j / sqrt 3)_j R_j
    q = q0.clone().requires_grad_()
    probs = (torch.einsum("qhd,khd->qhk", q, k) / math.sqrt(3)).softmax(-1)
    (probs.squeeze() @ rewards).backward()
    exact = q.grad.clone()
    generator = torch.Generator().manual_seed(1)
    samples = 4000
    estimates = {None: [], "mean": []}
    expected_reward = float(probs.detach().squeeze() @ rewards)
    for baseline in estimates:
        for _ in range(samples):
            q = q0.clone().requires_grad_()
            out = hard_attention(q, k, v, graph, mode="sample", generator=generator)
            reward = rewards[out.choice.view(1)]
            b = None if baseline is None else expected_reward
            (-reinforce_loss(out.log_prob.view(1, 1), reward, b)).backward()
            estimates[baseline].append(q.grad.view(-1).clone())
    for baseline, grads in estimates.items():
        grads = torch.stack(grads)
        stderr = grads.std(0) / math.sqrt(samples)
        assert torch.all((grads.mean(0) - exact.view(-1)).abs() < 4.5 * stderr + 1e-9), baseline
    var_plain = torch.stack(estimates[None]).var(0).sum()
    var_baseline = torch.stack(estimates["mean"]).var(0).sum()
    assert var_baseline < 0.5 * var_plain


def test_reinforce_loss_checks_shapes_and_detaches_the_reward() -> None:
    log_prob = torch.tensor([[-1.0, -0.5], [-2.0, -0.1]], requires_grad=True)
    reward = torch.tensor([1.0, 3.0], requires_grad=True)
    loss = reinforce_loss(log_prob, reward, baseline=torch.tensor(2.0))
    # -(mean((1 - 2) * (-1.5) + (3 - 2) * (-2.1)))
    torch.testing.assert_close(loss, torch.tensor(-(1.5 - 2.1) / 2))
    loss.backward()
    assert reward.grad is None
    torch.testing.assert_close(log_prob.grad, torch.tensor([[0.5, 0.5], [-0.5, -0.5]]))
    with pytest.raises(ValueError, match=r"'reward' \[B\]"):
        reinforce_loss(log_prob, torch.ones(3))


def test_moving_average_baseline() -> None:
    baseline = MovingAverageBaseline(decay=0.5)
    assert baseline(torch.tensor([2.0, 4.0])).item() == 3.0  # first call: the batch mean
    assert baseline(torch.tensor([7.0])).item() == 3.0  # then the average before the batch
    assert baseline.value.item() == 5.0
    state = baseline.state_dict()
    restored = MovingAverageBaseline(decay=0.5)
    restored.load_state_dict(state)
    assert restored(torch.tensor([0.0])).item() == 5.0
    baseline.eval()
    baseline(torch.tensor([100.0]))
    assert baseline.value.item() == 5.0  # eval does not update
    with pytest.raises(ValueError, match="decay"):
        MovingAverageBaseline(decay=1.0)


def test_hard_multihead_attention_samples_in_training_and_takes_the_argmax_in_eval() -> None:
    torch.manual_seed(0)
    layer = HardMultiheadAttention(8, 2)
    x = torch.randn(5, 8)
    graph = full(5, 5)
    out, result = layer(x, x, x, graph, generator=torch.Generator().manual_seed(0))
    assert out.shape == (5, 8) and result.choice.shape == (5, 2)
    layer.eval()
    _, first = layer(x, x, x, graph)
    _, second = layer(x, x, x, graph)
    assert torch.equal(first.choice, second.choice)
    q, k, v = layer.project(x, x, x)
    assert torch.equal(first.choice, hard_attention(q, k, v, graph, scale=layer.scale).choice)
    # gradients reach the projections through the values and through log_prob
    layer.train()
    out, result = layer(x, x, x, graph)
    (out.sum() + result.log_prob.sum()).backward()
    assert layer.q_proj.weight.grad is not None and layer.v_proj.weight.grad is not None


def test_bad_input() -> None:
    graph = full(2, 3)
    q, k, v = _qkv(2, 3)
    with pytest.raises(ValueError, match="mode"):
        hard_attention(q, k, v, graph, mode="soft")
    with pytest.raises(ValueError, match=r"q \[2, H, D\]"):
        hard_attention(q[:1], k, v, graph)
    with pytest.raises(ValueError, match=r"'bias' of shape \[E, H\]"):
        hard_attention(q, k, v, graph, bias=torch.zeros(5, 2))
    with pytest.raises(ValueError, match="mode"):
        HardMultiheadAttention(4, 2, mode="gumbel")
    with pytest.raises(ValueError, match="node features"):
        HardMultiheadAttention(4, 2)(torch.zeros(1, 2, 4), torch.zeros(3, 4), torch.zeros(3, 4), full(2, 3))
