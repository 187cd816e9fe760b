"""Planar point tasks of pointer networks: exact labels against brute force and hand examples,
metrics on hand cases, conventions, collate and bad input."""
import itertools
import math

import numpy as np
import pytest
import torch

from graphattn.data import geometry
from graphattn.data.geometry import (
    END,
    PAD,
    brute_force_tsp,
    canonical_tour,
    collate_points,
    convex_hull_examples,
    convex_hull_indices,
    delaunay_examples,
    evaluate_hull,
    evaluate_tsp,
    from_pointer,
    held_karp,
    hull_area_coverage,
    is_simple_polygon,
    is_valid_hull,
    is_valid_tour,
    polygon_area,
    sequence_accuracy,
    to_pointer,
    tour_length,
    tsp_examples,
)


# ----------------------------------------------------------------------------- convex hull
def test_hull_hand_example_orientation_start_and_closing():
    # a pentagon with interior points; index 0 and 1 are interior, so the hull starts at 2
    points = np.array([
        [0.5, 0.5],   # 0 interior
        [0.4, 0.6],   # 1 interior
        [1.0, 0.0],   # 2 hull
        [0.0, 0.0],   # 3 hull
        [1.0, 1.0],   # 4 hull
        [0.0, 1.0],   # 5 hull
        [0.5, 1.5],   # 6 hull (apex on top)
    ])
    # counter-clockwise from (1, 0): (1, 1), (0.5, 1.5), (0, 1), (0, 0), back to (1, 0)
    assert convex_hull_indices(points).tolist() == [2, 4, 6, 5, 3, 2]


def test_hull_is_counter_clockwise_and_starts_at_lowest_index():
    data = convex_hull_examples(50, 12, seed=4)
    for points, target in zip(data.points, data.targets):
        hull = from_pointer(target)
        assert hull[0] == hull[-1] == hull[:-1].min()
        assert len(set(hull[:-1].tolist())) == len(hull) - 1
        corners = points[hull[:-1]]
        x, y = corners[:, 0], corners[:, 1]
        signed = (np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2
        assert signed > 0  # counter-clockwise
        # every point lies on the left of (or on) every edge: it is the hull
        for a, b in zip(hull[:-1], hull[1:]):
            cross = (points[b, 0] - points[a, 0]) * (points[:, 1] - points[a, 1]) - (
                points[b, 1] - points[a, 1]) * (points[:, 0] - points[a, 0])
            assert (cross >= -1e-12).all()


def test_hull_examples_reproducible_and_variable_n():
    a, b = convex_hull_examples(5, (5, 9), seed=7), convex_hull_examples(5, (5, 9), seed=7)
    assert all(np.array_equal(p, q) for p, q in zip(a.points, b.points))
    assert all(np.array_equal(p, q) for p, q in zip(a.targets, b.targets))
    assert {len(p) for p in a.points} <= set(range(5, 10))
    assert all(((p >= 0) & (p < 1)).all() for p in a.points)


def test_hull_degenerate_input_is_a_clear_error():
    with pytest.raises(ValueError, match="degenerate"):
        convex_hull_indices([[0, 0], [1, 1], [2, 2]])
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        convex_hull_indices([[0, 0, 0], [1, 1, 1], [2, 2, 0]])
    with pytest.raises(ValueError, match="n >= 3"):
        convex_hull_indices([[0, 0], [1, 1]])


# ----------------------------------------------------------------------------- TSP
@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7])
def test_held_karp_matches_brute_force(n):
    points = np.random.default_rng(n).random((6, n, 2))
    tours, lengths = held_karp(points)
    for p, tour, length in zip(points, tours, lengths):
        best_length = min(tour_length(p, (0,) + rest) for rest in itertools.permutations(range(1, n)))
        assert length == pytest.approx(best_length, abs=1e-12)
        assert tour_length(p, tour) == pytest.approx(length, abs=1e-12)
        brute_tour, brute_length = brute_force_tsp(p)
        assert tour.tolist() == brute_tour.tolist()
        assert sorted(tour.tolist()) == list(range(n)) and tour[0] == 0
        if n > 2:
            assert tour[1] < tour[-1]  # canonical direction


def test_held_karp_single_example_and_chunks():
    points = np.random.default_rng(0).random((7, 8, 2))
    whole = held_karp(points)
    chunked = held_karp(points, chunk_size=3)
    assert np.array_equal(whole[0], chunked[0]) and np.allclose(whole[1], chunked[1])
    tour, length = held_karp(points[2])
    assert tour.tolist() == whole[0][2].tolist() and float(length) == pytest.approx(whole[1][2])


def test_tsp_examples_targets_and_lengths():
    data = tsp_examples(20, 6, seed=1)
    for points, target, length in zip(data.points, data.targets, data.optimal_lengths):
        tour = from_pointer(target)
        assert target[-1] == END and tour[0] == 0 and len(tour) == 6
        assert tour_length(points, tour) == pytest.approx(length)
    with pytest.raises(ValueError, match="max_exact"):
        tsp_examples(1, 12)


def test_canonical_tour():
    assert canonical_tour([3, 1, 0, 2]).tolist() == [0, 1, 3, 2]  # rotate to 0 -> [0,2,3,1] -> reverse
    assert canonical_tour([0, 1, 2]).tolist() == [0, 1, 2]


# ----------------------------------------------------------------------------- Delaunay
def test_delaunay_examples_triangles():
    data = delaunay_examples(3, 8, seed=2)
    for points, target in zip(data.points, data.targets):
        triangles = from_pointer(target).reshape(-1, 3)
        assert (np.diff(triangles, axis=1) > 0).all()
        # Euler: a triangulation of n points with h on the hull has 2n - h - 2 triangles
        h = len(convex_hull_indices(points)) - 1
        assert len(triangles) == 2 * len(points) - h - 2


# ----------------------------------------------------------------------------- conventions
def test_pointer_convention_round_trip():
    assert to_pointer([2, 0, 1, 2]).tolist() == [3, 1, 2, 3, END]
    assert from_pointer([3, 1, 2, 3, END, PAD, PAD]).tolist() == [2, 0, 1, 2]
    assert from_pointer(torch.tensor([2, 1])).tolist() == [1, 0]
    with pytest.raises(ValueError, match=">= 0"):
        to_pointer([0, -1])


def test_collate_pads_points_and_targets():
    batch = collate_points([np.zeros((4, 2)), np.ones((2, 2))], [[1, 2, 3, 4, 0], [2, 1, 0]], pad_to=5)
    assert batch.points.shape == (2, 5, 2) and batch.points.dtype == torch.float32
    assert batch.points[1, 2:].abs().sum() == 0 and batch.points[1, :2].sum() == 4
    assert batch.lengths.tolist() == [4, 2]
    assert batch.targets.tolist() == [[1, 2, 3, 4, 0], [2, 1, 0, PAD, PAD]]
    assert batch.target_lengths.tolist() == [5, 3]
    assert collate_points(np.zeros((3, 4, 2))).targets is None


def test_collate_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        collate_points([])
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        collate_points([np.zeros((2, 2))], [[3, 0]])
    with pytest.raises(ValueError, match="one target per point set"):
        collate_points([np.zeros((2, 2))], [[1, 0], [1, 0]])
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        collate_points([np.zeros((2, 3))])
    with pytest.raises(ValueError, match="pad_to"):
        collate_points([np.zeros((3, 2))], pad_to=2)


# ----------------------------------------------------------------------------- metrics
SQUARE = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.5]])


def test_polygon_area_and_simplicity():
    assert polygon_area(SQUARE, [0, 1, 2, 3]) == pytest.approx(1.0)
    assert polygon_area(SQUARE, [0, 3, 2, 1, 0]) == pytest.approx(1.0)  # clockwise: same area
    assert polygon_area(SQUARE, [0, 1, 4]) == pytest.approx(0.25)
    assert polygon_area(SQUARE, [0, 1]) == 0.0
    assert is_simple_polygon(SQUARE, [0, 1, 2, 3, 0])
    assert not is_simple_polygon(SQUARE, [0, 2, 1, 3, 0])  # a bow tie
    assert not is_simple_polygon(SQUARE, [0, 1, 0])
    assert not is_simple_polygon(SQUARE, [0, 1, 1, 2, 0])


def test_area_coverage_hand_cases():
    assert hull_area_coverage(SQUARE, [0, 1, 2, 3, 0]) == pytest.approx(1.0)
    assert hull_area_coverage(SQUARE, [0, 3, 2, 1, 0]) == pytest.approx(1.0)  # orientation does not matter
    assert hull_area_coverage(SQUARE, [0, 1, 2, 4, 3, 0]) == pytest.approx(0.75)  # a dent to the centre
    assert hull_area_coverage(SQUARE, [0, 1, 2, 0]) == pytest.approx(0.5)
    assert hull_area_coverage(SQUARE, [0, 2, 1, 3, 0]) == 0.0


def test_tour_length_hand_cases():
    assert tour_length(SQUARE, [0, 1, 2, 3]) == pytest.approx(4.0)
    assert tour_length(SQUARE, [0, 1, 2, 3, 0]) == pytest.approx(4.0)
    assert tour_length(SQUARE, [0, 2, 1, 3]) == pytest.approx(2 + 2 * math.sqrt(2))
    assert tour_length(SQUARE, [4]) == 0.0


def test_validity_checks():
    assert is_valid_hull([1, 2, 3, 1, END], 4)
    assert is_valid_hull([1, 2, 3, 1, END, PAD], 4)
    assert not is_valid_hull([1, 2, 3, 1], 4)  # no END
    assert not is_valid_hull([1, 2, 1, END], 4)  # two vertices
    assert not is_valid_hull([1, 2, 3, 2, 1, END], 4)  # a repeated vertex
    assert not is_valid_hull([1, 2, 5, 1, END], 4)  # out of range
    assert not is_valid_hull([1, 2, 3, 1, END, 2], 4)  # something after END
    assert is_valid_tour([2, 1, 3, END], 3)
    assert not is_valid_tour([2, 1, END], 3)
    assert not is_valid_tour([2, 2, 3, END], 3)
    assert not is_valid_tour([2, 1, 3], 3)


def test_sequence_accuracy():
    assert sequence_accuracy([[1, 2, 0], [2, 1, 0, PAD]], [[1, 2, 0], [1, 2, 0]]) == 0.5
    assert sequence_accuracy([[1, 2, 0, 3]], [[1, 2, 0]]) == 1.0  # cut at END
    with pytest.raises(ValueError, match="as many"):
        sequence_accuracy([[1]], [])


def test_evaluate_hull_and_tsp():
    points = [SQUARE]
    truth = to_pointer(convex_hull_indices(SQUARE))
    perfect = evaluate_hull(points, [truth], [truth])
    assert perfect == {"accuracy": 1.0, "area_coverage": pytest.approx(1.0), "invalid_rate": 0.0}
    dented = evaluate_hull(points + points, [to_pointer([0, 1, 2, 4, 3, 0]), [1, 2, END]], [truth, truth])
    assert dented["accuracy"] == 0.0 and dented["invalid_rate"] == 0.5
    assert dented["area_coverage"] == pytest.approx(0.75 / 2)

    four = SQUARE[:4]
    optimal = to_pointer([0, 1, 2, 3])
    result = evaluate_tsp([four, four, four], [optimal, to_pointer([0, 2, 1, 3]), [1, 1, 2, 3, END]], [optimal] * 3)
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert result["invalid_rate"] == pytest.approx(1 / 3)
    assert result["mean_optimal"] == pytest.approx(4.0)
    assert result["mean_length"] == pytest.approx((4 + 2 + 2 * math.sqrt(2)) / 2)
    assert result["length_ratio"] == pytest.approx(result["mean_length"] / 4.0)
    with pytest.raises(ValueError, match="as many"):
        evaluate_tsp([four], [], [optimal])


def test_bad_counts_are_clear_errors():
    with pytest.raises(ValueError, match="'n'"):
        convex_hull_examples(2, 2)
    with pytest.raises(ValueError, match="low <= high"):
        convex_hull_examples(2, (9, 5))
    with pytest.raises(ValueError, match="num_examples"):
        tsp_examples(-1, 5)
    with pytest.raises(ValueError, match=r"\[M, n, 2\]"):
        held_karp(np.zeros((2, 3, 3)))
    assert geometry.random_points(2, 3, seed=0).shape == (2, 3, 2)
