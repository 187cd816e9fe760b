"""Tests of graphattn.train: losses, schedules, the fit loop, checkpoints, exact resume, DDP."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, IterableDataset

from graphattn import train as T
from graphattn.train import (
    Callback,
    ScheduledSampling,
    Seq2SeqBatch,
    Seq2SeqCollator,
    Seq2SeqLoss,
    TrainConfig,
    corpus_bleu,
    evaluate,
    fit,
    load_checkpoint,
    lr_multiplier,
    make_scheduler,
    move_to_device,
    sequence_cross_entropy,
)
from graphattn.train.checkpoint import atomic_save

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ddp_worker.py")
CPU = dict(progress=False, device="cpu")


# ---------------------------------------------------------------------- helpers
def regression_data(n: int = 32, features: int = 4, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=generator)
    y = x @ torch.randn(features, 1, generator=generator) + 0.1 * torch.randn(n, 1, generator=generator)
    return list(zip(x, y))


def mse(model, batch, state):
    x, y = batch
    return F.mse_loss(model(x), y)


def mlp(seed: int = 0, dropout: float = 0.0, features: int = 4, batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    norm = [nn.BatchNorm1d(16)] if batch_norm else []  # running statistics: buffers a forward pass changes
    return nn.Sequential(nn.Linear(features, 16), *norm, nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 1))


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


class Recorder(Callback):
    """Records (step, loss, lr, epoch, batch_in_epoch) after every step."""

    def __init__(self, raise_at: int | None = None) -> None:
        self.steps: list[tuple[int, float, float, int, int]] = []
        self.raise_at = raise_at

    def on_step_end(self, state):
        self.steps.append((state.step, state.loss.item(), state.lr, state.epoch, state.batch_in_epoch))
        if state.step == self.raise_at:
            raise KeyboardInterrupt


class ToySeq2Seq(nn.Module):
    """logits[b, t] = W (E_tgt[tgt_in[b, t]] + mean_s E_src[src[b, s]]) + position term."""

    def __init__(self, vocab: int = 11, dim: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.src_embed = nn.Embedding(vocab, dim)
        self.tgt_embed = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(32, dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, vocab)

    def forward(self, src, tgt_in):
        positions = torch.arange(tgt_in.shape[1], device=tgt_in.device)
        hidden = self.tgt_embed(tgt_in) + self.src_embed(src).mean(1, keepdim=True) + self.position(positions)
        return self.out(self.dropout(hidden))


class MockSeq2Seq(nn.Module):
    """Deterministic logits ``sharpness * onehot``: the argmax at position t is (3 * tgt_in[t] + t + 1) mod V
    (``sharpness=0``: uniform); records its inputs."""

    def __init__(self, vocab: int = 13, sharpness: float = 10.0) -> None:
        super().__init__()
        self.vocab, self.sharpness = vocab, sharpness
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.calls: list[tuple[torch.Tensor, bool]] = []

    def predicted(self, tgt_in):
        return (3 * tgt_in + torch.arange(tgt_in.shape[1]) + 1) % self.vocab

    def forward(self, src, tgt_in):
        self.calls.append((tgt_in.clone(), torch.is_grad_enabled()))
        return self.sharpness * self.scale * F.one_hot(self.predicted(tgt_in), self.vocab).float()


PAD, BOS, EOS = 0, 1, 2


def seq2seq_batch() -> Seq2SeqBatch:
    src = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [3, 4, 5, 6]])
    tgt = torch.tensor([[BOS, 5, 6, 7, EOS, PAD], [BOS, 8, 9, EOS, PAD, PAD], [BOS, 3, 4, 5, 6, EOS]])
    return Seq2SeqBatch(src, tgt)


# ---------------------------------------------------------------------- sequence_cross_entropy
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sequence_cross_entropy_matches_torch_cross_entropy(label_smoothing, reduction, generator):
    logits = torch.randn(3, 5, 7, generator=generator)
    targets = torch.randint(1, 7, (3, 5), generator=generator)
    targets[0, 3:] = PAD
    targets[2, 1:] = PAD
    got = sequence_cross_entropy(logits, targets, PAD, label_smoothing, reduction)
    expected = F.cross_entropy(
        logits.reshape(-1, 7), targets.reshape(-1), ignore_index=PAD, label_smoothing=label_smoothing, reduction=reduction
    )
    if reduction == "none":
        expected = expected.reshape(3, 5)
    torch.testing.assert_close(got, expected)


def test_sequence_cross_entropy_matches_the_smoothed_formula_in_float64_with_gradients(generator):
    logits = torch.randn(2, 4, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[3, 1, 5, PAD], [2, PAD, PAD, PAD]])
    e = 0.2
    got = sequence_cross_entropy(logits, targets, PAD, label_smoothing=e)
    # (1 - e) * -log p_y + e * mean_v(-log p_v), averaged over the 4 non-pad tokens, written out by hand
    total = 0.0
    for b, t in [(0, 0), (0, 1), (0, 2), (1, 0)]:
        log_p = logits[b, t] - torch.logsumexp(logits[b, t], 0)
        total = total + (1 - e) * -log_p[targets[b, t]] + e * -log_p.mean()
    expected = total / 4
    torch.testing.assert_close(got, expected)
    (grad_got,) = torch.autograd.grad(got, logits)
    (grad_expected,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad_got, grad_expected)
    assert grad_got[0, 3].abs().max() == 0 and grad_got[1, 1:].abs().max() == 0  # pads get no gradient


def test_sequence_cross_entropy_all_padding_is_zero_not_nan():
    loss = sequence_cross_entropy(torch.randn(2, 3, 5, requires_grad=True), torch.zeros(2, 3, dtype=torch.long), PAD)
    assert loss.item() == 0.0
    loss.backward()


def test_sequence_cross_entropy_errors():
    logits = torch.randn(2, 3, 5)
    with pytest.raises(ValueError, match=r"Expected logits of shape \[B, T, V\], got \[2, 15\]"):
        sequence_cross_entropy(logits.reshape(2, 15), torch.zeros(2, 3, dtype=torch.long), PAD)
    with pytest.raises(ValueError, match=r"targets of shape \[B, T\] = \[2, 3\].*got \[2, 4\]"):
        sequence_cross_entropy(logits, torch.zeros(2, 4, dtype=torch.long), PAD)
    with pytest.raises(TypeError, match="integer target ids.*targets.long"):
        sequence_cross_entropy(logits, torch.zeros(2, 3), PAD)
    with pytest.raises(ValueError, match="reduction 'mean', 'sum' or 'none', got 'avg'"):
        sequence_cross_entropy(logits, torch.zeros(2, 3, dtype=torch.long), PAD, reduction="avg")
    with pytest.raises(ValueError, match="0 <= label_smoothing < 1, got 1.0"):
        sequence_cross_entropy(logits, torch.zeros(2, 3, dtype=torch.long), PAD, label_smoothing=1.0)


# ---------------------------------------------------------------------- scheduled sampling
def test_scheduled_sampling_schedules_follow_bengio_et_al():
    steps = [0, 1, 10, 100, 1000]
    linear = ScheduledSampling("linear", k=1.0, c=0.002, eps_min=0.1)
    assert [linear.teacher_forcing_probability(i) for i in steps] == pytest.approx([1.0, 0.998, 0.98, 0.8, 0.1])
    exponential = ScheduledSampling("exponential", k=0.99)
    assert [exponential.teacher_forcing_probability(i) for i in steps] == pytest.approx([0.99**i for i in steps])
    sigmoid = ScheduledSampling("inverse_sigmoid", k=50.0)
    expected = [50 / (50 + math.exp(i / 50)) for i in steps]
    assert [sigmoid.teacher_forcing_probability(i) for i in steps] == pytest.approx(expected)
    assert sigmoid.teacher_forcing_probability(10**9) == 0.0  # no overflow
    assert ScheduledSampling("linear", k=0.25).teacher_forcing_probability(123) == 0.25  # c = 0: constant


def test_scheduled_sampling_errors():
    with pytest.raises(ValueError, match="Unknown scheduled sampling schedule 'cosine'"):
        ScheduledSampling("cosine", k=1.0)
    with pytest.raises(ValueError, match="k\\*\\*i needs 0 < k < 1, got k=1.5"):
        ScheduledSampling("exponential", k=1.5)
    with pytest.raises(ValueError, match="needs k >= 1, got k=0.5"):
        ScheduledSampling("inverse_sigmoid", k=0.5)


def test_seq2seq_loss_is_teacher_forced_cross_entropy_and_accepts_plain_pairs():
    torch.manual_seed(0)
    model = ToySeq2Seq()
    batch = seq2seq_batch()
    loss_fn = Seq2SeqLoss(PAD, BOS, label_smoothing=0.1)
    loss, extras = loss_fn(model, batch)
    logits = model(batch.src, batch.tgt[:, :-1])
    expected = F.cross_entropy(logits.reshape(-1, 11), batch.tgt[:, 1:].reshape(-1), ignore_index=PAD, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)
    mask = batch.tgt[:, 1:] != PAD
    accuracy = (logits.argmax(-1) == batch.tgt[:, 1:])[mask].float().mean()
    torch.testing.assert_close(extras["accuracy"], accuracy)
    torch.testing.assert_close(loss_fn(model, (batch.src, batch.tgt))[0], loss)
    with pytest.raises(TypeError, match="Seq2SeqBatch\\(src, tgt\\) or a \\(src, tgt\\) pair, got tuple of length 3"):
        loss_fn(model, (batch.src, batch.tgt, batch.tgt))
    with pytest.raises(ValueError, match="'tgt' to be an int64 tensor \\[B, length\\]"):
        loss_fn(model, (batch.src, batch.tgt.float()))


def test_scheduled_sampling_with_eps_one_is_teacher_forcing():
    batch = seq2seq_batch()
    state = T.TrainState(step=0)
    model = ToySeq2Seq(dropout=0.3)
    torch.manual_seed(5)
    plain, _ = Seq2SeqLoss(PAD, BOS)(model, batch, state)
    torch.manual_seed(5)
    sampled, extras = Seq2SeqLoss(PAD, BOS, scheduled_sampling=ScheduledSampling("linear", k=1.0))(model, batch, state)
    assert extras["teacher_forcing"] == 1.0
    assert torch.equal(plain, sampled)


def test_scheduled_sampling_with_eps_zero_feeds_model_predictions():
    batch = seq2seq_batch()
    model = MockSeq2Seq()
    loss_fn = Seq2SeqLoss(PAD, BOS, scheduled_sampling=ScheduledSampling("linear", k=0.0))
    loss, _ = loss_fn(model, batch, T.TrainState(step=7))
    loss.backward()
    assert model.scale.grad is not None
    (gold, grad_1), (mixed, grad_2) = model.calls
    assert not grad_1 and grad_2  # pass 1 without, pass 2 with gradient
    tgt_in = batch.tgt[:, :-1]
    assert torch.equal(gold, tgt_in)
    predicted = model.predicted(tgt_in)  # predicted[:, t] is the guess for position t + 1
    for b in range(tgt_in.shape[0]):
        for t in range(tgt_in.shape[1]):
            if t == 0 or tgt_in[b, t] == PAD:
                assert mixed[b, t] == tgt_in[b, t]  # BOS and pads are kept
            else:
                assert mixed[b, t] == predicted[b, t - 1]


def test_scheduled_sampling_replaces_a_fraction_one_minus_eps_and_never_bos_tokens():
    torch.manual_seed(0)
    model = MockSeq2Seq(vocab=1000)
    tgt_in = torch.randint(3, 1000, (64, 64))
    tgt_in[:, 0] = BOS
    tgt_in[:, 10] = BOS  # a BOS id inside a sequence is not replaced either
    loss_fn = Seq2SeqLoss(PAD, BOS, scheduled_sampling=ScheduledSampling("linear", k=0.3))
    mixed = loss_fn.mix_predictions(model, tgt_in[:, :4], tgt_in, 0.3)
    predicted = torch.cat([tgt_in[:, :1], model.predicted(tgt_in)[:, :-1]], dim=1)
    replaced = (mixed != tgt_in) & (mixed == predicted)
    assert not replaced[:, [0, 10]].any()
    assert abs(replaced.float().sum().item() / (64 * 62) - 0.7) < 0.03


def test_scheduled_sampling_can_sample_and_is_off_in_eval_mode():
    batch = seq2seq_batch()
    tgt_in = batch.tgt[:, :-1]
    sampling = Seq2SeqLoss(PAD, BOS, scheduled_sampling=ScheduledSampling("linear", k=0.0, sample=True))
    argmax = Seq2SeqLoss(PAD, BOS, scheduled_sampling=ScheduledSampling("linear", k=0.0))
    sharp = MockSeq2Seq(sharpness=100.0)  # a sample is the argmax up to probability 12 e^-100
    assert torch.equal(sampling.mix_predictions(sharp, batch.src, tgt_in, 0.0), argmax.mix_predictions(sharp, batch.src, tgt_in, 0.0))
    flat = MockSeq2Seq(vocab=50, sharpness=0.0)  # uniform: samples spread, the argmax would always be token 0
    torch.manual_seed(0)
    replaceable = (tgt_in != PAD) & (torch.arange(tgt_in.shape[1]) > 0)
    sampled = torch.cat([sampling.mix_predictions(flat, batch.src, tgt_in, 0.0)[replaceable] for _ in range(5)])
    assert len(set(sampled.tolist())) > 20
    sharp.calls.clear()
    sharp.eval()
    sampling(sharp, batch, T.TrainState())
    assert len(sharp.calls) == 1 and torch.equal(sharp.calls[0][0], tgt_in)  # teacher forcing in eval mode


def test_seq2seq_collator_pads_right():
    batch = Seq2SeqCollator(pad_id=PAD)([([4, 5, 6], torch.tensor([BOS, 4, EOS])), ([7], [BOS, 7, 8, EOS])])
    assert torch.equal(batch.src, torch.tensor([[4, 5, 6], [7, 0, 0]]))
    assert torch.equal(batch.tgt, torch.tensor([[BOS, 4, EOS, PAD], [BOS, 7, 8, EOS]]))
    with pytest.raises(ValueError, match="Expected \\(src, tgt\\) pairs, got an item of length 3 at position 1"):
        Seq2SeqCollator(PAD)([([1], [1, 2]), ([1], [1], [2])])


def test_fit_trains_a_seq2seq_model_with_scheduled_sampling():
    torch.manual_seed(0)
    pairs = []
    for _ in range(24):
        tokens = torch.randint(3, 11, (int(torch.randint(1, 5, ())),)).tolist()
        pairs.append((tokens, [BOS, *tokens, EOS]))
    model = ToySeq2Seq(dropout=0.1)
    loss_fn = Seq2SeqLoss(PAD, BOS, label_smoothing=0.1, scheduled_sampling=ScheduledSampling("exponential", k=0.9))
    config = TrainConfig(epochs=2, batch_size=8, lr=0.05, log_every=1, device="cpu")  # with a (hidden) progress bar
    result = fit(model, pairs, loss_fn=loss_fn, config=config, collate_fn=Seq2SeqCollator(PAD), val_data=pairs[:8])
    train_events = [e for e in result.history if e["event"] == "train"]
    assert [e["train_teacher_forcing"] for e in train_events] == pytest.approx([0.9**i for i in range(6)])
    assert {"train_loss", "train_accuracy"} <= set(train_events[0])
    assert {"val_loss", "val_accuracy"} <= set(result.history[-1])


# ---------------------------------------------------------------------- BLEU
def test_corpus_bleu_matches_the_hand_computed_value():
    pytest.importorskip("sacrebleu")
    # clipped n-gram precisions 5/6, 3/5, 2/4, 1/3, brevity penalty 1 (equal lengths)
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(expected, abs=1e-9)
    assert corpus_bleu(["a b c d e", "x y z w"], ["a b c d e", "x y z w"]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="one reference per hypothesis, got 2 hypotheses and 1 references"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="got a single str"):
        corpus_bleu("a b", "a b")
    with pytest.raises(TypeError, match="hypotheses to be strings, got list at position 0; decode"):
        corpus_bleu([[1, 2]], ["a"])


def test_early_stopping_on_val_bleu_keeps_the_best_model(tmp_path):
    pytest.importorskip("sacrebleu")
    references = ["the cat sat on the mat", "a dog ran in the park today"]
    hypotheses_per_validation = [
        ["the dog", "a cat ran"],  # poor
        list(references),  # perfect: BLEU 100 at step 2
        ["the cat sat on a mat", "a dog ran in a park today"],
        ["the cat sat", "a dog ran"],
    ]
    calls = []

    def bleu(model, val_data):
        calls.append(model.training)
        return {"val_bleu": corpus_bleu(hypotheses_per_validation[len(calls) - 1], references)}

    snapshots = {}
    model = mlp()
    config = TrainConfig(max_steps=20, batch_size=8, eval_every=1, monitor="val_bleu", mode="max", patience=2, **CPU)
    result = fit(model, regression_data(), loss_fn=mse, config=config, evaluate_fn=bleu, out_dir=tmp_path,
                 callbacks=[lambda state: snapshots.setdefault(state.step, params(model))])
    assert result.stopped_early and result.steps == 4 and calls == [False] * 4  # evaluated in eval mode
    assert result.best_metric == pytest.approx(100.0) and result.best_step == 2
    best = mlp(seed=1)
    info = load_checkpoint(tmp_path / "best.pt", best)
    assert info.kind == "best" and info.step == 2 and info.metrics["val_bleu"] == pytest.approx(100.0)
    for name, value in best.state_dict().items():
        assert torch.equal(value, snapshots[2][name])
    with pytest.raises(ValueError, match="holds no optimizer state.*'best' file"):
        load_checkpoint(tmp_path / "best.pt", best, torch.optim.SGD(best.parameters(), lr=0.1))


def test_without_patience_training_runs_to_the_end_and_picks_the_minimum():
    values = iter([3.0, 1.0, 2.0, 0.5, 4.0, 4.0])
    config = TrainConfig(max_steps=6, batch_size=8, eval_every=1, **CPU)
    result = fit(mlp(), regression_data(), loss_fn=mse, config=config, evaluate_fn=lambda m, d: {"val_loss": next(values)})
    assert not result.stopped_early and result.steps == 6
    assert (result.best_metric, result.best_step) == (0.5, 4)


# ---------------------------------------------------------------------- schedules
def test_lr_multiplier_tables():
    linear = [lr_multiplier(i, schedule="linear", warmup_steps=3, total_steps=10) for i in range(10)]
    assert linear == pytest.approx([1 / 3, 2 / 3, 1, 1, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7])
    cosine = [lr_multiplier(i, schedule="cosine", warmup_steps=2, total_steps=6) for i in range(6)]
    assert cosine == pytest.approx([0.5, 1, 1, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2])
    constant = [lr_multiplier(i, schedule="constant", warmup_steps=4) for i in range(6)]
    assert constant == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1])
    assert [lr_multiplier(i, schedule="inverse_sqrt") for i in range(4)] == pytest.approx([1, 2**-0.5, 3**-0.5, 0.5])
    with pytest.raises(ValueError, match="schedule='linear' needs total_steps"):
        lr_multiplier(3, schedule="linear")


def test_inverse_sqrt_scheduler_reproduces_vaswani_et_al():
    d_model, warmup = 512, 4000
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=d_model**-0.5 * warmup**-0.5)
    scheduler = make_scheduler(optimizer, "inverse_sqrt", warmup_steps=warmup)
    lrs = []
    for _ in range(10_000):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for n in (1, 2, 100, 3999, 4000, 4001, 10_000):  # 1-based step number
        assert lrs[n - 1] == pytest.approx(d_model**-0.5 * min(n**-0.5, n * warmup**-1.5), rel=1e-12)


def test_fit_uses_the_scheduled_lr_at_every_step():
    recorder = Recorder()
    config = TrainConfig(epochs=2, batch_size=8, lr=0.1, schedule="linear", warmup_steps=2, **CPU)
    fit(mlp(), regression_data(), loss_fn=mse, config=config, callbacks=[recorder])
    assert [lr for _, _, lr, _, _ in recorder.steps] == pytest.approx([0.1 * f for f in (0.5, 1, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6)])


# ---------------------------------------------------------------------- the loop
def test_fit_reduces_the_loss_and_reports_positions():
    data = regression_data(40)
    model = mlp()
    before = evaluate(model, data, loss_fn=mse)["val_loss"]
    recorder = Recorder()
    config = TrainConfig(epochs=3, batch_size=8, grad_accumulation=2, lr=0.02, **CPU)
    result = fit(model, data, loss_fn=mse, config=config, callbacks=[recorder])
    # 5 batches per epoch, groups of 2 -> steps end after batches 2, 4 and 5 (the epoch end)
    assert [(s, e, b) for s, _, _, e, b in recorder.steps] == [
        (1, 0, 2), (2, 0, 4), (3, 1, 0), (4, 1, 2), (5, 1, 4), (6, 2, 0), (7, 2, 2), (8, 2, 4), (9, 3, 0)]
    assert result.steps == 9 and result.epochs_completed == 3.0 and result.out_dir is None
    assert evaluate(model, data, loss_fn=mse)["val_loss"] < 0.5 * before


def test_every_epoch_visits_each_sample_once_in_a_seeded_order():
    class Indexed(Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, index):
            return torch.tensor([float(index)])

    def run(seed):
        seen = []

        def loss_fn(model, batch, state):
            seen.append(batch[:, 0].long().tolist())
            return model(batch).mean()

        fit(nn.Linear(1, 1), Indexed(), loss_fn=loss_fn, config=TrainConfig(epochs=3, batch_size=4, seed=seed, **CPU))
        return seen

    seen = run(0)
    assert [len(b) for b in seen] == [4, 4, 2] * 3
    epochs = [sum(seen[i : i + 3], []) for i in (0, 3, 6)]
    assert all(sorted(order) == list(range(10)) for order in epochs)
    assert epochs[0] != epochs[1] and run(0) == seen and run(1) != seen


def test_gradient_accumulation_equals_one_big_batch():
    data = regression_data(32)
    big, small = mlp(), mlp()
    common = dict(epochs=2, lr=0.05, optimizer="sgd", momentum=0.9, **CPU)
    fit(big, data, loss_fn=mse, config=TrainConfig(batch_size=8, **common))
    fit(small, data, loss_fn=mse, config=TrainConfig(batch_size=4, grad_accumulation=2, **common))
    for name, value in big.state_dict().items():
        torch.testing.assert_close(small.state_dict()[name], value, atol=1e-6, rtol=1e-6)


def test_gradient_clipping_scales_the_update_to_the_max_norm():
    data = regression_data(16)
    model = mlp()
    start = params(model)
    x, y = torch.stack([d[0] for d in data]), torch.stack([d[1] for d in data])
    grads = torch.autograd.grad(F.mse_loss(model(x), y), list(model.parameters()))
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    assert norm > 0.1
    config = TrainConfig(max_steps=1, batch_size=16, lr=1.0, optimizer="sgd", clip_grad_norm=0.1, log_every=1, **CPU)
    result = fit(model, data, loss_fn=mse, config=config)
    for (name, value), g in zip(model.named_parameters(), grads):
        torch.testing.assert_close(value.detach(), start[name] - g * 0.1 / (norm + 1e-6))
    assert result.history[0]["grad_norm"] == pytest.approx(norm.item(), rel=1e-5)


def test_evaluate_is_the_sample_mean_and_restores_training_mode():
    data = regression_data(10)
    model = mlp(dropout=0.5)
    model.train()
    metrics = evaluate(model, data, loss_fn=mse, batch_size=4, prefix="test_")  # batches of 4, 4 and 2
    model.eval()
    x, y = torch.stack([d[0] for d in data]), torch.stack([d[1] for d in data])
    assert list(metrics) == ["test_loss"]
    assert metrics["test_loss"] == pytest.approx(F.mse_loss(model(x), y).item(), rel=1e-6)


def test_move_to_device_handles_containers():
    @dataclasses.dataclass
    class Pair:
        a: torch.Tensor
        label: str

    class Named(NamedTuple):
        x: torch.Tensor
        y: list

    class HasTo:
        def to(self, device):
            return ("moved", str(device))

    batch = {"named": Named(torch.ones(2), [torch.zeros(1), 3]), "pair": Pair(torch.ones(1), "keep"), "obj": HasTo(),
             "tuple": (torch.ones(1),), "text": "abc"}
    moved = move_to_device(batch, "meta")
    assert isinstance(moved["named"], Named) and moved["named"].x.is_meta and moved["named"].y[0].is_meta
    assert moved["named"].y[1] == 3
    assert isinstance(moved["pair"], Pair) and moved["pair"].a.is_meta and moved["pair"].label == "keep"
    assert moved["obj"] == ("moved", "meta") and moved["tuple"][0].is_meta and moved["text"] == "abc"


def test_metrics_jsonl_has_one_object_per_event(tmp_path):
    config = TrainConfig(epochs=2, batch_size=8, log_every=2, **CPU)
    result = fit(mlp(), regression_data(), loss_fn=mse, config=config, val_data=regression_data(8, seed=1), out_dir=tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == result.history
    assert [(e["event"], e["step"]) for e in lines] == [
        ("train", 2), ("train", 4), ("validation", 4), ("train", 6), ("train", 8), ("validation", 8)]
    assert {"step", "epoch", "train_loss", "lr", "elapsed"} <= set(lines[0])
    assert {"step", "epoch", "val_loss", "lr", "elapsed"} <= set(lines[2])
    assert lines[2]["epoch"] == 1.0 and lines[0]["epoch"] == 0.5


# ---------------------------------------------------------------------- checkpoints and exact resume
class NoisyData(Dataset):
    """Adds noise from Python's ``random`` and numpy's global RNG, so a resume must restore both."""

    def __init__(self, n: int = 40) -> None:
        self.items = regression_data(n)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        x, y = self.items[index]
        return x + 0.01 * random.random() + 0.01 * float(np.random.rand()), y


RESUME_CONFIG = TrainConfig(
    epochs=3, batch_size=8, grad_accumulation=2, lr=0.01, schedule="linear", warmup_steps=2, clip_grad_norm=1.0,
    eval_every=3, log_every=2, **CPU,
)  # 40 samples: 5 batches and 3 optimizer steps per epoch, 9 steps


@pytest.mark.parametrize("interrupt, batch_norm", [("callback", False), ("loss_fn", False), ("loss_fn", True)])
def test_resume_after_an_interruption_is_exact(tmp_path, interrupt, batch_norm):
    """With batch_norm, the interrupted step's forward pass has already moved the running
    statistics: the checkpoint must hold those of the last completed step."""
    data, val = NoisyData(), regression_data(8, seed=1)
    reference = Recorder()
    model_a = mlp(dropout=0.3, batch_norm=batch_norm)
    result_a = fit(model_a, data, loss_fn=mse, config=RESUME_CONFIG, val_data=val, out_dir=tmp_path / "a",
                   callbacks=[reference])

    calls = []

    def failing_mse(model, batch, state):
        if state.training:
            calls.append(state.step)
            if interrupt == "loss_fn" and len(calls) == 9:  # the second batch of step 5: dropout already drew
                raise KeyboardInterrupt
        return mse(model, batch, state)

    model_b = mlp(dropout=0.3, batch_norm=batch_norm)
    with pytest.raises(KeyboardInterrupt):
        fit(model_b, data, loss_fn=failing_mse, config=RESUME_CONFIG, val_data=val, out_dir=tmp_path / "b",
            callbacks=[Recorder(raise_at=4 if interrupt == "callback" else None)])
    info = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert (info.step, info.epoch, info.batch_in_epoch) == (4, 1, 2)  # mid-epoch

    resumed = Recorder()
    model_c = mlp(seed=99, dropout=0.3, batch_norm=batch_norm)  # other initial weights: everything comes from the checkpoint
    random.seed(99), np.random.seed(99)  # like a new process: every RNG state must come from the checkpoint
    result_c = fit(model_c, data, loss_fn=mse, config=RESUME_CONFIG, val_data=val, out_dir=tmp_path / "b",
                   callbacks=[resumed])
    assert result_c.resumed_from == 4 and result_c.steps == 9
    assert resumed.steps == reference.steps[4:]  # identical losses, lrs and positions, exactly
    for name, value in model_a.state_dict().items():
        assert torch.equal(model_c.state_dict()[name], value), name

    def without_time(events):
        return [{k: v for k, v in e.items() if k != "elapsed"} for e in events]

    assert without_time(result_c.history) == without_time(result_a.history)
    written = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert without_time(written) == without_time(result_a.history)
    assert (result_c.best_metric, result_c.best_step) == (result_a.best_metric, result_a.best_step)


def test_checkpoint_loads_with_weights_only_and_holds_everything(tmp_path):
    config = TrainConfig(epochs=1, batch_size=8, patience=3, **CPU)
    model = mlp()
    fit(model, regression_data(), loss_fn=mse, config=config, val_data=regression_data(8, seed=1), out_dir=tmp_path)
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "step", "epoch", "batch_in_epoch", "best_metric", "bad_validations",
            "rank_state", "config", "history"} <= set(payload)
    assert payload["config"] == config.to_dict() and payload["step"] == 4 and payload["epoch"] == 1
    rng = payload["rank_state"]["rng"]
    assert rng["torch"].dtype == torch.uint8 and rng["numpy"]["keys"].shape == (624,)
    assert len(rng["python"]["state"]) == 625
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    fresh = mlp(seed=5)
    optimizer = torch.optim.AdamW(fresh.parameters())
    info = load_checkpoint(tmp_path / "checkpoint.pt", fresh, optimizer)
    assert info.kind == "checkpoint" and info.step == 4
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
    assert optimizer.state_dict()["state"][0]["step"] == 4


def test_resuming_a_finished_run_does_nothing_and_a_changed_batch_size_is_refused(tmp_path):
    config = TrainConfig(epochs=1, batch_size=8, **CPU)
    model = mlp()
    first = fit(model, regression_data(), loss_fn=mse, config=config, out_dir=tmp_path)
    recorder = Recorder()
    again = fit(model, regression_data(), loss_fn=mse, config=config, out_dir=tmp_path, callbacks=[recorder])
    assert recorder.steps == [] and again.steps == first.steps == 4 and again.resumed_from == 4
    with pytest.raises(ValueError, match="data order depends on batch_size.*8 -> 4.*resume=False"):
        fit(model, regression_data(), loss_fn=mse, config=dataclasses.replace(config, batch_size=4), out_dir=tmp_path)
    restarted = Recorder()
    fit(model, regression_data(), loss_fn=mse, config=config, out_dir=tmp_path, resume=False, callbacks=[restarted])
    assert len(restarted.steps) == 4


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"version": 1}, path)

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"version": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_an_exception_without_out_dir_just_propagates():
    def boom(state):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fit(mlp(), regression_data(), loss_fn=mse, config=TrainConfig(batch_size=8, **CPU), callbacks=[boom])


def test_load_checkpoint_rejects_other_files(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a graphattn.train checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


# ---------------------------------------------------------------------- bad input
def test_config_errors():
    with pytest.raises(ValueError, match="'batch_size' to be an int >= 1, got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="Unknown optimizer 'lion'; expected one of 'adamw', 'adam', 'sgd'"):
        TrainConfig(optimizer="lion")
    with pytest.raises(ValueError, match="Unknown schedule 'step'"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="mode 'min' or 'max', got 'best'"):
        TrainConfig(mode="best")
    with pytest.raises(ValueError, match="clip_grad_norm > 0 or None, got 0"):
        TrainConfig(clip_grad_norm=0)


def test_fit_errors():
    data, config = regression_data(), TrainConfig(batch_size=8, max_steps=2, **CPU)
    with pytest.raises(ValueError, match="patience=2 needs validation; pass val_data"):
        fit(mlp(), data, loss_fn=mse, config=dataclasses.replace(config, patience=2))
    with pytest.raises(ValueError, match="metrics \\['val_bleu'\\] have no 'val_loss'.*set monitor"):
        fit(mlp(), data, loss_fn=mse, config=config, evaluate_fn=lambda m, d: {"val_bleu": 1.0})
    with pytest.raises(TypeError, match="scalar tensor or \\(scalar tensor, dict.*got a tensor of shape \\[8, 1\\]"):
        fit(mlp(), data, loss_fn=lambda m, b, s: (m(b[0]) - b[1]) ** 2, config=config)
    with pytest.raises(ValueError, match="loss without gradient"):
        fit(mlp(), data, loss_fn=lambda m, b, s: mse(m, b, s).detach(), config=config)

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(data)

    with pytest.raises(TypeError, match="map-style dataset.*got Stream"):
        fit(mlp(), Stream(), loss_fn=mse, config=config)
    with pytest.raises(ValueError, match="yields no batch: 32 samples, batch_size=64, drop_last=True"):
        fit(mlp(), data, loss_fn=mse, config=TrainConfig(batch_size=64, drop_last=True, **CPU))


def test_init_distributed_needs_every_torchrun_variable(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert T.init_distributed() == T.DistributedInfo(0, 1, 0, False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="Found WORLD_SIZE, RANK but not LOCAL_RANK, MASTER_ADDR, MASTER_PORT.*torchrun"):
        T.init_distributed()


# ---------------------------------------------------------------------- two processes
def _load_worker():
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _launch_workers(result_file: Path, out_dir: Path) -> list[subprocess.Popen]:
    """Two worker processes with the environment torchrun would give them."""
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(T.find_free_port()),
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    return [
        subprocess.Popen([sys.executable, str(WORKER), str(result_file), str(out_dir)], cwd=REPO,
                         env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]


def _wait(processes: list[subprocess.Popen]) -> list[str]:
    try:
        return [p.communicate(timeout=90)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow  # about 10 s (two processes importing torch and building DDP); part of the default suite
def test_two_process_ddp_matches_a_single_process(tmp_path):
    result_file, out_dir = tmp_path / "ddp.pt", tmp_path / "ddp"
    processes = _launch_workers(result_file, out_dir)
    worker = _load_worker()  # meanwhile, the same problem in this process
    model, train_data, val_data = worker.make_problem()
    single = fit(model, train_data, loss_fn=worker.loss_fn, config=worker.CONFIG, val_data=val_data)
    outputs = _wait(processes)
    if any(p.returncode for p in processes) and "address already in use" in "".join(outputs).lower():
        processes = _launch_workers(result_file, out_dir)  # the free port was taken meanwhile: once more
        outputs = _wait(processes)
    assert [p.returncode for p in processes] == [0, 0], "\n".join(outputs)
    ddp = torch.load(result_file, weights_only=True)
    assert ddp["world_size"] == 2 and ddp["steps"] == single.steps == 6
    assert "batch_size=7 (the global batch) is not divisible by the world size 2" in ddp["error"]
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ddp["state_dict"][name], value, atol=1e-6, rtol=1e-5)
    ddp_events = [(e["event"], e["step"]) for e in ddp["history"]]
    assert ddp_events == [(e["event"], e["step"]) for e in single.history]
    for mine, theirs in zip(single.history, ddp["history"]):
        for key in ("train_loss", "val_loss", "lr", "grad_norm"):
            if key in mine:
                assert theirs[key] == pytest.approx(mine[key], rel=1e-5, abs=1e-7), (key, mine["step"])
    # rank 0 wrote the files, once; rank 1 only its RNG state
    assert sorted(p.name for p in out_dir.iterdir()) == ["best.pt", "checkpoint.pt", "checkpoint.rank1.pt", "metrics.jsonl"]
    assert len((out_dir / "metrics.jsonl").read_text().splitlines()) == len(ddp["history"])
    saved = torch.load(out_dir / "checkpoint.pt", weights_only=True)["model"]  # the unwrapped module's names
    assert sorted(saved) == sorted(model.state_dict()) and all(torch.equal(saved[k], v) for k, v in ddp["state_dict"].items())


def test_fit_trains_in_train_mode_even_after_an_evaluation_in_eval_mode() -> None:
    seen: list[bool] = []

    def loss_fn(model, batch, state):
        if state.training:
            seen.append(model.training)
        x, y = batch
        return nn.functional.mse_loss(model(x), y)

    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 1))
    model.eval()  # e.g. evaluated before training
    data = [(torch.randn(3), torch.randn(1)) for _ in range(8)]
    fit(model, data, loss_fn=loss_fn, config=TrainConfig(epochs=1, batch_size=4, progress=False, device="cpu"),
        val_data=data[:4])
    assert seen == [True, True]


def test_budget_cosine_follows_steps_or_time_whichever_ends_first() -> None:
    now = [0.0]
    schedule = T.BudgetCosine(warmup=2, total_steps=102, seconds=10.0, clock=lambda: now[0])
    assert schedule(0) == 0.5 and schedule(1) == 1.0  # warm-up (the clock starts here)
    assert schedule(52) == pytest.approx(0.5)  # half the steps, no time used
    now[0] = 7.5
    assert schedule(52) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))  # time is further along
    now[0] = 20.0
    assert schedule(3) == 0.0
    time_only = T.BudgetCosine(seconds=4.0, clock=lambda: now[0])
    assert time_only(0) == 1.0
    with pytest.raises(ValueError, match="budget"):
        T.BudgetCosine(warmup=1)


class _CountingCallback(T.Callback):
    """A stateful callback: counts the steps it has seen, over resumes."""

    def __init__(self) -> None:
        self.seen = 0

    def on_step_end(self, state) -> None:
        self.seen += 1

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state) -> None:
        self.seen = state["seen"]


def test_callback_state_travels_in_the_checkpoint_and_must_match_on_resume(tmp_path: Path) -> None:
    data = [(torch.randn(3), torch.randn(1)) for _ in range(8)]

    def run(epochs: int, callbacks):
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        config = T.TrainConfig(epochs=epochs, batch_size=2, progress=False, device="cpu")
        T.fit(model, data, loss_fn=lambda m, b, s: F.mse_loss(m(b[0]), b[1]), config=config, callbacks=callbacks,
              out_dir=tmp_path, resume=True)

    first = _CountingCallback()
    run(1, [first])
    assert first.seen == 4
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["callbacks"] == [{"seen": 4}]
    resumed = _CountingCallback()
    run(2, [resumed])  # continues from step 4 with the saved count
    assert resumed.seen == 8
    with pytest.raises(ValueError, match="stateful callbacks"):
        run(3, [])  # the checkpoint holds a callback state this run has no callback for
