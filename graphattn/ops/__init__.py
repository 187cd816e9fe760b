"""Attention over an edge set: one operator, several backends.

``attention(q, k, v, graph)`` computes, for every query node ``i``, a softmax over its in-edges
``j -> i`` of ``q_i . k_j * scale + bias_e`` and the weighted sum of ``v_j``.

Backends (``backend=``):

==============  ==============================================================================
``reference``   dense scores, mask, softmax, matmul in the input dtype: the test oracle.
``dense``       ``F.scaled_dot_product_attention`` with a boolean mask (or none for full /
                causal / replicated batches).
``csr``         SDDMM -> segment softmax -> SpMM as one custom autograd function that saves
                only per-edge weights ``[E, H]``. Two kernels: ``csr.tiled`` (dense tiles
                through BLAS, for banded / local / block-structured graphs) and ``csr.sparse``
                (sparse BLAS sampled-matmul and CSR SpMM, for scattered graphs);
                ``csr`` picks one by tile fill.
``flex``        FlexAttention with a BlockMask built from the CSR (CUDA; CPU forward only).
``auto``        picks by density, size, device and autograd; :func:`explain` says why.
==============  ==============================================================================
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from graphattn.graph import AttentionGraph
from graphattn.ops._common import AttentionResult

__all__ = ["attention", "explain", "AttentionResult", "BackendChoice", "BACKENDS"]

logger = logging.getLogger("graphattn.ops")

BACKENDS = ("auto", "reference", "dense", "csr", "csr.tiled", "csr.sparse", "flex")
# errors FlexAttention raised under backend="auto"; after the first, auto stops choosing it
_FLEX_FAILURES: list[str] = []


@dataclass(frozen=True)
class BackendChoice:
    """Which backend ``auto`` (or the caller) selected, and why."""

    backend: str
    reason: str

    def __str__(self) -> str:
        return f"{self.backend}: {self.reason}"


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: AttentionGraph,
    *,
    bias: Tensor | None = None,
    scale: float | None = None,
    dropout: float = 0.0,
    backend: str = "auto",
    return_weights: bool = False,
) -> Tensor | AttentionResult:
    """Softmax attention restricted to the edges of ``graph``.

    Args:
        q: ``[Nq, H, D]`` queries.
        k: ``[Nk, H, D]`` keys.
        v: ``[Nk, H, Dv]`` values.
        graph: the edge set; ``graph.num_queries == Nq`` and ``graph.num_keys == Nk``. A per-head
            pattern (``graph.head_mask`` ``[E, H]``) restricts each head to its own edges.
        bias: optional ``[E, H]`` additive score per edge (relative positions, bond types...),
            in the graph's CSR edge order.
        scale: score multiplier; default ``1 / sqrt(D)``.
        dropout: probability of dropping an attention weight (training only; the caller passes
            0.0 in eval mode).
        backend: one of ``"auto"``, ``"reference"``, ``"dense"``, ``"csr"``, ``"csr.tiled"``,
            ``"csr.sparse"``, ``"flex"``.
        return_weights: also return the softmax weight of every edge ``[E, H]``.

    Returns:
        ``[Nq, H, Dv]``, or an :class:`AttentionResult` ``(output, weights)`` when
        ``return_weights``. A query without edges outputs zeros.

    Example:
        >>> import torch, graphattn
        >>> from graphattn import patterns
        >>> q = k = v = torch.randn(6, 2, 8)
        >>> graphattn.attention(q, k, v, patterns.local(6, window=1)).shape
        torch.Size([6, 2, 8])
    """
    _check_inputs(q, k, v, graph, bias, dropout)
    if scale is None:
        scale = 1.0 / math.sqrt(q.size(-1)) if q.size(-1) else 1.0
    scale = float(scale)
    if graph.device != q.device:
        graph = graph.to(q.device)
    choice = _choose(q, k, v, graph, bias, dropout, return_weights, backend)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("graphattn.attention on %r -> %s", graph, choice)
    if choice.backend == "flex" and backend == "auto":
        try:
            result = _run("flex", q, k, v, graph, bias, scale, dropout, return_weights)
        except Exception as error:  # compilation problems vary by device and PyTorch build
            _FLEX_FAILURES.append(f"{type(error).__name__}: {error}")
            warnings.warn(
                f"graphattn: FlexAttention failed on {q.device} ({type(error).__name__}: {error}); "
                f"'auto' uses the csr backend from now on. Pass backend='flex' to see the full error.",
                RuntimeWarning,
                stacklevel=2,
            )
            choice = _choose(q, k, v, graph, bias, dropout, return_weights, "csr")
            result = _run(choice.backend, q, k, v, graph, bias, scale, dropout, return_weights)
    else:
        result = _run(choice.backend, q, k, v, graph, bias, scale, dropout, return_weights)
    return result if return_weights else result.output


def explain(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: AttentionGraph,
    *,
    bias: Tensor | None = None,
    dropout: float = 0.0,
    backend: str = "auto",
    return_weights: bool = False,
) -> BackendChoice:
    """The backend :func:`attention` would run for these arguments, with the reason."""
    _check_inputs(q, k, v, graph, bias, dropout)
    return _choose(q, k, v, graph, bias, dropout, return_weights, backend)


def _run(
    backend: str,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: AttentionGraph,
    bias: Tensor | None,
    scale: float,
    dropout: float,
    return_weights: bool,
) -> AttentionResult:
    kwargs = dict(bias=bias, scale=scale, dropout=dropout, return_weights=return_weights)
    if backend == "reference":
        from graphattn.ops.reference import reference_attention

        return reference_attention(q, k, v, graph, **kwargs)
    if backend == "dense":
        from graphattn.ops.dense import dense_attention

        return dense_attention(q, k, v, graph, **kwargs)
    if backend in ("csr.tiled", "csr.sparse"):
        from graphattn.ops.csr import csr_attention

        return csr_attention(q, k, v, graph, kernel=backend.split(".")[1], **kwargs)
    if backend == "flex":
        from graphattn.ops.flex import flex_attention_graph

        return flex_attention_graph(q, k, v, graph, **kwargs)
    raise AssertionError(f"unhandled backend {backend!r}")


def _choose(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: AttentionGraph,
    bias: Tensor | None,
    dropout: float,
    return_weights: bool,
    backend: str,
) -> BackendChoice:
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    from graphattn.ops.csr import choose_kernel

    if backend == "csr":
        kernel, why = choose_kernel(graph, q.size(1))
        return BackendChoice(f"csr.{kernel}", why)
    if backend == "flex":
        from graphattn.ops.flex import flex_unsupported_reason

        problem = flex_unsupported_reason(q, k, v, dropout, needs_grad=_needs_grad(q, k, v, bias))
        if problem:
            raise ValueError(f"backend='flex' cannot run here: {problem}; use backend='csr' or 'auto'")
        return BackendChoice("flex", "requested")
    if backend != "auto":
        return BackendChoice(backend, "requested")

    # ---- auto
    n_q, n_k, n_e = graph.num_queries, graph.num_keys, graph.num_edges
    if n_e == 0:
        return BackendChoice("csr.sparse", "graph has no edges: every output row is zero")
    replicated = graph.replicated_from
    pattern = replicated if replicated is not None else graph
    batch_note = f" (x{graph.num_graphs} replicated batch)" if replicated is not None else ""
    if pattern.is_full or pattern.is_causal:
        kind = "full" if pattern.is_full else "causal"
        return BackendChoice("dense", f"{kind} pattern{batch_note}: SDPA without a mask")
    if q.is_cuda and bias is None and dropout == 0.0 and not return_weights and not _FLEX_FAILURES:
        from graphattn.ops.flex import flex_unsupported_reason, flex_worthwhile

        problem = flex_unsupported_reason(q, k, v, dropout, needs_grad=_needs_grad(q, k, v, bias))
        if not problem and flex_worthwhile(graph):
            return BackendChoice("flex", "CUDA, block-structured pattern: FlexAttention BlockMask")
    # Dense masked attention pays for every (query, key) cell of each sequence / block; the csr
    # kernels pay per tile cell or per edge. Compare the estimated costs (graphattn.ops.csr).
    from graphattn.ops.csr import (
        DENSE_NS_FIXED,
        DENSE_NS_PADDING,
        DENSE_NS_PER_CELL,
        cost_lower_bound,
        estimate_kernel,
    )
    from graphattn.ops.dense import padded_blocks

    blocks = padded_blocks(graph)
    if replicated is not None:
        batch, block_cells, density = graph.num_graphs, pattern.num_queries * pattern.num_keys, pattern.density
    elif blocks is not None:
        batch, length, keys = blocks
        block_cells, density = length * keys, n_e / (batch * length * keys)
        batch_note = f" per block ({batch} blocks padded to {length}x{keys})"
    else:
        batch, block_cells, density = 1, n_q * n_k, graph.density
    dense_cost = DENSE_NS_PER_CELL * batch * block_cells + DENSE_NS_FIXED
    if replicated is None and blocks is not None and graph.uniform_blocks is None:
        dense_cost += DENSE_NS_PADDING
    fits = block_cells <= 4096 * 4096 and batch * block_cells * q.size(1) <= 2**28
    if fits and dense_cost <= cost_lower_bound(n_e):
        # cheaper than any csr kernel could be: skip the tile statistics (a pass over the edges)
        return BackendChoice("dense", f"density {density:.2f}{batch_note}: SDPA with a mask, cheaper than any csr kernel")
    kernel, csr_cost, why = estimate_kernel(graph)
    if fits and dense_cost < csr_cost:
        return BackendChoice(
            "dense", f"density {density:.2f}{batch_note}: SDPA with a mask, est. {dense_cost / csr_cost:.2f}x the csr cost"
        )
    return BackendChoice(f"csr.{kernel}", f"density {graph.density:.3f}; {why}")


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _check_inputs(
    q: Tensor, k: Tensor, v: Tensor, graph: AttentionGraph, bias: Tensor | None, dropout: float
) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"Expected '{name}' to be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(
                f"Expected '{name}' of shape [N, H, D] (nodes, heads, head dim), got "
                f"{list(t.shape)}; split heads with x.view(N, H, D)"
            )
        if not t.is_floating_point():
            raise TypeError(f"Expected '{name}' to be floating point, got '{t.dtype}'")
    if not isinstance(graph, AttentionGraph):
        raise TypeError(
            f"Expected 'graph' to be an AttentionGraph, got {type(graph).__name__}; build one "
            f"with AttentionGraph.from_edge_index(edge_index) or graphattn.patterns"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"Expected q, k, v of one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"Expected q, k, v on one device, got {q.device}, {k.device}, {v.device}")
    n_q, h, d = q.shape
    if k.size(1) != h or v.size(1) != h:
        raise ValueError(f"Expected q, k, v with the same number of heads, got {q.size(1)}, {k.size(1)}, {v.size(1)}")
    if k.size(2) != d:
        raise ValueError(f"Expected q and k with the same head dim, got {d} and {k.size(2)}")
    if k.size(0) != v.size(0):
        raise ValueError(f"Expected k and v with the same number of nodes, got {k.size(0)} and {v.size(0)}")
    if graph.num_queries != n_q or graph.num_keys != k.size(0):
        raise ValueError(
            f"Graph size (num_queries={graph.num_queries}, num_keys={graph.num_keys}) does not "
            f"match q with {n_q} nodes and k with {k.size(0)} nodes"
        )
    if graph.num_heads is not None and graph.num_heads != h:
        raise ValueError(f"Per-head pattern has {graph.num_heads} heads but q has {h}")
    if bias is not None:
        if not isinstance(bias, Tensor) or not bias.is_floating_point():
            raise TypeError(f"Expected 'bias' to be a floating point tensor [E, H]")
        if bias.shape != (graph.num_edges, h):
            raise ValueError(
                f"Expected 'bias' of shape [E, H] = [{graph.num_edges}, {h}], got {list(bias.shape)}"
            )
        if bias.device != q.device:
            raise ValueError(f"Expected 'bias' on {q.device}, got {bias.device}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"Expected 0 <= dropout < 1, got {dropout}")
