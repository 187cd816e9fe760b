"""Tests for graphattn.models.ctc: prefix beam search against brute force over every path, greedy
== collapse(arg-max), the model's loss against torch's ctc_loss, padding independence, edit
distance / character error rate on hand examples, and the errors."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from graphattn.models import (
    CTCModel,
    CTCOutput,
    TransformerConfig,
    Vectors,
    character_error_rate,
    ctc_beam_search,
    ctc_collapse,
    ctc_greedy_decode,
    edit_distance,
)


def random_log_probs(batch: int, frames: int, classes: int, seed: int, sharpness: float = 2.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (sharpness * torch.randn(batch, frames, classes, generator=generator, dtype=torch.float64)).log_softmax(-1)


def brute_force_best(log_probs: torch.Tensor, blank: int) -> tuple[list[int], float]:
    """The most probable labelling of one row ``[T, V]``: sum the probability of every path."""
    frames, classes = log_probs.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(classes), repeat=frames):
        p = math.exp(sum(float(log_probs[t, s]) for t, s in enumerate(path)))
        labelling = tuple(ctc_collapse(path, blank))
        totals[labelling] = totals.get(labelling, 0.0) + p
    best = max(totals, key=totals.get)
    return list(best), totals[best]


def small_config(**overrides) -> TransformerConfig:
    settings = dict(vocab_size=6, input_features=5, d_model=16, num_heads=2, num_layers=2, dropout=0.0,
                    encoder_pattern="local(window=2)", position="rotary")
    settings.update(overrides)
    return TransformerConfig(**settings)


# ---------------------------------------------------------------------- collapse / greedy
@pytest.mark.parametrize(
    "path, blank, expected",
    [
        ([], 0, []),
        ([0, 0, 0], 0, []),
        ([1, 1, 0, 1, 2, 2], 0, [1, 1, 2]),
        ([1, 2, 1, 2], 0, [1, 2, 1, 2]),
        ([2, 2, 0, 0, 2], 2, [0]),  # blank 2: label 0, one run
        ([0, 2, 0], 2, [0, 0]),  # a blank between repeats keeps both
    ],
)
def test_collapse(path, blank, expected) -> None:
    assert ctc_collapse(path, blank) == expected


@pytest.mark.parametrize("blank", [0, 2])
def test_greedy_is_collapsed_argmax(blank: int) -> None:
    log_probs = random_log_probs(4, 9, 4, seed=1)
    lengths = torch.tensor([9, 5, 1, 0])
    out = ctc_greedy_decode(log_probs, lengths, blank=blank)
    for row, length in enumerate(lengths.tolist()):
        path = log_probs[row, :length].argmax(-1).tolist()
        assert out[row] == ctc_collapse(path, blank)
    assert out[3] == []


# ---------------------------------------------------------------------- beam search
@pytest.mark.parametrize("frames, classes, blank", [(1, 3, 0), (3, 2, 0), (4, 3, 0), (5, 3, 1), (5, 2, 1)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_search_with_a_big_beam_is_the_most_probable_labelling(frames, classes, blank, seed) -> None:
    log_probs = random_log_probs(3, frames, classes, seed=seed, sharpness=1.0)
    lengths = torch.tensor([frames, max(frames - 1, 0), frames])
    found = ctc_beam_search(log_probs, lengths, beam_size=10_000, blank=blank)
    for row, length in enumerate(lengths.tolist()):
        expected, _ = brute_force_best(log_probs[row, :length], blank)
        assert found[row] == expected


def test_beam_search_beats_the_best_path_when_paths_add_up() -> None:
    # best path: blank blank (0.36) -> ""; the labelling "1" has 0.16 + 0.24 + 0.24 = 0.64
    y = torch.tensor([[[0.6, 0.4], [0.6, 0.4]]]).log()
    assert ctc_greedy_decode(y, torch.tensor([2])) == [[]]
    assert ctc_beam_search(y, torch.tensor([2]), 2) == [[1]]


def test_beam_search_on_confident_inputs_equals_greedy() -> None:
    log_probs = random_log_probs(5, 12, 6, seed=3, sharpness=20.0)
    lengths = torch.tensor([12, 11, 7, 3, 12])
    assert ctc_beam_search(log_probs, lengths, 4) == ctc_greedy_decode(log_probs, lengths)


def test_beam_search_handles_impossible_symbols() -> None:
    log_probs = torch.tensor([[[0.0, -math.inf, -math.inf], [-math.inf, -math.inf, 0.0]]])
    assert ctc_beam_search(log_probs, torch.tensor([2]), 3) == [[2]]


# ---------------------------------------------------------------------- the model
def padded_inputs(lengths: list[int], features: int, seed: int) -> Vectors:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), features, generator=generator)
    for row, length in enumerate(lengths):
        x[row, length:] = 1e3  # garbage in the padding must not matter
    return Vectors(x, torch.tensor(lengths))


def test_model_output_and_repr() -> None:
    torch.manual_seed(0)
    model = CTCModel(small_config(), blank=0).eval()
    out = model(padded_inputs([7, 4], 5, seed=0))
    assert isinstance(out, CTCOutput)
    assert out.log_probs.shape == (2, 7, 6) and out.lengths.tolist() == [7, 4]
    torch.testing.assert_close(out.log_probs.exp().sum(-1), torch.ones(2, 7))
    assert "num_classes=6, blank=0" in repr(model)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_equals_torch_ctc_loss_and_has_finite_gradients(reduction: str) -> None:
    torch.manual_seed(0)
    model = CTCModel(small_config(), num_classes=6, blank=0).double()
    inputs = padded_inputs([9, 6, 4], 5, seed=1)
    inputs = Vectors(inputs.features.double(), inputs.lengths)
    targets = torch.tensor([[1, 2, 2], [3, 4, 0], [5, 0, 0]])
    target_lengths = torch.tensor([3, 2, 1])
    loss = model.loss(inputs, targets, target_lengths, reduction=reduction)
    log_probs, lengths = model(inputs)
    assert log_probs.dtype == torch.float64
    reference = F.ctc_loss(log_probs.transpose(0, 1), targets, lengths, target_lengths, blank=0,
                           reduction="none", zero_infinity=True)
    expected = {"mean": reference.mean(), "sum": reference.sum(), "none": reference}[reduction]
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_loss_zero_infinity_for_impossible_targets() -> None:
    torch.manual_seed(0)
    model = CTCModel(small_config())
    inputs = padded_inputs([2, 5], 5, seed=2)
    # "1 1" needs 3 frames (a blank between the repeats); row 0 has only 2
    losses = model.loss(inputs, torch.tensor([[1, 1], [1, 1]]), torch.tensor([2, 2]), reduction="none")
    assert losses[0] == 0 and torch.isfinite(losses[1]) and losses[1] > 0


def test_a_row_alone_equals_the_row_in_a_padded_batch() -> None:
    torch.manual_seed(0)
    model = CTCModel(small_config()).double().eval()
    inputs = padded_inputs([10, 6, 3], 5, seed=3)
    inputs = Vectors(inputs.features.double(), inputs.lengths)
    targets = torch.tensor([[1, 2, 3], [4, 4, 0], [5, 0, 0]])
    target_lengths = torch.tensor([3, 2, 1])
    batched = model(inputs)
    losses = model.loss(inputs, targets, target_lengths, reduction="none")
    decoded = model.decode(inputs, beam_size=3)
    for row, length in enumerate(inputs.lengths.tolist()):
        alone_inputs = Vectors(inputs.features[row:row + 1, :length], inputs.lengths[row:row + 1])
        alone = model(alone_inputs)
        torch.testing.assert_close(alone.log_probs[0], batched.log_probs[row, :length])
        alone_loss = model.loss(alone_inputs, targets[row:row + 1], target_lengths[row:row + 1], reduction="none")
        torch.testing.assert_close(alone_loss, losses[row:row + 1])
        assert model.decode(alone_inputs, beam_size=3) == [decoded[row]]


def test_model_reads_token_ids_too() -> None:
    torch.manual_seed(0)
    model = CTCModel(small_config(input_features=None, vocab_size=8), num_classes=5).eval()
    out = model(torch.tensor([[4, 5, 6, 7], [3, 4, 0, 0]]))
    assert out.log_probs.shape == (2, 4, 5) and out.lengths.tolist() == [4, 2]


# ---------------------------------------------------------------------- metrics
@pytest.mark.parametrize(
    "a, b, distance",
    [("", "", 0), ("abc", "abc", 0), ("", "one", 3), ("one", "", 3), ("sevn", "seven", 1),
     ("kitten", "sitting", 3), ("fuor", "four", 2), ("nine", "five", 2), ([3, 4, 5], [3, 5], 1)],
)
def test_edit_distance(a, b, distance) -> None:
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


def test_character_error_rate() -> None:
    assert character_error_rate(["one", "two"], ["one", "two"]) == 0.0
    assert character_error_rate(["sevn", "one"], ["seven", "one"]) == pytest.approx(1 / 8)
    assert character_error_rate([""], ["zero"]) == 1.0
    assert character_error_rate(["eightsix"], ["six"]) == pytest.approx(5 / 3)  # can exceed 1
    assert character_error_rate([[3, 4]], [[3, 4, 5]]) == pytest.approx(1 / 3)


# ---------------------------------------------------------------------- errors
def test_errors() -> None:
    log_probs = random_log_probs(2, 4, 3, seed=0)
    with pytest.raises(ValueError, match=r"log_probs as a float tensor \[B, T, V\]"):
        ctc_greedy_decode(log_probs[0], torch.tensor([4, 4]))
    with pytest.raises(ValueError, match=r"lengths as an integer tensor \[B\]"):
        ctc_greedy_decode(log_probs, torch.tensor([4.0, 4.0]))
    with pytest.raises(ValueError, match="0 <= lengths <= T = 4"):
        ctc_beam_search(log_probs, torch.tensor([5, 1]), 2)
    with pytest.raises(ValueError, match="blank to be an int in"):
        ctc_greedy_decode(log_probs, torch.tensor([4, 4]), blank=3)
    with pytest.raises(ValueError, match="beam_size to be a positive int"):
        ctc_beam_search(log_probs, torch.tensor([4, 4]), 0)
    with pytest.raises(ValueError, match="as many hypotheses as references"):
        character_error_rate(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="at least one reference character"):
        character_error_rate([""], [""])
    with pytest.raises(TypeError, match="single string"):
        character_error_rate("one", "one")
    with pytest.raises(TypeError, match="TransformerConfig"):
        CTCModel({"vocab_size": 5})
    with pytest.raises(ValueError, match="num_classes to be an int >= 2"):
        CTCModel(small_config(), num_classes=1)
    with pytest.raises(ValueError, match="blank to be an int in"):
        CTCModel(small_config(), num_classes=4, blank=4)
    model = CTCModel(small_config())
    inputs = padded_inputs([4, 3], 5, seed=0)
    with pytest.raises(ValueError, match="not the blank"):
        model.loss(inputs, torch.tensor([[1, 0], [1, 2]]), torch.tensor([2, 2]))
    with pytest.raises(ValueError, match=r"target label in \[0, 6\)"):
        model.loss(inputs, torch.tensor([[1, 6], [1, 2]]), torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="0 <= target_lengths <= S = 2"):
        model.loss(inputs, torch.tensor([[1, 2], [1, 2]]), torch.tensor([3, 2]))
    with pytest.raises(ValueError, match=r"targets as an integer tensor \[B, S\]"):
        model.loss(inputs, torch.tensor([1, 2]), torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="reduction to be one of"):
        model.loss(inputs, torch.tensor([[1, 2], [1, 2]]), torch.tensor([2, 2]), reduction="avg")
