"""Pieces shared by the backends: the result type and dense conversions of graph data."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from graphattn.graph import AttentionGraph

__all__ = ["AttentionResult", "dense_mask", "scatter_dense_bias", "STATS_DTYPES"]


class AttentionResult(NamedTuple):
    """What :func:`graphattn.attention` returns when ``return_weights=True``.

    Attributes:
        output: ``[Nq, H, Dv]``.
        weights: ``[E, H]`` softmax weight of every edge (in the graph's CSR order), before
            dropout; ``None`` when not asked for.
    """

    output: Tensor
    weights: Tensor | None


# half types keep their softmax statistics in float32
STATS_DTYPES = {torch.float16: torch.float32, torch.bfloat16: torch.float32}


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype softmax maxima and sums are kept in for inputs of ``dtype``."""
    return STATS_DTYPES.get(dtype, dtype)


def dense_mask(graph: AttentionGraph, num_heads: int) -> Tensor:
    """``[H or 1, Nq, Nk]`` bool mask of the graph (cached per graph)."""
    mask = graph.cached("dense_mask", graph.to_dense)
    return mask if mask.dim() == 3 else mask.unsqueeze(0)


def scatter_dense_bias(bias: Tensor, graph: AttentionGraph, fill: float) -> Tensor:
    """Per-edge bias ``[E, H]`` -> dense ``[H, Nq, Nk]`` with ``fill`` off the edges.

    Differentiable with respect to ``bias``.
    """
    flat = bias.new_full((bias.size(1), graph.num_queries * graph.num_keys), fill)
    index = (graph.row * graph.num_keys + graph.col).to(bias.device)
    return flat.index_copy(1, index, bias.t()).view(bias.size(1), graph.num_queries, graph.num_keys)
