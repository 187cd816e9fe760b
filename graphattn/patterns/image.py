"""Attention patterns over the pixels of a ``height x width`` image.

Pixels are numbered row-major: pixel ``(r, c)`` is node ``r * width + c`` (the order of
``image.flatten(-2)`` / ``x.view(B, H * W, C)``). Query pixel ``(r, c)`` may attend key pixel
``(r', c')`` when:

==========================================  ====================================================
``grid2d(h, w, radius, metric)``            ``dist((r, c), (r', c')) <= radius``
``dilated2d(h, w, radius, dilation)``       ``(r' - r, c' - c) = dilation * (a, b)`` with
                                            ``dist((0, 0), (a, b)) <= radius``
``axial(h, w, axis)``                       same row (``axis="row"``), same column
                                            (``"column"``) or either (``"both"``)
==========================================  ====================================================

``metric`` is ``"chebyshev"`` (``max(|dr|, |dc|)``: square neighbourhoods, the default),
``"manhattan"`` (``|dr| + |dc|``: diamonds) or ``"euclidean"`` (``sqrt(dr^2 + dc^2)``: discs).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from graphattn.graph import AttentionGraph
from graphattn.patterns.sequence import _check_device, _check_int, _progression_graph

__all__ = ["grid2d", "dilated2d", "axial"]

METRICS = ("chebyshev", "manhattan", "euclidean")


def _check_radius(radius: float) -> float:
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not math.isfinite(radius):
        raise TypeError(
            f"Expected 'radius' to be a finite number >= 0 (got {radius!r} of type "
            f"{type(radius).__name__})"
        )
    if radius < 0:
        raise ValueError(f"Expected 'radius' >= 0 (got {radius}); radius = 0 means each pixel sees only itself")
    return radius


def _stencil_offsets(radius: float, metric: str, device: torch.device) -> Tensor:
    """``[K, 2]`` offsets ``(dr, dc)`` within ``radius``, sorted by ``dr`` then ``dc``."""
    if metric not in METRICS:
        raise ValueError(f"Expected 'metric' in {METRICS} (got {metric!r})")
    reach = int(math.floor(radius))
    steps = torch.arange(-reach, reach + 1, device=device)
    dr, dc = torch.meshgrid(steps, steps, indexing="ij")
    dr, dc = dr.reshape(-1), dc.reshape(-1)
    if metric == "chebyshev":
        inside = torch.ones_like(dr, dtype=torch.bool)  # max(|dr|, |dc|) <= reach <= radius
    elif metric == "manhattan":
        inside = dr.abs() + dc.abs() <= radius
    else:
        inside = dr * dr + dc * dc <= radius * radius
    return torch.stack([dr[inside], dc[inside]], dim=1)


def _stencil_graph(height: int, width: int, offsets: Tensor, causal: bool) -> AttentionGraph:
    """Pixel ``p`` attends ``p + offset`` for every in-bounds offset (``[K, 2]``, sorted)."""
    device = offsets.device
    n = height * width
    pixel = torch.arange(n, device=device)
    row, column = torch.div(pixel, max(width, 1), rounding_mode="floor"), pixel % max(width, 1)
    key_row = row[:, None] + offsets[:, 0]  # [N, K]
    key_column = column[:, None] + offsets[:, 1]  # [N, K]
    valid = (key_row >= 0) & (key_row < height) & (key_column >= 0) & (key_column < width)
    key = key_row * width + key_column  # row-major order of (dr, dc) = increasing key index
    if causal:
        valid &= key <= pixel[:, None]
    count = valid.sum(1)
    crow = torch.cat([count.new_zeros(1), count.cumsum(0)])
    graph = AttentionGraph(crow, key[valid], n, n, validate=False)
    rows = pixel[:, None].expand_as(valid)[valid]
    graph.cached("row", lambda: rows)
    return graph


def grid2d(
    height: int,
    width: int,
    radius: float = 1,
    metric: str = "chebyshev",
    *,
    causal: bool = False,
    device: torch.device | str | None = None,
) -> AttentionGraph:
    """2-D local attention: each pixel attends the pixels within ``radius`` of it.

    Args:
        height: image rows ``H``.
        width: image columns ``W``; nodes are ``r * W + c``.
        radius: neighbourhood size ``>= 0`` (``1`` with chebyshev = 3x3 patch).
        metric: ``"chebyshev"``, ``"manhattan"`` or ``"euclidean"`` (see module docstring).
        causal: keep only keys that come earlier in raster order (``key <= query``), as in the
            Image Transformer's masked local attention.
        device: where the CSR tensors live (default CPU).

    Returns:
        ``AttentionGraph`` over ``H * W`` nodes.

    Example:
        >>> grid2d(3, 3, 1).degrees.view(3, 3)
        tensor([[4, 6, 4],
                [6, 9, 6],
                [4, 6, 4]])
    """
    height, width = _check_int(height, "height"), _check_int(width, "width")
    radius = _check_radius(radius)
    device = _check_device(device)
    return _stencil_graph(height, width, _stencil_offsets(radius, metric, device), causal)


def dilated2d(
    height: int,
    width: int,
    radius: float = 1,
    dilation: int = 2,
    metric: str = "chebyshev",
    *,
    causal: bool = False,
    device: torch.device | str | None = None,
) -> AttentionGraph:
    """Dilated 2-D neighbourhood: :func:`grid2d`'s stencil with its offsets scaled by ``dilation``.

    Pixel ``(r, c)`` attends ``(r + dilation * a, c + dilation * b)`` for every ``(a, b)``
    with ``dist((0, 0), (a, b)) <= radius``. ``dilation = 1`` is :func:`grid2d`.

    Args:
        height: image rows ``H``.
        width: image columns ``W``; nodes are ``r * W + c``.
        radius: neighbourhood size in *steps* ``>= 0``.
        dilation: step length in pixels, ``>= 1``.
        metric: ``"chebyshev"``, ``"manhattan"`` or ``"euclidean"``.
        causal: keep only keys with ``key <= query`` in raster order.
        device: where the CSR tensors live (default CPU).

    Example:
        >>> dilated2d(3, 3, 1, 2).to_dense()[4].view(3, 3).int()  # the centre pixel
        tensor([[0, 0, 0],
                [0, 1, 0],
                [0, 0, 0]], dtype=torch.int32)
        >>> dilated2d(3, 3, 1, 2).to_dense()[0].view(3, 3).int()  # the top-left pixel
        tensor([[1, 0, 1],
                [0, 0, 0],
                [1, 0, 1]], dtype=torch.int32)
    """
    height, width = _check_int(height, "height"), _check_int(width, "width")
    radius = _check_radius(radius)
    dilation = _check_int(dilation, "dilation", minimum=1, fix="dilation = 1 is grid2d")
    device = _check_device(device)
    offsets = _stencil_offsets(radius, metric, device) * dilation
    return _stencil_graph(height, width, offsets, causal)


def axial(
    height: int, width: int, axis: str = "both", *, device: torch.device | str | None = None
) -> AttentionGraph:
    """Axial attention: each pixel attends its whole row and/or its whole column.

    Args:
        height: image rows ``H``.
        width: image columns ``W``; nodes are ``r * W + c``.
        axis: ``"row"`` (same row, ``W`` keys), ``"column"`` (same column, ``H`` keys) or
            ``"both"`` (their union, ``H + W - 1`` keys). For axial attention with separate row
            and column heads use ``per_head([axial(h, w, "row"), axial(h, w, "column")])``.
        device: where the CSR tensors live (default CPU).

    Example:
        >>> axial(3, 3).to_dense()[4].view(3, 3).int()
        tensor([[0, 1, 0],
                [1, 1, 1],
                [0, 1, 0]], dtype=torch.int32)
    """
    height, width = _check_int(height, "height"), _check_int(width, "width")
    if axis not in ("row", "column", "both"):
        raise ValueError(f"Expected 'axis' in ('row', 'column', 'both') (got {axis!r})")
    device = _check_device(device)
    n = height * width
    pixel = torch.arange(n, device=device)
    row = torch.div(pixel, max(width, 1), rounding_mode="floor")
    column = pixel % max(width, 1)
    if axis == "row":
        return _progression_graph(row * width, torch.full_like(pixel, width), n, n)
    if axis == "column":
        return _progression_graph(column, torch.full_like(pixel, height), n, n, step=width)
    # Both: row r' < r of the column, then the whole row, then rows r' > r of the column, so
    # the H + W - 1 keys of every pixel come out sorted. Column key r' = r lands on the row
    # key of column c (same position, same key), which drops the duplicate.
    other_row = torch.arange(height, device=device)[None, :]  # [1, H]
    column_position = torch.where(
        other_row < row[:, None],
        other_row,
        torch.where(other_row > row[:, None], other_row + width - 1, row[:, None] + column[:, None]),
    )  # [N, H]
    keys = torch.empty(n, height + width - 1 if n else 0, dtype=torch.long, device=device)
    row_position = row[:, None] + torch.arange(width, device=device)  # [N, W]
    keys.scatter_(1, row_position, row[:, None] * width + torch.arange(width, device=device))
    keys.scatter_(1, column_position, other_row * width + column[:, None])
    crow = torch.arange(n + 1, device=device) * keys.size(1)
    return AttentionGraph(crow, keys.reshape(-1), n, n, validate=False)
