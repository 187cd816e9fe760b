"""SequenceClassifier: pooling over real tokens only (padding never changes a sequence's logits),
gradients, any pattern or mechanism, errors."""
from __future__ import annotations

import pytest
import torch

from graphattn.models import TransformerConfig
from graphattn.models.classifier import CLASSIFIER_POOLINGS, SequenceClassifier

DTYPE = torch.float64


def small_config(**overrides) -> TransformerConfig:
    base = dict(vocab_size=20, d_model=16, num_heads=2, num_layers=2, ff_dim=24, dropout=0.0, max_positions=32)
    base.update(overrides)
    return TransformerConfig(**base)


def padded(rows: list[list[int]]) -> torch.Tensor:
    out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


@pytest.mark.parametrize("pooling", CLASSIFIER_POOLINGS)
@pytest.mark.parametrize(
    "settings",
    [
        {"encoder_pattern": "full"},
        {"encoder_pattern": "local(window=2)"},
        {"encoder_attention": "linear"},
        {"encoder_attention": "performer(num_features=16)"},
    ],
    ids=["full", "local", "linear", "performer"],
)
def test_padding_does_not_change_a_sequences_logits(pooling: str, settings: dict, generator) -> None:
    torch.manual_seed(0)
    model = SequenceClassifier(small_config(**settings), 5, pooling=pooling).to(DTYPE).eval()
    short = torch.randint(1, 20, (6,), generator=generator).tolist()
    long = torch.randint(1, 20, (11,), generator=generator).tolist()
    alone = model(padded([short]))
    batched = model(padded([long, short]))
    extra_padding = model(torch.cat([padded([short]), torch.zeros(1, 7, dtype=torch.long)], dim=1))
    assert batched.shape == (2, 5)
    torch.testing.assert_close(batched[1:], alone, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(extra_padding, alone, rtol=1e-10, atol=1e-10)


def test_pool_matches_a_hand_computed_mean_max_and_first() -> None:
    hidden = torch.arange(2 * 3 * 2, dtype=DTYPE).view(2, 3, 2)
    hidden[1, 2] = float("nan")  # a padded slot may hold anything
    lengths = torch.tensor([3, 2])
    expected = {
        "mean": torch.stack([hidden[0].mean(0), hidden[1, :2].mean(0)]),
        "max": torch.stack([hidden[0].amax(0), hidden[1, :2].amax(0)]),
        "cls": hidden[:, 0],
    }
    for pooling in CLASSIFIER_POOLINGS:
        model = SequenceClassifier(small_config(), 3, pooling=pooling)
        torch.testing.assert_close(model.pool(hidden, lengths), expected[pooling])


def test_gradients_reach_the_encoder_and_the_head() -> None:
    torch.manual_seed(0)
    model = SequenceClassifier(small_config(encoder_pattern="local(window=1)"), 4)
    ids = padded([[3, 4, 5, 6], [7, 8]])
    loss = torch.nn.functional.cross_entropy(model(ids), torch.tensor([1, 3]))
    loss.backward()
    for name in ("encoder.embedding.tokens.weight", "head.0.weight", "head.3.weight", "head.3.bias"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    attention_grads = [p.grad for n, p in model.named_parameters() if "self_attn" in n]
    assert attention_grads and all(g is not None and torch.isfinite(g).all() for g in attention_grads)


def test_gradcheck_through_a_non_softmax_mechanism() -> None:
    torch.manual_seed(0)
    config = small_config(encoder_attention="linear", num_layers=1, d_model=4, num_heads=1, ff_dim=4)
    model = SequenceClassifier(config, 3, head_dim=4).to(DTYPE)
    ids = padded([[3, 4, 5], [6, 7]])
    name = "encoder.stack.layers.0.self_attn.q_proj.weight"
    weight = dict(model.named_parameters())[name].detach().clone().requires_grad_(True)  # KeyError if renamed

    def logits(w: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, {name: w}, (ids,))

    assert torch.autograd.gradcheck(logits, (weight,))
    jacobian = torch.autograd.functional.jacobian(logits, weight)
    assert jacobian.abs().sum() > 0  # the logits do depend on the weight


def test_repr_and_config() -> None:
    model = SequenceClassifier(small_config(), 7, pooling="max")
    assert "num_classes=7, pooling='max'" in repr(model)
    assert model.config.vocab_size == 20
    model.reset_parameters()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": 3, "pooling": "sum"}, "Unknown pooling 'sum'; expected one of mean, cls, max"),
        ({"num_classes": 3, "head_dim": 0}, "head_dim"),
        ({"num_classes": 3, "head_dropout": 1.0}, "head_dropout"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SequenceClassifier(small_config(), **kwargs)


def test_bad_inputs_raise() -> None:
    with pytest.raises(TypeError, match="TransformerConfig"):
        SequenceClassifier({"vocab_size": 3}, 2)
    model = SequenceClassifier(small_config(), 3)
    with pytest.raises(ValueError, match="row 1 is all padding"):
        model(padded([[3, 4], [0, 0]]))
    with pytest.raises(ValueError, match="right-padded"):
        model(torch.tensor([[0, 3, 4]]))
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        model(torch.tensor([3, 4]))
