"""Pointer networks: masks, teacher forcing vs step-by-step decoding, greedy and beam decoding
through graphattn.decoding.generate, batch invariance, gradients, bad input, a tiny training run."""
import numpy as np
import pytest
import torch

from graphattn.data.geometry import (
    collate_points,
    convex_hull_examples,
    evaluate_hull,
    evaluate_tsp,
    is_valid_hull,
    is_valid_tour,
    tsp_examples,
)
from graphattn.decoding import Decodable, generate
from graphattn.models import PointerConfig, PointerNetwork, pointer_loss, pointer_mask
from graphattn.models.pointer import END, PAD

torch.set_num_threads(1)

KINDS = [("lstm", None), ("transformer", None), ("transformer", "lstm"), ("lstm", "transformer")]


def make_model(encoder="lstm", decoder=None, mask=None, seed=0, **options):
    torch.manual_seed(seed)
    options = {"hidden_size": 16, "num_heads": 2, **options}
    return PointerNetwork(PointerConfig(encoder=encoder, decoder=decoder, mask=mask, **options)).eval()


def padded_batch(seed=0, counts=(6, 4, 5)):
    rng = np.random.default_rng(seed)
    return collate_points([rng.random((n, 2)) for n in counts])


# ----------------------------------------------------------------------------- masks
def test_pointer_mask_rules():
    n = torch.tensor([3])
    none = torch.tensor([False])
    start = torch.tensor([-1])
    empty = torch.zeros(1, 5, dtype=torch.bool)
    # positions: 0 = END, 1..3 points, 4 padding
    assert pointer_mask(None, empty, start, none, n).tolist() == [[True, True, True, True, False]]
    assert pointer_mask("tsp", empty, start, none, n).tolist() == [[False, True, True, True, False]]
    assert pointer_mask("hull", empty, start, none, n).tolist() == [[False, True, True, True, False]]
    two = torch.tensor([[False, True, True, False, False]])
    assert pointer_mask("tsp", two, torch.tensor([1]), none, n).tolist() == [[False, False, False, True, False]]
    # hull: two chosen, closing not yet allowed
    assert pointer_mask("hull", two, torch.tensor([1]), none, n).tolist() == [[False, False, False, True, False]]
    three = torch.tensor([[False, True, True, True, False]])
    assert pointer_mask("tsp", three, torch.tensor([1]), none, n).tolist() == [[True, False, False, False, False]]
    assert pointer_mask("hull", three, torch.tensor([2]), none, n).tolist() == [[False, False, True, False, False]]
    assert pointer_mask("hull", three, torch.tensor([2]), torch.tensor([True]), n).tolist() == [
        [True, False, False, False, False]
    ]
    with pytest.raises(ValueError, match="Unknown mask"):
        pointer_mask("knn", empty, start, none, n)


@pytest.mark.parametrize("encoder,decoder", KINDS)
@pytest.mark.parametrize("mask", ["tsp", "hull"])
def test_masks_never_yield_invalid_outputs(encoder, decoder, mask):
    model = make_model(encoder, decoder, mask=mask, seed=1)
    batch = padded_batch(seed=2, counts=(7, 3, 5, 4, 6, 7))
    valid = is_valid_tour if mask == "tsp" else is_valid_hull
    for beams in (1, 3):
        out = generate(model, (batch.points, batch.lengths), max_new_tokens=batch.points.shape[1] + 2, num_beams=beams)
        for row, n in zip(out.sequences, batch.lengths.tolist()):
            assert valid(row, n), (beams, row.tolist(), n)


def test_without_mask_padding_is_never_chosen():
    model = make_model(mask=None, seed=3)
    batch = padded_batch(seed=1, counts=(6, 2, 3))
    out = generate(model, (batch.points, batch.lengths), max_new_tokens=8)
    for row, n in zip(out.sequences, batch.lengths.tolist()):
        assert int(row.max()) <= n


# ----------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("encoder,decoder", KINDS)
def test_teacher_forcing_equals_step_by_step_decoding(encoder, decoder):
    model = make_model(encoder, decoder, mask="hull", seed=4)
    batch = padded_batch(seed=3, counts=(6, 4, 5))
    out = generate(model, (batch.points, batch.lengths), max_new_tokens=8)
    targets = out.sequences.clone()  # PAD after END already
    log_probs = model(batch.points, targets, batch.lengths)
    chosen = log_probs.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    real = targets != PAD
    assert torch.allclose(torch.where(real, chosen, torch.zeros_like(chosen)).sum(1), out.scores, atol=1e-5)
    # greedy picks the arg-max of the teacher-forced distribution at every step
    assert (log_probs.argmax(-1)[real] == targets[real]).all()


@pytest.mark.parametrize("encoder,decoder", KINDS)
def test_beam_one_equals_greedy_and_beam_scores_are_log_likelihoods(encoder, decoder):
    model = make_model(encoder, decoder, mask="tsp", seed=5)
    batch = padded_batch(seed=4, counts=(5, 5, 4))
    steps = batch.points.shape[1] + 1
    greedy = generate(model, (batch.points, batch.lengths), max_new_tokens=steps)
    beam1 = generate(model, (batch.points, batch.lengths), max_new_tokens=steps, num_beams=1)
    assert torch.equal(greedy.sequences, beam1.sequences)
    beam = generate(model, (batch.points, batch.lengths), max_new_tokens=steps, num_beams=4, length_penalty=0.0)
    assert all(is_valid_tour(row, n) for row, n in zip(beam.sequences, batch.lengths.tolist()))
    log_probs = model(batch.points, beam.sequences, batch.lengths)
    real = beam.sequences != PAD
    chosen = log_probs.gather(-1, beam.sequences.clamp(min=0)[..., None]).squeeze(-1)
    assert torch.allclose(torch.where(real, chosen, torch.zeros_like(chosen)).sum(1), beam.scores, atol=1e-5)


@pytest.mark.parametrize("encoder,decoder", KINDS)
def test_batch_invariance(encoder, decoder):
    model = make_model(encoder, decoder, mask="hull", seed=6)
    batch = padded_batch(seed=5, counts=(8, 4, 6, 5))
    steps = batch.points.shape[1] + 2
    for beams in (1, 3):
        together = generate(model, (batch.points, batch.lengths), max_new_tokens=steps, num_beams=beams)
        for row in range(4):
            n = int(batch.lengths[row])
            alone = generate(model, batch.points[row : row + 1, :n], max_new_tokens=steps, num_beams=beams)
            width = int(alone.lengths[0])
            assert together.sequences[row, :width].tolist() == alone.sequences[0, :width].tolist()
            assert int(together.lengths[row]) == width
            assert torch.allclose(together.scores[row], alone.scores[0], atol=1e-5)
    # teacher forcing: one row alone (unpadded) gives the same log-probabilities
    targets = together.sequences
    log_probs = model(batch.points, targets, batch.lengths)
    for row in range(4):
        n = int(batch.lengths[row])
        alone = model(batch.points[row : row + 1, :n], targets[row : row + 1])
        real = targets[row] != PAD
        assert torch.allclose(log_probs[row, real, : n + 1], alone[0, real], atol=1e-5)


def test_implements_decodable_protocol():
    model = make_model()
    assert isinstance(model, Decodable)
    assert model.eos_id == END == 0 and model.pad_id == PAD == -1


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("encoder,decoder", KINDS)
def test_gradients_reach_every_parameter(encoder, decoder):
    model = make_model(encoder, decoder, mask="tsp", seed=7).train()
    data = tsp_examples(3, 5, seed=0)
    batch = collate_points(data.points, data.targets)
    loss = model.loss(batch.points, batch.targets, batch.lengths)
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == [], missing
    assert torch.isfinite(loss)


def test_loss_matches_manual_cross_entropy():
    model = make_model(mask=None, seed=8)
    data = convex_hull_examples(4, 6, seed=1)
    batch = collate_points(data.points, data.targets)
    log_probs = model(batch.points, batch.targets, batch.lengths)
    manual = []
    for row in range(4):
        for step, target in enumerate(batch.targets[row].tolist()):
            if target != PAD:
                manual.append(-log_probs[row, step, target])
    assert torch.allclose(pointer_loss(log_probs, batch.targets), torch.stack(manual).mean())
    assert torch.allclose(pointer_loss(log_probs, batch.targets, reduction="sum"), torch.stack(manual).sum())
    assert pointer_loss(log_probs, batch.targets, reduction="none").shape == (4,)


def test_tiny_model_learns_convex_hull_n5():
    torch.manual_seed(0)
    model = PointerNetwork(PointerConfig(hidden_size=32, mask="hull"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train = convex_hull_examples(8192, 5, seed=10)
    test = convex_hull_examples(200, 5, seed=11)
    batch_size, step = 32, 0
    while step < 600:  # a fixed number of steps (about 6 s on one thread), so the result is deterministic
        begin = (step * batch_size) % len(train)
        batch = collate_points(train.points[begin : begin + batch_size], train.targets[begin : begin + batch_size])
        loss = model.loss(batch.points, batch.targets, batch.lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
    model.eval()
    batch = collate_points(test.points)
    out = generate(model, (batch.points, batch.lengths), max_new_tokens=7)
    metrics = evaluate_hull(test.points, out.sequences, test.targets)
    assert all(is_valid_hull(row, 5) for row in out.sequences)  # well-formed by the mask
    assert metrics["invalid_rate"] <= 0.1, (metrics, step)  # self-intersecting polygons
    assert metrics["accuracy"] >= 0.4, (metrics, step)
    assert metrics["area_coverage"] >= 0.85, (metrics, step)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_is_a_clear_error():
    model = make_model(mask="tsp")
    points = torch.rand(2, 4, 2)
    with pytest.raises(ValueError, match=r"points as a float tensor \[B, L, F = 2\]"):
        model(points.long(), torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="2 features per vector .* in points"):
        model(torch.rand(2, 4, 3), torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"lengths as an integer tensor \[B\]"):
        model(points, torch.ones(2, 2, dtype=torch.long), torch.tensor([4.0, 3.0]))
    with pytest.raises(ValueError, match=r"every length in \[1, 4\]"):
        model(points, torch.ones(2, 2, dtype=torch.long), torch.tensor([5, 3]))
    with pytest.raises(ValueError, match="right-padded with PAD"):
        model(points, torch.tensor([[1, PAD, 2], [1, 2, 0]]))
    with pytest.raises(ValueError, match=r"target positions in \[0, n\]"):
        model(points, torch.tensor([[1, 2, 0], [1, 4, 0]]), torch.tensor([4, 3]))
    with pytest.raises(ValueError, match="mask forbids"):
        model.loss(points, torch.tensor([[1, 1, 2, 3, 4, 0], [1, 2, 3, 4, 0, PAD]]))
    with pytest.raises(ValueError, match="finite"):
        model(torch.full((1, 3, 2), float("nan")), torch.tensor([[1, 2, 3, 0]]))
    with pytest.raises(TypeError, match="points"):
        generate(model, "points")
    with pytest.raises(ValueError, match="Unknown encoder"):
        PointerConfig(encoder="gru")
    with pytest.raises(ValueError, match="Unknown mask"):
        PointerConfig(mask="delaunay")
    with pytest.raises(ValueError, match="positive int"):
        PointerConfig(hidden_size=0)
    with pytest.raises(ValueError, match="divisible"):
        PointerConfig(encoder="transformer", hidden_size=10, num_heads=4)


def test_config_round_trip():
    config = PointerConfig(encoder="transformer", decoder="lstm", pattern="local(window=2)", mask="hull")
    assert PointerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="Unknown PointerConfig fields"):
        PointerConfig.from_dict({"colour": 1})


def test_sparse_pattern_encoder_runs():
    model = make_model("transformer", mask="tsp", pattern="local(window=1)")
    batch = padded_batch(seed=7, counts=(6, 3))
    out = generate(model, (batch.points, batch.lengths), max_new_tokens=7, num_beams=2)
    assert all(is_valid_tour(row, n) for row, n in zip(out.sequences, batch.lengths.tolist()))
    data = tsp_examples(2, 4, seed=3)
    metrics = evaluate_tsp(data.points, generate(model, torch.tensor(np.stack(data.points)).float(), max_new_tokens=5).sequences,
                           data.targets, data.optimal_lengths)
    assert metrics["invalid_rate"] == 0.0 and metrics["length_ratio"] >= 1.0 - 1e-9
