"""Guided attention (graphattn.nn.guided, graphattn.models.guided): location-aware attention,
the monotonic window pattern, the diagonal guide loss and the attention-based recognizer."""
import math
import os
from pathlib import Path

import pytest
import torch

from graphattn.decoding import generate
from graphattn.models import TransformerConfig, Vectors
from graphattn.models.guided import AttentionRecognizer, RecognizerConfig, stack_vectors
from graphattn.nn.guided import (
    LocationAwareAttention,
    dense_alignment,
    diagonal_guide_loss,
    diagonal_guide_weights,
    monotonic_window_graph,
    step_graph,
    window_center,
)

torch.set_num_threads(1)


# ---------------------------------------------------------------------- location-aware attention
def _tiny_layer(location: bool = True) -> LocationAwareAttention:
    """query_dim 2, key_dim 2, one head of size 2, one location filter of width 3, float64,
    weights set by hand."""
    layer = LocationAwareAttention(2, 2, 2, location=location, location_channels=1, location_kernel=3).double()
    attn = layer.attention
    with torch.no_grad():
        attn.q_proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.5, -1.0]]))
        attn.q_proj.bias.copy_(torch.tensor([0.1, -0.2]))
        attn.k_proj.weight.copy_(torch.tensor([[0.3, 0.7], [-0.4, 0.2]]))
        attn.k_proj.bias.zero_()
        attn.v_proj.weight.copy_(torch.eye(2))
        attn.v_proj.bias.zero_()
        attn.out_proj.weight.copy_(torch.eye(2))
        attn.out_proj.bias.zero_()
        attn.additive_weight.copy_(torch.tensor([[1.5, -0.8]]))
        if location:
            layer.location_conv.weight.copy_(torch.tensor([[[0.5, 2.0, -1.0]]]))  # taps at j-1, j, j+1
            layer.location_proj.weight.copy_(torch.tensor([[1.0], [-0.5]]))  # U: 1 channel -> 2
    return layer


def test_location_term_matches_hand_computation() -> None:
    h = torch.tensor([[[0.2, -0.1], [0.4, 0.3], [-0.6, 0.5], [0.1, 0.9]]], dtype=torch.float64)  # [1, T=4, 2]
    s = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    previous = torch.tensor([[[0.1, 0.6, 0.3, 0.0]]], dtype=torch.float64)  # [1, 1, 4]
    layer = _tiny_layer()
    memory = layer.prepare(h, torch.tensor([4]))
    step = layer(s, memory, previous)

    W = torch.tensor([[1.0, 0.0], [0.5, -1.0]], dtype=torch.float64)
    b = torch.tensor([0.1, -0.2], dtype=torch.float64)
    V = torch.tensor([[0.3, 0.7], [-0.4, 0.2]], dtype=torch.float64)
    U = torch.tensor([1.0, -0.5], dtype=torch.float64)
    w = torch.tensor([1.5, -0.8], dtype=torch.float64)
    alpha = [0.0, *previous.flatten().tolist(), 0.0]  # zero padding at both ends
    scores, content_scores = [], []
    for j in range(4):
        f = 0.5 * alpha[j] + 2.0 * alpha[j + 1] - 1.0 * alpha[j + 2]  # Conv1d = cross-correlation
        hidden = W @ s[0] + b + V @ h[0, j]
        scores.append(float(w @ torch.tanh(hidden + U * f)))
        content_scores.append(float(w @ torch.tanh(hidden)))
    expected = torch.softmax(torch.tensor(scores, dtype=torch.float64), 0)
    torch.testing.assert_close(step.alignment[0, 0], expected)
    torch.testing.assert_close(step.context[0], expected @ h[0])  # identity value / output maps
    # the location term is what moves the scores: with it removed, the content-only scores remain
    content = _tiny_layer(location=False)
    content_step = content(s, content.prepare(h, torch.tensor([4])))
    torch.testing.assert_close(content_step.alignment[0, 0], torch.softmax(torch.tensor(content_scores, dtype=torch.float64), 0))
    assert not torch.allclose(content_step.alignment, step.alignment)
    # and the location features are exactly U * conv(alpha)
    features = layer.location_features(previous)[0, :, 0]  # [T, D]
    conv = torch.tensor([0.5 * alpha[j] + 2.0 * alpha[j + 1] - alpha[j + 2] for j in range(4)], dtype=torch.float64)
    torch.testing.assert_close(features, conv[:, None] * U)


def test_location_features_follow_a_shifted_alignment() -> None:
    torch.manual_seed(0)
    layer = LocationAwareAttention(4, 3, 8, location_kernel=5).double()
    alpha = torch.zeros(1, 1, 20, dtype=torch.float64)
    alpha[0, 0, 6:9] = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    shifted = torch.roll(alpha, 4, dims=-1)
    features, moved = layer.location_features(alpha), layer.location_features(shifted)
    torch.testing.assert_close(moved[:, 4:], features[:, :-4])


def test_location_requires_previous_alignment_and_checks_shapes() -> None:
    layer = LocationAwareAttention(4, 3, 4)
    memory = layer.prepare(torch.randn(2, 5, 3), torch.tensor([5, 2]))
    with pytest.raises(ValueError, match="previous_alignment"):
        layer(torch.randn(2, 4), memory)
    with pytest.raises(ValueError, match=r"\[B, H, T\] = \[2, 1, 5\]"):
        layer(torch.randn(2, 4), memory, torch.zeros(2, 1, 6))
    with pytest.raises(ValueError, match=r"\[B, query_dim\]"):
        layer(torch.randn(2, 5), memory, layer.initial_alignment(memory))
    with pytest.raises(ValueError, match="key_dim = 3"):
        layer.prepare(torch.randn(2, 5, 4), torch.tensor([5, 2]))
    with pytest.raises(ValueError, match=r"in \[1, 5\]"):
        layer.prepare(torch.randn(2, 5, 3), torch.tensor([6, 2]))
    with pytest.raises(ValueError, match="odd"):
        LocationAwareAttention(4, 3, 4, location_kernel=4)
    with pytest.raises(ValueError, match="num_keys = B \\* T = 10"):
        layer(torch.randn(2, 4), memory, layer.initial_alignment(memory), graph=step_graph(torch.tensor([2]), 5))


# ---------------------------------------------------------------------- the monotonic window
def test_window_graph_holds_exactly_the_allowed_positions() -> None:
    generator = torch.Generator().manual_seed(1)
    T, lengths = 9, torch.tensor([9, 4, 7, 1])
    alignment = torch.rand(4, T, generator=generator)
    alignment[1, 6] = 10.0  # a peak in the padding of row 1: ignored
    for back, ahead in ((0, 0), (1, 3), (2, 2), (0, 10)):
        for center in ("argmax", "mean"):
            graph = monotonic_window_graph(alignment, lengths, back, ahead, center=center)
            assert graph.num_queries == 4 and graph.num_keys == 4 * T
            dense = graph.to_dense().view(4, 4, T)
            for b in range(4):
                real = alignment[b, : lengths[b]]
                if center == "argmax":
                    c = int(real.argmax())
                else:
                    c = round(float((real * torch.arange(len(real))).sum() / real.sum()))
                c = min(c, int(lengths[b]) - 1)
                allowed = torch.zeros(4, T, dtype=torch.bool)
                allowed[b, max(0, c - back): min(int(lengths[b]), c + ahead + 1)] = True
                assert torch.equal(dense[b], allowed), (b, back, ahead, center)
            assert (graph.degrees >= 1).all()  # never empty


def test_window_centre_and_step_graph() -> None:
    assert window_center(torch.tensor([[0.0, 0.2, 0.8, 0.0]]), torch.tensor([4])).tolist() == [2]
    assert window_center(torch.tensor([[0.0, 0.2, 0.8, 0.0]]), torch.tensor([2])).tolist() == [1]
    assert window_center(torch.tensor([[0.5, 0.0, 0.5, 0.0]]), torch.tensor([4]), "mean").tolist() == [1]
    assert window_center(torch.zeros(1, 3), torch.tensor([3]), "mean").tolist() == [0]
    graph = step_graph(torch.tensor([2, 3]), 3)
    assert graph.to_dense().int().tolist() == [[1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1]]


def test_attention_outside_the_window_is_zero_and_inside_renormalized() -> None:
    torch.manual_seed(0)
    layer = LocationAwareAttention(6, 5, 8, num_heads=2).double()
    lengths = torch.tensor([12, 7, 10])
    memory = layer.prepare(torch.randn(3, 12, 5, dtype=torch.float64), lengths)
    previous = torch.softmax(torch.randn(3, 2, 12, dtype=torch.float64), -1)
    previous = previous.masked_fill(torch.arange(12) >= lengths[:, None, None], 0.0)
    query = torch.randn(3, 6, dtype=torch.float64)
    full = layer(query, memory, previous)
    graph = monotonic_window_graph(previous, lengths, back=1, ahead=2)
    windowed = layer(query, memory, previous, graph=graph)
    inside = graph.to_dense().view(3, 3, 12)[torch.arange(3), torch.arange(3)][:, None, :].expand(-1, 2, -1)  # [B, H, T]
    assert (windowed.alignment[~inside] == 0).all()
    torch.testing.assert_close(windowed.alignment.sum(-1), torch.ones(3, 2, dtype=torch.float64))
    # restricting the pattern = the same scores, softmax over the window only
    restricted = full.alignment * inside
    torch.testing.assert_close(windowed.alignment, restricted / restricted.sum(-1, keepdim=True))
    assert torch.equal(dense_alignment(windowed.weights, graph, 12), windowed.alignment)


def test_window_bad_input() -> None:
    with pytest.raises(ValueError, match="'back'"):
        monotonic_window_graph(torch.rand(2, 5), torch.tensor([5, 5]), back=-1)
    with pytest.raises(TypeError, match="'ahead'"):
        monotonic_window_graph(torch.rand(2, 5), torch.tensor([5, 5]), ahead=1.5)
    with pytest.raises(ValueError, match=r"\[B\] = \[2\]"):
        monotonic_window_graph(torch.rand(2, 5), torch.tensor([5, 5, 5]))
    with pytest.raises(ValueError, match=r"in \[1, 5\]"):
        monotonic_window_graph(torch.rand(2, 5), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"\[B, T\] or \[B, H, T\]"):
        monotonic_window_graph(torch.rand(5), torch.tensor([5]))
    with pytest.raises(ValueError, match="center"):
        monotonic_window_graph(torch.rand(1, 5), torch.tensor([5]), center="median")


# ---------------------------------------------------------------------- the diagonal guide loss
def test_guide_loss_zero_on_the_diagonal_larger_off_it() -> None:
    eye = torch.eye(6)[None]
    assert float(diagonal_guide_loss(eye, torch.tensor([6]), torch.tensor([6]))) == 0.0
    # N = 3 output steps over T = 6 inputs: step n attends input 2n (t/T = n/N)
    diagonal = torch.zeros(1, 3, 6)
    diagonal[0, torch.arange(3), torch.arange(0, 6, 2)] = 1.0
    assert float(diagonal_guide_loss(diagonal, torch.tensor([3]), torch.tensor([6]))) == 0.0
    anti = eye.flip(-1)
    uniform = torch.full((1, 6, 6), 1 / 6)
    losses = [float(diagonal_guide_loss(a, torch.tensor([6]), torch.tensor([6]))) for a in (eye, uniform, anti)]
    assert losses[0] < losses[1] < losses[2] < 1.0
    assert float(diagonal_guide_loss(anti, torch.tensor([6]), torch.tensor([6]), g=0.5)) < losses[2]  # wider band


def test_guide_loss_hand_computation_with_padding() -> None:
    generator = torch.Generator().manual_seed(2)
    alignments = torch.softmax(torch.randn(2, 4, 5, generator=generator, dtype=torch.float64), -1).requires_grad_()
    out_lengths, in_lengths, g = torch.tensor([4, 2]), torch.tensor([5, 3]), 0.3
    total = 0.0
    for b in range(2):
        N, T = int(out_lengths[b]), int(in_lengths[b])
        for n in range(N):
            for t in range(T):
                weight = 1 - math.exp(-((n / N - t / T) ** 2) / (2 * g * g))
                total += float(alignments.detach()[b, n, t]) * weight
    expected = total / 6
    loss = diagonal_guide_loss(alignments, out_lengths, in_lengths, g=g)
    assert abs(float(loss.detach()) - expected) < 1e-12
    loss.backward()
    assert alignments.grad[1, 2:].abs().sum() == 0 and alignments.grad[1, :, 3:].abs().sum() == 0
    torch.testing.assert_close(alignments.grad[0], diagonal_guide_weights(4, 5, g, dtype=torch.float64) / 6)
    # heads are averaged
    heads = torch.stack([alignments.detach(), alignments.detach().flip(-1)], 1)
    two = diagonal_guide_loss(heads, out_lengths, in_lengths, g=g)
    torch.testing.assert_close(two, diagonal_guide_loss(heads.mean(1), out_lengths, in_lengths, g=g))


def test_guide_loss_bad_input() -> None:
    a = torch.rand(2, 3, 4)
    with pytest.raises(ValueError, match="'g'"):
        diagonal_guide_loss(a, torch.tensor([3, 3]), torch.tensor([4, 4]), g=0)
    with pytest.raises(ValueError, match="out_lengths"):
        diagonal_guide_loss(a, torch.tensor([3, 4]), torch.tensor([4, 4]))
    with pytest.raises(ValueError, match="in_lengths"):
        diagonal_guide_loss(a, torch.tensor([3, 3]), torch.tensor([4]))
    with pytest.raises(ValueError, match=r"\[B, N, T\]"):
        diagonal_guide_loss(torch.rand(3, 4), torch.tensor([3]), torch.tensor([4]))


# ---------------------------------------------------------------------- the recognizer
VOCAB = 12


def _model(attention: str = "location", window=None, seed: int = 0) -> AttentionRecognizer:
    torch.manual_seed(seed)
    encoder = TransformerConfig(vocab_size=VOCAB, input_features=8, d_model=16, num_heads=2, num_layers=1,
                                ff_dim=32, encoder_pattern="local(window=3)", position="rotary", dropout=0.0)
    config = RecognizerConfig(encoder, stack=2, embed_dim=8, decoder_dim=16, attention=attention, attention_dim=8,
                              location_channels=4, location_kernel=5, window=window, dropout=0.0)
    return AttentionRecognizer(config).double().eval()


def _batch(generator: torch.Generator) -> tuple[Vectors, torch.Tensor]:
    lengths = torch.tensor([13, 6, 9])
    features = torch.randn(3, 13, 4, generator=generator, dtype=torch.float64)
    targets = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0], [1, 9, 10, 2, 0]])
    return Vectors(features, lengths), targets


def test_gradients_flow_to_every_parameter(generator) -> None:
    model = _model().train()
    inputs, targets = _batch(generator)
    loss = model.loss(inputs, targets, guide_weight=1.0)
    loss.loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert model.attend.location_conv.weight.grad.abs().sum() > 0
    assert model.encoder.embedding.conv is None or model.encoder.embedding.conv.weight.grad.abs().sum() > 0
    # the guide term alone reaches the attention (through the alignments)
    model.zero_grad()
    out = model(inputs, targets[:, :-1])
    diagonal_guide_loss(out.alignments, (targets[:, 1:] != 0).sum(1), out.memory_lengths).backward()
    assert model.attend.attention.additive_weight.grad.abs().sum() > 0
    assert model.attend.location_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("attention,window", [("location", None), ("content", None), ("location", (1, 2))])
def test_batch_invariance(generator, attention, window) -> None:
    model = _model(attention, window)
    inputs, targets = _batch(generator)
    out = model(inputs, targets[:, :-1])
    decoded = model.greedy_decode(inputs, max_length=6)
    for b in range(3):
        n = int(inputs.lengths[b])
        alone = Vectors(inputs.features[b:b + 1, :n], inputs.lengths[b:b + 1])
        single = model(alone, targets[b:b + 1, :-1])
        t = int(single.memory_lengths[0])
        torch.testing.assert_close(single.logits[0], out.logits[b])
        torch.testing.assert_close(single.alignments[0], out.alignments[b, :, :t])
        assert out.alignments[b, :, t:].abs().sum() == 0  # nothing on padding
        one = model.greedy_decode(alone, max_length=6)
        length = int(one.lengths[0])
        assert torch.equal(one.tokens[0, :length], decoded.tokens[b, :length])
        torch.testing.assert_close(one.alignments[0, :length], decoded.alignments[b, :length, :t])


def test_generate_matches_greedy_decode(generator) -> None:
    model = _model(window=(0, 3))
    inputs, _ = _batch(generator)
    greedy = model.greedy_decode(inputs, max_length=5)
    out = generate(model, inputs, max_new_tokens=5, eos_token_id=model.eos_id, pad_token_id=model.pad_id)
    for b in range(3):
        length = int(greedy.lengths[b])
        assert out.sequences[b, :length].tolist() == greedy.tokens[b, :length].tolist()
    beams = generate(model, inputs, max_new_tokens=5, num_beams=3, eos_token_id=model.eos_id, pad_token_id=model.pad_id)
    assert beams.sequences.size(0) == 3
    for b in range(3):  # beam search reorders the state (reorder_state); each row alone gives the same
        n = int(inputs.lengths[b])
        alone = generate(model, Vectors(inputs.features[b:b + 1, :n], inputs.lengths[b:b + 1]), max_new_tokens=5,
                         num_beams=3, eos_token_id=model.eos_id, pad_token_id=model.pad_id)
        length = int(alone.lengths[0])
        assert alone.sequences[0, :length].tolist() == beams.sequences[b, :length].tolist()
        torch.testing.assert_close(alone.scores[0], beams.scores[b])


def test_window_in_the_model_restricts_every_step(generator) -> None:
    model = _model(window=(0, 1))
    inputs, targets = _batch(generator)
    out = model(inputs, targets[:, :-1])
    peaks = torch.zeros(3, dtype=torch.long)  # the initial alignment is on frame 0
    for step in range(out.alignments.size(1)):
        support = (out.alignments[:, step] > 0).int()
        first = support.argmax(1)
        last = support.size(1) - 1 - support.flip(1).argmax(1)
        assert (first >= peaks).all() and (last <= peaks + 1).all()
        peaks = out.alignments[:, step].argmax(1)


def test_stack_vectors_pads_with_zeros() -> None:
    features = torch.arange(1.0, 11.0).view(1, 5, 2)
    stacked, lengths = stack_vectors(features, torch.tensor([3]), 2)
    assert lengths.tolist() == [2]
    assert stacked[0].tolist() == [[1, 2, 3, 4], [5, 6, 0, 0], [0, 0, 0, 0]]


def test_recognizer_bad_input(generator) -> None:
    model = _model()
    inputs, targets = _batch(generator)
    encoder = model.config.encoder
    with pytest.raises(ValueError, match="input_features"):
        RecognizerConfig(TransformerConfig(vocab_size=5))
    with pytest.raises(ValueError, match="attention"):
        RecognizerConfig(encoder, stack=2, attention="dot")
    with pytest.raises(ValueError, match="window"):
        RecognizerConfig(encoder, stack=2, window=(1, -1))
    with pytest.raises(ValueError, match="stack"):
        RecognizerConfig(encoder, stack=3)
    with pytest.raises(ValueError, match="4 values per frame"):
        model(Vectors(inputs.features[..., :3], inputs.lengths), targets[:, :-1])
    with pytest.raises(ValueError, match=r"in \[1, 13\]"):
        model(Vectors(inputs.features, torch.tensor([14, 3, 3])), targets[:, :-1])
    with pytest.raises(ValueError, match=r"ids in \[0, 12\)"):
        model(inputs, targets[:, :-1] + 10)
    with pytest.raises(ValueError, match="B = 3 rows"):
        model(inputs, targets[:2, :-1])
    with pytest.raises(ValueError, match="guide_weight"):
        model.loss(inputs, targets, guide_weight=-1.0)
    with pytest.raises(ValueError, match="max_length"):
        model.greedy_decode(inputs, max_length=0)


def test_config_round_trip() -> None:
    config = _model(window=(1, 2)).config
    assert RecognizerConfig.from_dict(config.to_dict()) == config


# ---------------------------------------------------------------------- real FSDD (skipped without ../shared/data)
def _fsdd_dir() -> Path:
    for candidate in (os.environ.get("GRAPHATTN_SHARED_DATA"), Path(__file__).parents[2] / "shared" / "data"):
        if candidate and (Path(candidate) / "speech" / "fsdd" / "recordings").is_dir():
            return Path(candidate) / "speech" / "fsdd"
    pytest.skip("the shared data folder (../shared/data or $GRAPHATTN_SHARED_DATA) with speech/fsdd is absent")


def test_real_fsdd_concatenated_utterances_run_through_the_recognizer() -> None:
    from graphattn.data.speech import load_fsdd

    data = load_fsdd(_fsdd_dir(), split="test", speakers=["jackson"], limit=3)
    features = torch.cat([e.features for e in data.examples])  # three words in a row
    torch.manual_seed(0)
    encoder = TransformerConfig(vocab_size=19, input_features=3 * 40, d_model=16, num_heads=2, num_layers=1,
                                encoder_pattern="local(window=4)", position="rotary")
    model = AttentionRecognizer(RecognizerConfig(encoder, stack=3, decoder_dim=16, attention_dim=8, window=(1, 3))).eval()
    out = model.greedy_decode(Vectors(features[None], torch.tensor([len(features)])), max_length=4)
    assert out.alignments.shape == (1, out.tokens.size(1), -(-len(features) // 3))
    torch.testing.assert_close(out.alignments.sum(-1)[0, : int(out.lengths[0])], torch.ones(int(out.lengths[0])))


def test_guide_loss_alone_makes_the_alignments_diagonal(generator) -> None:
    """Training on the guide loss only moves the teacher-forced alignments onto the diagonal."""
    model = _model().train()
    inputs, targets = _batch(generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    out_lengths = (targets[:, 1:] != 0).sum(1)
    losses = []
    for _ in range(60):
        out = model(inputs, targets[:, :-1])
        loss = diagonal_guide_loss(out.alignments, out_lengths, out.memory_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses
    model.eval()
    out = model(inputs, targets[:, :-1])
    peaks = out.alignments[0, :4].argmax(-1)  # row 0: 4 real steps over 7 encoder vectors
    assert (peaks[1:] >= peaks[:-1]).all(), peaks
