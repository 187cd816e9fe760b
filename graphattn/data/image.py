"""Images as nodes: every pixel (or every patch) is a node, numbered row-major.

Pixel ``(r, c)`` of an ``H x W`` image is node ``r * W + c`` -- the numbering of the 2-D
patterns :func:`graphattn.patterns.grid2d`, :func:`~graphattn.patterns.dilated2d` and
:func:`~graphattn.patterns.axial` -- and its feature vector holds all ``C`` channels.

* :func:`image_to_nodes` / :func:`nodes_to_image`: ``[B, C, H, W] <-> [B, H * W, C]``.
* :func:`patches` / :func:`patches_to_image`: non-overlapping ``p x p`` patches as nodes
  (ViT-style), ``[B, C, H, W] <-> [B, (H/p) * (W/p), C * p * p]``, patches row-major, each
  patch's features in ``(channel, row, column)`` order (a ``Linear`` on them is a ``Conv2d``
  with ``kernel_size = stride = p``).
* :func:`positions_2d`: ``(row, column)`` of every node, for 2-D positional encodings;
  :func:`pixel_features`: pixels as nodes with one-hot row and column appended.
* :func:`image_pattern`: attention patterns over an image by name (``"grid2d"``,
  ``"dilated2d"``, ``"axial"``, ``"full"``, or a call string such as ``"grid2d(radius=2)"`` or
  ``"union(axial(), grid2d(radius=1))"``), built by :mod:`graphattn.patterns` and cached.
* :func:`attention_map`: the attention weights of one query pixel over its image as an
  ``H x W`` map (from :meth:`graphattn.models.Encoder.attention_weights`), to see the learned
  receptive field of a pixel pattern.
* :func:`load_digits_split`: scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes)
  in a seeded, stratified train / test split, grey values scaled to ``[0, 1]``, optionally
  resized (bilinear, :func:`graphattn.data.lra.upsample_bilinear`).

Example:
    >>> images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)  # [B, C, H, W]
    >>> nodes = image_to_nodes(images)  # [B, H * W, C]
    >>> nodes.shape, bool((nodes[:, 1 * 4 + 2] == images[:, :, 1, 2]).all())  # pixel (1, 2) = node 6
    (torch.Size([2, 16, 3]), True)
    >>> graph = image_pattern("grid2d", 4, 4, radius=1)  # one image; batch_size=2 for the batch
    >>> graph.col[graph.crow[6]:graph.crow[7]].tolist()  # the 3x3 neighbourhood of pixel (1, 2)
    [1, 2, 3, 5, 6, 7, 9, 10, 11]
    >>> patches(images, 2).shape  # [B, (H/2) * (W/2), C * 2 * 2]
    torch.Size([2, 4, 12])
"""
from __future__ import annotations

import ast
import functools
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from graphattn import patterns
from graphattn.data.lra import _seed_sequence, upsample_bilinear
from graphattn.graph import AttentionGraph
from graphattn.patterns import combine

__all__ = [
    "image_to_nodes",
    "nodes_to_image",
    "patches",
    "patches_to_image",
    "positions_2d",
    "pixel_features",
    "IMAGE_PATTERN_NAMES",
    "image_pattern",
    "attention_map",
    "DIGIT_CLASSES",
    "LabeledImages",
    "ImageSplit",
    "load_digits_split",
]


# ----------------------------------------------------------------------------------------------
# pixels and patches as nodes
# ----------------------------------------------------------------------------------------------


def _check_images(images: Any, name: str = "images") -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"Expected '{name}' to be a tensor [B, C, H, W], got {type(images).__name__}")
    if images.dim() != 4:
        fix = " (for grey images [B, H, W] use images.unsqueeze(1))" if images.dim() == 3 else ""
        raise ValueError(f"Expected '{name}' of shape [B, C, H, W], got {list(images.shape)}{fix}")
    return images


def _check_size(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"Expected '{name}' to be an int >= {minimum}, got {value!r}")
    return int(value)


def image_to_nodes(images: Tensor) -> Tensor:
    """Every pixel as a node: ``[B, C, H, W] -> [B, H * W, C]``, pixel ``(r, c)`` at node
    ``r * W + c`` (row-major, the node order of :func:`graphattn.patterns.grid2d`).

    Example:
        >>> image_to_nodes(torch.tensor([[[[1., 2.], [3., 4.]]]])).tolist()  # one 2x2 grey image
        [[[1.0], [2.0], [3.0], [4.0]]]
    """
    images = _check_images(images)
    return images.flatten(2).transpose(1, 2)  # [B, C, H*W] -> [B, H*W, C]


def nodes_to_image(nodes: Tensor, height: int, width: int) -> Tensor:
    """The inverse of :func:`image_to_nodes`: ``[B, H * W, C] -> [B, C, H, W]``.

    Example:
        >>> x = torch.randn(2, 3, 4, 5)
        >>> torch.equal(nodes_to_image(image_to_nodes(x), 4, 5), x)
        True
    """
    height, width = _check_size(height, "height"), _check_size(width, "width")
    if not isinstance(nodes, Tensor) or nodes.dim() != 3 or nodes.size(1) != height * width:
        got = list(nodes.shape) if isinstance(nodes, Tensor) else type(nodes).__name__
        raise ValueError(
            f"Expected nodes of shape [B, {height * width}, C] (H * W = {height} * {width} pixels), got {got}"
        )
    return nodes.transpose(1, 2).reshape(nodes.size(0), nodes.size(2), height, width)


def patches(images: Tensor, patch_size: int) -> Tensor:
    """Non-overlapping ``p x p`` patches as nodes (ViT-style):
    ``[B, C, H, W] -> [B, (H/p) * (W/p), C * p * p]``.

    Patch ``(i, j)`` (its top-left pixel is ``(i * p, j * p)``) is node ``i * (W/p) + j`` --
    row-major, so the 2-D patterns over an ``(H/p) x (W/p)`` grid apply to patches as they do to
    pixels. Its features are its pixels in ``(channel, row, column)`` order, the layout of
    ``torch.nn.functional.unfold`` and of a ``Conv2d`` weight ``[E, C, p, p]``.

    Raises:
        ValueError: ``H`` or ``W`` is not a multiple of ``p`` (crop or pad the images first,
            e.g. ``torch.nn.functional.pad``).

    Example:
        >>> x = torch.arange(16.).view(1, 1, 4, 4)
        >>> patches(x, 2)[0, 1].tolist()  # the top-right 2x2 patch
        [2.0, 3.0, 6.0, 7.0]
    """
    images = _check_images(images)
    p = _check_size(patch_size, "patch_size")
    batch, channels, height, width = images.shape
    if height % p or width % p:
        raise ValueError(
            f"Expected image height and width divisible by patch_size={p}, got {height}x{width}; "
            f"crop or pad the images (e.g. torch.nn.functional.pad) to a multiple of {p}"
        )
    grid = images.reshape(batch, channels, height // p, p, width // p, p)  # [B, C, H/p, p, W/p, p]
    grid = grid.permute(0, 2, 4, 1, 3, 5)  # [B, H/p, W/p, C, p, p]
    return grid.reshape(batch, (height // p) * (width // p), channels * p * p)


def patches_to_image(nodes: Tensor, patch_size: int, height: int, width: int) -> Tensor:
    """The inverse of :func:`patches`: ``[B, (H/p) * (W/p), C * p * p] -> [B, C, H, W]``.

    Example:
        >>> x = torch.randn(2, 3, 6, 4)
        >>> torch.equal(patches_to_image(patches(x, 2), 2, 6, 4), x)
        True
    """
    p = _check_size(patch_size, "patch_size")
    height, width = _check_size(height, "height"), _check_size(width, "width")
    if height % p or width % p:
        raise ValueError(f"Expected height and width divisible by patch_size={p}, got {height}x{width}")
    rows, columns = height // p, width // p
    if not isinstance(nodes, Tensor) or nodes.dim() != 3 or nodes.size(1) != rows * columns or nodes.size(2) % (p * p):
        got = list(nodes.shape) if isinstance(nodes, Tensor) else type(nodes).__name__
        raise ValueError(
            f"Expected patches of shape [B, {rows * columns}, C * {p * p}] for a {height}x{width} image in "
            f"{p}x{p} patches, got {got}"
        )
    batch, channels = nodes.size(0), nodes.size(2) // (p * p)
    grid = nodes.reshape(batch, rows, columns, channels, p, p).permute(0, 3, 1, 4, 2, 5)  # [B, C, H/p, p, W/p, p]
    return grid.reshape(batch, channels, height, width)


def pixel_features(images: Tensor, *, coordinates: bool = True) -> Tensor:
    """Every pixel as a node with its channels and, with ``coordinates``, its row and column
    one-hot: ``[B, C, H, W] -> [B, H * W, C + H + W]`` (``[B, H * W, C]`` without), nodes
    row-major. A ``Linear`` on these features adds a learned row and a learned column embedding
    to the pixel's value -- 2-D learned positions for an encoder with ``position="none"``.

    Example:
        >>> x = pixel_features(torch.zeros(2, 1, 3, 4))
        >>> x.shape, x[0, 1 * 4 + 2].tolist()  # pixel (1, 2): grey 0, row 1, column 2
        (torch.Size([2, 12, 8]), [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    """
    nodes = image_to_nodes(images)  # [B, H * W, C]
    if not coordinates:
        return nodes
    height, width = images.shape[-2:]
    where = positions_2d(height, width, device=images.device)  # [H * W, 2]
    onehot = torch.cat([F.one_hot(where[:, 0], height), F.one_hot(where[:, 1], width)], 1).to(nodes.dtype)
    return torch.cat([nodes, onehot.expand(nodes.size(0), -1, -1)], dim=2)


def positions_2d(height: int, width: int, *, device: torch.device | str | None = None) -> Tensor:
    """``(row, column)`` of every node of an ``H x W`` grid, int64 ``[H * W, 2]``, row-major
    (node ``r * W + c`` is ``(r, c)``): the input of 2-D positional encodings. For patches use
    the patch grid, ``positions_2d(H // p, W // p)``.

    Example:
        >>> positions_2d(2, 3).tolist()
        [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    """
    height, width = _check_size(height, "height", 0), _check_size(width, "width", 0)
    rows = torch.arange(height, device=device).repeat_interleave(width)
    columns = torch.arange(width, device=device).repeat(height)
    return torch.stack([rows, columns], dim=1)


# ----------------------------------------------------------------------------------------------
# attention patterns over images, by name
# ----------------------------------------------------------------------------------------------

IMAGE_PATTERN_NAMES = ("full", "grid2d", "dilated2d", "axial")
"""The image patterns :func:`image_pattern` builds; ``union``, ``intersect``, ``difference`` and
``per_head`` combine them."""

_IMAGE_BUILDERS = {
    "full": lambda height, width, device: patterns.full(height * width, device=device),
    "grid2d": lambda height, width, device, **kwargs: patterns.grid2d(height, width, device=device, **kwargs),
    "dilated2d": lambda height, width, device, **kwargs: patterns.dilated2d(height, width, device=device, **kwargs),
    "axial": lambda height, width, device, **kwargs: patterns.axial(height, width, device=device, **kwargs),
}
_IMAGE_COMBINATORS = ("union", "intersect", "difference", "per_head")

# a parsed pattern: (name, sorted keyword items, parts)
_Tree = tuple[str, tuple[tuple[str, Any], ...], tuple[Any, ...]]


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _parse_pattern(text: str) -> _Tree:
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as error:
        raise ValueError(
            f"Could not parse image pattern {text!r} ({error.msg}); expected e.g. 'grid2d', "
            f"'grid2d(radius=2)' or 'union(axial(), grid2d(radius=1))'"
        ) from None

    def convert(node: ast.AST) -> _Tree:
        if isinstance(node, ast.Name):
            return _check_tree((node.id, (), ()), text)
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            raise ValueError(
                f"Could not parse image pattern {text!r}: expected name(...) calls, found {ast.unparse(node)!r}"
            )
        kwargs = []
        for keyword in node.keywords:
            if keyword.arg is None:
                raise ValueError(f"Could not parse image pattern {text!r}: '**' arguments are not allowed")
            try:
                kwargs.append((keyword.arg, _freeze(ast.literal_eval(keyword.value))))
            except ValueError:
                raise ValueError(
                    f"Could not parse image pattern {text!r}: the value of '{keyword.arg}' must be a literal "
                    f"(number, string, bool), got {ast.unparse(keyword.value)!r}"
                ) from None
        return _check_tree((node.func.id, tuple(sorted(kwargs)), tuple(convert(a) for a in node.args)), text)

    return convert(tree)


def _check_tree(tree: _Tree, text: str) -> _Tree:
    name, kwargs, parts = tree
    if name in _IMAGE_COMBINATORS:
        if not parts or kwargs:
            raise ValueError(
                f"Image pattern combinator '{name}' in {text!r} takes patterns as positional parts and no keyword "
                f"arguments, e.g. {name}(axial(), grid2d(radius=1))"
            )
    elif name in _IMAGE_BUILDERS:
        if parts:
            raise ValueError(f"Image pattern '{name}' in {text!r} takes keyword arguments only, e.g. grid2d(radius=2)")
    else:
        raise ValueError(
            f"Unknown image pattern {name!r} in {text!r}; expected one of {', '.join(IMAGE_PATTERN_NAMES)} "
            f"(combined with {', '.join(_IMAGE_COMBINATORS)}); sequence patterns live in graphattn.patterns.PatternSpec"
        )
    return tree


@functools.lru_cache(maxsize=128)
def _build_image_pattern(tree: _Tree, height: int, width: int, device: torch.device) -> AttentionGraph:
    name, kwargs, parts = tree
    if name in _IMAGE_COMBINATORS:
        graphs = [_build_image_pattern(part, height, width, device) for part in parts]
        if name == "difference":
            return combine.difference(graphs[0], *graphs[1:])
        return getattr(combine, name)(graphs)
    try:
        return _IMAGE_BUILDERS[name](height, width, device, **dict(kwargs))
    except TypeError as error:
        if "unexpected keyword" in str(error) or "positional argument" in str(error):
            raise TypeError(
                f"Could not build image pattern '{name}' with {dict(kwargs)}: {error}; see "
                f"help(graphattn.patterns.{'full' if name == 'full' else name}) for its arguments"
            ) from None
        raise


def image_pattern(
    pattern: str,
    height: int,
    width: int,
    *,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> AttentionGraph:
    """An attention pattern over the ``H * W`` pixel (or patch) nodes of an image, by name.

    ``pattern`` is one of :data:`IMAGE_PATTERN_NAMES` with its arguments as keywords
    (``image_pattern("grid2d", 8, 8, radius=2, metric="euclidean")``), or the same as a call
    string (``"grid2d(radius=2, metric='euclidean')"``), where ``union``, ``intersect``,
    ``difference`` and ``per_head`` combine patterns: ``"union(axial(), grid2d(radius=1))"``,
    ``"per_head(axial(axis='row'), axial(axis='column'))"``. The graphs come from
    :func:`graphattn.patterns.grid2d`, :func:`~graphattn.patterns.dilated2d`,
    :func:`~graphattn.patterns.axial` and :func:`~graphattn.patterns.full` (see them for the
    arguments and the exact neighbourhoods); they are cached, so asking again returns the same
    graph object (and whatever it has cached: transposes, block plans).

    Args:
        pattern: a name or a call string (see above).
        height, width: the grid: image pixels, or ``(H/p, W/p)`` for :func:`patches`.
        batch_size: ``None`` for the graph of one image; ``B`` for the block-diagonal graph of a
            batch of ``B`` images (``B * H * W`` nodes, the order of
            ``image_to_nodes(images).reshape(-1, C)``), which replicates the one graph.
        device: where the graph lives (default CPU).
        **kwargs: the builder's arguments (only with a bare name).

    Example:
        >>> image_pattern("axial", 3, 3).to_dense()[4].view(3, 3).int()  # the centre pixel
        tensor([[0, 1, 0],
                [1, 1, 1],
                [0, 1, 0]], dtype=torch.int32)
        >>> image_pattern("union(axial(), grid2d(radius=1))", 3, 3).degrees.view(3, 3).tolist()
        [[6, 7, 6], [7, 9, 7], [6, 7, 6]]
        >>> image_pattern("full", 2, 2, batch_size=3)
        AttentionGraph(num_queries=12, num_keys=12, num_edges=48, density=0.333, num_graphs=3)
    """
    if not isinstance(pattern, str):
        raise TypeError(
            f"Expected the image pattern as a str (a name in {IMAGE_PATTERN_NAMES} or a call like "
            f"'grid2d(radius=2)'), got {type(pattern).__name__}"
        )
    height, width = _check_size(height, "height", 0), _check_size(width, "width", 0)
    tree = _parse_pattern(pattern)
    if kwargs:
        if tree[1] or tree[2] or tree[0] in _IMAGE_COMBINATORS:
            raise ValueError(
                f"Give the arguments of {pattern!r} either in the string or as keywords, not both (got keywords "
                f"{sorted(kwargs)})"
            )
        tree = (tree[0], tuple(sorted((k, _freeze(v)) for k, v in kwargs.items())), ())
    device = torch.device("cpu") if device is None else torch.device(device)
    graph = _build_image_pattern(tree, height, width, device)
    if batch_size is None:
        return graph
    batch_size = _check_size(batch_size, "batch_size")
    return graph.cached(("graphattn.replicated_batch", batch_size), lambda: AttentionGraph.batch([graph] * batch_size))


# ----------------------------------------------------------------------------------------------
# attention maps
# ----------------------------------------------------------------------------------------------


def attention_map(
    graph: AttentionGraph,
    weights: Tensor,
    query: int | tuple[int, int],
    height: int,
    width: int,
    *,
    image: int = 0,
    head: int | None = None,
) -> Tensor:
    """Where one query pixel looks: its attention weights over its image as an ``H x W`` map.

    ``graph`` and ``weights`` are one layer of
    :meth:`graphattn.models.Encoder.attention_weights` (the self-attention graph over the
    ``B * H * W`` pixel nodes of a batch, node ``b * H * W + r * W + c``, and each edge's
    softmax weight per head). Pixels the query does not attend to are 0; keys in other images
    are left out (the block-diagonal graph of a batch of images has none), so the map sums to 1
    for a query with at least one key.

    Args:
        graph: the attention graph (CSR, rows = queries).
        weights: ``[num_edges, heads]`` (or ``[num_edges]``) weights in the graph's edge order.
        query: the query pixel, as node ``r * W + c`` within its image or as ``(r, c)``.
        height, width: the image grid (``(H/p, W/p)`` for :func:`patches`).
        image: which image ``b`` of the batch.
        head: the head to show; ``None`` averages the heads.

    Returns:
        float32 ``[H, W]``.

    Example:
        >>> graph = image_pattern("grid2d", 4, 4, radius=1, batch_size=2)
        >>> weights = torch.ones(graph.num_edges, 2) / graph.degrees[graph.row, None]  # uniform softmax
        >>> attention_map(graph, weights, (0, 0), 4, 4, image=1)  # a corner sees 4 pixels
        tensor([[0.2500, 0.2500, 0.0000, 0.0000],
                [0.2500, 0.2500, 0.0000, 0.0000],
                [0.0000, 0.0000, 0.0000, 0.0000],
                [0.0000, 0.0000, 0.0000, 0.0000]])
    """
    if not isinstance(graph, AttentionGraph):
        raise TypeError(f"Expected 'graph' to be an AttentionGraph, got {type(graph).__name__}")
    height, width = _check_size(height, "height"), _check_size(width, "width")
    pixels = height * width
    if not isinstance(weights, Tensor) or weights.dim() not in (1, 2) or weights.size(0) != graph.num_edges:
        got = list(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise ValueError(f"Expected 'weights' of shape [num_edges, heads] with num_edges = {graph.num_edges}, got {got}")
    if weights.dim() == 1:
        weights = weights[:, None]
    if head is not None and (isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < weights.size(1)):
        raise ValueError(f"Expected 'head' in [0, {weights.size(1) - 1}] or None (the mean of the heads), got {head!r}")
    if isinstance(query, tuple):
        if len(query) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in query):
            raise ValueError(f"Expected 'query' as a pixel index or a (row, column) pair of ints, got {query!r}")
        row, column = int(query[0]), int(query[1])
        if not (0 <= row < height and 0 <= column < width):
            raise ValueError(f"Expected the query pixel inside the {height}x{width} image, got (row, column) = {query}")
        query = row * width + column
    elif isinstance(query, bool) or not isinstance(query, (int, np.integer)) or not 0 <= query < pixels:
        raise ValueError(f"Expected 'query' in [0, {pixels - 1}] (r * W + c) or a (row, column) pair, got {query!r}")
    if isinstance(image, bool) or not isinstance(image, (int, np.integer)) or image < 0 or (image + 1) * pixels > graph.num_queries:
        raise ValueError(
            f"Expected 'image' in [0, {graph.num_queries // pixels - 1}] (the graph has {graph.num_queries} query nodes "
            f"= images of {height}x{width} pixels), got {image!r}"
        )
    offset = int(image) * pixels
    node = offset + int(query)
    start, end = int(graph.crow[node]), int(graph.crow[node + 1])
    keys = graph.col[start:end].cpu() - offset  # [degree], pixel of each key in this image
    values = weights[start:end].detach().float().cpu()  # [degree, heads]
    values = values.mean(1) if head is None else values[:, head]  # [degree]
    inside = (keys >= 0) & (keys < pixels)
    out = torch.zeros(pixels, dtype=torch.float32)
    out.index_add_(0, keys[inside], values[inside])
    return out.view(height, width)


# ----------------------------------------------------------------------------------------------
# scikit-learn's digits
# ----------------------------------------------------------------------------------------------

DIGIT_CLASSES = tuple(str(d) for d in range(10))


class LabeledImages(NamedTuple):
    """Images with one class each: ``images`` float32 ``[N, 1, H, W]`` in ``[0, 1]``, ``labels``
    int64 ``[N]``, ``indices`` int64 ``[N]`` (rows of ``sklearn.datasets.load_digits()``, sorted).
    ``torch.utils.data.TensorDataset(images, labels)`` makes it a ``Dataset``."""

    images: Tensor
    labels: Tensor
    indices: Tensor


class ImageSplit(NamedTuple):
    """A train / test split of an image data set (:class:`LabeledImages` each)."""

    train: LabeledImages
    test: LabeledImages


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError("load_digits_split needs scikit-learn (pip install scikit-learn)") from error
    digits = load_digits()
    return np.asarray(digits.images, dtype=np.float64), np.asarray(digits.target, dtype=np.int64)


def load_digits_split(test_fraction: float = 0.2, seed: int = 0, *, size: int = 8) -> ImageSplit:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes) in a seeded, stratified
    train / test split, grey values scaled from 0-16 to ``[0, 1]``.

    Within each class, a permutation drawn from ``seed`` puts ``round(test_fraction * count)``
    images in the test part and the rest in the train part: class proportions are kept in both
    parts, and the same ``(test_fraction, seed)`` give the same split on every machine (with the
    same NumPy version). It is the split of :func:`graphattn.data.lra.load_digits32`, so the
    two hold out the same images.

    Args:
        test_fraction: share of every class held out, in ``(0, 1)`` (0.2: 359 test images).
        seed: random seed (a non-negative int).
        size: side of the returned images; other than 8, every image is resized bilinearly
            (:func:`graphattn.data.lra.upsample_bilinear`, what ``F.interpolate(...,
            mode="bilinear", align_corners=False)`` does), e.g. 32 for 1,024 pixel nodes.

    Returns:
        :class:`ImageSplit` of :class:`LabeledImages` (float32 ``[N, 1, size, size]``).

    Example:
        >>> split = load_digits_split()
        >>> split.train.images.shape, split.test.images.shape
        (torch.Size([1438, 1, 8, 8]), torch.Size([359, 1, 8, 8]))
        >>> torch.bincount(split.test.labels).tolist()
        [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"Expected 0 < test_fraction < 1, got {test_fraction!r}")
    size = _check_size(size, "size")
    images, targets = _digits()
    rng = np.random.default_rng(_seed_sequence(seed, "digits", "train"))  # the stream of lra.load_digits32
    is_test = np.zeros(len(targets), dtype=bool)
    for digit in range(len(DIGIT_CLASSES)):
        members = np.flatnonzero(targets == digit)
        is_test[rng.permutation(members)[: int(round(test_fraction * len(members)))]] = True
    scaled = images / 16.0
    if size != images.shape[-1]:
        scaled = np.stack([upsample_bilinear(image, size) for image in scaled])

    def part(rows: np.ndarray) -> LabeledImages:
        return LabeledImages(
            torch.from_numpy(scaled[rows]).float().unsqueeze(1),
            torch.from_numpy(targets[rows]),
            torch.from_numpy(rows.astype(np.int64)),
        )

    return ImageSplit(part(np.flatnonzero(~is_test)), part(np.flatnonzero(is_test)))
