"""Tests for the Transformer blocks and models: equality with torch.nn.Transformer* in float64,
cached decoding == full recomputation for causal patterns, batch invariance, sparse patterns
against a dense hand-written reference, the copy mechanism, configs and errors."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from graphattn import patterns
from graphattn.models import CausalLM, Encoder, EncoderDecoder, MaskedLM, TransformerConfig, mask_tokens
from graphattn.nn import AttentionContext, TransformerLayer
from graphattn.patterns import PatternSpec

DTYPE = torch.float64


def small_config(**overrides) -> TransformerConfig:
    base = dict(vocab_size=23, d_model=16, num_heads=4, num_layers=2, ff_dim=24, dropout=0.0)
    base.update(overrides)
    return TransformerConfig(**base)


def right_padded(lengths: list[int], vocab: int, generator: torch.Generator, pad: int = 0, low: int = 4) -> torch.Tensor:
    out = torch.full((len(lengths), max(lengths)), pad, dtype=torch.long)
    for row, length in enumerate(lengths):
        out[row, :length] = torch.randint(low, vocab, (length,), generator=generator)
    return out


def randomize(module: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial values everywhere (biases and LayerNorm parameters start at 0 / 1)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.3)


# ---------------------------------------------------------------------- equality with torch
def copy_attention(ours, theirs: nn.MultiheadAttention) -> None:
    for projection, weight, bias in zip(
        (ours.q_proj, ours.k_proj, ours.v_proj), theirs.in_proj_weight.chunk(3), theirs.in_proj_bias.chunk(3)
    ):
        projection.weight.copy_(weight)
        projection.bias.copy_(bias)
    ours.out_proj.weight.copy_(theirs.out_proj.weight)
    ours.out_proj.bias.copy_(theirs.out_proj.bias)


def copy_layer(ours: TransformerLayer, theirs: nn.Module) -> None:
    with torch.no_grad():
        copy_attention(ours.self_attn, theirs.self_attn)
        ours.feed_forward.linear1.load_state_dict(theirs.linear1.state_dict())
        ours.feed_forward.linear2.load_state_dict(theirs.linear2.state_dict())
        ours.norm1.load_state_dict(theirs.norm1.state_dict())
        if ours.cross_attn is not None:
            copy_attention(ours.cross_attn, theirs.multihead_attn)
            ours.norm_cross.load_state_dict(theirs.norm2.state_dict())
            ours.norm2.load_state_dict(theirs.norm3.state_dict())
        else:
            ours.norm2.load_state_dict(theirs.norm2.state_dict())


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_matches_torch_transformer_encoder(norm_first: bool, activation: str, generator) -> None:
    config = small_config(norm_first=norm_first, activation=activation, position="none", scale_embeddings=False)
    ours = Encoder(config).to(DTYPE).eval()
    randomize(ours, generator)
    layer = nn.TransformerEncoderLayer(16, 4, 24, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first)
    theirs = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(16) if norm_first else None, enable_nested_tensor=False)
    theirs = theirs.to(DTYPE).eval()
    for our_layer, their_layer in zip(ours.stack.layers, theirs.layers):
        copy_layer(our_layer, their_layer)
    if norm_first:
        theirs.norm.load_state_dict(ours.stack.final_norm.state_dict())
    ids = right_padded([7, 4, 6], 23, generator)
    expected = theirs(ours.embedding.tokens(ids), src_key_padding_mask=ids == 0)
    got = ours(ids)
    real = ids != 0
    torch.testing.assert_close(got[real], expected[real], rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor")
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_decoder_matches_torch_transformer(norm_first: bool, generator) -> None:
    config = small_config(norm_first=norm_first, position="none", scale_embeddings=False, tie_embeddings=False)
    ours = EncoderDecoder(config).to(DTYPE).eval()
    randomize(ours, generator)
    theirs = nn.Transformer(
        16, 4, 2, 2, 24, dropout=0.0, batch_first=True, norm_first=norm_first
    ).to(DTYPE).eval()
    for our_layer, their_layer in zip(ours.encoder.stack.layers, theirs.encoder.layers):
        copy_layer(our_layer, their_layer)
    for our_layer, their_layer in zip(ours.decoder.stack.layers, theirs.decoder.layers):
        copy_layer(our_layer, their_layer)
    if norm_first:
        theirs.encoder.norm.load_state_dict(ours.encoder.stack.final_norm.state_dict())
        theirs.decoder.norm.load_state_dict(ours.decoder.stack.final_norm.state_dict())
    else:  # nn.Transformer always ends both stacks with a LayerNorm; make it the identity
        for norm in (theirs.encoder.norm, theirs.decoder.norm):
            nn.init.ones_(norm.weight), nn.init.zeros_(norm.bias)
        theirs.encoder.norm, theirs.decoder.norm = None, None
    src = right_padded([6, 3, 5], 23, generator)
    tgt = right_padded([4, 4, 2], 23, generator)
    tgt[:, 0] = config.bos_id
    causal_mask = torch.ones(tgt.size(1), tgt.size(1), dtype=torch.bool).triu(1)  # True = not allowed
    hidden = theirs(
        ours.encoder.embedding.tokens(src),
        ours.decoder.embedding.tokens(tgt),
        tgt_mask=causal_mask,
        src_key_padding_mask=src == 0,
        memory_key_padding_mask=src == 0,
        tgt_key_padding_mask=tgt == 0,
    )
    expected = ours.decoder.output(hidden)
    got = ours(src, tgt)
    real = tgt != 0
    torch.testing.assert_close(got[real], expected[real], rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------- sparse patterns vs dense
def test_layer_with_local_pattern_matches_dense_reference(generator) -> None:
    """One pre-norm layer with a local pattern == the same layer written with a dense mask."""
    layer = TransformerLayer(16, 4, 24, dropout=0.0, norm_first=True).to(DTYPE).eval()
    randomize(layer, generator)
    length = 9
    spec = PatternSpec.parse("local(window=2)")
    graph = patterns.sequence_batch(spec, [length, 6], query_slots=length)
    x = torch.randn(2 * length, 16, generator=generator, dtype=DTYPE)
    got = layer(x, AttentionContext(graph)).view(2, length, 16)
    for row, real in enumerate([length, 6]):
        h = layer.norm1(x.view(2, length, 16)[row, :real])
        allowed = patterns.local(real, 2).to_dense()
        mha = nn.MultiheadAttention(16, 4, batch_first=True).to(DTYPE)
        with torch.no_grad():
            mha.in_proj_weight.copy_(torch.cat([layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight, layer.self_attn.v_proj.weight]))
            mha.in_proj_bias.copy_(torch.cat([layer.self_attn.q_proj.bias, layer.self_attn.k_proj.bias, layer.self_attn.v_proj.bias]))
            mha.out_proj.load_state_dict(layer.self_attn.out_proj.state_dict())
        attended = mha(h[None], h[None], h[None], attn_mask=~allowed, need_weights=False)[0][0]
        y = x.view(2, length, 16)[row, :real] + attended
        y = y + layer.feed_forward(layer.norm2(y))
        torch.testing.assert_close(got[row, :real], y, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------- cached decoding
CAUSAL_PATTERNS = [
    "causal",
    "local(window=3, causal=True)",
    "strided(stride=3, causal=True)",
    "block(size=4, causal=True)",
    "union(local(window=2, causal=True), global_tokens(positions=(0,), causal=True))",
    "bigbird(window=2, num_global=1, num_random=2, causal=True, seed=3)",
    "per_head(causal, local(window=1, causal=True), strided(stride=2, causal=True), block(size=3, causal=True))",
]
POSITIONS = ["sinusoidal", "learned", "relative", "rotary", "alibi"]


def greedy_with_cache(model, inputs: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding by hand through the Decodable protocol; returns (tokens [B, steps], logits [B, steps, V])."""
    start = model.start_decoding(inputs, max_new_tokens=steps)
    logits, state = start.logits, start.state
    tokens, all_logits = [], []
    for step in range(steps):
        all_logits.append(logits)
        token = logits.argmax(-1)
        tokens.append(token)
        if step + 1 < steps:
            logits, state = model.decode_step(token, state)
    return torch.stack(tokens, 1), torch.stack(all_logits, 1)


@pytest.mark.parametrize("pattern", CAUSAL_PATTERNS)
@pytest.mark.parametrize("position", POSITIONS)
def test_encoder_decoder_cached_decoding_equals_full_recomputation(pattern: str, position: str, generator) -> None:
    config = small_config(decoder_pattern=pattern, position=position, encoder_pattern="local(window=2)")
    torch.manual_seed(0)
    model = EncoderDecoder(config).to(DTYPE).eval()
    src = right_padded([7, 3, 5], 23, generator)
    steps = 12
    tokens, cached_logits = greedy_with_cache(model, src, steps)
    tgt_in = torch.cat([torch.full((3, 1), config.bos_id), tokens[:, :-1]], 1)
    tgt_in = torch.where(tgt_in == config.pad_id, config.unk_id, tgt_in)  # no pad inside the sequence
    assert not bool((tokens[:, :-1] == config.pad_id).any()), "test needs sequences without pad tokens"
    full_logits = model(src, tgt_in)
    torch.testing.assert_close(cached_logits, full_logits, rtol=1e-5, atol=1e-5)


def prompts_without_pad_predictions(model, prompts, steps):
    tokens, cached = greedy_with_cache(model, prompts, steps)
    return tokens, cached


@pytest.mark.parametrize("pattern", CAUSAL_PATTERNS)
@pytest.mark.parametrize("position", POSITIONS)
def test_causal_lm_cached_decoding_equals_full_recomputation(pattern: str, position: str, generator) -> None:
    config = small_config(decoder_pattern=pattern, position=position)
    torch.manual_seed(1)
    model = CausalLM(config).to(DTYPE).eval()
    lengths = [5, 2, 8]
    prompts = right_padded(lengths, 23, generator)
    steps = 9
    tokens, cached_logits = greedy_with_cache(model, prompts, steps)
    for row, length in enumerate(lengths):
        sequence = torch.cat([prompts[row, :length], tokens[row, :-1]])
        assert not bool((sequence == config.pad_id).any())
        # a full pass over the same total length as the cache (length-dependent random edges)
        padded = torch.cat([sequence, torch.zeros(prompts.size(1) + steps - sequence.numel(), dtype=torch.long)])
        logits = model(padded[None])[0]
        torch.testing.assert_close(cached_logits[row], logits[length - 1:length - 1 + steps], rtol=1e-5, atol=1e-5)


def test_decoding_refuses_non_causal_decoder_pattern() -> None:
    with pytest.raises(ValueError, match="causal self-attention pattern.*local"):
        EncoderDecoder(small_config(decoder_pattern="local(window=2)"))
    with pytest.raises(ValueError, match="causal=True"):
        CausalLM(small_config(decoder_pattern="full"))


# ---------------------------------------------------------------------- batch invariance
@pytest.mark.parametrize("position", ["sinusoidal", "relative", "rotary"])
def test_each_sequence_is_independent_of_its_batch(position: str, generator) -> None:
    config = small_config(
        position=position, encoder_pattern="bigbird(window=1, num_global=1, num_random=2)",
        decoder_pattern="local(window=2, causal=True)",
    )
    model = EncoderDecoder(config).to(DTYPE).eval()
    src = right_padded([9, 4, 6, 2], 23, generator)
    tgt = right_padded([5, 3, 5, 1], 23, generator)
    tgt[:, 0] = config.bos_id
    batched = model(src, tgt)
    for row in range(4):
        s_len, t_len = int((src[row] != 0).sum()), int((tgt[row] != 0).sum())
        alone = model(src[row:row + 1, :s_len], tgt[row:row + 1, :t_len])
        torch.testing.assert_close(batched[row, :t_len], alone[0], rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------- copy mechanism
def test_copy_mechanism_distribution(generator) -> None:
    config = small_config(copy=True)
    model = EncoderDecoder(config).to(DTYPE).eval()
    src = right_padded([6, 4], 23, generator)
    src[0, 2] = 23  # unknown source words with extended ids V + k
    src[0, 4] = 24
    src[1, 1] = 23
    tgt = torch.tensor([[1, 23, 5], [1, 23, 0]])
    log_probs = model(src, tgt)
    assert log_probs.shape == (2, 3, 25)
    torch.testing.assert_close(log_probs.exp().sum(-1)[tgt != 0], torch.ones(5, dtype=DTYPE))
    # an extended id absent from a row's source has (almost) no probability in that row
    assert float(log_probs[1, 0, 24].detach().exp()) < 1e-20
    # with the gate forced to copy, P(w) is exactly the copy attention summed over w's positions
    with torch.no_grad():
        model.copy_gate.bias.fill_(-1e4)
        probs = model(src, tgt).exp()
        memory = model.encoder.encode(src, unknown_to_unk=True)[0].reshape(-1, 16)
        graph = patterns.sequence_batch(PatternSpec("full"), [3, 2], [6, 4], query_slots=3, key_slots=6)
        hidden = model.decoder.stack(
            model.decoder.embed_ids(tgt, torch.arange(3).expand(2, 3), unknown_to_unk=True).reshape(6, 16),
            model.decoder.stack.full_contexts(torch.tensor([3, 2]), 3),
            memory=memory, cross_context=AttentionContext(graph),
        )
        attn = model.copy_attention
        weights = attn.attend(attn.project_query(hidden), *attn.project_key_value(memory, memory), graph, need_weights=True)[1]
    dense = torch.zeros(6, 12, dtype=DTYPE)
    dense[graph.row, graph.col] = weights[:, 0]  # [B*T, B*S] copy attention
    for row in range(2):
        for t in range(3 - row):
            expected = torch.zeros(25, dtype=DTYPE).index_add_(0, src[row], dense[row * 3 + t, row * 6:(row + 1) * 6])
            torch.testing.assert_close(probs[row, t], expected, rtol=1e-6, atol=1e-12)


def test_copy_mechanism_gradients_and_decoding(generator) -> None:
    config = small_config(copy=True)
    model = EncoderDecoder(config).to(DTYPE)
    src = right_padded([5, 3], 23, generator)
    src[0, 1] = 23
    tgt = torch.tensor([[1, 23, 6], [1, 7, 8]])
    loss = -model(src, tgt).gather(-1, torch.tensor([[23, 6, 2], [7, 8, 2]])[..., None]).mean()
    loss.backward()
    assert model.copy_gate.weight.grad.abs().sum() > 0
    assert model.copy_attention.q_proj.weight.grad.abs().sum() > 0
    model.eval()
    tokens, cached = greedy_with_cache(model, src, 6)
    assert cached.shape == (2, 6, 24)
    tgt_in = torch.cat([torch.full((2, 1), 1), tokens[:, :-1]], 1)
    tgt_in = torch.where(tgt_in == 0, 3, tgt_in)
    torch.testing.assert_close(cached, model(src, tgt_in), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- other models
def test_masked_lm_and_mask_tokens(generator) -> None:
    config = small_config(mask_id=4)
    ids = right_padded([30, 20], 23, generator, low=5)
    inputs, labels = mask_tokens(ids, config, probability=0.5, generator=torch.Generator().manual_seed(2))
    chosen = labels != -100
    assert bool((ids[chosen] == labels[chosen]).all())
    assert not bool(chosen[ids == 0].any())
    assert bool((inputs[~chosen] == ids[~chosen]).all())
    assert 0.2 < float(chosen.float().sum() / (ids != 0).sum()) < 0.8
    assert int((inputs[chosen] == 4).sum()) > int(chosen.sum()) // 2
    model = MaskedLM(config)
    logits = model(inputs)
    assert logits.shape == (2, 30, 23)
    assert model.output.weight is model.encoder.embedding.tokens.weight


def test_weight_tying_and_sharing() -> None:
    model = EncoderDecoder(small_config(share_embeddings=True))
    assert model.decoder.output.weight is model.decoder.embedding.tokens.weight
    assert model.decoder.embedding.tokens is model.encoder.embedding.tokens
    untied = EncoderDecoder(small_config(tie_embeddings=False))
    assert untied.decoder.output.weight is not untied.decoder.embedding.tokens.weight


def test_per_layer_patterns_are_used() -> None:
    config = small_config(encoder_pattern=("local(window=1)", "full"))
    model = Encoder(config)
    assert [str(spec) for spec in model.stack.patterns] == ["local(window=1)", "full()"]
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    contexts = model.stack.full_contexts(torch.tensor([5]), 5)
    assert contexts[0].graph.num_edges == 13 and contexts[1].graph.num_edges == 25


def test_config_round_trip_and_errors() -> None:
    config = small_config(decoder_pattern=("causal", "local(window=2, causal=True)"), position="relative")
    assert TransformerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="divisible"):
        small_config(d_model=10, num_heads=4)
    with pytest.raises(ValueError, match="Unknown position"):
        small_config(position="absolute")
    with pytest.raises(ValueError, match="one 'encoder_pattern' per layer"):
        small_config(encoder_pattern=("full", "full", "full"))
    with pytest.raises(ValueError, match="Unknown pattern"):
        small_config(encoder_pattern="window(size=3)")
    model = Encoder(small_config())
    with pytest.raises(ValueError, match="right-padded"):
        model(torch.tensor([[5, 0, 6]]))
    with pytest.raises(ValueError, match=r"ids in \[0, 22\]"):
        model(torch.tensor([[5, 30]]))


# ---------------------------------------------------------------------- generate() with the models
def test_generate_is_batch_invariant_with_the_encoder_decoder(generator) -> None:
    """Batch 1 == batch 64 for greedy and beam search, sources of mixed lengths (float64)."""
    from graphattn.decoding import generate

    config = small_config(encoder_pattern="bigbird(window=1, num_global=1, num_random=2)",
                          decoder_pattern="local(window=3, causal=True)", position="relative")
    torch.manual_seed(3)
    model = EncoderDecoder(config).to(DTYPE).eval()
    lengths = torch.randint(2, 12, (64,), generator=generator).tolist()
    src = right_padded(lengths, 23, generator)
    for options in ({"num_beams": 1}, {"num_beams": 3, "num_return_sequences": 2, "length_penalty": 0.7}):
        batched = generate(model, src, max_new_tokens=10, **options)
        per_row = len(batched.scores) // 64
        for row in (0, 17, 40, 63):
            alone = generate(model, src[row:row + 1, :lengths[row]], max_new_tokens=10, **options)
            rows = slice(row * per_row, (row + 1) * per_row)
            width = alone.sequences.size(1)
            assert torch.equal(batched.sequences[rows, :width], alone.sequences)
            assert bool((batched.sequences[rows, width:] == config.pad_id).all())
            torch.testing.assert_close(batched.scores[rows], alone.scores)


def test_generate_continues_every_prompt_at_its_own_length(generator) -> None:
    from graphattn.decoding import generate

    config = small_config(decoder_pattern="local(window=4, causal=True)", position="rotary")
    torch.manual_seed(4)
    model = CausalLM(config).to(DTYPE).eval()
    lengths = [3, 9, 1, 6]
    prompts = right_padded(lengths, 23, generator)
    batched = generate(model, prompts, max_new_tokens=7, eos_token_id=None)
    for row, length in enumerate(lengths):
        sequence = prompts[row, :length]
        for step in range(7):  # greedy by full recomputation
            token = model(sequence[None])[0, -1].argmax()
            assert int(batched.sequences[row, step]) == int(token)
            sequence = torch.cat([sequence, token[None]])


def test_decoder_on_its_own_equals_the_encoder_decoder_path(generator) -> None:
    model = EncoderDecoder(small_config(decoder_pattern="local(window=2, causal=True)")).to(DTYPE).eval()
    src = right_padded([6, 3], 23, generator)
    tgt = right_padded([4, 2], 23, generator)
    memory, lengths = model.encoder.encode(src)
    torch.testing.assert_close(model.decoder(tgt, memory, lengths), model(src, tgt))
    with pytest.raises(ValueError, match=r"'memory' of shape \[B, S, E\]"):
        model.decoder(tgt)


# ---------------------------------------------------------------------- source position ids
@pytest.mark.parametrize("position", POSITIONS)
def test_source_position_ids_define_the_geometry(position: str, generator) -> None:
    """Default ids == explicit 0..L-1; with full attention, permuting the tokens together with
    their position ids permutes the encoder output (the ids, not the slots, carry position)."""
    model = Encoder(small_config(position=position)).to(DTYPE).eval()
    randomize(model, generator)
    ids = right_padded([7, 7], 23, generator)
    arange = torch.arange(7).expand(2, 7)
    torch.testing.assert_close(model(ids, arange), model(ids))
    permutation = torch.randperm(7, generator=generator)
    permuted = model(ids[:, permutation], arange[:, permutation])
    torch.testing.assert_close(permuted, model(ids)[:, permutation])
    restarted = torch.tensor([[0, 1, 2, 0, 1, 2, 3]] * 2)  # e.g. place values of two numbers
    assert not torch.allclose(model(ids, restarted), model(ids))


def test_source_position_ids_in_training_and_cached_decoding(generator) -> None:
    from graphattn.decoding import generate
    from graphattn.train import Seq2SeqLoss

    config = small_config(decoder_pattern="local(window=3, causal=True)", position="rotary")
    torch.manual_seed(5)
    model = EncoderDecoder(config).to(DTYPE).eval()
    lengths = [6, 3, 5]
    src = right_padded(lengths, 23, generator)
    positions = torch.tensor([[0, 1, 2, 0, 1, 2], [4, 5, 6, 9, 9, 9], [2, 1, 0, 1, 2, 9]])
    tokens, cached = greedy_with_cache(model, (src, positions), 8)
    tgt_in = torch.cat([torch.full((3, 1), config.bos_id), tokens[:, :-1]], 1)
    tgt_in = torch.where(tgt_in == config.pad_id, config.unk_id, tgt_in)
    full = model(src, tgt_in, source_positions=positions)
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model((src, positions), tgt_in), full)
    assert not torch.allclose(model(src, tgt_in), full)
    # padded slots' ids are ignored; generate takes the pair, batch invariant
    batched = generate(model, (src, positions), max_new_tokens=6)
    for row, length in enumerate(lengths):
        alone = generate(model, (src[row:row + 1, :length], positions[row:row + 1, :length]), max_new_tokens=6)
        assert torch.equal(batched.sequences[row, :alone.sequences.size(1)], alone.sequences[0])
    # the loss passes the pair through
    tgt = torch.cat([torch.full((3, 1), config.bos_id), tokens], 1)
    loss, _ = Seq2SeqLoss(config.pad_id)(model, ((src, positions), tgt))
    assert loss.requires_grad and torch.isfinite(loss)


def test_source_position_ids_errors(generator) -> None:
    src = right_padded([4, 2], 23, generator)
    model = EncoderDecoder(small_config(position="learned", max_positions=8))
    with pytest.raises(ValueError, match=r"integer tensor of the inputs' shape \[2, 4\]"):
        model(src, src, source_positions=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"integer tensor"):
        model(src, src, source_positions=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\[0, 7\] \(max_positions\), got values in \[0, 8\]"):
        model(src, src, source_positions=torch.full((2, 4), 8))
    with pytest.raises(ValueError, match="either in the src pair or as source_positions"):
        model((src, torch.zeros_like(src)), src, source_positions=torch.zeros_like(src))
    with pytest.raises(TypeError, match=r"source ids \[B, S\] \(or Vectors\), or a pair"):
        model.start_decoding([src], max_new_tokens=2)


# ---------------------------------------------------------------------- vector inputs
def vector_batch(lengths: list[int], features: int, generator: torch.Generator, dtype=DTYPE) -> "Vectors":
    from graphattn.models import Vectors

    values = torch.randn(len(lengths), max(lengths), features, generator=generator, dtype=dtype)
    return Vectors(values, torch.tensor(lengths))


@pytest.mark.parametrize("position", ["sinusoidal", "learned", "rotary", "relative"])
def test_encoder_reads_vectors_like_a_manual_projection(position: str, generator) -> None:
    """The vector encoder is a Linear in place of the token embedding: equal to running the
    stack on the projected vectors, and each row is independent of its batch's padding."""
    config = small_config(input_features=5, position=position, max_positions=16, encoder_pattern="local(window=2)")
    encoder = Encoder(config).to(DTYPE)
    randomize(encoder, generator)
    encoder.eval()
    inputs = vector_batch([6, 3, 1], 5, generator)
    hidden, lengths = encoder.encode(inputs)
    assert hidden.shape == (3, 6, 16) and lengths.tolist() == [6, 3, 1]
    # by hand: project, add positions, run the stack
    x = encoder.embedding.project(inputs.features)
    if encoder.embedding.positions is not None:
        x = x + encoder.embedding.positions(torch.arange(6).expand(3, 6)).to(DTYPE)
    contexts = encoder.stack.full_contexts(lengths, 6, torch.arange(6).repeat(3))
    manual = encoder.stack(x.reshape(18, -1), contexts).view(3, 6, -1)
    for row, length in enumerate([6, 3, 1]):
        torch.testing.assert_close(hidden[row, :length], manual[row, :length])
        # alone, without padding, and with garbage in the padded slots of the batch
        alone = encoder(inputs.features[row:row + 1, :length])
        torch.testing.assert_close(hidden[row, :length], alone[0])
    noisy = inputs.features.clone()
    noisy[1, 3:] = 1e6
    from graphattn.models import Vectors

    torch.testing.assert_close(encoder(Vectors(noisy, inputs.lengths))[1, :3], hidden[1, :3])
    # gradients reach the projection
    encoder(inputs)[0, :6].sum().backward()
    assert encoder.embedding.project.weight.grad.abs().sum() > 0


def test_vector_inputs_errors(generator) -> None:
    from graphattn.models import SequenceClassifier, Vectors

    encoder = Encoder(small_config(input_features=4))
    with pytest.raises(ValueError, match=r"4 features per vector"):
        encoder(torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match=r"every length in \[1, 3\]"):
        encoder(Vectors(torch.zeros(2, 3, 4), torch.tensor([3, 0])))
    with pytest.raises(ValueError, match=r"every length in \[1, 3\]"):
        encoder(Vectors(torch.zeros(2, 3, 4), torch.tensor([4, 1])))
    with pytest.raises(ValueError, match=r"lengths as an integer tensor \[B\]"):
        encoder(Vectors(torch.zeros(2, 3, 4), torch.tensor([3.0, 1.0])))
    with pytest.raises(TypeError, match=r"reads vectors .* got token ids"):
        encoder(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"set input_features"):
        Encoder(small_config())(Vectors(torch.zeros(1, 2, 4), torch.tensor([2])))
    with pytest.raises(ValueError, match=r"copy=True needs source token ids"):
        small_config(input_features=4, copy=True)
    with pytest.raises(ValueError, match=r"CausalLM predicts its own input tokens"):
        CausalLM(small_config(input_features=4))
    with pytest.raises(ValueError, match=r"positions as an integer tensor of the inputs' shape \[2, 3\]"):
        encoder(Vectors(torch.zeros(2, 3, 4), torch.tensor([3, 1])), positions=torch.zeros(2, 2, dtype=torch.long))
    # the classifier takes vectors through its encoder
    classifier = SequenceClassifier(small_config(input_features=4), 3)
    assert classifier(Vectors(torch.zeros(2, 3, 4), torch.tensor([3, 1]))).shape == (2, 3)


def test_encoder_decoder_reads_vectors_and_generates(generator) -> None:
    """Speech-style seq2seq: vectors in, tokens out; cached decoding == recomputation and
    every row decodes as it would alone."""
    from graphattn.decoding import generate

    config = small_config(input_features=3, encoder_pattern="local(window=2)")
    model = EncoderDecoder(config).to(DTYPE)
    randomize(model, generator)
    model.eval()
    inputs = vector_batch([7, 4, 2], 3, generator)
    tokens, cached = greedy_with_cache(model, inputs, 6)
    tgt_in = torch.cat([torch.full((3, 1), config.bos_id), tokens[:, :-1]], 1)
    tgt_in = torch.where(tgt_in == config.pad_id, config.unk_id, tgt_in)
    torch.testing.assert_close(cached, model(inputs, tgt_in), rtol=1e-5, atol=1e-5)
    batched = generate(model, inputs, max_new_tokens=5, num_beams=2)
    from graphattn.models import Vectors

    for row, length in enumerate([7, 4, 2]):
        alone = generate(model, Vectors(inputs.features[row:row + 1, :length], torch.tensor([length])),
                         max_new_tokens=5, num_beams=2)
        assert torch.equal(batched.sequences[row, :alone.sequences.size(1)], alone.sequences[0])


@pytest.mark.parametrize("norm_first", [False, True])
def test_attention_weights_per_layer(norm_first: bool, generator) -> None:
    config = small_config(norm_first=norm_first, encoder_pattern="local(window=1)", position="rotary")
    encoder = Encoder(config).to(DTYPE)
    randomize(encoder, generator)
    ids = right_padded([5, 3], 23, generator)
    maps = encoder.attention_weights(ids)
    assert len(maps) == config.num_layers
    for graph, weights in maps:
        assert weights.shape == (graph.num_edges, config.num_heads)
        sums = torch.zeros(graph.num_queries, config.num_heads, dtype=DTYPE).index_add_(0, graph.row, weights)
        real = sums[graph.degrees > 0]
        torch.testing.assert_close(real, torch.ones_like(real))
    # layer 0 by hand: dense softmax of the pre-norm (or raw) input over the window
    graph, weights = maps[0]
    x = encoder.embedding(ids, torch.arange(5).expand(2, 5)).reshape(10, -1)
    layer = encoder.stack.layers[0]
    h = layer.norm1(x) if norm_first else x
    q, k, _ = layer.self_attn.project(h, h, h)
    positions = torch.arange(5).repeat(2)
    q, k = encoder.stack.rotary(q, positions), encoder.stack.rotary(k, positions)
    scores = torch.einsum("nhd,mhd->nmh", q, k) / math.sqrt(q.size(-1))
    allowed = torch.zeros(10, 10, dtype=torch.bool)
    allowed[graph.row, graph.col] = True
    dense = scores.masked_fill(~allowed[..., None], float("-inf")).softmax(1)
    torch.testing.assert_close(weights, dense[graph.row, graph.col])


def test_convolutional_input_of_vectors(generator) -> None:
    """input_kernel=k: each node's input is a Conv1d over it and its neighbours (zeros beyond the
    sequence), so a row alone equals the row in a padded batch."""
    config = small_config(input_features=3, input_kernel=3, encoder_pattern="local(window=2)")
    encoder = Encoder(config).to(DTYPE)
    randomize(encoder, generator)
    encoder.eval()
    inputs = vector_batch([6, 4], 3, generator)
    x, _, _ = encoder.embed(inputs)
    conv = encoder.embedding.conv
    row = inputs.features[1, :4]  # the second sequence, alone, zero beyond its ends
    padded = torch.cat([torch.zeros(1, 3, dtype=DTYPE), row, torch.zeros(1, 3, dtype=DTYPE)])
    by_hand = torch.stack([
        conv.bias + sum(conv.weight[:, :, j] @ padded[i + j] for j in range(3)) for i in range(4)
    ])
    positions = encoder.embedding.positions(torch.arange(4)).to(DTYPE)
    torch.testing.assert_close(x.view(2, 6, -1)[1, :4], by_hand + positions)
    hidden = encoder(inputs)
    torch.testing.assert_close(hidden[1, :4], encoder(inputs.features[1:, :4])[0])
    with pytest.raises(ValueError, match="odd positive int"):
        small_config(input_features=3, input_kernel=2)
    with pytest.raises(ValueError, match="set input_features too"):
        small_config(input_kernel=3)
