"""The Transformer models through the training loop: Seq2SeqLoss (label smoothing, scheduled
sampling) on the real EncoderDecoder, and exact resume of an interrupted run with dropout."""
from __future__ import annotations

import pytest
import torch

from graphattn.data.algorithmic import collate, make_task, vocab_size
from graphattn.models import EncoderDecoder, TransformerConfig
from graphattn.train import Callback, ScheduledSampling, Seq2SeqLoss, TrainConfig, fit, sequence_cross_entropy


def model_and_data(dropout: float = 0.1):
    config = TransformerConfig(
        vocab_size=vocab_size("reverse", 6), d_model=16, num_heads=2, num_layers=1, ff_dim=32, dropout=dropout,
        encoder_pattern="local(window=2)", decoder_pattern="local(window=2, causal=True)", position="relative",
    )
    torch.manual_seed(0)
    return EncoderDecoder(config), make_task("reverse", 48, min_length=3, max_length=7, num_symbols=6, seed=0)


class Interrupt(Callback):
    def __init__(self, at: int | None) -> None:
        self.at, self.losses = at, []

    def on_step_end(self, state) -> None:
        self.losses.append(float(state.loss))
        if state.step == self.at:
            raise KeyboardInterrupt


def test_interrupted_transformer_training_resumes_exactly(tmp_path) -> None:
    config = TrainConfig(epochs=2, batch_size=8, lr=3e-3, schedule="inverse_sqrt", warmup_steps=3, clip_grad_norm=1.0,
                         eval_every=4, device="cpu", progress=False)
    loss = Seq2SeqLoss(pad_id=0, label_smoothing=0.1, scheduled_sampling=ScheduledSampling("inverse_sigmoid", k=4.0))
    model_a, data = model_and_data()
    straight = Interrupt(None)
    fit(model_a, data, loss_fn=loss, collate_fn=collate, val_data=data[:8], config=config, out_dir=tmp_path / "a",
        callbacks=[straight])

    model_b, _ = model_and_data()
    with pytest.raises(KeyboardInterrupt):
        fit(model_b, data, loss_fn=loss, collate_fn=collate, val_data=data[:8], config=config, out_dir=tmp_path / "b",
            callbacks=[Interrupt(5)])
    torch.manual_seed(123)  # a new process: every random state must come from the checkpoint
    model_c, _ = model_and_data()
    resumed = Interrupt(None)
    result = fit(model_c, data, loss_fn=loss, collate_fn=collate, val_data=data[:8], config=config,
                 out_dir=tmp_path / "b", callbacks=[resumed])
    assert result.resumed_from == 5 and result.steps == 12
    assert resumed.losses == straight.losses[5:]
    for name, value in model_a.state_dict().items():
        assert torch.equal(model_c.state_dict()[name], value), name


def test_seq2seq_loss_on_the_encoder_decoder() -> None:
    model, data = model_and_data(dropout=0.0)
    src, tgt = collate(data[:6])
    plain = Seq2SeqLoss(pad_id=0, label_smoothing=0.1)
    value, logs = plain(model, (src, tgt), None)
    expected = sequence_cross_entropy(model(src, tgt[:, :-1]), tgt[:, 1:], 0, label_smoothing=0.1)
    torch.testing.assert_close(value, expected)
    value.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
