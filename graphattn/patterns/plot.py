"""Draw attention patterns as the familiar ``N x N`` picture (query rows, key columns).

matplotlib is imported inside the functions, so ``import graphattn`` does not need it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from graphattn.graph import AttentionGraph

__all__ = ["plot", "plot_patterns", "pattern_image"]


def _import_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "Plotting attention patterns needs matplotlib; install it with `pip install matplotlib`"
        ) from None
    return matplotlib


def pattern_image(graph: AttentionGraph, head: int | None = None, max_pixels: int = 512) -> Tensor:
    """The picture :func:`plot` draws, as a float tensor (no matplotlib needed).

    Args:
        graph: the pattern.
        head: for a per-head pattern, the head to show; ``None`` shows the union of all heads.
        max_pixels: larger graphs are binned to at most ``max_pixels`` cells per side; a cell
            then holds the *fraction* of its ``(query, key)`` pairs that are edges.

    Returns:
        ``[rows, cols]`` float32 in ``[0, 1]``; for graphs up to ``max_pixels`` nodes per side
        exactly ``graph.to_dense()`` (of ``head``) as 0/1.
    """
    if not isinstance(graph, AttentionGraph):
        raise TypeError(f"Expected an AttentionGraph to plot (got {type(graph).__name__})")
    if head is not None:
        if graph.num_heads is None:
            raise ValueError(
                "Expected a per-head pattern when 'head' is given (this graph has no head mask); "
                "pass head=None"
            )
        if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < graph.num_heads:
            raise ValueError(
                f"Expected 'head' in [0, {graph.num_heads - 1}] (got {head!r})"
            )
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"Expected 'max_pixels' to be an int >= 1 (got {max_pixels!r})")
    graph = graph.to("cpu")
    rows, cols = graph.row, graph.col
    if graph.head_mask is not None:
        keep = graph.head_mask[:, head] if head is not None else graph.head_mask.any(1)
        rows, cols = rows[keep], cols[keep]
    bin_q = max(1, math.ceil(graph.num_queries / max_pixels))
    bin_k = max(1, math.ceil(graph.num_keys / max_pixels))
    out_q, out_k = math.ceil(graph.num_queries / bin_q), math.ceil(graph.num_keys / bin_k)
    image = torch.zeros(out_q * out_k, dtype=torch.float32)
    cell = torch.div(rows, bin_q, rounding_mode="floor") * out_k + torch.div(cols, bin_k, rounding_mode="floor")
    image.index_add_(0, cell, torch.ones(cell.numel()))
    image = image.view(out_q, out_k)
    if bin_q * bin_k > 1:
        # Cells at the right/bottom border cover fewer pairs.
        height = torch.full((out_q,), float(bin_q))
        height[-1] = graph.num_queries - bin_q * (out_q - 1)
        width = torch.full((out_k,), float(bin_k))
        width[-1] = graph.num_keys - bin_k * (out_k - 1)
        image /= height[:, None] * width[None, :]
    return image


def plot(
    graph: AttentionGraph,
    ax: Any = None,
    head: int | None = None,
    title: str | None = None,
    *,
    max_pixels: int = 512,
    cmap: str = "Blues",
) -> Any:
    """Draw ``graph`` as an image: row ``i`` = query, column ``j`` = key, filled = may attend.

    Args:
        graph: the pattern.
        ax: a matplotlib ``Axes`` to draw into; ``None`` makes a new figure with pyplot.
        head: for a per-head pattern, the head to draw (``None``: the union of all heads).
        title: axes title; defaults to the size, edge count and density.
        max_pixels: graphs larger than this per side are binned (shading = fraction of edges
            per cell), see :func:`pattern_image`.
        cmap: matplotlib colormap name.

    Returns:
        The ``Axes``; ``ax.images[0].get_array()`` holds the picture.

    Example:
        >>> from graphattn.patterns import local
        >>> ax = plot(local(16, 2), title="local")  # doctest: +SKIP
    """
    image = pattern_image(graph, head=head, max_pixels=max_pixels)
    _import_matplotlib()
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(image.numpy(), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
    if title is None:
        title = f"{graph.num_queries}x{graph.num_keys}, {graph.num_edges} edges ({graph.density:.1%})"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("key j", fontsize=8)
    ax.set_ylabel("query i", fontsize=8)
    ax.tick_params(labelsize=7)
    return ax


def plot_patterns(
    patterns: Mapping[str, AttentionGraph],
    path: str | Path,
    *,
    columns: int | None = None,
    dpi: int = 100,
    max_pixels: int = 512,
) -> Path:
    """Draw several patterns side by side and save the figure as a PNG (no pyplot involved).

    Args:
        patterns: name -> graph, drawn in the mapping's order; names become titles with the
            density appended.
        path: output file (parent folders are created).
        columns: panels per row; default ``min(4, len(patterns))``.
        dpi: resolution of the saved image.
        max_pixels: binning threshold per panel, see :func:`pattern_image`.

    Returns:
        The path written.

    Example:
        >>> from graphattn.patterns import local, causal
        >>> plot_patterns({"local": local(32, 3), "causal": causal(32)}, "/tmp/p.png")  # doctest: +SKIP
    """
    if not isinstance(patterns, Mapping) or not patterns:
        raise ValueError(
            "Expected a non-empty mapping name -> AttentionGraph (got "
            f"{type(patterns).__name__}{' (empty)' if isinstance(patterns, Mapping) else ''}); "
            "e.g. plot_patterns({'local': local(64, 4)}, 'patterns.png')"
        )
    if columns is None:
        columns = min(4, len(patterns))
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"Expected 'columns' to be an int >= 1 (got {columns!r})")
    _import_matplotlib()
    from matplotlib.figure import Figure

    rows = math.ceil(len(patterns) / columns)
    figure = Figure(figsize=(3.2 * columns, 3.4 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax, (name, graph) in zip(axes.flat, patterns.items()):
        if not isinstance(graph, AttentionGraph):
            raise TypeError(f"Expected an AttentionGraph for pattern {name!r} (got {type(graph).__name__})")
        plot(graph, ax=ax, title=f"{name} ({graph.density:.1%})", max_pixels=max_pixels)
    for ax in list(axes.flat)[len(patterns):]:
        ax.set_axis_off()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png")
    return path
