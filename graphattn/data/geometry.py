"""Planar point sets with exact combinatorial answers: the tasks of pointer networks
(Vinyals, Fortunato & Jaitly, 2015), their labels, metrics and padding collate.

Every example is ``n`` points drawn uniformly from the unit square ``[0, 1]^2`` and an answer
that is a sequence of those points:

* **Convex hull** (:func:`convex_hull_examples`): the hull's vertices (from
  ``scipy.spatial.ConvexHull``), starting at the lowest point index on the hull, running
  counter-clockwise and closed by repeating the first index.
* **Travelling salesman** (:func:`tsp_examples`): an optimal tour (exact, Held-Karp dynamic
  programming, :func:`held_karp`; ``n <= 10`` by default), starting at point 0, in the direction
  whose second point has the smaller index; the tour returns to point 0 implicitly (no repeat).
* **Delaunay triangulation** (:func:`delaunay_examples`, optional): the triangles, each as its
  three indices in increasing order, triangles sorted lexicographically, flattened.

Index conventions (one per side, both used everywhere):

* **Point indices** (``indices``): 0-based positions in the example's point list; what the
  geometry helpers (:func:`convex_hull_indices`, :func:`held_karp`, :func:`tour_length`,
  :func:`polygon_area`, the validity checks) take and return.
* **Pointer targets** (``targets``): what a pointer network reads and emits, as in the paper
  where the END symbol is an extra input ``x0``: position ``0`` is :data:`END`, position
  ``i + 1`` is point ``i``; every target sequence ends with one :data:`END`. Batches are padded
  with :data:`PAD` (``-1``). :func:`to_pointer` / :func:`from_pointer` convert.

The evaluation helpers (:func:`evaluate_hull`, :func:`evaluate_tsp`) take pointer outputs as
:func:`graphattn.decoding.generate` returns them and compute the paper's metrics: exact-sequence
accuracy, convex-hull area coverage, tour length against the optimum, and the rate of invalid
outputs.

Generators draw from ``numpy.random.default_rng(seed)``: the same arguments give the same data
(with the same NumPy version).

Example:
    >>> data = convex_hull_examples(2, 6, seed=0)
    >>> data
    PointerData(hull: 2 examples, 6 points)
    >>> from_pointer(data.targets[0]).tolist() == convex_hull_indices(data.points[0]).tolist()
    True
    >>> int(data.targets[0][-1]) == END
    True
    >>> batch = collate_points(data.points, data.targets)
    >>> batch.points.shape, batch.lengths.tolist()
    (torch.Size([2, 6, 2]), [6, 6])
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import NamedTuple, Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "END",
    "PAD",
    "PointerData",
    "PointerBatch",
    "random_points",
    "convex_hull_indices",
    "held_karp",
    "brute_force_tsp",
    "canonical_tour",
    "delaunay_triangles",
    "convex_hull_examples",
    "tsp_examples",
    "delaunay_examples",
    "to_pointer",
    "from_pointer",
    "collate_points",
    "polygon_area",
    "is_simple_polygon",
    "is_valid_hull",
    "is_valid_tour",
    "hull_area_coverage",
    "tour_length",
    "sequence_accuracy",
    "evaluate_hull",
    "evaluate_tsp",
]

END = 0
"""Pointer position of the END symbol (the extra input ``x0``); point ``i`` is position ``i + 1``."""
PAD = -1
"""Padding of pointer target / output sequences (never a position)."""

Points = Union[np.ndarray, Tensor, Sequence[Sequence[float]]]
HELD_KARP_MAX = 10
"""The largest ``n`` :func:`tsp_examples` solves by default (Held-Karp is ``O(2^n n^2)``)."""


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
def _as_points(points: Points, name: str = "points", min_points: int = 1) -> np.ndarray:
    """``points`` as float64 ``[n, 2]``; raises ValueError naming what was expected."""
    if isinstance(points, Tensor):
        points = points.detach().cpu().numpy()
    array = np.asarray(points, dtype=np.float64) if not isinstance(points, np.ndarray) else points
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < min_points:
        raise ValueError(
            f"Expected '{name}' as an array [n, 2] of planar points with n >= {min_points}, got shape "
            f"{list(array.shape)}"
        )
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise ValueError(f"Expected '{name}' to hold finite numbers, got {array.dtype} values")
    return array.astype(np.float64, copy=False)


def _as_indices(sequence, name: str) -> np.ndarray:
    if isinstance(sequence, Tensor):
        sequence = sequence.detach().cpu().numpy()
    array = np.asarray(sequence)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"Expected '{name}' as a 1-D sequence of integer indices, got {array.dtype} {list(array.shape)}")
    return array.astype(np.int64, copy=False)


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"Expected '{name}' to be an int >= {minimum}, got {value!r}")
    return int(value)


def _point_counts(n: int | tuple[int, int], num_examples: int, rng: np.random.Generator, minimum: int) -> np.ndarray:
    """``[M]`` point counts: all ``n``, or uniform in ``[low, high]`` for ``n = (low, high)``."""
    if isinstance(n, tuple):
        if len(n) != 2:
            raise ValueError(f"Expected 'n' as an int or a (low, high) pair, got {n!r}")
        low, high = (_check_count(v, "n", minimum) for v in n)
        if low > high:
            raise ValueError(f"Expected n = (low, high) with low <= high, got {n!r}")
        return rng.integers(low, high + 1, size=num_examples)
    return np.full(num_examples, _check_count(n, "n", minimum), dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# exact answers
# ---------------------------------------------------------------------------------------------
def random_points(num_examples: int, n: int, seed: int = 0) -> np.ndarray:
    """``[num_examples, n, 2]`` float64 points uniform in the unit square.

    Example:
        >>> random_points(3, 5, seed=1).shape
        (3, 5, 2)
    """
    num_examples = _check_count(num_examples, "num_examples", 0)
    n = _check_count(n, "n", 1)
    return np.random.default_rng(seed).random((num_examples, n, 2))


def convex_hull_indices(points: Points) -> np.ndarray:
    """The convex hull of ``points [n, 2]`` (``n >= 3``, not all collinear) as 0-based point
    indices: its vertices counter-clockwise, starting at the lowest index on the hull, closed by
    repeating that index (``k + 1`` entries for ``k`` vertices). Points on an edge of the hull
    are not vertices (Qhull's default).

    Example:
        >>> square = [[1, 1], [0, 0], [0.5, 0.5], [1, 0], [0, 1]]
        >>> convex_hull_indices(square).tolist()         # 0 = (1, 1), then (0, 1), (0, 0), (1, 0)
        [0, 4, 1, 3, 0]
    """
    from scipy.spatial import ConvexHull, QhullError

    array = _as_points(points, min_points=3)
    try:
        vertices = ConvexHull(array).vertices  # counter-clockwise for 2-D input (scipy's promise)
    except QhullError as error:
        raise ValueError(f"The convex hull of {len(array)} points is degenerate (collinear or repeated points): {error}") from None
    vertices = np.asarray(vertices, dtype=np.int64)
    start = int(np.argmin(vertices))
    ordered = np.roll(vertices, -start)
    return np.concatenate([ordered, ordered[:1]])


def _distances(points: np.ndarray) -> np.ndarray:
    """``[..., n, n]`` Euclidean distances of ``[..., n, 2]`` points."""
    return np.sqrt(((points[..., :, None, :] - points[..., None, :, :]) ** 2).sum(-1))


def canonical_tour(tour: Sequence[int]) -> np.ndarray:
    """The tour as :func:`held_karp` writes it: rotated to start at point 0, reversed (after the
    start) when its second point has a larger index than its last.

    Example:
        >>> canonical_tour([2, 0, 3, 1]).tolist()
        [0, 2, 1, 3]
    """
    tour = _as_indices(tour, "tour")
    if tour.size == 0:
        return tour
    tour = np.roll(tour, -int(np.argmin(tour)))
    if tour.size > 2 and tour[1] > tour[-1]:
        tour = np.concatenate([tour[:1], tour[1:][::-1]])
    return tour


def held_karp(points: Points | np.ndarray, *, chunk_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Exact travelling-salesman tours by Held-Karp dynamic programming, vectorized over examples.

    ``dp[S, j]``: the shortest path that starts at point 0, visits the set ``S`` of the other
    points and ends at ``j in S``; sets are bit masks, filled size by size (a set of size ``s`` needs only the sets of size
    ``s - 1``), each step vectorized over the examples, the sets and their end points.
    Time ``O(2^n n^2)`` and memory ``O(2^n n)`` per example: meant for ``n <= 12`` or so.

    Args:
        points: ``[n, 2]`` one example, or ``[M, n, 2]`` a batch of examples with the same ``n``.
        chunk_size: examples solved at once (memory about ``2 * chunk_size * 2^(n-1) * (n-1)``
            floats).

    Returns:
        ``(tours, lengths)``: tours int64 ``[n]`` (or ``[M, n]``), 0-based point indices from
        point 0 in the canonical direction (:func:`canonical_tour`), and their closed lengths
        (float64 scalar array or ``[M]``).

    Example:
        >>> tour, length = held_karp([[0, 0], [1, 1], [1, 0], [0, 1]])
        >>> tour.tolist(), float(length)
        ([0, 2, 1, 3], 4.0)
    """
    array = points.detach().cpu().numpy() if isinstance(points, Tensor) else np.asarray(points, dtype=np.float64)
    single = array.ndim == 2
    if single:
        array = array[None]
    if array.ndim != 3 or array.shape[-1] != 2 or array.shape[1] < 1:
        raise ValueError(f"Expected points [n, 2] or [M, n, 2] with n >= 1, got shape {list(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError("Expected finite point coordinates")
    chunk_size = _check_count(chunk_size, "chunk_size", 1)
    tours, lengths = [], []
    for begin in range(0, len(array), chunk_size):
        t, l = _held_karp_chunk(array[begin : begin + chunk_size].astype(np.float64))
        tours.append(t)
        lengths.append(l)
    tours_all = np.concatenate(tours) if tours else np.zeros((0, array.shape[1]), np.int64)
    lengths_all = np.concatenate(lengths) if lengths else np.zeros(0)
    return (tours_all[0], lengths_all[0]) if single else (tours_all, lengths_all)


def _held_karp_chunk(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Held-Karp over ``[M, n, 2]`` -> (canonical tours ``[M, n]``, lengths ``[M]``)."""
    num, n = points.shape[:2]
    dist = _distances(points)  # [M, n, n]
    if n <= 2:
        tours = np.tile(np.arange(n), (num, 1))
        return tours, dist[:, 0, n - 1] * 2.0 if n == 2 else np.zeros(num)
    m = n - 1  # the points 1..n-1 are bits 0..m-1
    full = (1 << m) - 1
    dp = np.full((num, 1 << m, m), np.inf)
    parent = np.full((num, 1 << m, m), -1, dtype=np.int8)
    rows = np.arange(num)
    for j in range(m):
        dp[:, 1 << j, j] = dist[:, 0, j + 1]
    inner = dist[:, 1:, 1:]  # [M, m, m] distances between points 1..n-1
    # (set, end point) pairs grouped by set size: every set of size s depends on sets of size s - 1
    masks = np.arange(1 << m)
    members = (masks[:, None] >> np.arange(m)) & 1  # [2^m, m]
    sizes = members.sum(1)
    for size in range(2, m + 1):
        pair_mask, pair_end = np.nonzero(members * (sizes == size)[:, None])  # [P] each
        previous = pair_mask ^ (1 << pair_end)  # the set before adding the end point
        # candidates[M, P, i] = dp[previous, i] + d(i, end); dp is inf for i outside the set
        candidates = dp[:, previous, :] + inner[:, :, pair_end].transpose(0, 2, 1)
        best = candidates.argmin(-1)  # [M, P]
        dp[:, pair_mask, pair_end] = np.take_along_axis(candidates, best[..., None], -1)[..., 0]
        parent[:, pair_mask, pair_end] = best
    closing = dp[:, full, :] + dist[:, 1:, 0]  # [M, m]
    last = closing.argmin(-1)
    lengths = closing[rows, last]
    tours = np.zeros((num, n), dtype=np.int64)
    mask = np.full(num, full)
    current = last
    for position in range(n - 1, 0, -1):
        tours[:, position] = current + 1
        previous = parent[rows, mask, current].astype(np.int64)
        mask = mask ^ (1 << current)
        current = previous
    return np.stack([canonical_tour(t) for t in tours]), lengths


def brute_force_tsp(points: Points) -> tuple[np.ndarray, float]:
    """The optimal tour of ``points [n, 2]`` by trying every permutation (``n <= 9``; a test
    oracle for :func:`held_karp`). Returns ``(canonical tour [n], length)``."""
    array = _as_points(points)
    n = len(array)
    if n > 9:
        raise ValueError(f"brute_force_tsp tries (n-1)! tours; expected n <= 9, got n = {n}; use held_karp")
    best, best_length = None, np.inf
    for rest in itertools.permutations(range(1, n)):
        tour = (0,) + rest
        length = tour_length(array, tour)
        if length < best_length - 1e-12:
            best, best_length = tour, length
    return canonical_tour(best), float(best_length)


def delaunay_triangles(points: Points) -> np.ndarray:
    """The Delaunay triangulation of ``points [n, 2]`` as int64 ``[t, 3]``: every triangle's
    indices in increasing order, triangles sorted lexicographically.

    Example:
        >>> delaunay_triangles([[0, 0], [1, 0], [0, 1], [1.2, 1.1]]).tolist()
        [[0, 1, 2], [1, 2, 3]]
    """
    from scipy.spatial import Delaunay, QhullError

    array = _as_points(points, min_points=3)
    try:
        simplices = Delaunay(array).simplices
    except QhullError as error:
        raise ValueError(f"The Delaunay triangulation of {len(array)} points is degenerate: {error}") from None
    triangles = np.sort(np.asarray(simplices, dtype=np.int64), axis=1)
    return triangles[np.lexsort(triangles.T[::-1])]


# ---------------------------------------------------------------------------------------------
# data sets
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PointerData:
    """Examples of one task: point sets and pointer targets.

    Attributes:
        task: ``"hull"``, ``"tsp"`` or ``"delaunay"``.
        points: one float64 ``[n_i, 2]`` array per example.
        targets: one int64 ``[T_i]`` array per example in the pointer convention (point ``i`` is
            ``i + 1``, ending with :data:`END`).
        optimal_lengths: TSP only: float64 ``[M]`` length of every optimal tour (else None).
    """

    task: str
    points: list[np.ndarray]
    targets: list[np.ndarray]
    optimal_lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.points[index], self.targets[index]

    def __repr__(self) -> str:
        counts = sorted({len(p) for p in self.points})
        size = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        return f"PointerData({self.task}: {len(self)} examples, {size} points)"


def _points_for(counts: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.random((int(c), 2)) for c in counts]


def convex_hull_examples(num_examples: int, n: int | tuple[int, int], seed: int = 0) -> PointerData:
    """Convex-hull examples: ``n`` points (or ``n = (low, high)``: a count per example, uniform)
    uniform in the unit square; targets = :func:`convex_hull_indices` in the pointer convention
    (lowest index on the hull first, counter-clockwise, the first repeated, then END).

    Example:
        >>> data = convex_hull_examples(1, 5, seed=3)
        >>> hull = from_pointer(data.targets[0])
        >>> int(hull[0]) == int(hull[:-1].min()) and int(hull[0]) == int(hull[-1])
        True
    """
    num_examples = _check_count(num_examples, "num_examples", 0)
    rng = np.random.default_rng(seed)
    points = _points_for(_point_counts(n, num_examples, rng, 3), rng)
    targets = [to_pointer(convex_hull_indices(p)) for p in points]
    return PointerData("hull", points, targets)


def tsp_examples(
    num_examples: int, n: int | tuple[int, int], seed: int = 0, *, max_exact: int = HELD_KARP_MAX
) -> PointerData:
    """Travelling-salesman examples with exact optimal tours (Held-Karp): targets are the
    canonical optimal tours (from point 0, second index below the last; no closing repeat) in
    the pointer convention; ``optimal_lengths`` holds their closed lengths.

    Args:
        num_examples: ``M``.
        n: points per example, or ``(low, high)``.
        seed: the generator's seed.
        max_exact: the largest ``n`` accepted (Held-Karp's cost doubles with every point).

    Example:
        >>> data = tsp_examples(2, 5, seed=0)
        >>> int(from_pointer(data.targets[0])[0]), data.optimal_lengths.shape
        (0, (2,))
    """
    num_examples = _check_count(num_examples, "num_examples", 0)
    rng = np.random.default_rng(seed)
    counts = _point_counts(n, num_examples, rng, 1)
    if num_examples and counts.max() > max_exact:
        raise ValueError(
            f"Exact TSP labels come from Held-Karp, O(2^n n^2); expected n <= max_exact = {max_exact}, got "
            f"n = {int(counts.max())}; raise max_exact if you can wait"
        )
    points = _points_for(counts, rng)
    tours: list[np.ndarray | None] = [None] * num_examples
    lengths = np.zeros(num_examples)
    for size in np.unique(counts):
        where = np.flatnonzero(counts == size)
        t, l = held_karp(np.stack([points[i] for i in where]))
        for row, i in enumerate(where):
            tours[i] = t[row]
        lengths[where] = l
    targets = [to_pointer(t) for t in tours]
    return PointerData("tsp", points, targets, lengths)


def delaunay_examples(num_examples: int, n: int | tuple[int, int], seed: int = 0) -> PointerData:
    """Delaunay-triangulation examples: targets are :func:`delaunay_triangles` flattened (three
    indices per triangle) in the pointer convention, then END.

    Example:
        >>> data = delaunay_examples(1, 4, seed=0)
        >>> (len(data.targets[0]) - 1) % 3
        0
    """
    num_examples = _check_count(num_examples, "num_examples", 0)
    rng = np.random.default_rng(seed)
    points = _points_for(_point_counts(n, num_examples, rng, 3), rng)
    targets = [to_pointer(delaunay_triangles(p).reshape(-1)) for p in points]
    return PointerData("delaunay", points, targets)


# ---------------------------------------------------------------------------------------------
# conventions and collate
# ---------------------------------------------------------------------------------------------
def to_pointer(indices: Sequence[int]) -> np.ndarray:
    """0-based point indices -> a pointer target: every index plus one, then :data:`END`.

    Example:
        >>> to_pointer([0, 2, 1, 0]).tolist()
        [1, 3, 2, 1, 0]
    """
    indices = _as_indices(indices, "indices")
    if indices.size and indices.min() < 0:
        raise ValueError(f"Expected point indices >= 0, got {indices.tolist()}")
    return np.concatenate([indices + 1, [END]]).astype(np.int64)


def from_pointer(sequence: Sequence[int] | Tensor) -> np.ndarray:
    """A pointer sequence -> 0-based point indices: everything before the first :data:`END` (or
    :data:`PAD`), minus one. Use :func:`is_valid_hull` / :func:`is_valid_tour` on the raw
    sequence to know whether it ended properly.

    Example:
        >>> from_pointer([1, 3, 2, 1, 0, -1]).tolist()
        [0, 2, 1, 0]
    """
    sequence = _as_indices(sequence, "sequence")
    stop = np.flatnonzero(sequence <= END)
    end = int(stop[0]) if stop.size else len(sequence)
    return sequence[:end] - 1


class PointerBatch(NamedTuple):
    """A padded batch: ``points`` float32 ``[B, N, 2]`` (zeros after each row's points),
    ``lengths`` int64 ``[B]`` (points per row), ``targets`` int64 ``[B, T]`` in the pointer
    convention padded with :data:`PAD`, ``target_lengths`` int64 ``[B]`` (END included); the
    target fields are None when no targets were given."""

    points: Tensor
    lengths: Tensor
    targets: Tensor | None
    target_lengths: Tensor | None


def collate_points(
    points: Sequence[Points], targets: Sequence[Sequence[int]] | None = None, *, pad_to: int | None = None
) -> PointerBatch:
    """Right-pad point sets (and pointer targets) into a :class:`PointerBatch`.

    Args:
        points: ``B`` arrays ``[n_i, 2]``, or one array ``[B, n, 2]``.
        targets: ``B`` pointer targets (values in ``[0, n_i]``), or None.
        pad_to: pad the points to this many slots (at least the largest ``n_i``).

    Example:
        >>> batch = collate_points([np.zeros((3, 2)), np.ones((2, 2))], [[1, 2, 3, 0], [2, 1, 0]])
        >>> batch.points.shape, batch.lengths.tolist(), batch.targets.tolist()
        (torch.Size([2, 3, 2]), [3, 2], [[1, 2, 3, 0], [2, 1, 0, -1]])
    """
    if len(points) == 0:
        raise ValueError("Expected at least one point set to collate, got none")
    arrays = [_as_points(p, f"points[{i}]") for i, p in enumerate(points)]
    lengths = torch.tensor([len(a) for a in arrays], dtype=torch.long)
    slots = int(lengths.max())
    if pad_to is not None:
        if _check_count(pad_to, "pad_to", 1) < slots:
            raise ValueError(f"Expected pad_to >= the largest point count {slots}, got {pad_to}")
        slots = pad_to
    padded = torch.zeros(len(arrays), slots, 2, dtype=torch.float32)
    for row, array in enumerate(arrays):
        padded[row, : len(array)] = torch.from_numpy(array).float()
    if targets is None:
        return PointerBatch(padded, lengths, None, None)
    if len(targets) != len(arrays):
        raise ValueError(f"Expected one target per point set ({len(arrays)}), got {len(targets)}")
    rows = [_as_indices(t, f"targets[{i}]") for i, t in enumerate(targets)]
    for row, (target, count) in enumerate(zip(rows, lengths.tolist())):
        if target.size == 0 or target.min() < 0 or target.max() > count:
            raise ValueError(
                f"Expected targets[{row}] as pointer positions in [0, {count}] (0 = END, i + 1 = point i), got "
                f"{target.tolist()}"
            )
    target_lengths = torch.tensor([len(t) for t in rows], dtype=torch.long)
    padded_targets = torch.full((len(rows), int(target_lengths.max())), PAD, dtype=torch.long)
    for row, target in enumerate(rows):
        padded_targets[row, : len(target)] = torch.from_numpy(target)
    return PointerBatch(padded, lengths, padded_targets, target_lengths)


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def polygon_area(points: Points, polygon: Sequence[int]) -> float:
    """Absolute area (shoelace formula) of the polygon through ``points[polygon]``; a closing
    repeat of the first index is allowed and changes nothing.

    Example:
        >>> polygon_area([[0, 0], [2, 0], [2, 1], [0, 1]], [0, 1, 2, 3, 0])
        2.0
    """
    array = _as_points(points)
    polygon = _as_indices(polygon, "polygon")
    if polygon.size < 3:
        return 0.0
    corners = array[polygon]
    x, y = corners[:, 0], corners[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _segments_cross(p1: np.ndarray, p2: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> bool:
    def orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    d1, d2 = orient(q1, q2, p1), orient(q1, q2, p2)
    d3, d4 = orient(p1, p2, q1), orient(p1, p2, q2)
    return (d1 * d2 < 0) and (d3 * d4 < 0)


def is_simple_polygon(points: Points, polygon: Sequence[int]) -> bool:
    """Whether the closed polygon through ``points[polygon]`` (closing repeat optional) has at
    least three distinct vertices and no two non-adjacent edges cross.

    Example:
        >>> square = [[0, 0], [1, 0], [1, 1], [0, 1]]
        >>> is_simple_polygon(square, [0, 1, 2, 3, 0]), is_simple_polygon(square, [0, 2, 1, 3, 0])
        (True, False)
    """
    array = _as_points(points)
    polygon = _as_indices(polygon, "polygon")
    if polygon.size > 1 and polygon[0] == polygon[-1]:
        polygon = polygon[:-1]
    k = polygon.size
    if k < 3 or len(set(polygon.tolist())) != k:
        return False
    corners = array[polygon]
    for a in range(k):
        for b in range(a + 2, k):
            if a == 0 and b == k - 1:
                continue  # adjacent through the closing edge
            if _segments_cross(corners[a], corners[(a + 1) % k], corners[b], corners[(b + 1) % k]):
                return False
    return True


def is_valid_hull(sequence: Sequence[int] | Tensor, num_points: int) -> bool:
    """Whether a pointer output is a well-formed hull answer: at least three distinct points in
    ``[1, num_points]``, then the first point again, then :data:`END` (and only :data:`PAD`
    after it) -- a closed polygon of distinct input points. (Convexity and orientation are not
    checked; the accuracy and area coverage measure those.)

    Example:
        >>> is_valid_hull([1, 3, 2, 1, 0], 3), is_valid_hull([1, 3, 2, 0], 3), is_valid_hull([1, 3, 3, 1, 0], 3)
        (True, False, False)
    """
    sequence = _as_indices(sequence, "sequence")
    ends = np.flatnonzero(sequence == END)
    if ends.size == 0 or (sequence[ends[0] + 1 :] != PAD).any():
        return False
    body = sequence[: ends[0]]
    if body.size < 4 or body[0] != body[-1] or body.min() < 1 or body.max() > num_points:
        return False
    vertices = body[:-1]
    return len(set(vertices.tolist())) == vertices.size


def is_valid_tour(sequence: Sequence[int] | Tensor, num_points: int) -> bool:
    """Whether a pointer output is a tour: a permutation of the positions ``1..num_points``
    followed by :data:`END` (and only :data:`PAD` after it).

    Example:
        >>> is_valid_tour([1, 3, 2, 0], 3), is_valid_tour([1, 3, 3, 0], 3), is_valid_tour([1, 3, 2], 3)
        (True, False, False)
    """
    sequence = _as_indices(sequence, "sequence")
    ends = np.flatnonzero(sequence == END)
    if ends.size == 0 or (sequence[ends[0] + 1 :] != PAD).any():
        return False
    body = sequence[: ends[0]]
    return body.size == num_points and np.array_equal(np.sort(body), np.arange(1, num_points + 1))


def hull_area_coverage(points: Points, predicted: Sequence[int], true: Sequence[int] | None = None) -> float:
    """Area of the predicted polygon over the area of the true convex hull (Vinyals et al.'s
    "area coverage"). Both are 0-based index polygons (closing repeat optional); ``true``
    defaults to :func:`convex_hull_indices`. A polygon that is not simple (fewer than three
    distinct vertices, or crossing edges) covers 0. A simple polygon of input points lies inside
    the hull, so the value is in ``[0, 1]``, 1 for the hull in either orientation.

    Example:
        >>> square = [[0, 0], [1, 0], [1, 1], [0, 1]]
        >>> hull_area_coverage(square, [0, 1, 2, 0]), hull_area_coverage(square, [0, 2, 1, 3, 0])
        (0.5, 0.0)
    """
    array = _as_points(points, min_points=3)
    true = convex_hull_indices(array) if true is None else _as_indices(true, "true")
    if not is_simple_polygon(array, predicted):
        return 0.0
    hull_area = polygon_area(array, true)
    if hull_area <= 0.0:
        raise ValueError("The true hull has zero area (collinear points); area coverage is undefined")
    return polygon_area(array, predicted) / hull_area


def tour_length(points: Points, tour: Sequence[int]) -> float:
    """Length of the closed tour through ``points[tour]`` and back to its start (0-based
    indices; a closing repeat of the start adds nothing).

    Example:
        >>> tour_length([[0, 0], [3, 0], [3, 4]], [0, 1, 2])
        12.0
    """
    array = _as_points(points)
    tour = _as_indices(tour, "tour")
    if tour.size < 2:
        return 0.0
    corners = array[tour]
    return float(np.sqrt(((corners - np.roll(corners, -1, axis=0)) ** 2).sum(-1)).sum())


def sequence_accuracy(predicted: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> float:
    """Fraction of rows whose sequence equals the target exactly, after cutting both at their
    first :data:`END` (pointer convention; :data:`PAD` is ignored).

    Example:
        >>> sequence_accuracy([[1, 2, 1, 0, -1], [2, 1, 0]], [[1, 2, 1, 0], [1, 2, 0]])
        0.5
    """
    if len(predicted) != len(targets):
        raise ValueError(f"Expected as many predictions as targets, got {len(predicted)} and {len(targets)}")
    if not len(targets):
        raise ValueError("Expected at least one example")
    hits = 0
    for p, t in zip(predicted, targets):
        p, t = _as_indices(p, "predicted"), _as_indices(t, "target")
        hits += bool(np.array_equal(_cut(p), _cut(t)))
    return hits / len(targets)


def _cut(sequence: np.ndarray) -> np.ndarray:
    """The sequence up to and including its first END (PAD stripped)."""
    ends = np.flatnonzero(sequence == END)
    return sequence[: ends[0] + 1] if ends.size else sequence[sequence != PAD]


def _rows(predicted) -> list[np.ndarray]:
    if isinstance(predicted, Tensor):
        predicted = predicted.detach().cpu().numpy()
    return [_as_indices(p, "predicted") for p in predicted]


def evaluate_hull(points: Sequence[Points], predicted, targets: Sequence[Sequence[int]]) -> dict[str, float]:
    """The paper's convex-hull metrics over a set of examples.

    Args:
        points: the ``M`` point sets.
        predicted: ``M`` pointer outputs (rows of ``generate(...).sequences`` or lists).
        targets: the ``M`` pointer targets.

    Returns:
        ``{"accuracy", "area_coverage", "invalid_rate"}``: exact-sequence accuracy, mean area
        coverage (an invalid output covers 0), and the fraction of outputs that are not a closed
        polygon of distinct points ended by END (:func:`is_valid_hull`) or not simple.
    """
    rows = _rows(predicted)
    if not (len(points) == len(rows) == len(targets)) or not len(rows):
        raise ValueError(
            f"Expected as many point sets, predictions and targets (at least one), got {len(points)}, "
            f"{len(rows)} and {len(targets)}"
        )
    coverage, invalid = [], 0
    for p, row, target in zip(points, rows, targets):
        array = _as_points(p, min_points=3)
        if not is_valid_hull(row, len(array)) or not is_simple_polygon(array, from_pointer(row)):
            invalid += 1
            coverage.append(0.0)
            continue
        coverage.append(hull_area_coverage(array, from_pointer(row), from_pointer(target)))
    return {
        "accuracy": sequence_accuracy(rows, targets),
        "area_coverage": float(np.mean(coverage)),
        "invalid_rate": invalid / len(rows),
    }


def evaluate_tsp(
    points: Sequence[Points], predicted, targets: Sequence[Sequence[int]], optimal_lengths: Sequence[float] | None = None
) -> dict[str, float]:
    """The TSP metrics over a set of examples.

    Returns:
        ``{"accuracy", "mean_length", "mean_optimal", "length_ratio", "invalid_rate"}``:
        exact-sequence accuracy (tours are canonical, so a reversed optimal tour is a miss), the
        mean predicted and optimal tour lengths over the *valid* outputs, their ratio (1.0 =
        optimal; NaN when no output is valid), and the fraction of outputs that are not a
        permutation ended by END. ``optimal_lengths`` defaults to the targets' lengths.
    """
    rows = _rows(predicted)
    if not (len(points) == len(rows) == len(targets)) or not len(rows):
        raise ValueError(
            f"Expected as many point sets, predictions and targets (at least one), got {len(points)}, "
            f"{len(rows)} and {len(targets)}"
        )
    lengths, optimal, invalid = [], [], 0
    for i, (p, row, target) in enumerate(zip(points, rows, targets)):
        array = _as_points(p)
        if not is_valid_tour(row, len(array)):
            invalid += 1
            continue
        lengths.append(tour_length(array, from_pointer(row)))
        optimal.append(float(optimal_lengths[i]) if optimal_lengths is not None else tour_length(array, from_pointer(target)))
    mean_length = float(np.mean(lengths)) if lengths else float("nan")
    mean_optimal = float(np.mean(optimal)) if optimal else float("nan")
    return {
        "accuracy": sequence_accuracy(rows, targets),
        "mean_length": mean_length,
        "mean_optimal": mean_optimal,
        "length_ratio": mean_length / mean_optimal if optimal else float("nan"),
        "invalid_rate": invalid / len(rows),
    }
