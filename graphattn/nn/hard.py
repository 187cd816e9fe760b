"""Hard attention: every query reads the value of ONE key, chosen from its in-edges.

Soft attention returns ``sum_j a_ij v_j`` with ``a_i = softmax_j(s_ij)`` over the edges ``j -> i``
of an :class:`~graphattn.graph.AttentionGraph`. Hard attention (Xu et al. 2015, "stochastic hard
attention"; Mnih et al. 2014) returns ``v_{c_i}`` for one chosen key ``c_i`` per query and head:

* ``mode="argmax"``: ``c_i = argmax_j s_ij`` (deterministic; for inference);
* ``mode="sample"``: ``c_i ~ Categorical(a_i)`` (training, by the Gumbel-max trick, with an
  optional ``torch.Generator``).

The choice has no gradient; the scores learn through the score-function (REINFORCE) estimator
``grad E[R] = E[(R - b) grad log a_{i c_i}]``: :func:`hard_attention` returns ``log a_{i c_i}``
(differentiable with respect to the queries, keys and bias), :func:`reinforce_loss` turns
rewards into the surrogate loss, and :class:`MovingAverageBaseline` is the variance-reducing
baseline ``b`` (an exponential moving average of past rewards). The values ``v_{c_i}`` get
ordinary gradients.

Conventions as everywhere in graphattn: edges ``j -> i`` (row = query), scores scaled by
``1/sqrt(D)``, a query without in-edges reads zeros (choice ``-1``, log-probability 0, entropy 0).

Example:
    >>> import torch
    >>> from graphattn.patterns import full
    >>> q = torch.tensor([[[1.0]], [[-1.0]]])          # 2 queries, 1 head, D = 1
    >>> k = torch.tensor([[[2.0]], [[-2.0]], [[0.0]]])  # 3 keys
    >>> v = torch.arange(3.0).view(3, 1, 1)
    >>> out = hard_attention(q, k, v, full(2, 3), mode="argmax")
    >>> out.choice.tolist(), out.output.flatten().tolist()
    ([[0], [1]], [0.0, 1.0])
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from graphattn.graph import AttentionGraph
from graphattn.nn.attention import MultiheadAttention

__all__ = [
    "HARD_MODES",
    "HardAttentionOutput",
    "edge_scores",
    "hard_attention",
    "HardMultiheadAttention",
    "reinforce_loss",
    "MovingAverageBaseline",
]

HARD_MODES = ("argmax", "sample")


class HardAttentionOutput(NamedTuple):
    """What :func:`hard_attention` returns.

    Attributes:
        output: ``[Nq, H, Dv]`` the value of the chosen key (zeros for a query without keys).
        choice: ``[Nq, H]`` int64 index of the chosen key (``-1`` for a query without keys).
        log_prob: ``[Nq, H]`` ``log a_{i c_i}``, the log softmax weight of the chosen edge
            (0 without keys); differentiable with respect to ``q``, ``k`` and ``bias``.
        entropy: ``[Nq, H]`` entropy of each query's attention distribution (0 without keys);
            differentiable (an exploration bonus for REINFORCE).
    """

    output: Tensor
    choice: Tensor
    log_prob: Tensor
    entropy: Tensor


def _check_qkv(q: Tensor, k: Tensor, v: Tensor, graph: AttentionGraph) -> None:
    if not isinstance(graph, AttentionGraph):
        raise TypeError(f"Expected an AttentionGraph, got {type(graph).__name__}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 3:
            got = list(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"Expected '{name}' of shape [N, H, D], got {got}")
    if q.size(0) != graph.num_queries or k.size(0) != graph.num_keys or v.size(0) != graph.num_keys:
        raise ValueError(
            f"Expected q [{graph.num_queries}, H, D] and k, v [{graph.num_keys}, H, *] for this graph "
            f"({graph.num_queries} queries, {graph.num_keys} keys), got q {list(q.shape)}, k {list(k.shape)}, "
            f"v {list(v.shape)}"
        )
    if q.size(1) != k.size(1) or k.size(1) != v.size(1) or q.size(2) != k.size(2):
        raise ValueError(
            f"Expected q and k with the same heads and head size, and v with the same heads; got q "
            f"{list(q.shape)}, k {list(k.shape)}, v {list(v.shape)}"
        )
    if graph.head_mask is not None:
        raise ValueError("hard_attention takes one graph for all heads (no per-head pattern); run each head's "
                         "graph (graph.head(h)) separately")


def edge_scores(q: Tensor, k: Tensor, graph: AttentionGraph, *, bias: Tensor | None = None,
                scale: float | None = None) -> Tensor:
    """``s_ij = scale * q_i . k_j (+ bias_ij)`` on every edge: q ``[Nq, H, D]``, k ``[Nk, H, D]``,
    bias ``[E, H]`` -> ``[E, H]`` in the graph's CSR order."""
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    graph = graph.to(q.device)
    scores = (q[graph.row] * k[graph.col]).sum(-1) * scale  # [E, H]
    if bias is not None:
        if tuple(bias.shape) != tuple(scores.shape):
            raise ValueError(f"Expected 'bias' of shape [E, H] = {list(scores.shape)}, got {list(bias.shape)}")
        scores = scores + bias.to(scores.dtype)
    return scores


def hard_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: AttentionGraph,
    *,
    mode: str = "argmax",
    bias: Tensor | None = None,
    scale: float | None = None,
    generator: torch.Generator | None = None,
) -> HardAttentionOutput:
    """Choose one key per query and head and read its value.

    Args:
        q: ``[Nq, H, D]``; k: ``[Nk, H, D]``; v: ``[Nk, H, Dv]``.
        graph: which keys each query may choose (edges ``j -> i``).
        mode: ``"argmax"`` (the highest score; ties go to the lowest key index) or ``"sample"``
            (a draw from the softmax over the query's edges).
        bias: optional ``[E, H]`` per-edge score bias.
        scale: score scale (default ``1/sqrt(D)``).
        generator: random source for ``mode="sample"``.

    Returns:
        :class:`HardAttentionOutput`.
    """
    _check_qkv(q, k, v, graph)
    if mode not in HARD_MODES:
        raise ValueError(f"Expected mode in {HARD_MODES}, got {mode!r}")
    graph = graph.to(q.device)
    scores = edge_scores(q, k, graph, bias=bias, scale=scale)  # [E, H]
    num_queries, heads = graph.num_queries, q.size(1)
    row = graph.row
    index = row.unsqueeze(1).expand(-1, heads)
    # log-softmax over each query's edges
    row_max = scores.new_full((num_queries, heads), float("-inf")).scatter_reduce(
        0, index, scores.detach(), "amax", include_self=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    shifted = scores - row_max[row]
    row_sum = scores.new_zeros(num_queries, heads).index_add(0, row, shifted.exp())
    log_norm = torch.log(row_sum.clamp_min(torch.finfo(scores.dtype).tiny))  # [Nq, H]
    log_probs = shifted - log_norm[row]  # [E, H]
    entropy = scores.new_zeros(num_queries, heads).index_add(0, row, -(log_probs.exp() * log_probs))
    # the choice: argmax of the scores, perturbed by Gumbel noise when sampling
    key = scores.detach()
    if mode == "sample":
        uniform = torch.rand(key.shape, generator=generator, dtype=key.dtype,
                             device=key.device if generator is None else generator.device).to(key.device)
        key = key - torch.log(-torch.log(uniform.clamp(min=torch.finfo(key.dtype).tiny, max=1.0 - 1e-7)))
    best = key.new_full((num_queries, heads), float("-inf")).scatter_reduce(0, index, key, "amax", include_self=True)
    is_best = key == best[row]
    positions = torch.arange(row.numel(), device=row.device).unsqueeze(1).expand(-1, heads)
    sentinel = row.numel()
    first = torch.full((num_queries, heads), sentinel, dtype=torch.long, device=row.device).scatter_reduce(
        0, index, torch.where(is_best, positions, torch.full_like(positions, sentinel)), "amin", include_self=True)
    has_keys = first < sentinel  # [Nq, H]
    edge = first.clamp(max=max(sentinel - 1, 0))
    if sentinel == 0:  # a graph without edges
        zeros = q.new_zeros(num_queries, heads)
        return HardAttentionOutput(v.new_zeros(num_queries, heads, v.size(2)),
                                   torch.full((num_queries, heads), -1, dtype=torch.long, device=q.device),
                                   zeros + 0.0 * scores.sum(), zeros)
    choice = torch.where(has_keys, graph.col[edge], torch.full_like(edge, -1))  # [Nq, H]
    chosen_log_prob = torch.where(has_keys, log_probs.gather(0, edge), torch.zeros_like(row_max))
    head_index = torch.arange(heads, device=q.device).expand(num_queries, -1)
    output = v[choice.clamp(min=0), head_index] * has_keys.unsqueeze(-1).to(v.dtype)  # [Nq, H, Dv]
    return HardAttentionOutput(output, choice, chosen_log_prob, entropy)


class HardMultiheadAttention(MultiheadAttention):
    """Multi-head hard attention over node features with a graph: the projections of
    :class:`~graphattn.nn.MultiheadAttention` (``q``, ``k``, ``v``, ``out_proj``), and one chosen
    key per query and head instead of a weighted average.

    ``mode`` says how keys are chosen while training (``"sample"``: REINFORCE; ``"argmax"``);
    ``eval_mode`` how in ``eval()`` (default ``"argmax"``).

    Shapes:
        ``forward(query [Nq, E], key [Nk, kdim], value [Nk, vdim], graph, bias=None)`` ->
        ``(out [Nq, E], HardAttentionOutput)`` (its ``output`` before ``out_proj``).
    """

    def __init__(self, embed_dim: int, num_heads: int, *, mode: str = "sample", eval_mode: str = "argmax",
                 bias: bool = True, kdim: int | None = None, vdim: int | None = None) -> None:
        super().__init__(embed_dim, num_heads, bias=bias, kdim=kdim, vdim=vdim)
        for name, value in (("mode", mode), ("eval_mode", eval_mode)):
            if value not in HARD_MODES:
                raise ValueError(f"Expected {name} in {HARD_MODES}, got {value!r}")
        self.mode, self.eval_mode = mode, eval_mode

    def forward(self, query: Tensor, key: Tensor, value: Tensor, graph: AttentionGraph,  # type: ignore[override]
                bias: Tensor | None = None, *, generator: torch.Generator | None = None
                ) -> tuple[Tensor, HardAttentionOutput]:
        for name, x in (("query", query), ("key", key), ("value", value)):
            if not isinstance(x, Tensor) or x.dim() != 2:
                got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"Expected '{name}' node features [N, features], got {got}")
        q, k, v = self.project(query, key, value)
        result = hard_attention(q, k, v, graph, mode=self.mode if self.training else self.eval_mode, bias=bias,
                                scale=self.scale, generator=generator)
        return self.project_output(result.output, graph), result

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode!r}, eval_mode={self.eval_mode!r}"


def reinforce_loss(log_prob: Tensor, reward: Tensor, baseline: Tensor | float | None = None) -> Tensor:
    """The REINFORCE surrogate ``-mean((R - b) * log p)``: its gradient is the score-function
    estimate of ``-grad E[R]``.

    Args:
        log_prob: ``[B]`` (or ``[B, ...]``, summed over the trailing dimensions: the choices of
            one example) log-probability of what was sampled.
        reward: ``[B]`` reward of each example (no gradient flows into it).
        baseline: ``None``, a number, or ``[B]``; subtracted from the reward (no gradient).

    Returns:
        A scalar loss.
    """
    if not isinstance(log_prob, Tensor) or not isinstance(reward, Tensor):
        raise TypeError("Expected tensors for 'log_prob' and 'reward'")
    if log_prob.dim() == 0 or reward.dim() != 1 or log_prob.size(0) != reward.size(0):
        raise ValueError(
            f"Expected 'log_prob' [B, ...] and 'reward' [B] with the same B, got {list(log_prob.shape)} and "
            f"{list(reward.shape)}"
        )
    per_example = log_prob.reshape(log_prob.size(0), -1).sum(1)
    advantage = reward.detach().to(per_example.dtype)
    if baseline is not None:
        advantage = advantage - (baseline.detach().to(per_example.dtype) if isinstance(baseline, Tensor) else baseline)
    return -(advantage * per_example).mean()


class MovingAverageBaseline(nn.Module):
    """``b = EMA of past mean rewards`` (the classic REINFORCE baseline, Williams 1992).

    Call it with the batch's rewards: it returns the baseline to subtract (the average before
    this batch; the batch's own mean on the first call) and then folds the batch in with
    ``b <- decay * b + (1 - decay) * mean(R)``. Kept in ``state_dict`` (a buffer).
    """

    def __init__(self, decay: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"Expected 0 <= decay < 1, got {decay}")
        self.decay = decay
        self.register_buffer("value", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def forward(self, reward: Tensor) -> Tensor:
        mean = reward.detach().float().mean()
        if not bool(self.initialized):
            self.value.copy_(mean)
            self.initialized.fill_(True)
        baseline = self.value.clone()
        if self.training:
            self.value.mul_(self.decay).add_((1.0 - self.decay) * mean)
        return baseline

    def extra_repr(self) -> str:
        return f"decay={self.decay}"
