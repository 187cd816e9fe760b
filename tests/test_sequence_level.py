"""Sequence-level training (graphattn.train.sequence_level): MIXER schedule, REINFORCE loss on the
real EncoderDecoder, greedy decoding and validation BLEU."""
from __future__ import annotations

import math

import pytest
import sacrebleu
import torch

from graphattn.data.algorithmic import BOS, EOS, PAD, collate, make_task, vocab_size
from graphattn.decoding import generate
from graphattn.models import EncoderDecoder, TransformerConfig
from graphattn.train import TrainState, sequence_cross_entropy
from graphattn.train.sequence_level import (
    MixerSchedule,
    SequenceLevelLoss,
    _rollout,
    greedy_decode,
    sentence_bleu_reward,
    validation_bleu,
)


def model_and_data(seed: int = 0):
    config = TransformerConfig(
        vocab_size=vocab_size("reverse", 6), d_model=16, num_heads=2, num_layers=1, ff_dim=32, dropout=0.0,
        encoder_pattern="full", decoder_pattern="causal",
    )
    torch.manual_seed(seed)
    return EncoderDecoder(config), make_task("reverse", 24, min_length=3, max_length=6, num_symbols=6, seed=seed)


def training_state(step: int) -> TrainState:
    state = TrainState()
    state.step, state.training = step, True
    return state


def test_mixer_schedule_and_its_checks() -> None:
    schedule = MixerSchedule(xent_steps=10, anneal_every=5, delta=3)
    assert [schedule.reinforce_tokens(s) for s in (0, 9, 10, 14, 15, 30)] == [0, 0, 3, 3, 6, 15]
    with pytest.raises(ValueError, match="anneal_every"):
        MixerSchedule(xent_steps=0, anneal_every=0)


def test_sentence_bleu_reward_is_sacrebleu_on_id_words() -> None:
    hyp, ref = [5, 6, 7, 9, 10], [5, 6, 7, 8, 10]
    expected = sacrebleu.sentence_bleu("5 6 7 9 10", ["5 6 7 8 10"], tokenize="none").score / 100
    assert sentence_bleu_reward(hyp, ref) == pytest.approx(expected)
    assert 0 < sentence_bleu_reward(hyp, ref) < 1


def test_rollout_forces_the_gold_prefix_and_stops_at_eos() -> None:
    model, data = model_and_data()
    model.eval()
    src, tgt = collate(data[:5])
    gold = tgt[:, 1:]
    forced = torch.tensor([0, 2, 3, 100, 1])
    tokens, lengths = _rollout(model, src, gold, forced, gold.size(1) + 4, sample=True, eos_id=EOS, pad_id=PAD,
                               generator=torch.Generator().manual_seed(0))
    for b in range(5):
        n = int(min(forced[b], (gold[b] != PAD).sum()))
        assert tokens[b, :n].tolist() == gold[b, :n].tolist()
        length = int(lengths[b])
        if (tokens[b, :length] == EOS).any():
            assert tokens[b, length - 1] == EOS and (tokens[b, :length - 1] != EOS).all()
        assert (tokens[b, length:] == PAD).all()
    # fully forced rows reproduce the target
    assert tokens[3, : int(lengths[3])].tolist() == [t for t in gold[3].tolist() if t != PAD]


def test_without_reinforce_tokens_it_is_cross_entropy() -> None:
    model, data = model_and_data()
    batch = collate(data[:6])
    loss_fn = SequenceLevelLoss(PAD, BOS, EOS, schedule=MixerSchedule(xent_steps=5, anneal_every=1))
    value, logs = loss_fn(model, batch, training_state(0))
    expected = sequence_cross_entropy(model(batch[0], batch[1][:, :-1]), batch[1][:, 1:], PAD)
    torch.testing.assert_close(value, expected)
    assert logs["reinforce_tokens"] == 0
    model.eval()  # validation: cross-entropy too
    value, _ = loss_fn(model, batch, training_state(100))
    torch.testing.assert_close(value, sequence_cross_entropy(model(batch[0], batch[1][:, :-1]), batch[1][:, 1:], PAD))


def test_reinforce_loss_matches_a_hand_computation() -> None:
    """Record the sampled outputs through reward_fn, rebuild them and recompute the loss."""
    model, data = model_and_data()
    src, tgt = collate(data[:4])
    seen: list[tuple[list[int], list[int]]] = []

    def reward(hyp, ref):
        seen.append((list(hyp), list(ref)))
        return 0.25 * len(hyp)

    delta = 2
    loss_fn = SequenceLevelLoss(PAD, BOS, EOS, reward_fn=reward, baseline="batch_mean", extra_tokens=3,
                                schedule=MixerSchedule(xent_steps=0, anneal_every=1000, delta=delta), seed=0)
    value, logs = loss_fn(model, (src, tgt), training_state(0))
    assert len(seen) == 4
    gold = tgt[:, 1:]
    max_new = gold.size(1) + 3
    total_tokens, numerator, rewards, suffix_lp = 0, 0.0, [], []
    for b, (hyp, ref) in enumerate(seen):
        n_plus_eos = int((gold[b] != PAD).sum())
        assert ref == gold[b, : n_plus_eos - 1].tolist()
        forced = max(0, n_plus_eos - delta)
        assert hyp[:forced] == gold[b, :forced].tolist()
        output = hyp + ([EOS] if len(hyp) < max_new else [])
        tgt_in = torch.tensor([[BOS] + output[:-1]])
        logits = model(src[b:b + 1], tgt_in)
        logits[..., [PAD, BOS]] = float("-inf")  # the distribution samples come from
        log_probs = torch.log_softmax(logits, -1)[0]
        token_lp = log_probs[torch.arange(len(output)), torch.tensor(output)]
        numerator += float(-token_lp[:forced].sum().detach())
        suffix_lp.append(float(token_lp[forced:].sum().detach()))
        rewards.append(0.25 * len(hyp))
        total_tokens += n_plus_eos
    rewards_t = torch.tensor(rewards)
    baseline = (rewards_t.sum() - rewards_t) / 3
    numerator -= float(((rewards_t - baseline) * torch.tensor(suffix_lp)).sum())
    assert float(value) == pytest.approx(numerator / total_tokens, rel=1e-4, abs=1e-5)
    assert float(logs["reward"]) == pytest.approx(float(rewards_t.mean()))


def test_greedy_decode_equals_generate_and_validation_bleu_is_its_corpus_bleu() -> None:
    model, data = model_and_data()
    model.eval()
    src, tgt = collate(data[:8])
    ours = greedy_decode(model, src, max_new_tokens=12, eos_id=EOS, pad_id=PAD)
    out = generate(model, src, max_new_tokens=12, eos_token_id=EOS, pad_token_id=PAD)
    theirs = [[t for t in row[:length].tolist() if t != EOS] for row, length in zip(out.sequences, out.lengths)]
    assert ours == theirs
    evaluate = validation_bleu(collate_fn=collate, pad_id=PAD, eos_id=EOS, batch_size=8, extra_tokens=12 - (tgt.size(1) - 1))
    result = evaluate(model, data[:8])
    hyps = [" ".join(map(str, o)) for o in ours]
    refs = [" ".join(map(str, t[1:-1])) for _, t in data[:8]]
    assert result["val_bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="none").score)


def test_reinforce_gradient_is_an_unbiased_estimate_of_the_expected_reward_gradient() -> None:
    """Outputs of at most 2 tokens can be enumerated: grad E[R] exactly, against the mean of the
    loss's REINFORCE gradients over 4,000 samples (no baseline, every token sampled)."""
    torch.set_num_threads(1)
    model, data = model_and_data(seed=2)
    vocab = model.config.vocab_size
    src = collate(data[:1])[0]

    def reward(hyp, ref):
        return 0.2 * len(hyp) + 0.5 * (hyp[:1] == [5]) + 0.3 * (list(hyp) == [4, 9])

    # exact: every output [EOS], [a, EOS], [a, b] (a, b not PAD / BOS / EOS)
    allowed = [t for t in range(vocab) if t not in (PAD, BOS)]
    words = [t for t in allowed if t != EOS]
    outputs = [[EOS]] + [[a, EOS] for a in words] + [[a, b] for a in words for b in words]
    tgt_in = torch.tensor([([BOS] + o[:-1] + [PAD])[:2] for o in outputs])  # right-padded to 2
    logits = model(src.expand(len(outputs), -1), tgt_in)
    logits[..., [PAD, BOS]] = float("-inf")
    log_probs = torch.log_softmax(logits, -1)
    seq_lp = torch.stack([log_probs[i, torch.arange(len(o)), torch.tensor(o)].sum() for i, o in enumerate(outputs)])
    assert float(seq_lp.exp().sum()) == pytest.approx(1.0, abs=1e-5)
    rewards = torch.tensor([reward([t for t in o if t != EOS], []) for o in outputs])
    params = [p for p in model.parameters() if p.requires_grad]
    exact = torch.cat([g.flatten() for g in torch.autograd.grad((seq_lp.exp() * rewards).sum(), params)])
    # estimates: chunks of 200 identical rows, target [BOS, 7, EOS] (2 tokens: outputs of <= 2)
    rows = 200
    tgt = torch.tensor([[BOS, 7, EOS]]).expand(rows, -1)
    loss_fn = SequenceLevelLoss(PAD, BOS, EOS, reward_fn=reward, baseline="none", extra_tokens=0, seed=0)
    estimates = []
    for _ in range(20):
        loss, _ = loss_fn(model, (src.expand(rows, -1), tgt), training_state(0))
        grads = torch.autograd.grad(-loss * 2, params)  # * reference tokens per row: mean_b (R_b grad log p_b)
        estimates.append(torch.cat([g.flatten() for g in grads]))
    estimates = torch.stack(estimates)
    mean, stderr = estimates.mean(0), estimates.std(0) / math.sqrt(len(estimates))
    z = (mean - exact).abs() / (stderr + 1e-8)
    assert float((z < 4).float().mean()) > 0.99, float(z.max())
    # and the estimate is informative: it points the way of the exact gradient
    assert float(torch.nn.functional.cosine_similarity(mean, exact, dim=0)) > 0.9


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="baseline"):
        SequenceLevelLoss(PAD, BOS, EOS, baseline="critic")
    with pytest.raises(TypeError, match="MixerSchedule"):
        SequenceLevelLoss(PAD, BOS, EOS, schedule=3)
    with pytest.raises(TypeError, match="reward_fn"):
        SequenceLevelLoss(PAD, BOS, EOS, reward_fn="bleu")
