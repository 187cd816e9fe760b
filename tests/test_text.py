"""graphattn.data.text: the CoNLL-U reader and its errors, vocabularies, byte and one-hot
encodings, padding, batch patterns, and UD English-EWT POS tagging (skipped when the shared data
are absent)."""
import os
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from graphattn.data.lra import tokens_to_text
from graphattn.data.text import (
    BYTE_VOCAB_SIZE,
    IGNORE_INDEX,
    PAD,
    UNK,
    UNKNOWN_SIGNATURES,
    UPOS_TAGS,
    ConlluError,
    PosTaggingData,
    TaggedSentence,
    TokenBatch,
    Vocabulary,
    collate_tagged,
    load_ud_pos,
    one_hot,
    pad_batch,
    parse_conllu,
    read_conllu,
    sequence_pattern,
    unknown_signature,
    upos_ids,
    word_bytes,
)
from graphattn.patterns import PatternSpec, sequence_batch


def conllu(*rows: str) -> str:
    """CoNLL-U text from rows whose columns are separated by '|' (readable in tests)."""
    return "\n".join(row.replace("|", "\t") if not row.startswith("#") else row for row in rows) + "\n"


GOOD = conllu(
    "# newdoc id = doc-1",
    "# sent_id = s1",
    "# text = I don't know.",
    "1|I|I|PRON|PRP|Case=Nom|4|nsubj|4:nsubj|_",
    "2-3|don't|_|_|_|_|_|_|_|_",
    "2|do|do|AUX|VBP|_|4|aux|4:aux|_",
    "3|n't|not|PART|RB|_|4|advmod|4:advmod|_",
    "4|know|know|VERB|VB|_|0|root|0:root|SpaceAfter=No",
    "4.1|know|know|VERB|VB|_|_|_|4:conj|CopyOf=4",
    "5|.|.|PUNCT|.|_|4|punct|4:punct|_",
    "",
    "# sent_id = s2",
    "1|Yes|yes|INTJ|UH|_|_|_|_|_",
)


# ----------------------------------------------------------------------------------------------
# CoNLL-U
# ----------------------------------------------------------------------------------------------


def test_parse_sentence_fields_multiword_tokens_and_empty_nodes() -> None:
    first, second = parse_conllu(GOOD)  # no blank line after the last sentence: fine
    assert (first.sent_id, first.text, first.doc_id, first.line) == ("s1", "I don't know.", "doc-1", 1)
    assert first.forms == ("I", "do", "n't", "know", ".")  # syntactic words only, each once
    assert first.upos == ("PRON", "AUX", "PART", "VERB", "PUNCT")
    assert [t.id for t in first.tokens] == [1, 2, 3, 4, 5]
    assert [t.head for t in first.tokens] == [4, 4, 4, 0, 4]
    know = first.tokens[3]
    assert (know.lemma, know.xpos, know.feats, know.deprel, know.deps, know.misc, know.line) == (
        "know", "VB", "_", "root", "0:root", "SpaceAfter=No", 8
    )
    (span,) = first.multiword_tokens
    assert (span.first, span.last, span.form, span.line) == (2, 3, "don't", 5)
    (empty,) = first.empty_nodes
    assert (empty.id, empty.after, empty.form, empty.deps, empty.line) == ("4.1", 4, "know", "4:conj", 9)
    assert first.comments == ("newdoc id = doc-1", "sent_id = s1", "text = I don't know.")
    assert (second.sent_id, second.text, second.forms) == ("s2", None, ("Yes",))
    assert (second.doc_id, second.line) == ("doc-1", 12)
    assert second.tokens[0].head is None  # '_' = no tree


def test_parse_tolerates_crlf_repeated_blank_lines_and_trailing_blank_lines() -> None:
    assert parse_conllu(GOOD.replace("\n", "\r\n") + "\r\n\r\n") == parse_conllu(GOOD)
    spread = parse_conllu(GOOD.replace("\n\n", "\n\n\n\n"))  # two more blank lines between the sentences
    assert [s.forms for s in spread] == [s.forms for s in parse_conllu(GOOD)]
    assert spread[1].line == 14 and spread[1].tokens[0].line == 15
    assert parse_conllu("") == parse_conllu("\n\n") == []


def test_read_conllu_file_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "a.conllu"
    path.write_text(GOOD, encoding="utf-8")
    assert read_conllu(path) == parse_conllu(GOOD)
    path.write_text("\ufeff" + GOOD, encoding="utf-8")  # a byte-order mark
    assert read_conllu(path) == parse_conllu(GOOD)
    with pytest.raises(FileNotFoundError, match="missing.conllu"):
        read_conllu(tmp_path / "missing.conllu")
    with pytest.raises(TypeError, match="read_conllu"):
        parse_conllu(path)


WORD = "1|a|a|X|X|_|0|root|_|_"
BAD_INPUTS = [
    # (rows, line of the error, message pattern)
    ((WORD, "2|b|b|X|X|_|1|dep|_"), 2, r"expected 10 tab-separated columns .*got 9"),
    (("1 a a X X _ 0 root _ _",), 1, r"got 1 \(are the columns separated by spaces"),
    ((WORD, "two|b|b|X|X|_|1|dep|_|_"), 2, r"expected an integer word ID, a range 'a-b' or a decimal 'a.k', got 'two'"),
    ((WORD, "3|b|b|X|X|_|1|dep|_|_"), 2, r"expected word ID 2 .*got '3'"),
    ((WORD, WORD), 2, r"expected word ID 2 .*missing blank line"),
    ((WORD, "3-4|ab|_|_|_|_|_|_|_|_"), 2, r"range starting at the next word 2 .*got '3-4'"),
    (("1-1|a|_|_|_|_|_|_|_|_", WORD), 1, r"range .*got '1-1'"),
    (("1-x|a|_|_|_|_|_|_|_|_",), 1, r"got '1-x'"),
    ((WORD, "2.1|e|e|X|X|_|_|_|_|_"), 2, r"empty node '2.1' right after word 2, but it follows word 1"),
    ((WORD, "1.0|e|e|X|X|_|_|_|_|_"), 2, r"got '1.0'"),
    (("1|a|a|X|X|_|root|root|_|_",), 1, r"expected HEAD to be a word ID .*got 'root'"),
    (("1|a|a|X|X|_|-1|root|_|_",), 1, r"expected HEAD .*got '-1'"),
    ((WORD, "2|b|b|X|X|_|7|dep|_|_"), 2, r"HEAD 7 of word 2 is not a word of this 2-word sentence"),
    (("1-3|abc|_|_|_|_|_|_|_|_", WORD, "2|b|b|X|X|_|1|dep|_|_"), 1, r"multiword token 1-3 ends after the last word 2"),
    (("1|a||X|X|_|0|root|_|_",), 1, r"empty LEMMA column"),
    ((WORD, "# sent_id = next"), 2, r"comment line after the words .*blank line between sentences"),
    (("# sent_id = s", "# text = no words", ""), 1, r"sentence without words"),
    (("# sent_id = a", "# sent_id = b", WORD), 2, r"second '# sent_id'"),
]


@pytest.mark.parametrize("rows, line, message", BAD_INPUTS)
def test_malformed_lines_name_file_line_and_problem(tmp_path: Path, rows: tuple, line: int, message: str) -> None:
    path = tmp_path / "bad.conllu"
    path.write_text(conllu("# sent_id = ok", WORD, "", *rows), encoding="utf-8")  # the error is 3 lines down
    with pytest.raises(ConlluError, match=message) as caught:
        read_conllu(path)
    assert str(caught.value).startswith(f"{path}, line {line + 3}: ")
    assert caught.value.line == line + 3 and caught.value.source == str(path)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(ConlluError, match=f"^mine, line {line}: (.*){message}"):
        parse_conllu(conllu(*rows), source="mine")


# ----------------------------------------------------------------------------------------------
# vocabularies and encodings
# ----------------------------------------------------------------------------------------------

CORPUS = [["the", "cat", "sat"], ["The", "dog", "sat"], ["the", "bird", "sang"], ["a", "cat"]]


def test_vocabulary_frequency_order_min_frequency_and_max_size() -> None:
    vocab = Vocabulary.build(CORPUS)
    assert vocab.tokens == ("<pad>", "<unk>", "cat", "sat", "the", "The", "a", "bird", "dog", "sang")
    assert vocab.tokens[PAD] == "<pad>" and vocab.tokens[UNK] == "<unk>" and vocab.num_reserved == 2
    assert Vocabulary.build(CORPUS[::-1]) == vocab  # independent of sentence order (ties alphabetical)
    assert Vocabulary.build(CORPUS, min_frequency=2).tokens[2:] == ("cat", "sat", "the")
    assert Vocabulary.build(CORPUS, max_size=4).tokens == ("<pad>", "<unk>", "cat", "sat")
    lowered = Vocabulary.build(CORPUS, lowercase=True, min_frequency=2)
    assert lowered.tokens[2:] == ("the", "cat", "sat")
    assert lowered.encode(["THE", "Cat", "dog"]).tolist() == [2, 3, UNK]
    assert "THE" in lowered and "dog" not in lowered and 5 not in lowered
    assert repr(lowered) == "Vocabulary(5 ids: 2 reserved + 3 words, lowercase=True, unknown_signatures=False)"


def test_vocabulary_encode_decode_and_known_ids() -> None:
    vocab = Vocabulary.build(CORPUS)
    ids = vocab.encode(["the", "cat", "zebra"])
    assert ids.dtype == torch.long and ids.tolist() == [4, 2, UNK]
    assert vocab.decode(ids) == ["the", "cat", "<unk>"]
    assert vocab.decode(torch.tensor([4, 0, 0])) == ["the"]
    assert vocab.decode([4, 0], skip_padding=False) == ["the", "<pad>"]
    assert vocab.is_known(torch.tensor([0, 1, 2, 9])).tolist() == [False, False, True, True]
    assert vocab.encode([]).shape == (0,)
    with pytest.raises(ValueError, match=r"Expected ids in \[0, 10\), got values in \[0, 10\]"):
        vocab.decode([0, 10])
    with pytest.raises(ValueError, match="decode batches row by row"):
        vocab.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="split it first"):
        vocab.encode("the cat")


def test_unknown_signatures_for_oov_words() -> None:
    assert len(UNKNOWN_SIGNATURES) == len(set(UNKNOWN_SIGNATURES)) == 49
    vocab = Vocabulary.build(CORPUS, lowercase=True, unknown_signatures=True)
    assert vocab.num_reserved == 51 and vocab.tokens[2:51] == UNKNOWN_SIGNATURES
    assert vocab.tokens[51] == "the" and vocab.encode(["The"]).tolist() == [51]
    words = ["Kyoto", "kyoto", "walking", "quickly", "1999", "B52", "NASA", "??", "x@y.com", "state-of-the-art"]
    ids = vocab.encode(words)
    assert not vocab.is_known(ids).any()
    assert vocab.decode(ids) == [
        "<unk:cap>", "<unk:lower>", "<unk:lower-ing>", "<unk:lower-ly>", "<unk:number>", "<unk:alnum>",
        "<unk:allcaps>", "<unk:punct>", "<unk:web>", "<unk:lower-hyphen>",
    ]  # capitalisation comes from the original spelling even though the vocabulary lowercases


@pytest.mark.parametrize(
    "word, signature",
    [
        ("Obama", "<unk:cap>"), ("iPhone", "<unk:lower>"), ("I", "<unk:cap>"), ("USA", "<unk:allcaps>"),
        ("U.S.", "<unk:allcaps>"), ("running", "<unk:lower-ing>"), ("Running", "<unk:cap-ing>"),
        ("ring", "<unk:lower>"), ("walked", "<unk:lower-ed>"), ("hopeless", "<unk:lower-less>"),
        ("cats", "<unk:lower-s>"), ("is", "<unk:lower>"), ("3.14", "<unk:number>"), ("1,000", "<unk:number>"),
        ("10am", "<unk:alnum>"), ("...", "<unk:punct>"), (":-)", "<unk:punct>"), ("http://a.b/c", "<unk:web>"),
        ("www.example.net", "<unk:web>"), ("foo.html", "<unk:web>"), ("e-mail", "<unk:lower-hyphen>"),
        ("Jean-Luc", "<unk:cap-hyphen>"), ("café", "<unk:lower>"), ("Über", "<unk:cap-er>"),
    ],
)
def test_unknown_signature_table(word: str, signature: str) -> None:
    assert unknown_signature(word) == signature and signature in UNKNOWN_SIGNATURES


def test_vocabulary_save_load_roundtrip_and_bad_files(tmp_path: Path) -> None:
    fancy = Vocabulary.build(CORPUS + [["naïve", "<pad>"]], lowercase=True, unknown_signatures=True)
    for vocab in (Vocabulary.build(CORPUS), fancy):
        path = tmp_path / "vocab.json"
        vocab.save(path)
        loaded = Vocabulary.load(path)
        assert loaded == vocab and loaded.tokens == vocab.tokens
        assert loaded.encode(["naïve", "<pad>", "zzz"]).tolist() == vocab.encode(["naïve", "<pad>", "zzz"]).tolist()
        assert not (tmp_path / "vocab.json.tmp").exists()
    literal = Vocabulary.build([["<pad>"]])  # the word '<pad>' in a text is a word, not padding
    assert literal.encode(["<pad>"]).tolist() == [2]
    (tmp_path / "other.json").write_text('{"format": "something/1"}')
    with pytest.raises(ValueError, match="vocabulary file of format 'graphattn.vocabulary/1'.*got 'something/1'"):
        Vocabulary.load(tmp_path / "other.json")


def test_vocabulary_argument_errors() -> None:
    with pytest.raises(ValueError, match="min_frequency to be an int >= 1, got 0"):
        Vocabulary.build(CORPUS, min_frequency=0)
    with pytest.raises(ValueError, match="max_size to be None or an int > 2"):
        Vocabulary.build(CORPUS, max_size=2)
    with pytest.raises(ValueError, match=r"an int > 51 \(the reserved ids and signatures\), got 40"):
        Vocabulary.build(CORPUS, max_size=40, unknown_signatures=True)
    with pytest.raises(TypeError, match="got one str"):
        Vocabulary.build("the cat")
    with pytest.raises(TypeError, match="split it into words first"):
        Vocabulary.build(["the cat"])
    with pytest.raises(ValueError, match="duplicates"):
        Vocabulary(("<pad>", "<unk>", "a", "a"))
    with pytest.raises(ValueError, match="start with its reserved tokens"):
        Vocabulary(("a", "b"))


def test_word_bytes_reuses_the_byte_encoding() -> None:
    words = ["hé", "a", "€uro"]
    out = word_bytes(words)
    assert out.shape == (3, 6) and out.dtype == torch.long and int(out.max()) < BYTE_VOCAB_SIZE
    assert [tokens_to_text(row) for row in out] == words  # lra's decoder inverts it
    assert word_bytes(words, max_bytes=2).tolist() == [[105, 196], [98, 0], [227, 131]]
    assert word_bytes(["a"], max_bytes=4).tolist() == [[98, 0, 0, 0]]
    assert word_bytes([]).shape == (0, 0)
    with pytest.raises(TypeError, match="use \\[word\\]"):
        word_bytes("word")


def test_a_character_vocabulary_is_a_vocabulary_over_characters() -> None:
    words = ["cat", "cab", "dog"]
    characters = Vocabulary.build(list(word) for word in words)
    assert characters.tokens[2:4] == ("a", "c")  # most frequent first
    assert characters.decode(characters.encode(list("cax"))) == ["c", "a", "<unk>"]


def test_one_hot_matches_embedding_lookup() -> None:
    ids = torch.tensor([[3, 1, 0], [2, 0, 0]])
    vectors = one_hot(ids, 5)
    assert vectors.shape == (2, 3, 5) and vectors.dtype == torch.float32
    embedding = torch.nn.Embedding(5, 4)
    torch.testing.assert_close(vectors @ embedding.weight, embedding(ids))
    padded = one_hot(ids, 5, zero_padding=True, dtype=torch.float64)
    assert padded.dtype == torch.float64 and padded[ids == PAD].abs().sum() == 0
    assert torch.equal(padded[ids != PAD], vectors[ids != PAD].double())
    with pytest.raises(ValueError, match=r"Expected ids in \[0, 3\), got values in \[0, 3\]"):
        one_hot(ids, 3)
    with pytest.raises(TypeError, match="integer token ids"):
        one_hot(ids.float(), 5)
    with pytest.raises(ValueError, match="vocab_size to be an int >= 1"):
        one_hot(ids, 0)


# ----------------------------------------------------------------------------------------------
# batching and patterns
# ----------------------------------------------------------------------------------------------


def test_pad_batch_ids_lengths_labels_and_mask() -> None:
    batch = pad_batch([torch.tensor([5, 6, 7]), [8], []], [[1, 2, 3], torch.tensor([4]), []])
    assert isinstance(batch, TokenBatch)
    assert batch.ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert batch.lengths.tolist() == [3, 1, 0]
    assert batch.labels.tolist() == [[1, 2, 3], [4, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX] * 3]
    assert batch.mask.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    assert all(t.dtype == torch.long for t in batch[:3]) and batch.chars is None
    # the padded labels drop out of the loss: same value as the loss over the real tokens only
    logits = torch.randn(3, 3, 10, generator=torch.Generator().manual_seed(0))
    loss = F.cross_entropy(logits.reshape(-1, 10), batch.labels.reshape(-1))
    real = batch.mask
    torch.testing.assert_close(loss, F.cross_entropy(logits[real], batch.labels[real]))
    unlabeled = pad_batch([[1, 2]], pad_to=4)
    assert unlabeled.labels is None and unlabeled.ids.tolist() == [[1, 2, 0, 0]]


def test_pad_batch_errors() -> None:
    with pytest.raises(ValueError, match="at least one sequence"):
        pad_batch([])
    with pytest.raises(ValueError, match=r"labels\[1\] to have one label per token \(1\), got 2"):
        pad_batch([[1, 2], [3]], [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"one label sequence per sequence \(2\), got 1"):
        pad_batch([[1, 2], [3]], [[1, 2]])
    with pytest.raises(ValueError, match=r"sequences\[0\] to hold integer ids of shape \[L\], got torch.float32"):
        pad_batch([torch.tensor([1.0])])
    with pytest.raises(ValueError, match="pad_to to be an int >= the longest sequence \\(2\\), got 1"):
        pad_batch([[1, 2]], pad_to=1)
    with pytest.raises(TypeError, match="list of 1-D id sequences"):
        pad_batch(torch.ones(2, 3, dtype=torch.long))


def test_sequence_pattern_is_sequence_batch_in_the_order_of_the_padded_ids() -> None:
    batch = pad_batch([[5, 6, 7, 8], [9, 10], [11]])
    graph = sequence_pattern("local(window=1)", batch.lengths, batch.ids.size(1))
    expected = sequence_batch(PatternSpec.parse("local(window=1)"), [4, 2, 1], query_slots=4)
    assert graph.equals(expected) and graph.num_queries == batch.ids.numel() == 12
    assert sequence_pattern(PatternSpec.parse("local(window=1)"), [4, 2, 1]).equals(graph)  # slots default: longest
    dense = graph.to_dense()
    flat_mask = batch.mask.reshape(-1)
    assert not dense[~flat_mask].any() and not dense[:, ~flat_mask].any()  # padding neither attends nor is attended
    row, col = graph.edge_index[1], graph.edge_index[0]  # query, key
    assert torch.equal(row // 4, col // 4)  # no edge between sentences
    assert ((row % 4 - col % 4).abs() <= 1).all()  # local window within each sentence
    with pytest.raises(ValueError, match="at least one sequence length"):
        sequence_pattern("full", [])


# ----------------------------------------------------------------------------------------------
# part-of-speech tagging
# ----------------------------------------------------------------------------------------------


def test_upos_tag_set_is_fixed() -> None:
    assert len(UPOS_TAGS) == 17 and list(UPOS_TAGS) == sorted(UPOS_TAGS)
    assert upos_ids(["ADJ", "X", "PROPN"]).tolist() == [0, 16, 11]
    with pytest.raises(ValueError, match="Unknown UPOS tag 'NN'; expected one of ADJ, ADP"):
        upos_ids(["NN"])


def fake_ewt(root: Path, dev_rows: tuple = ()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "en_ewt-ud-train.conllu").write_text(GOOD + "\n" + conllu("# sent_id = s3", "1|I|I|PRON|PRP|_|0|root|_|_"))
    (root / "en_ewt-ud-dev.conllu").write_text(conllu("# sent_id = d1", "1|I|I|PRON|PRP|_|2|nsubj|_|_", *dev_rows,
                                                      "2|Know|know|VERB|VB|_|0|root|_|_"))
    (root / "en_ewt-ud-test.conllu").write_text(conllu("1|Yes|yes|INTJ|UH|_|0|root|_|_"))
    return root


def test_load_ud_pos_on_a_tiny_treebank(tmp_path: Path) -> None:
    root = fake_ewt(tmp_path / "ewt")
    train = load_ud_pos(root, "train", min_frequency=2)
    assert isinstance(train, PosTaggingData) and train.split == "train" and len(train) == 3
    assert train.forms[0] == ("I", "do", "n't", "know", ".")  # the syntactic words, not "don't"
    assert train.tags[0].tolist() == upos_ids(["PRON", "AUX", "PART", "VERB", "PUNCT"]).tolist()
    assert train.vocabulary.tokens[train.vocabulary.num_reserved:] == ("I",)  # the one word seen twice
    assert train.sentence_ids == ("s1", "s2", "s3") and train.num_tokens() == 7
    assert train[2] == TaggedSentence(train.words[2], train.tags[2])
    dev = load_ud_pos(root, "dev", min_frequency=2)  # vocabulary from the train file
    assert dev.split == "valid" and dev.vocabulary == train.vocabulary
    assert dev.words[0].tolist() == train.vocabulary.encode(["I", "Know"]).tolist()
    assert dev.oov_rate() == 0.5 and dev.tag_counts().sum() == 2
    assert load_ud_pos(root, "valid", vocabulary=train.vocabulary).vocabulary is train.vocabulary
    assert repr(dev) == "PosTaggingData(valid: 1 sentences, 2 words, 17 tags, vocabulary 52)"
    batch = collate_tagged([train[0], train[1]])
    assert batch.ids.shape == batch.labels.shape == (2, 5) and batch.lengths.tolist() == [5, 1]


def test_load_ud_pos_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"No UD English-EWT folder at {re.escape(str(tmp_path / 'nowhere'))}"):
        load_ud_pos(tmp_path / "nowhere", "train")
    root = fake_ewt(tmp_path / "ewt")
    (root / "en_ewt-ud-test.conllu").unlink()
    expected_path = re.escape(str(root / "en_ewt-ud-test.conllu"))
    with pytest.raises(FileNotFoundError, match=f"Expected the test file of UD English-EWT at {expected_path}"):
        load_ud_pos(root, "test")
    with pytest.raises(ValueError, match="Unknown split 'validation'"):
        load_ud_pos(root, "validation")
    bad = fake_ewt(tmp_path / "bad", dev_rows=("2|x|x|X|X|_|0|root|_|_",))  # then a second word 2
    with pytest.raises(ConlluError, match=r"en_ewt-ud-dev.conllu, line 4: expected word ID 3"):
        load_ud_pos(bad, "dev")
    (bad / "en_ewt-ud-dev.conllu").write_text(conllu("1|x|x|NN|NN|_|0|root|_|_"))
    with pytest.raises(ConlluError, match=r"en_ewt-ud-dev.conllu, line 1: unknown UPOS tag 'NN'"):
        load_ud_pos(bad, "dev")
    with pytest.raises(TypeError, match="Expected vocabulary to be a Vocabulary"):
        load_ud_pos(root, "train", vocabulary={"a": 1})


def ewt_dir() -> Path:
    for candidate in (os.environ.get("GRAPHATTN_SHARED_DATA"), Path(__file__).parents[2] / "shared" / "data"):
        if candidate and (Path(candidate) / "text" / "ud_english_ewt").is_dir():
            return Path(candidate) / "text" / "ud_english_ewt"
    pytest.skip("the shared data folder (../shared/data or $GRAPHATTN_SHARED_DATA) with text/ud_english_ewt is absent")


@pytest.fixture(scope="module")
def ewt() -> dict[str, PosTaggingData]:
    root = ewt_dir()
    train = load_ud_pos(root, "train")
    return {
        "train": train,
        "valid": load_ud_pos(root, "dev", vocabulary=train.vocabulary),
        "test": load_ud_pos(root, "test", vocabulary=train.vocabulary),
    }


def word_lines(path: Path) -> list[tuple[str, str]]:
    """(FORM, UPOS) of every line whose ID is an integer, read with plain string operations."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        columns = line.split("\t")
        if len(columns) == 10 and columns[0].isdigit():
            out.append((columns[1], columns[3]))
    return out


def test_ewt_counts_tags_and_words_match_the_files(ewt: dict[str, PosTaggingData]) -> None:
    root = ewt_dir()
    expected = {"train": (12544, 204577), "valid": (2001, 25147), "test": (2077, 25094)}  # datasets/ud_english_ewt.md
    files = {"train": "en_ewt-ud-train.conllu", "valid": "en_ewt-ud-dev.conllu", "test": "en_ewt-ud-test.conllu"}
    for split, data in ewt.items():
        assert (len(data), data.num_tokens()) == expected[split]
        assert data.vocabulary is ewt["train"].vocabulary
        lines = word_lines(root / files[split])
        assert [w for sentence in data.forms for w in sentence] == [form for form, _ in lines]
        assert torch.cat(data.tags).tolist() == [UPOS_TAGS.index(tag) for _, tag in lines]
        assert all(len(w) == len(t) == len(f) for w, t, f in zip(data.words, data.tags, data.forms))
        assert len(set(data.sentence_ids)) == len(data)
    assert (ewt["train"].tag_counts() > 0).all()  # all 17 tags occur in training


def test_ewt_vocabulary_comes_from_train_only(ewt: dict[str, PosTaggingData]) -> None:
    vocab = ewt["train"].vocabulary
    assert len(vocab) == 9924 and vocab.unknown_signatures and not vocab.lowercase
    train_counts: dict[str, int] = {}
    for sentence in ewt["train"].forms:
        for word in sentence:
            train_counts[word] = train_counts.get(word, 0) + 1
    known = {w for w, c in train_counts.items() if c >= 2}
    assert set(vocab.tokens[vocab.num_reserved:]) == known
    dev_only = {w for sentence in ewt["valid"].forms for w in sentence} - set(train_counts)
    assert dev_only and not any(w in vocab for w in dev_only)
    assert abs(ewt["train"].oov_rate() - 0.0479) < 5e-4  # the words seen once
    assert abs(ewt["valid"].oov_rate() - 0.1110) < 5e-4 and abs(ewt["test"].oov_rate() - 0.1192) < 5e-4


def test_ewt_batches_with_a_dataloader(ewt: dict[str, PosTaggingData]) -> None:
    loader = torch.utils.data.DataLoader(ewt["valid"], batch_size=8, collate_fn=collate_tagged)
    batch = next(iter(loader))
    assert batch.ids.shape == batch.labels.shape and batch.ids.size(0) == 8
    assert torch.equal(batch.labels[batch.mask], torch.cat(ewt["valid"].tags[:8]))
    assert (batch.labels[~batch.mask] == IGNORE_INDEX).all() and (batch.ids[~batch.mask] == PAD).all()
    graph = sequence_pattern("local(window=2)", batch.lengths, batch.ids.size(1))
    assert graph.num_queries == batch.ids.numel() and graph.num_graphs == 8
