"""Tests for the sequence tagger: the character CNN against a hand computation, tags per word
independent of the batch, the loss over labelled words only, word dropout, character batches,
errors, and a small tagging task it must learn."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from graphattn.data.text import PosTaggingData, TaggedSentence, Vocabulary, collate_tagged, word_bytes
from graphattn.models import CharCNN, SequenceTagger, TransformerConfig

DTYPE = torch.float64


def config(**overrides) -> TransformerConfig:
    base = dict(vocab_size=30, d_model=16, num_heads=2, num_layers=2, ff_dim=32, dropout=0.0,
                encoder_pattern="longformer(window=1, positions=(0,))")
    base.update(overrides)
    return TransformerConfig(**base)


def test_char_cnn_matches_a_hand_computation(generator) -> None:
    torch.manual_seed(0)
    cnn = CharCNN(5, char_dim=4, kernel_size=3).to(DTYPE)
    chars = word_bytes(["cat", "a", "dogs"], max_bytes=6)  # [3, 6]
    out = cnn(chars)
    for row, word in enumerate(["cat", "a", "dogs"]):
        ids = torch.tensor([257] + [b + 1 for b in word.encode()] + [257])  # <word>
        x = cnn.embedding(ids).T[None]  # [1, char_dim, n + 2]
        conv = F.conv1d(x, cnn.conv.weight, cnn.conv.bias, padding=1)[0]  # zero padding = the pad byte's zero embedding
        torch.testing.assert_close(out[row], torch.tanh(conv.amax(-1)))
    # the padding width does not matter; a word without bytes gets zeros
    torch.testing.assert_close(cnn(word_bytes(["cat"], max_bytes=12))[0], out[0])
    assert torch.equal(cnn(torch.zeros(2, 4, dtype=torch.long)), torch.zeros(2, 5, dtype=DTYPE))
    assert cnn(torch.stack([chars, chars])).shape == (2, 3, 5)
    with pytest.raises(ValueError, match=r"byte ids in \[0, 257\)"):
        cnn(torch.full((1, 2), 300))
    with pytest.raises(ValueError, match="odd char_kernel"):
        CharCNN(5, kernel_size=2)


def batch_of(sentences: list[list[str]], vocab: Vocabulary) -> tuple[torch.Tensor, torch.Tensor]:
    examples = [TaggedSentence(vocab.encode(s), torch.zeros(len(s), dtype=torch.long), word_bytes(s)) for s in sentences]
    batch = collate_tagged(examples)
    return batch.ids, batch.chars


SENTENCES = [["the", "cat", "sat", "on", "the", "mat"], ["dogs", "bark"], ["a", "bird", "sings", "loudly"]]


@pytest.mark.parametrize("pattern", ["full", "longformer(window=1, positions=(0,))"])
def test_tags_of_a_sentence_do_not_depend_on_its_batch(pattern: str) -> None:
    vocab = Vocabulary.build(SENTENCES, min_frequency=1)
    torch.manual_seed(0)
    tagger = SequenceTagger(config(encoder_pattern=pattern, vocab_size=len(vocab)), 5, char_filters=8).to(DTYPE).eval()
    ids, chars = batch_of(SENTENCES, vocab)
    logits = tagger(ids, chars)
    assert logits.shape == (3, 6, 5)
    for row, sentence in enumerate(SENTENCES):
        alone_ids, alone_chars = batch_of([sentence], vocab)
        torch.testing.assert_close(logits[row, : len(sentence)], tagger(alone_ids, alone_chars)[0])
    maps = tagger.attention_weights(ids, chars)
    assert len(maps) == 2 and maps[0][1].shape == (maps[0][0].num_edges, 2)


def test_loss_counts_labelled_words_only_and_word_dropout() -> None:
    vocab = Vocabulary.build(SENTENCES, min_frequency=1)
    torch.manual_seed(0)
    tagger = SequenceTagger(config(vocab_size=len(vocab)), 5, char_filters=0, word_dropout=0.5).to(DTYPE)
    ids, _ = batch_of(SENTENCES, vocab)
    labels = torch.where(ids != 0, ids % 5, -100)
    tagger.eval()
    logits = tagger(ids)
    real = ids != 0
    expected = F.cross_entropy(logits[real], labels[real])
    torch.testing.assert_close(tagger.loss(ids, None, labels), expected)
    # word dropout: only in training, only real words, only to unk_id
    tagger.train()
    torch.manual_seed(1)
    vectors = tagger.word_vectors(ids)
    dropped = (vectors.features - tagger.words(ids)).abs().sum(-1) > 0  # rows that now hold UNK's embedding
    assert dropped.any() and not dropped[~real].any()
    torch.testing.assert_close(vectors.features[dropped], tagger.words.weight[1].expand(int(dropped.sum()), -1))
    tagger.eval()
    torch.testing.assert_close(tagger.word_vectors(ids).features, tagger.words(ids))


def test_tagger_errors() -> None:
    with pytest.raises(ValueError, match="leave it None"):
        SequenceTagger(config(input_features=4), 5)
    with pytest.raises(ValueError, match="num_tags to be an int >= 2"):
        SequenceTagger(config(), 1)
    tagger = SequenceTagger(config(), 5, char_filters=4)
    with pytest.raises(ValueError, match=r"pass chars \[B, L, C\]"):
        tagger(torch.tensor([[4, 5]]))
    with pytest.raises(ValueError, match=r"chars \[B, L, C\] with \[B, L\] = \[1, 2\]"):
        tagger(torch.tensor([[4, 5]]), torch.ones(1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="right-padded"):
        tagger(torch.tensor([[0, 5]]), torch.ones(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"ids in \[0, 29\] \(vocab_size = 30\)"):
        tagger(torch.tensor([[40, 5]]), torch.ones(1, 2, 2, dtype=torch.long))


def test_collate_with_chars_and_the_data_set_field() -> None:
    vocab = Vocabulary.build(SENTENCES, min_frequency=1)
    data = PosTaggingData(
        "train", [vocab.encode(s) for s in SENTENCES], [torch.zeros(len(s), dtype=torch.long) for s in SENTENCES],
        tuple(tuple(s) for s in SENTENCES), ("a", "b", "c"), vocab, max_word_bytes=4,
    )
    assert data[1].chars.tolist() == word_bytes(["dogs", "bark"], max_bytes=4).tolist()
    batch = collate_tagged([data[0], data[1]])
    assert batch.chars.shape == (2, 6, 4) and batch.chars[1, 2:].eq(0).all()
    assert torch.equal(batch.chars[0, 1], word_bytes(["cat"], max_bytes=4)[0])
    plain = PosTaggingData("train", data.words, data.tags, data.forms, data.sentence_ids, vocab)
    assert plain[0].chars is None and collate_tagged([plain[0]]).chars is None
    with pytest.raises(ValueError, match="chars or none"):
        collate_tagged([data[0], plain[1]])
    with pytest.raises(ValueError, match="max_word_bytes=<int>"):
        plain.chars
    with pytest.raises(ValueError, match="max_word_bytes to be None or an int >= 1"):
        PosTaggingData("train", [], [], (), (), vocab, max_word_bytes=0)


def test_tagger_learns_suffix_tags_of_unknown_words() -> None:
    """Tag = whether a word ends in 's'; every word is unknown (UNK id), so only the character
    features can tell -- and the tagger must learn it."""
    torch.manual_seed(0)
    letters = "abcdefghijklmnopqrt"
    words = ["".join(letters[int(i)] for i in torch.randint(0, len(letters), (int(n),))) + ("s" if s else "")
             for n, s in zip(torch.randint(2, 6, (400,)), torch.rand(400) < 0.5)]
    tagger = SequenceTagger(config(encoder_pattern="local(window=1)"), 2, char_filters=16)
    optimizer = torch.optim.AdamW(tagger.parameters(), lr=3e-3)
    for step in range(60):
        chosen = [words[int(i)] for i in torch.randint(0, 400, (32 * 4,))]
        sentences = [chosen[i:i + 4] for i in range(0, len(chosen), 4)]
        chars = torch.stack([word_bytes(s, max_bytes=6) for s in sentences])
        ids = torch.ones(32, 4, dtype=torch.long)  # all unknown
        labels = torch.tensor([[int(w.endswith("s")) for w in s] for s in sentences])
        loss = tagger.loss(ids, chars, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tagger.eval()
    sentences = [words[i:i + 4] for i in range(0, 400, 4)]
    chars = torch.stack([word_bytes(s, max_bytes=6) for s in sentences])
    predicted = tagger(torch.ones(100, 4, dtype=torch.long), chars).argmax(-1)
    labels = torch.tensor([[int(w.endswith("s")) for w in s] for s in sentences])
    assert (predicted == labels).float().mean() > 0.97
