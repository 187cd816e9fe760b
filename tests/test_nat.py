"""Non-autoregressive Transformers (graphattn.models.nat) and their decoders (graphattn.decoding)."""
import math
import time

import pytest
import torch
import torch.nn.functional as F

from graphattn.decoding import (
    ctc_decode,
    distill,
    generate,
    levenshtein_decode,
    mask_predict,
    noisy_parallel_decode,
    parallel_decode,
    remask_count,
    teacher_scores,
)
from graphattn.models import (
    CTCNAT,
    CTCNATConfig,
    EncoderDecoder,
    LevenshteinTransformer,
    NATConfig,
    NATLoss,
    NonAutoregressiveTransformer,
    TransformerConfig,
    Vectors,
    cmlm_mask,
    ctc_best_alignment,
    ctc_collapse,
    edit_distance,
    fertilities_from_alignment,
    fertility_copy_index,
    levenshtein_oracle,
    nat_targets,
    uniform_copy_index,
    uniform_fertilities,
)
from graphattn.models.ctc import CTCOutput

PAD, BOS, EOS, MASK = 0, 1, 2, 4
VOCAB = 16  # symbols 5..15
SRC = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0], [13, 5, 0, 0, 0]])


def config(**overrides) -> TransformerConfig:
    options = dict(vocab_size=VOCAB, d_model=16, num_heads=2, num_layers=1, ff_dim=32, dropout=0.0, mask_id=MASK)
    options.update(overrides)
    return TransformerConfig(**options)


def make_nat(length="classifier", decoder_input=None, seed=0, double=False, **options) -> NonAutoregressiveTransformer:
    torch.manual_seed(seed)
    nat = NATConfig(length=length, decoder_input=decoder_input, max_target_length=12, max_offset=4, max_fertility=3, **options)
    model = NonAutoregressiveTransformer(config(), nat).eval()
    return model.double() if double else model


def make_teacher(seed=1, double=False) -> EncoderDecoder:
    torch.manual_seed(seed)
    model = EncoderDecoder(config()).eval()
    return model.double() if double else model


def random_sources(count: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (count,), generator=g)
    ids = torch.randint(5, VOCAB, (count, width), generator=g)
    return torch.where(torch.arange(width) < lengths[:, None], ids, PAD)


# ---------------------------------------------------------------------------------------------
# helpers: copy indices, fertilities, masking, targets
# ---------------------------------------------------------------------------------------------


def test_uniform_copy_index_spreads_the_source_evenly():
    index = uniform_copy_index(torch.tensor([3, 4, 2]), torch.tensor([6, 4, 1]))
    assert index.tolist() == [[0, 0, 1, 1, 2, 2], [0, 1, 2, 3, 0, 0], [1, 0, 0, 0, 0, 0]]


def test_fertility_copy_builds_the_decoder_input_of_a_hand_example():
    fertilities = torch.tensor([[2, 0, 1, 1], [0, 3, 0, 0]])
    index, lengths = fertility_copy_index(fertilities)
    assert lengths.tolist() == [4, 3]
    assert index.tolist() == [[0, 0, 2, 3], [1, 1, 1, 0]]
    model = make_nat("fertility")
    src = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    encoding = model.encode(src)
    x = model.decoder_inputs(encoding, lengths, fertilities=fertilities).view(2, 4, -1)
    scale = math.sqrt(16)
    token = model.encoder.embedding.tokens.weight * scale
    positions = model.decoder.embedding.positions(torch.arange(4))
    expected0 = token[torch.tensor([5, 5, 7, 8])] + positions
    expected1 = token[torch.tensor([10, 10, 10])] + positions[:3]
    torch.testing.assert_close(x[0], expected0)
    torch.testing.assert_close(x[1, :3], expected1)
    with pytest.raises(ValueError, match="fertility sums"):
        model.decoder_inputs(encoding, torch.tensor([4, 4]), fertilities=fertilities)


def test_uniform_fertilities_reproduce_uniform_copy():
    source, target = torch.tensor([3, 5, 2]), torch.tensor([7, 4, 2])
    fertilities = uniform_fertilities(source, target)
    assert fertilities.sum(1).tolist() == target.tolist()
    index, _ = fertility_copy_index(fertilities)
    assert torch.equal(index, uniform_copy_index(source, target))
    assert fertilities_from_alignment(torch.tensor([[0, 0, 2, 9]]), torch.tensor([3]), 3).tolist() == [[2, 0, 1]]
    with pytest.raises(ValueError, match="source positions"):
        fertilities_from_alignment(torch.tensor([[0, 5]]), torch.tensor([2]), 3)


def test_cmlm_mask_draws_between_one_and_all_tokens():
    target = torch.full((400, 6), 7)
    lengths = torch.randint(1, 7, (400,), generator=torch.Generator().manual_seed(0))
    target = torch.where(torch.arange(6) < lengths[:, None], target, PAD)
    inputs, masked = cmlm_mask(target, lengths, MASK, generator=torch.Generator().manual_seed(1))
    counts = masked.sum(1)
    assert (counts >= 1).all() and (counts <= lengths).all()
    assert (inputs[masked] == MASK).all() and (inputs[~masked] == target[~masked]).all()
    full = lengths == 6
    assert set(counts[full].tolist()) == set(range(1, 7))  # every count occurs


def test_nat_targets_strip_bos_and_eos():
    tgt = torch.tensor([[BOS, 5, 6, EOS], [BOS, 7, EOS, PAD]])
    assert nat_targets(tgt, pad_id=PAD, bos_id=BOS, eos_id=EOS).tolist() == [[5, 6], [7, 0]]


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length, decoder_input",
    [("classifier", None), ("offset", None), ("fertility", None), ("uniform_copy", None), ("cut_at_end", None),
     ("classifier", "mask"), ("cut_at_end", "mask"), ("offset", "mask")],
)
def test_every_variant_trains_and_decodes(length, decoder_input):
    model = make_nat(length, decoder_input).train()
    target = torch.tensor([[6, 7, 8, 9, 10], [11, 12, 0, 0, 0], [13, 14, 15, 0, 0]])
    if length == "uniform_copy":
        target = torch.tensor([[6, 7, 8, 9, 10], [11, 12, 13, 0, 0], [13, 14, 0, 0, 0]])
    loss, metrics = model.loss(SRC, target)
    assert torch.isfinite(loss)
    loss.backward()
    assert "token_accuracy" in metrics
    assert ("length_accuracy" in metrics) == (length in ("classifier", "offset", "fertility"))
    model.eval()
    out = parallel_decode(model, SRC)
    assert out.sequences.shape[0] == 3 and out.lengths.shape == (3,)
    assert torch.isfinite(out.scores).all()
    for row, n in zip(out.sequences.tolist(), out.lengths.tolist()):
        assert all(t not in (PAD, BOS, MASK) for t in row[:n]) and all(t == PAD for t in row[n:])


def test_gradients_reach_every_part():
    model = make_nat("classifier", "mask").train()
    loss, _ = model.loss(SRC, torch.tensor([[6, 7, 8], [9, 10, 0], [11, 0, 0]]), generator=torch.Generator().manual_seed(0))
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert model.length_head.weight.grad.abs().sum() > 0
    assert model.encoder.stack.layers[0].self_attn.parameters().__next__().grad.abs().sum() > 0


def test_decoder_self_attention_is_not_causal():
    model = make_nat("classifier", "mask")
    encoding = model.encode(SRC[:1])
    lengths = torch.tensor([5])
    tokens = torch.full((1, 5), MASK)
    changed = tokens.clone()
    changed[0, 4] = 9  # a later position
    a, b = model.decode(encoding, lengths, tokens=tokens), model.decode(encoding, lengths, tokens=changed)
    assert not torch.allclose(a[0, 0], b[0, 0])  # the first position sees the last one
    causal = make_nat("classifier", "mask", decoder_pattern="causal")
    encoding = causal.encode(SRC[:1])
    a, b = causal.decode(encoding, lengths, tokens=tokens), causal.decode(encoding, lengths, tokens=changed)
    torch.testing.assert_close(a[0, :4], b[0, :4])  # the pattern is what decides


def test_local_pattern_limits_what_a_position_sees():
    model = make_nat("classifier", "mask", decoder_pattern="local(window=1)")
    encoding = model.encode(SRC[:1])
    lengths = torch.tensor([6])
    tokens = torch.full((1, 6), MASK)
    changed = tokens.clone()
    changed[0, 5] = 9
    a, b = model.decode(encoding, lengths, tokens=tokens), model.decode(encoding, lengths, tokens=changed)
    torch.testing.assert_close(a[0, :4], b[0, :4])  # one layer, window 1: position 5 reaches 4 only
    assert not torch.allclose(a[0, 4], b[0, 4])


def test_offset_lengths_are_the_source_length_plus_the_offset():
    model = make_nat("offset")
    encoding = model.encode(SRC)
    log_probs = model.length_log_probs(encoding)
    torch.testing.assert_close(log_probs.logsumexp(1), torch.zeros(3))
    offsets = model.length_logits(encoding).argmax(1) - 4
    expected = (encoding.lengths + offsets).clamp(min=1)
    finite = torch.isfinite(log_probs).sum(1)
    assert finite.tolist() == [9, 7, 6]  # lengths S - 4 .. S + 4 that are at least 1
    assert torch.equal(log_probs.argmax(1)[expected > 1], expected[expected > 1])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="Unknown NAT length"):
        NATConfig(length="bogus")
    with pytest.raises(ValueError, match="length='fertility'"):
        NATConfig(length="classifier", decoder_input="fertility")
    with pytest.raises(ValueError, match="mask_id"):
        NonAutoregressiveTransformer(config(mask_id=None), NATConfig(decoder_input="mask"))
    with pytest.raises(TypeError, match="NATConfig"):
        NonAutoregressiveTransformer(config(), {"length": "classifier"})
    model = make_nat("classifier")
    with pytest.raises(ValueError, match="at least one token"):
        model.loss(SRC, torch.tensor([[6, 7], [0, 0], [8, 0]]))
    with pytest.raises(ValueError, match="max_target_length"):
        model.loss(SRC, torch.full((3, 13), 6))
    with pytest.raises(ValueError, match="right-padded"):
        model.loss(SRC, torch.tensor([[6, 0, 7], [6, 0, 0], [8, 0, 0]]))
    with pytest.raises(ValueError, match="conditional masked-LM"):
        mask_predict(model, SRC)
    with pytest.raises(ValueError, match="'samples'"):
        noisy_parallel_decode(model, make_teacher(), SRC, samples=0)
    with pytest.raises(ValueError, match="canvas"):
        make_nat("cut_at_end").loss(SRC, torch.full((3, 12), 6))
    with pytest.raises(ValueError, match="fertilities summing"):
        make_nat("fertility").loss(SRC, torch.tensor([[6, 7], [8, 0], [9, 0]]), fertilities=torch.ones(3, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="NonAutoregressiveTransformer"):
        parallel_decode(make_teacher(), SRC)


def test_nat_loss_for_fit_strips_the_special_tokens():
    model = make_nat("classifier")
    tgt = torch.tensor([[BOS, 6, 7, EOS], [BOS, 8, EOS, PAD], [BOS, 9, 10, EOS]])
    torch.manual_seed(0)
    a, _ = NATLoss()(model, (SRC, tgt))
    b, _ = model.loss(SRC, torch.tensor([[6, 7], [8, 0], [9, 10]]))
    torch.testing.assert_close(a, b)


def test_vector_inputs_are_copied_too():
    cfg = config(input_features=3, mask_id=MASK)
    torch.manual_seed(0)
    model = NonAutoregressiveTransformer(cfg, NATConfig(length="offset", max_offset=3)).eval()
    inputs = Vectors(torch.randn(2, 4, 3), torch.tensor([4, 2]))
    loss, _ = model.loss(inputs, torch.tensor([[6, 7, 8], [9, 0, 0]]))
    assert torch.isfinite(loss)
    out = parallel_decode(model, inputs)
    assert out.sequences.shape[0] == 2


# ---------------------------------------------------------------------------------------------
# mask-predict
# ---------------------------------------------------------------------------------------------


def recording(model):
    """Wrap model.decode to record the token inputs of every pass."""
    calls = []
    original = model.decode

    def decode(encoding, lengths, **kwargs):
        calls.append((lengths.clone(), kwargs["tokens"].clone()))
        return original(encoding, lengths, **kwargs)

    model.decode = decode
    return calls


def test_remask_count_is_the_published_schedule():
    assert [remask_count(10, t, 10) for t in range(1, 10)] == [9, 8, 7, 6, 5, 4, 3, 2, 1]
    assert [remask_count(7, t, 4) for t in range(1, 4)] == [5, 3, 1]


@pytest.mark.parametrize("iterations", [2, 4, 10])
def test_mask_predict_remasks_n_times_t_over_T_least_confident_tokens(iterations):
    model = make_nat("classifier", "mask")
    calls = recording(model)
    mask_predict(model, SRC, iterations=iterations, early_stop=False)
    assert len(calls) == iterations
    for t, (lengths, tokens) in enumerate(calls):
        real = torch.arange(tokens.size(1)) < lengths[:, None]
        masked = ((tokens == MASK) & real).sum(1)
        expected = lengths if t == 0 else (lengths * (iterations - t)) // iterations
        assert masked.tolist() == expected.tolist(), t


def test_mask_predict_remasks_the_least_confident():
    model = make_nat("classifier", "mask")
    calls = recording(model)
    out = mask_predict(model, SRC[:1], iterations=2, early_stop=False)
    (lengths, _), (_, second) = calls
    encoding = model.encode(SRC[:1])
    log_probs = NonAutoregressiveTransformer.decode(model, encoding, lengths, tokens=calls[0][1])
    banned = model.banned_ids()
    log_probs = log_probs.float().index_fill(-1, torch.tensor(banned), -math.inf).log_softmax(-1)
    confidence = log_probs.max(-1).values[0]
    n = int(lengths[0]) // 2
    least = set(confidence.argsort()[:n].tolist())
    assert set((second[0] == MASK).nonzero().squeeze(1).tolist()) == least
    assert out.iterations.tolist() == [2]


def test_one_iteration_is_one_parallel_pass():
    model = make_nat("classifier", "mask")
    calls = recording(model)
    out = mask_predict(model, SRC, iterations=1)
    assert len(calls) == 1
    model = make_nat("classifier", "mask")
    plain = parallel_decode(model, SRC)
    assert torch.equal(out.sequences, plain.sequences) and torch.equal(out.lengths, plain.lengths)
    torch.testing.assert_close(out.scores, plain.scores)


def test_early_stop_when_the_output_no_longer_changes():
    model = make_nat("classifier", "mask")
    original = model.decode
    calls = []

    def constant(encoding, lengths, **kwargs):  # predictions that ignore the inputs
        calls.append(1)
        logits = original(encoding, lengths, tokens=torch.full_like(kwargs["tokens"], MASK))
        return logits

    model.decode = constant
    out = mask_predict(model, SRC, iterations=10, early_stop=True)
    assert len(calls) == 2 and out.iterations.tolist() == [2, 2, 2]  # pass 2 changed nothing
    calls.clear()
    late = mask_predict(model, SRC, iterations=10, early_stop=False)
    assert len(calls) == 10 and late.iterations.tolist() == [10, 10, 10]
    assert torch.equal(out.sequences, late.sequences)


def test_cached_encoder_keys_and_values_give_the_uncached_result():
    """Mask-Predict keeps the cross-attention keys/values of the encoder output between passes
    (reordered when early stop drops candidates); decoding without the cache must agree."""
    model = make_nat("classifier", "mask", double=True, seed=3)
    sources = random_sources(6, 7, seed=2)
    original = model.decode
    filled = []

    def spy(encoding, lengths, memory_caches=None, **kwargs):
        filled.append(memory_caches[0].cross_key is not None)
        return original(encoding, lengths, memory_caches=memory_caches, **kwargs)

    model.decode = spy
    cached = mask_predict(model, sources, iterations=6, length_beam=3, early_stop=True, return_candidates=True)
    assert filled[0] is False and all(filled[1:]) and len(filled) == 6  # filled by the first pass, read after
    assert len(set(cached.iterations.tolist())) > 1  # candidates stopped at different passes: reordered caches

    def uncached(encoding, lengths, memory_caches=None, **kwargs):
        return original(encoding, lengths, **kwargs)

    model.decode = uncached
    plain = mask_predict(model, sources, iterations=6, length_beam=3, early_stop=True, return_candidates=True)
    assert torch.equal(cached.candidates, plain.candidates) and torch.equal(cached.iterations, plain.iterations)
    torch.testing.assert_close(cached.candidate_scores, plain.candidate_scores, rtol=0, atol=1e-12)


@torch.no_grad()
def test_length_beam_picks_the_highest_mean_log_probability():
    model = make_nat("classifier", "mask")
    out = mask_predict(model, SRC, iterations=1, length_beam=3, return_candidates=True)
    encoding = model.encode(SRC)
    expected_lengths = model.length_log_probs(encoding).topk(3, 1).indices
    assert torch.equal(out.candidate_lengths, expected_lengths)
    for b in range(3):
        scores = []
        for c in range(3):
            n = int(expected_lengths[b, c])
            logits = model.decode(encoding.select(torch.tensor([b])), torch.tensor([n]), tokens=torch.full((1, n), MASK))
            log_probs = logits.float().index_fill(-1, torch.tensor(model.banned_ids()), -math.inf).log_softmax(-1)
            scores.append(float(log_probs.max(-1).values.mean()))
        torch.testing.assert_close(out.candidate_scores[b], torch.tensor(scores))
        best = max(range(3), key=lambda c: scores[c])
        assert int(out.lengths[b]) == int(expected_lengths[b, best])
        assert torch.equal(out.sequences[b, : out.lengths[b]], out.candidates[b, best, : out.lengths[b]])


# ---------------------------------------------------------------------------------------------
# noisy parallel decoding
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", ["classifier", "fertility", "offset"])
def test_npd_with_one_sample_is_plain_decoding(length):
    model, teacher = make_nat(length), make_teacher()
    plain = parallel_decode(model, SRC)
    npd = noisy_parallel_decode(model, teacher, SRC, samples=1)
    assert torch.equal(npd.sequences, plain.sequences) and torch.equal(npd.lengths, plain.lengths)


@torch.no_grad()
def test_npd_rescoring_equals_separate_teacher_forced_scores():
    model, teacher = make_nat("classifier"), make_teacher()
    out = noisy_parallel_decode(model, teacher, SRC, samples=6, seed=0, return_candidates=True)
    source_lengths = (SRC != PAD).sum(1)
    for b in range(3):
        for c in range(6):
            n = int(out.candidate_lengths[b, c])
            hypothesis = out.candidates[b, c, :n]
            src = SRC[b : b + 1, : source_lengths[b]]
            tgt_in = torch.cat([torch.tensor([BOS]), hypothesis])[None]
            tgt_out = torch.cat([hypothesis, torch.tensor([EOS])])
            log_probs = teacher(src, tgt_in)[0].log_softmax(-1)
            expected = log_probs.gather(1, tgt_out[:, None]).sum()
            torch.testing.assert_close(out.candidate_scores[b, c], expected, rtol=1e-4, atol=1e-4)
        best = int(out.candidate_scores[b].argmax())
        assert torch.equal(out.sequences[b, : out.lengths[b]], out.candidates[b, best, : out.lengths[b]])
        assert float(out.scores[b]) == pytest.approx(float(out.candidate_scores[b].max()))


def test_npd_teacher_rescoring_is_one_pass():
    model, teacher = make_nat("fertility"), make_teacher()
    calls = []
    hook = teacher.register_forward_hook(lambda module, args, output: calls.append(args[1].shape))
    noisy_parallel_decode(model, teacher, SRC, samples=7, seed=3)
    hook.remove()
    assert len(calls) == 1 and calls[0][0] == 3 * 7


def test_npd_more_samples_never_score_worse_with_the_same_draws():
    model, teacher = make_nat("classifier"), make_teacher()
    few = noisy_parallel_decode(model, teacher, SRC, samples=3, seed=[1, 2, 3])
    many = noisy_parallel_decode(model, teacher, SRC, samples=12, seed=[1, 2, 3])
    assert (many.scores >= few.scores - 1e-5).all()  # the first draws of each generator are shared


def test_teacher_scores_helper_matches_teacher_forcing():
    teacher = make_teacher()
    hypotheses = torch.tensor([[6, 7, 8], [9, 0, 0]])
    lengths = torch.tensor([3, 1])
    scores = teacher_scores(teacher, SRC[:2], hypotheses, lengths)
    tgt = torch.tensor([[BOS, 6, 7, 8, EOS], [BOS, 9, EOS, PAD, PAD]])
    per = -F.cross_entropy(teacher(SRC[:2], tgt[:, :-1]).transpose(1, 2), tgt[:, 1:], ignore_index=PAD, reduction="none")
    torch.testing.assert_close(scores, per.sum(1))


# ---------------------------------------------------------------------------------------------
# batch invariance
# ---------------------------------------------------------------------------------------------


def test_every_decoder_is_batch_invariant():
    sources = random_sources(64, 8, seed=3)
    cmlm = make_nat("classifier", "mask", double=True)
    fertility = make_nat("fertility", double=True)
    cut = make_nat("cut_at_end", double=True)
    teacher = make_teacher(double=True)
    torch.manual_seed(0)
    ctc = CTCNAT(config(), CTCNATConfig(upsample=2, imputer=True)).double().eval()
    runs = {
        "parallel": lambda s, seeds: parallel_decode(cut, s),
        "mask_predict": lambda s, seeds: mask_predict(cmlm, s, iterations=4, length_beam=2),
        "npd": lambda s, seeds: noisy_parallel_decode(fertility, teacher, s, samples=4, seed=seeds),
        "npd_cmlm": lambda s, seeds: noisy_parallel_decode(cmlm, teacher, s, samples=3, seed=seeds, iterations=3),
        "ctc": lambda s, seeds: ctc_decode(ctc, s, iterations=3),
    }
    seeds = list(range(100, 164))
    for name, run in runs.items():
        batch = run(sources, seeds)
        for i in (0, 17, 63):
            n = int((sources[i] != PAD).sum())
            single = run(sources[i : i + 1, :n], seeds[i : i + 1])
            length = int(single.lengths[0])
            assert int(batch.lengths[i]) == length, name
            assert torch.equal(batch.sequences[i, :length], single.sequences[0, :length]), name
            torch.testing.assert_close(batch.scores[i], single.scores[0], rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# CTC
# ---------------------------------------------------------------------------------------------


def test_ctc_upsamples_and_its_loss_is_finite():
    torch.manual_seed(0)
    model = CTCNAT(config(), CTCNATConfig(upsample=3)).train()
    out = model(SRC)
    assert out.log_probs.shape == (3, 15, VOCAB + 1) and out.lengths.tolist() == [15, 9, 6]
    torch.testing.assert_close(out.log_probs.exp().sum(-1), torch.ones(3, 15))
    loss, metrics = model.loss(SRC, torch.tensor([[6, 6, 7], [8, 0, 0], [9, 10, 0]]))
    assert torch.isfinite(loss)
    loss.backward()
    assert model.upsample.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="imputer=True"):
        model.decode(model.encode(SRC), torch.zeros(3, 15, dtype=torch.long))


def test_ctc_decoding_collapses_repeats_and_drops_blanks():
    torch.manual_seed(0)
    model = CTCNAT(config(), CTCNATConfig(upsample=2)).eval()
    blank = model.blank
    path = torch.tensor([[6, 6, blank, 6, 7, blank, 7, 7, 8, blank]])
    log_probs = torch.log(F.one_hot(path, VOCAB + 1).double() * 0.9 + 0.1 / (VOCAB + 1))
    model.decode = lambda encoding, canvas=None: CTCOutput(log_probs, torch.tensor([10]))
    src = torch.tensor([[5, 6, 7, 8, 9]])
    assert ctc_decode(model, src).sequences.tolist() == [[6, 6, 7, 7, 8]]
    assert ctc_decode(model, src, beam_size=4).sequences.tolist() == [[6, 6, 7, 7, 8]]
    assert ctc_collapse(path[0].tolist(), blank) == [6, 6, 7, 7, 8]


def test_ctc_best_alignment_is_the_viterbi_path():
    g = torch.Generator().manual_seed(0)
    log_probs = torch.randn(2, 6, 4, generator=g).log_softmax(-1)
    targets, target_lengths, lengths = torch.tensor([[1, 1, 2], [3, 0, 0]]), torch.tensor([3, 1]), torch.tensor([6, 4])
    paths, valid = ctc_best_alignment(log_probs, lengths, targets, target_lengths, blank=0)
    assert valid.tolist() == [True, True]
    import itertools

    for b in range(2):
        n = int(lengths[b])
        best, best_path = -math.inf, None
        for path in itertools.product(range(4), repeat=n):  # brute force
            if ctc_collapse(path, 0) == targets[b, : target_lengths[b]].tolist():
                score = sum(float(log_probs[b, t, s]) for t, s in enumerate(path))
                if score > best:
                    best, best_path = score, list(path)
        assert paths[b, :n].tolist() == best_path
        assert (paths[b, n:] == 0).all()
    _, valid = ctc_best_alignment(log_probs, torch.tensor([2, 4]), targets, target_lengths, blank=0)
    assert valid.tolist() == [False, True]  # 1 1 2 needs 4 frames


def test_imputer_training_and_refinement():
    torch.manual_seed(0)
    model = CTCNAT(config(), CTCNATConfig(upsample=2, imputer=True)).train()
    loss, metrics = model.loss(SRC, torch.tensor([[6, 7, 7], [8, 0, 0], [9, 10, 0]]), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and "imputer" in metrics
    loss.backward()
    assert model.canvas_embedding.tokens.weight.grad.abs().sum() > 0
    model.eval()
    out = ctc_decode(model, SRC, iterations=4, early_stop=False)
    assert out.iterations.tolist() == [4, 4, 4]
    one = ctc_decode(model, SRC)
    assert one.iterations.tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="imputer=True"):
        ctc_decode(CTCNAT(config()).eval(), SRC, iterations=2)


# ---------------------------------------------------------------------------------------------
# distillation and a small training run
# ---------------------------------------------------------------------------------------------


def test_distill_returns_the_teachers_outputs_in_order():
    teacher = make_teacher()
    sources = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15]]
    outputs = distill(teacher, sources, batch_size=2, max_new_tokens=6)
    for source, output in zip(sources, outputs):
        result = generate(teacher, torch.tensor([source]), max_new_tokens=6)
        tokens = result.sequences[0, : result.lengths[0]].tolist()
        assert output == (tokens[:-1] if tokens[-1] == EOS else tokens)
    with pytest.raises(ValueError, match="at least one token"):
        distill(teacher, [[5], []])


def test_a_tiny_nat_learns_to_copy():
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=12, d_model=32, num_heads=2, num_layers=1, ff_dim=64, dropout=0.0)
    model = NonAutoregressiveTransformer(cfg, NATConfig(length="offset", max_offset=2, length_loss_weight=1.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for _ in range(200):
        lengths = torch.randint(2, 7, (32,), generator=g)
        ids = torch.randint(4, 12, (32, 6), generator=g)
        src = torch.where(torch.arange(6) < lengths[:, None], ids, PAD)
        loss, metrics = model.loss(src, src)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    test = torch.where(torch.arange(6) < torch.randint(2, 7, (100, 1), generator=g), torch.randint(4, 12, (100, 6), generator=g), PAD)
    out = parallel_decode(model, test)
    exact = sum(out.sequences[i, : out.lengths[i]].tolist() == [t for t in test[i].tolist() if t != PAD] for i in range(100))
    assert exact >= 90, (exact, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# Levenshtein
# ---------------------------------------------------------------------------------------------


def apply_edits(hypothesis, delete, insertions):
    kept = [t for t, gone in zip(hypothesis, delete) if not gone]
    out = list(insertions[0])
    for token, slot in zip(kept, insertions[1:]):
        out += [token] + list(slot)
    return out


def lcs(a: tuple, b: tuple) -> int:
    """Longest common subsequence by plain recursion (the oracle's reference)."""
    if not a or not b:
        return 0
    if a[0] == b[0]:
        return 1 + lcs(a[1:], b[1:])
    return max(lcs(a[1:], b), lcs(a, b[1:]))


def test_levenshtein_oracle_reaches_the_target_with_the_fewest_edits():
    assert levenshtein_oracle([5, 6, 7], [5, 8, 7, 9]) == ([False, True, False], [[], [8], [9]])
    assert levenshtein_oracle([], [5, 6]) == ([], [[5, 6]])
    assert levenshtein_oracle([5, 6], []) == ([True, True], [[]])
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        h = torch.randint(5, 9, (int(torch.randint(0, 7, (1,), generator=g)),), generator=g).tolist()
        t = torch.randint(5, 9, (int(torch.randint(0, 7, (1,), generator=g)),), generator=g).tolist()
        delete, insertions = levenshtein_oracle(h, t)
        assert apply_edits(h, delete, insertions) == t
        edits = sum(delete) + sum(len(s) for s in insertions)
        assert edits == len(h) + len(t) - 2 * lcs(tuple(h), tuple(t))  # the insert/delete distance
        assert edits >= edit_distance(h, t)  # substitutions can only help


def test_levenshtein_transformer_trains_and_decodes_batch_invariantly():
    torch.manual_seed(0)
    model = LevenshteinTransformer(config(), max_insertions=3).train()
    loss, metrics = model.loss(SRC, torch.tensor([[6, 7, 8, 9], [10, 11, 0, 0], [12, 0, 0, 0]]),
                               generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and set(metrics) == {"insert_accuracy", "token_accuracy", "delete_accuracy"}
    loss.backward()
    for head in (model.delete_head, model.insert_head):
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    model = model.double().eval()
    sources = random_sources(64, 8, seed=5)
    batch = levenshtein_decode(model, sources, max_iterations=4)
    assert (batch.iterations >= 1).all() and (batch.iterations <= 4).all()
    assert (batch.lengths <= 2 * (sources != PAD).sum(1) + 10).all()
    for i in (0, 9, 63):
        n = int((sources[i] != PAD).sum())
        single = levenshtein_decode(model, sources[i : i + 1, :n], max_iterations=4)
        length = int(single.lengths[0])
        assert int(batch.lengths[i]) == length
        assert torch.equal(batch.sequences[i, :length], single.sequences[0, :length])
    with pytest.raises(TypeError, match="LevenshteinTransformer"):
        levenshtein_decode(make_nat("classifier"), SRC)


def test_a_tiny_levenshtein_transformer_learns_to_copy():
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=13, d_model=32, num_heads=2, num_layers=1, ff_dim=64, dropout=0.0, mask_id=3)
    model = LevenshteinTransformer(cfg, max_insertions=6)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        lengths = torch.randint(2, 7, (32,), generator=g)
        src = torch.where(torch.arange(6) < lengths[:, None], torch.randint(4, 13, (32, 6), generator=g), PAD)
        loss, _ = model.loss(src, src, generator=g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    test = torch.where(torch.arange(6) < torch.randint(2, 7, (100, 1), generator=g), torch.randint(4, 13, (100, 6), generator=g), PAD)
    out = levenshtein_decode(model, test, max_iterations=5)
    exact = sum(out.sequences[i, : out.lengths[i]].tolist() == [t for t in test[i].tolist() if t != PAD] for i in range(100))
    assert exact >= 60, exact
