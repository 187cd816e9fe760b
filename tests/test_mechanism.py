"""Tests for graphattn.nn.mechanism: the mechanism contract, specs and the layer / model wiring."""
from __future__ import annotations

import pytest
import torch

from graphattn.models import EncoderDecoder, MaskedLM, TransformerConfig
from graphattn.nn.mechanism import HeadGroups, MechanismDims, MechanismSpec, SequenceLayout, SoftmaxAttention
from graphattn.patterns import PatternSpec, sequence_batch

DTYPE = torch.float64


def config(**overrides) -> TransformerConfig:
    base = dict(vocab_size=23, d_model=16, num_heads=4, num_layers=2, ff_dim=24, dropout=0.0, mask_id=4)
    base.update(overrides)
    return TransformerConfig(**base)


def padded(lengths: list[int], generator: torch.Generator) -> torch.Tensor:
    out = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        out[row, :length] = torch.randint(5, 23, (length,), generator=generator)
    return out


def test_spec_parsing_printing_and_errors() -> None:
    spec = MechanismSpec.parse("heads(softmax, softmax(dropout=0.0))")
    assert str(spec) == "heads(softmax, softmax(dropout=0.0))"
    assert MechanismSpec.parse(str(spec)) == spec
    assert MechanismSpec.parse("softmax").is_softmax and MechanismSpec.parse("softmax").build(MechanismDims(4, 8, 8, 16)) is None
    with pytest.raises(ValueError, match="Unknown attention mechanism 'nope'"):
        MechanismSpec.parse("nope(x=1)")
    with pytest.raises(ValueError, match="cannot be nested"):
        MechanismSpec.parse("heads(heads(softmax))")
    with pytest.raises(ValueError, match="must be a literal"):
        MechanismSpec.parse("softmax(dropout=x)")
    with pytest.raises(ValueError, match="3 equal groups"):
        MechanismSpec.parse("heads(softmax, softmax, softmax)").build(MechanismDims(4, 8, 8, 16))


def test_head_groups_of_softmax_equal_softmax_over_the_pattern(generator) -> None:
    lengths = torch.tensor([5, 3])
    graph = sequence_batch(PatternSpec.parse("local(window=1)"), lengths, query_slots=5)
    q, k, v = (torch.randn(2, 5, 4, 3, generator=generator, dtype=DTYPE) for _ in range(3))
    bias = torch.randn(graph.num_edges, 4, generator=generator, dtype=DTYPE)
    layout = SequenceLayout(lengths, lengths, graph=graph, bias=bias)
    whole = SoftmaxAttention()(q, k, v, layout)
    split = HeadGroups([SoftmaxAttention(), SoftmaxAttention()])(q, k, v, layout)
    torch.testing.assert_close(split, whole)
    assert bool((whole[1, 3:] == 0).all())  # padded queries attend nothing


@pytest.mark.parametrize("attention", ["softmax(dropout=0.0)", "heads(softmax, softmax)"])
def test_models_with_softmax_mechanisms_equal_the_plain_path(attention: str, generator) -> None:
    torch.manual_seed(0)
    plain = EncoderDecoder(config(encoder_pattern="local(window=2)", position="rotary")).to(DTYPE).eval()
    other = EncoderDecoder(config(encoder_pattern="local(window=2)", position="rotary", encoder_attention=attention,
                                  decoder_attention=attention)).to(DTYPE).eval()
    other.load_state_dict(plain.state_dict())
    src, tgt = padded([6, 4, 2], generator), padded([3, 5, 1], generator)
    tgt[:, 0] = 1
    torch.testing.assert_close(other(src, tgt), plain(src, tgt))
    assert TransformerConfig.from_dict(other.config.to_dict()) == other.config


def test_mechanism_configuration_errors() -> None:
    with pytest.raises(ValueError, match="does not use the pattern local"):
        config(encoder_pattern="local(window=2)", encoder_attention="lsh(chunk_size=4)")
    config(encoder_pattern="local(window=2)", encoder_attention="heads(softmax, lsh(chunk_size=4))")  # softmax heads use it
    with pytest.raises(ValueError, match="per-edge bias that only softmax"):
        config(position="relative", encoder_attention="lsh(chunk_size=4)")
    with pytest.raises(ValueError, match="has no causal variant"):
        MaskedLM(config(decoder_attention="sinkhorn(bucket_size=4)"))  # MaskedLM has no decoder: fine
        from graphattn.models import CausalLM

        CausalLM(config(decoder_attention="sinkhorn(bucket_size=4)"))
    with pytest.raises(ValueError, match="Could not build attention mechanism lsh"):
        EncoderDecoder(config(encoder_attention="lsh(buckets=4)"))


@pytest.mark.parametrize("attention", [
    "lsh(chunk_size=4, num_buckets=2)", "routing(num_clusters=2, window=4)", "sinkhorn(bucket_size=4)",
    "heads(softmax, lsh(chunk_size=4))", "linear", "performer(num_features=16)", "linformer(projected_length=6)",
    "compressed(stride=2)", "synthesizer(kind='dense')", "synthesizer(kind='random')",
    "heads(softmax, linear, performer(num_features=8), synthesizer(kind='random'))",
])
def test_encoders_run_every_mechanism_batch_invariantly(attention: str, generator) -> None:
    """Through MaskedLM: finite outputs, gradients everywhere used, and each sequence's output does
    not depend on the others in its batch (eval mode: fixed hashes / centroids)."""
    torch.manual_seed(0)
    model = MaskedLM(config(encoder_attention=attention, max_positions=16)).to(DTYPE)
    ids = padded([9, 5, 7], generator)
    loss = model(ids).logsumexp(-1).mean()
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        batched = model(ids)
        for row, length in enumerate([9, 5, 7]):
            alone = model(ids[row:row + 1, :length])
            torch.testing.assert_close(batched[row, :length], alone[0], rtol=1e-9, atol=1e-9)


def test_materialized_softmax_equals_softmax_over_the_full_and_causal_patterns(generator) -> None:
    from graphattn.nn.mechanism import MaterializedSoftmaxAttention

    lengths = torch.tensor([6, 4])
    q, k, v = (torch.randn(2, 6, 2, 3, generator=generator, dtype=DTYPE) for _ in range(3))
    for pattern, causal in (("full", False), ("causal", True)):
        graph = sequence_batch(PatternSpec.parse(pattern), lengths, query_slots=6)
        layout = SequenceLayout(lengths, lengths, causal, graph)
        torch.testing.assert_close(MaterializedSoftmaxAttention()(q, k, v, layout), SoftmaxAttention()(q, k, v, layout))
