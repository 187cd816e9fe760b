"""Text as nodes: CoNLL-U treebanks, word vocabularies, padded token batches and their patterns.

A sentence is a sequence of word nodes; a batch of sentences is a right-padded ``[B, L]`` id
tensor plus the block-diagonal attention graph over its ``B * L`` slots.

* Reading: :func:`read_conllu` / :func:`parse_conllu` parse the Universal Dependencies CoNLL-U
  format into :class:`Sentence` records (syntactic words as :class:`Token`; multiword-token
  ranges ``1-2`` and empty nodes ``8.1`` are parsed, checked and kept apart in
  :class:`MultiwordToken` / :class:`EmptyNode`, so taggers see each word once). Malformed input
  raises :class:`ConlluError` naming the file, the line and what is wrong.
* Words to ids: :class:`Vocabulary` (built from training sentences with ``min_frequency`` /
  ``max_size``; ``PAD = 0``, ``UNK = 1``; optional lowercasing; optional *unknown-word
  signatures*: an out-of-vocabulary word maps to one of :data:`UNKNOWN_SIGNATURES` -- its
  capitalisation, digits, hyphen and suffix, e.g. ``<unk:lower-ing>`` -- instead of a bare
  ``UNK``, which helps part-of-speech tagging of rare words). Saved and loaded as JSON.
  Characters: :func:`word_bytes` gives each word's UTF-8 bytes (ids ``byte + 1``, the byte
  encoding of :mod:`graphattn.data.lra`, 257 ids with padding) for character-level features.
  A character vocabulary built from data is ``Vocabulary.build(list(word) for word in words)``.
* Inputs to models: :func:`one_hot` (fixed one-hot vectors) or learned embeddings, which are a
  plain ``torch.nn.Embedding(len(vocabulary), dim, padding_idx=PAD)`` in the model (no wrapper).
* Batching: :func:`pad_batch` -> :class:`TokenBatch` ``(ids [B, L], lengths [B], labels [B, L])``
  with :data:`IGNORE_INDEX` (-100, the default of ``torch.nn.functional.cross_entropy``) at
  padded labels; :func:`sequence_pattern` builds the matching attention graph.
* Part-of-speech tagging on UD English-EWT: :func:`load_ud_pos` (17 UPOS tags,
  :data:`UPOS_TAGS`, fixed by the UD guidelines; vocabulary from the train split only).
  See ``datasets/ud_english_ewt.md``.

Example:
    >>> sentences = parse_conllu('''# sent_id = s1
    ... # text = Dogs bark.
    ... 1\\tDogs\\tdog\\tNOUN\\tNNS\\t_\\t2\\tnsubj\\t_\\t_
    ... 2\\tbark\\tbark\\tVERB\\tVBP\\t_\\t0\\troot\\t_\\tSpaceAfter=No
    ... 3\\t.\\t.\\tPUNCT\\t.\\t_\\t2\\tpunct\\t_\\t_
    ... ''')
    >>> sentences[0].forms, sentences[0].upos
    (('Dogs', 'bark', '.'), ('NOUN', 'VERB', 'PUNCT'))
    >>> vocab = Vocabulary.build([s.forms for s in sentences], lowercase=True)
    >>> vocab.tokens[2:], vocab.encode(["dogs", "Bark", "cats"]).tolist()  # 'cats' is unknown
    (('.', 'bark', 'dogs'), [4, 3, 1])
    >>> batch = pad_batch([vocab.encode(sentences[0].forms), torch.tensor([4])],
    ...                   [upos_ids(sentences[0].upos), torch.tensor([12])])
    >>> batch.ids.tolist(), batch.lengths.tolist(), batch.labels.tolist()
    ([[4, 3, 2], [4, 0, 0]], [3, 1], [[7, 15, 12], [12, -100, -100]])
    >>> sequence_pattern("local(window=1)", batch.lengths, batch.ids.size(1))
    AttentionGraph(num_queries=6, num_keys=6, num_edges=8, density=0.222, num_graphs=2)
"""
from __future__ import annotations

import functools
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from graphattn.data.lra import BYTE_VOCAB_SIZE, SPLITS, _ewt_file, _split_code, bytes_to_tokens
from graphattn.graph import AttentionGraph
from graphattn.patterns.spec import PatternSpec, as_pattern_spec, sequence_batch

__all__ = [
    # CoNLL-U
    "CONLLU_COLUMNS",
    "ConlluError",
    "Token",
    "MultiwordToken",
    "EmptyNode",
    "Sentence",
    "read_conllu",
    "parse_conllu",
    # vocabularies and encodings
    "PAD",
    "UNK",
    "PAD_TOKEN",
    "UNK_TOKEN",
    "UNKNOWN_SIGNATURES",
    "unknown_signature",
    "Vocabulary",
    "BYTE_VOCAB_SIZE",
    "word_bytes",
    "one_hot",
    # batching
    "IGNORE_INDEX",
    "TokenBatch",
    "pad_batch",
    "sequence_pattern",
    # part-of-speech tagging
    "UPOS_TAGS",
    "upos_ids",
    "TaggedSentence",
    "PosTaggingData",
    "load_ud_pos",
    "collate_tagged",
]

PathLike = Union[str, "os.PathLike[str]"]

# ----------------------------------------------------------------------------------------------
# CoNLL-U
# ----------------------------------------------------------------------------------------------

CONLLU_COLUMNS = ("ID", "FORM", "LEMMA", "UPOS", "XPOS", "FEATS", "HEAD", "DEPREL", "DEPS", "MISC")
"""The ten tab-separated columns of a CoNLL-U word line (https://universaldependencies.org/format.html)."""


class ConlluError(ValueError):
    """A malformed CoNLL-U line. ``source`` is the file (or ``"<string>"``), ``line`` the
    1-based line number; the message says what was expected and what was found."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}, line {line}: {message}")
        self.source = source
        self.line = line


class Token(NamedTuple):
    """A syntactic word (a CoNLL-U line whose ID is an integer).

    ``head`` is the ID of the governing word (``0`` = root), or ``None`` where the file has
    ``_`` (no tree). ``lemma``, ``upos``, ``xpos``, ``feats``, ``deps`` and ``misc`` are the
    column strings (``"_"`` = unspecified). ``line`` is where the word is in its file.
    """

    id: int
    form: str
    lemma: str
    upos: str
    xpos: str
    feats: str
    head: int | None
    deprel: str
    deps: str
    misc: str
    line: int


class MultiwordToken(NamedTuple):
    """A surface token spanning the words ``first..last`` (an ID range such as ``1-2``, e.g.
    ``don't`` over ``do`` + ``n't``). Not a word: taggers skip it."""

    first: int
    last: int
    form: str
    misc: str
    line: int


class EmptyNode(NamedTuple):
    """An empty node of the enhanced graph (an ID such as ``8.1``: the first empty node after
    word 8; ``after = 0`` places it before the first word). Not a word: taggers skip it."""

    id: str
    after: int
    form: str
    lemma: str
    upos: str
    xpos: str
    feats: str
    deps: str
    misc: str
    line: int


class Sentence(NamedTuple):
    """One CoNLL-U sentence.

    Attributes:
        sent_id: the ``# sent_id = ...`` comment, or ``None``.
        text: the ``# text = ...`` comment, or ``None``.
        tokens: the syntactic words, IDs ``1..n`` in order.
        multiword_tokens: the ID ranges (surface tokens over several words).
        empty_nodes: the decimal IDs (enhanced-graph nodes).
        comments: every comment line of the sentence without its ``#`` and surrounding space,
            in order (``sent_id``, ``text``, ``newdoc id``, ``newpar id``, ...).
        doc_id: the latest ``# newdoc id = ...`` at or before this sentence, or ``None``.
        line: the line of the sentence's first line (comment or word).
    """

    sent_id: str | None
    text: str | None
    tokens: tuple[Token, ...]
    multiword_tokens: tuple[MultiwordToken, ...]
    empty_nodes: tuple[EmptyNode, ...]
    comments: tuple[str, ...]
    doc_id: str | None
    line: int

    @property
    def forms(self) -> tuple[str, ...]:
        """The word forms (one per syntactic word)."""
        return tuple(token.form for token in self.tokens)

    @property
    def upos(self) -> tuple[str, ...]:
        """The universal part-of-speech tag of every word."""
        return tuple(token.upos for token in self.tokens)


def read_conllu(path: PathLike) -> list[Sentence]:
    """The sentences of a CoNLL-U file, in file order.

    Blank lines end sentences (a missing blank line at the end of the file is fine; several
    blank lines in a row count as one); ``#`` lines before a sentence's words are its comments.
    Every word line must have the 10 tab-separated :data:`CONLLU_COLUMNS`, its ID must be the
    next integer (``1, 2, ...``), a range ``a-b`` (a multiword token starting at the next word)
    or a decimal ``a.k`` (an empty node after word ``a``), and HEAD must be an integer in
    ``[0, n]`` or ``_``.

    Args:
        path: a ``.conllu`` file (UTF-8; a leading byte-order mark is skipped).

    Returns:
        A list of :class:`Sentence`.

    Raises:
        FileNotFoundError: no file at ``path``.
        ConlluError: (a ``ValueError``) a malformed line; the message names the file and line
            and says what was expected, e.g. ``"x.conllu, line 7: expected 10 tab-separated
            columns (ID FORM ... MISC), got 9"``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Expected a CoNLL-U file at {path}, but there is none")
    with open(path, encoding="utf-8-sig") as handle:
        return list(_parse_lines(handle, str(path)))


def parse_conllu(text: str, *, source: str = "<string>") -> list[Sentence]:
    """:func:`read_conllu` for CoNLL-U text held in a string (``source`` names it in errors).

    Example:
        >>> parse_conllu("1\\thi\\thi\\tINTJ\\tUH\\t_\\t0\\troot\\t_\\t_")[0].tokens[0].upos
        'INTJ'
    """
    if not isinstance(text, str):
        raise TypeError(f"Expected CoNLL-U text as a str, got {type(text).__name__}; use read_conllu for a path")
    return list(_parse_lines(text.splitlines(), source))


def _parse_lines(lines: Iterable[str], source: str) -> Iterator[Sentence]:
    builder = _SentenceBuilder(source)
    doc_id: str | None = None
    number = 0
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            if builder.started:
                yield builder.finish(doc_id)
                builder = _SentenceBuilder(source)
            continue
        if line.startswith("#"):
            if builder.words_started:
                raise ConlluError(
                    source, number,
                    "comment line after the words of a sentence; expected a blank line between sentences "
                    "(comments belong before the words)",
                )
            comment = line[1:].strip()
            key, equals, value = comment.partition("=")
            if equals and key.strip() == "newdoc id":
                doc_id = value.strip()
            builder.comment(comment, number)
            continue
        builder.word_line(line, number)
    if builder.started:
        yield builder.finish(doc_id)


class _SentenceBuilder:
    """Collects the lines of one sentence and checks them."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.first_line = 0
        self.comments: list[str] = []
        self.sent_id: str | None = None
        self.text: str | None = None
        self.tokens: list[Token] = []
        self.ranges: list[MultiwordToken] = []
        self.empty: list[EmptyNode] = []
        self.words_started = False

    @property
    def started(self) -> bool:
        return bool(self.comments) or self.words_started

    def error(self, line: int, message: str) -> ConlluError:
        return ConlluError(self.source, line, message)

    def comment(self, comment: str, line: int) -> None:
        if not self.started:
            self.first_line = line
        self.comments.append(comment)
        key, equals, value = comment.partition("=")
        if equals and key.strip() == "sent_id":
            if self.sent_id is not None:
                raise self.error(line, f"second '# sent_id' in one sentence (first: {self.sent_id!r}); "
                                       "expected a blank line between sentences")
            self.sent_id = value.strip()
        elif equals and key.strip() == "text":
            self.text = value.strip()

    def word_line(self, line: str, number: int) -> None:
        if not self.started:
            self.first_line = number
        self.words_started = True
        columns = line.split("\t")
        if len(columns) != 10:
            spaces = len(columns) < 10 and " " in line
            hint = " (are the columns separated by spaces instead of tabs?)" if spaces else ""
            raise self.error(
                number,
                f"expected {len(CONLLU_COLUMNS)} tab-separated columns ({' '.join(CONLLU_COLUMNS)}), "
                f"got {len(columns)}{hint}",
            )
        for name, value in zip(CONLLU_COLUMNS, columns):
            if value == "":
                raise self.error(number, f"empty {name} column; write '_' for an unspecified value")
        identifier, form, lemma, upos, xpos, feats, head, deprel, deps, misc = columns
        expected = len(self.tokens) + 1
        if identifier.isdigit():
            if int(identifier) != expected:
                raise self.error(
                    number, f"expected word ID {expected} (IDs count 1, 2, ... within a sentence), got {identifier!r}; "
                            "a missing blank line between sentences looks like this"
                )
            self.tokens.append(
                Token(expected, form, lemma, upos, xpos, feats, self._head(head, number), deprel, deps, misc, number)
            )
        elif "-" in identifier:
            first, _, last = identifier.partition("-")
            if not (first.isdigit() and last.isdigit()):
                raise self.bad_id(number, identifier)
            first_id, last_id = int(first), int(last)
            if first_id != expected or last_id <= first_id:
                raise self.error(
                    number,
                    f"expected a multiword-token range starting at the next word {expected} and ending after it "
                    f"(e.g. '{expected}-{expected + 1}'), got {identifier!r}",
                )
            self.ranges.append(MultiwordToken(first_id, last_id, form, misc, number))
        elif "." in identifier:
            word, _, index = identifier.partition(".")
            if not (word.isdigit() and index.isdigit()) or int(index) < 1:
                raise self.bad_id(number, identifier)
            if int(word) != expected - 1:
                raise self.error(
                    number,
                    f"expected the empty node {identifier!r} right after word {word}, "
                    f"but it follows word {expected - 1}",
                )
            self.empty.append(EmptyNode(identifier, int(word), form, lemma, upos, xpos, feats, deps, misc, number))
        else:
            raise self.bad_id(number, identifier)

    def bad_id(self, line: int, identifier: str) -> ConlluError:
        return self.error(line, f"expected an integer word ID, a range 'a-b' or a decimal 'a.k', got {identifier!r}")

    def _head(self, head: str, line: int) -> int | None:
        if head == "_":
            return None
        if not head.isdigit():
            raise self.error(line, f"expected HEAD to be a word ID (an integer >= 0, 0 = root) or '_', got {head!r}")
        return int(head)

    def finish(self, doc_id: str | None) -> Sentence:
        if not self.tokens:
            raise self.error(
                self.first_line, "sentence without words: expected word lines (ID 1, 2, ...) after its comments"
            )
        n = len(self.tokens)
        for token in self.tokens:
            if token.head is not None and token.head > n:
                raise self.error(
                    token.line, f"HEAD {token.head} of word {token.id} is not a word of this {n}-word sentence"
                )
        for span in self.ranges:
            if span.last > n:
                raise self.error(span.line, f"multiword token {span.first}-{span.last} ends after the last word {n}")
        return Sentence(
            self.sent_id, self.text, tuple(self.tokens), tuple(self.ranges), tuple(self.empty), tuple(self.comments),
            doc_id, self.first_line,
        )


# ----------------------------------------------------------------------------------------------
# vocabularies
# ----------------------------------------------------------------------------------------------

PAD = 0
UNK = 1
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"

# suffixes that mark English parts of speech; longest first so that "-less" wins over "-s"
_SUFFIXES = tuple(
    sorted(
        ("ing", "ed", "ly", "ion", "er", "est", "al", "ity", "ive", "ous", "ful", "less", "able", "ment", "ness",
         "ic", "ism", "ist", "s", "y"),
        key=lambda s: (-len(s), s),
    )
)
_WEB_ENDINGS = (".com", ".org", ".net", ".edu", ".gov", ".html", ".htm")
_CASES = ("cap", "lower")
UNKNOWN_SIGNATURES = (
    ("<unk:punct>", "<unk:web>", "<unk:number>", "<unk:alnum>", "<unk:allcaps>")
    + tuple(f"<unk:{case}-hyphen>" for case in _CASES)
    + tuple(f"<unk:{case}>" for case in _CASES)
    + tuple(f"<unk:{case}-{suffix}>" for case in _CASES for suffix in _SUFFIXES)
)
"""The fixed classes of :func:`unknown_signature` (49), reserved in a :class:`Vocabulary` built
with ``unknown_signatures=True`` right after ``PAD`` and ``UNK``."""


def unknown_signature(word: str) -> str:
    """The class of an out-of-vocabulary word, from its spelling (one of :data:`UNKNOWN_SIGNATURES`).

    The first rule that applies: no letter or digit -> ``punct``; an address (``://``, ``www.``,
    ``@``, or ending in ``.com``, ``.org``, ...) -> ``web``; digits without letters ->
    ``number``; digits and letters -> ``alnum``; two or more letters, all upper case ->
    ``allcaps``; otherwise the case of the first letter-or-digit (``cap`` or ``lower``) with
    ``-hyphen`` when the word has a hyphen, else with the longest matching suffix (``-ing``,
    ``-ed``, ``-ly``, ``-s``, ... when the word has at least 2 more characters), else alone.
    These are the word features that decide most part-of-speech tags of unseen words
    (capitals: proper nouns; ``-ly``: adverbs; ``-ing`` / ``-ed``: verbs; digits: numbers).

    Example:
        >>> [unknown_signature(w) for w in ["Tokyo", "reviewing", "3,500", "--", "www.x.org", "well-known"]]
        ['<unk:cap>', '<unk:lower-ing>', '<unk:number>', '<unk:punct>', '<unk:web>', '<unk:lower-hyphen>']
    """
    if not any(ch.isalnum() for ch in word):
        return "<unk:punct>"
    lower = word.lower()
    if "://" in lower or lower.startswith("www.") or "@" in lower or lower.endswith(_WEB_ENDINGS):
        return "<unk:web>"
    has_letter = any(ch.isalpha() for ch in word)
    if any(ch.isdigit() for ch in word):
        return "<unk:alnum>" if has_letter else "<unk:number>"
    letters = [ch for ch in word if ch.isalpha()]
    if len(letters) >= 2 and all(ch.isupper() for ch in letters):
        return "<unk:allcaps>"
    first = next(ch for ch in word if ch.isalnum())
    case = "cap" if first.isupper() else "lower"
    if "-" in word:
        return f"<unk:{case}-hyphen>"
    for suffix in _SUFFIXES:
        if len(lower) >= len(suffix) + 2 and lower.endswith(suffix):
            return f"<unk:{case}-{suffix}>"
    return f"<unk:{case}>"


_VOCABULARY_FORMAT = "graphattn.vocabulary/1"


@dataclass(frozen=True)
class Vocabulary:
    """Words <-> ids: ``PAD = 0``, ``UNK = 1``, then (with ``unknown_signatures``) the 49
    :data:`UNKNOWN_SIGNATURES`, then the words, most frequent first.

    Build one from training sentences with :meth:`build`; ``vocab.encode(words)`` maps every
    word (lowercased first when ``lowercase``) to its id and every unknown word to ``UNK`` or,
    with ``unknown_signatures``, to the id of its :func:`unknown_signature` (computed from the
    original spelling, so capitalisation counts even when lowercasing). Words below
    ``min_frequency`` in training are left out on purpose: they become unknown in the
    training data too, which is what trains the ``UNK`` / signature embeddings.

    Attributes:
        tokens: id -> string (the reserved ids first).
        lowercase: whether words are lowercased before lookup.
        unknown_signatures: whether unknown words map to signature ids instead of ``UNK``.

    Example:
        >>> vocab = Vocabulary.build([["the", "cat"], ["the", "dog"]], min_frequency=1)
        >>> vocab
        Vocabulary(5 ids: 2 reserved + 3 words, lowercase=False, unknown_signatures=False)
        >>> vocab.tokens
        ('<pad>', '<unk>', 'the', 'cat', 'dog')
        >>> vocab.decode(vocab.encode(["the", "bird"]))
        ['the', '<unk>']
        >>> sig = Vocabulary.build([["the", "cat"]], unknown_signatures=True)
        >>> sig.decode(sig.encode(["the", "Tokyo", "running"]))
        ['the', '<unk:cap>', '<unk:lower-ing>']
    """

    tokens: tuple[str, ...]
    lowercase: bool = False
    unknown_signatures: bool = False
    _index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tokens = tuple(self.tokens)
        reserved = self.reserved_tokens(self.unknown_signatures)
        if tokens[: len(reserved)] != reserved:
            raise ValueError(
                f"Expected the vocabulary to start with its reserved tokens {reserved[:3]}... "
                f"({len(reserved)} of them), got {tokens[:3]}...; build vocabularies with Vocabulary.build"
            )
        words = tokens[len(reserved):]
        index = {word: position for position, word in enumerate(words, len(reserved))}
        if len(index) != len(words):
            duplicates = sorted(w for w, c in Counter(words).items() if c > 1)
            raise ValueError(f"Expected distinct words in a vocabulary, got duplicates {duplicates[:5]}")
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "_index", index)

    @staticmethod
    def reserved_tokens(unknown_signatures: bool = False) -> tuple[str, ...]:
        """The strings of the reserved ids: ``('<pad>', '<unk>')`` plus the signatures."""
        return (PAD_TOKEN, UNK_TOKEN) + (UNKNOWN_SIGNATURES if unknown_signatures else ())

    @classmethod
    def build(
        cls,
        sentences: Iterable[Sequence[str]],
        *,
        min_frequency: int = 1,
        max_size: int | None = None,
        lowercase: bool = False,
        unknown_signatures: bool = False,
    ) -> "Vocabulary":
        """A vocabulary of the words in ``sentences`` (an iterable of word sequences).

        Words (after lowercasing, if asked) occurring at least ``min_frequency`` times are kept,
        most frequent first, ties in alphabetical order (so the result does not depend on the
        order of the sentences), and cut so that the whole vocabulary, reserved ids included,
        has at most ``max_size`` ids.

        Args:
            sentences: word sequences, e.g. ``[s.forms for s in read_conllu(train_file)]``.
            min_frequency: least count for a word to get an id (``>= 1``).
            max_size: most ids in all (``None``: no limit); must leave room for one word.
            lowercase: lowercase words before counting and lookup.
            unknown_signatures: reserve the :data:`UNKNOWN_SIGNATURES` for unknown words.
        """
        if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
            raise ValueError(f"Expected min_frequency to be an int >= 1, got {min_frequency!r}")
        reserved = cls.reserved_tokens(unknown_signatures)
        bad_size = isinstance(max_size, bool) or not isinstance(max_size, int) or max_size <= len(reserved)
        if max_size is not None and bad_size:
            what = "the reserved ids and signatures" if unknown_signatures else "the reserved ids"
            raise ValueError(f"Expected max_size to be None or an int > {len(reserved)} ({what}), got {max_size!r}")
        if isinstance(sentences, str):
            raise TypeError("Expected an iterable of word sequences, got one str; wrap it: Vocabulary.build([words])")
        counts: Counter[str] = Counter()
        for sentence in sentences:
            if isinstance(sentence, str):
                raise TypeError(
                    f"Expected each sentence to be a sequence of words, got the str {sentence[:30]!r}; "
                    "split it into words first"
                )
            counts.update([word.lower() for word in sentence] if lowercase else sentence)
        words = sorted((w for w, c in counts.items() if c >= min_frequency), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max_size - len(reserved)]
        return cls(reserved + tuple(words), lowercase, unknown_signatures)

    # ------------------------------------------------------------------ lookups
    @property
    def num_reserved(self) -> int:
        """Number of reserved ids (``PAD``, ``UNK`` and the signatures): word ids start here."""
        return 2 + (len(UNKNOWN_SIGNATURES) if self.unknown_signatures else 0)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and self._normalize(word) in self._index

    def _normalize(self, word: str) -> str:
        return word.lower() if self.lowercase else word

    def id(self, word: str) -> int:
        """The id of ``word``; an unknown word gets ``UNK`` or its signature's id."""
        found = self._index.get(self._normalize(word))
        if found is not None:
            return found
        if self.unknown_signatures:
            return 2 + UNKNOWN_SIGNATURES.index(unknown_signature(word))
        return UNK

    def encode(self, words: Sequence[str]) -> Tensor:
        """Ids of ``words``, int64 ``[len(words)]``."""
        if isinstance(words, str):
            raise TypeError(f"Expected a sequence of words, got the str {words[:30]!r}; split it first (or use [word])")
        return torch.tensor([self.id(word) for word in words], dtype=torch.long)

    def decode(self, ids: Tensor | Sequence[int], *, skip_padding: bool = True) -> list[str]:
        """Strings of ``ids`` (1-D); ``PAD`` ids are dropped unless ``skip_padding=False``."""
        ids = torch.as_tensor(ids)
        if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"Expected 1-D integer ids, got {ids.dtype} {list(ids.shape)}; decode batches row by row")
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= len(self)):
            raise ValueError(f"Expected ids in [0, {len(self)}), got values in [{int(ids.min())}, {int(ids.max())}]")
        return [self.tokens[i] for i in ids.tolist() if not (skip_padding and i == PAD)]

    def is_known(self, ids: Tensor) -> Tensor:
        """``True`` where ``ids`` are words of the vocabulary (not ``PAD``, ``UNK`` or a signature)."""
        return torch.as_tensor(ids) >= self.num_reserved

    # ------------------------------------------------------------------ files
    def save(self, path: PathLike) -> None:
        """Write the vocabulary as JSON (``{"format", "lowercase", "unknown_signatures", "words"}``),
        atomically (a temporary file, then a rename)."""
        path = Path(path)
        payload = {
            "format": _VOCABULARY_FORMAT,
            "lowercase": self.lowercase,
            "unknown_signatures": self.unknown_signatures,
            "words": list(self.tokens[self.num_reserved:]),
        }
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(payload, ensure_ascii=False, indent=0), encoding="utf-8")
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: PathLike) -> "Vocabulary":
        """Read a vocabulary written by :meth:`save`."""
        path = Path(path)
        payload = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(payload, dict) or payload.get("format") != _VOCABULARY_FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise ValueError(f"Expected a vocabulary file of format {_VOCABULARY_FORMAT!r} at {path}, got {found!r}")
        signatures = bool(payload["unknown_signatures"])
        return cls(cls.reserved_tokens(signatures) + tuple(payload["words"]), bool(payload["lowercase"]), signatures)

    def __repr__(self) -> str:
        return (
            f"Vocabulary({len(self)} ids: {self.num_reserved} reserved + {len(self) - self.num_reserved} words, "
            f"lowercase={self.lowercase}, unknown_signatures={self.unknown_signatures})"
        )


def word_bytes(words: Sequence[str], *, max_bytes: int | None = None) -> Tensor:
    """The UTF-8 bytes of every word as ids ``byte + 1`` (:func:`graphattn.data.lra.bytes_to_tokens`),
    right-padded with 0: int64 ``[len(words), C]``, ``C`` = the longest word (or ``max_bytes``,
    longer words cut). :data:`BYTE_VOCAB_SIZE` = 257 ids. For character-level word features
    (e.g. a small CNN or attention over each word's bytes) that need no vocabulary and have no
    unknown characters.

    Example:
        >>> word_bytes(["hé", "a"]).tolist()
        [[105, 196, 170], [98, 0, 0]]
    """
    if isinstance(words, str):
        raise TypeError(f"Expected a sequence of words, got the str {words[:30]!r}; use [word]")
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
        raise ValueError(f"Expected max_bytes to be None or an int >= 1, got {max_bytes!r}")
    rows = [bytes_to_tokens(word)[:max_bytes] for word in words]
    if not rows:
        return torch.zeros(0, max_bytes or 0, dtype=torch.long)
    out = pad_sequence(rows, batch_first=True, padding_value=PAD)
    if max_bytes is not None and out.size(1) < max_bytes:
        out = F.pad(out, (0, max_bytes - out.size(1)), value=PAD)
    return out


def one_hot(ids: Tensor, vocab_size: int, *, zero_padding: bool = False, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot vectors of token ids: ``[...] -> [..., vocab_size]``.

    The fixed counterpart of a learned ``torch.nn.Embedding(vocab_size, dim)`` (which models use
    directly; ``one_hot(ids, V) @ embedding.weight == embedding(ids)``).

    Args:
        ids: integer ids in ``[0, vocab_size)``, any shape.
        vocab_size: the number of ids ``V``.
        zero_padding: make the vectors of :data:`PAD` ids all zero.
        dtype: the result's dtype.

    Example:
        >>> one_hot(torch.tensor([2, 0]), 3, zero_padding=True).tolist()
        [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """
    if not isinstance(ids, Tensor) or ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
        got = ids.dtype if isinstance(ids, Tensor) else type(ids).__name__
        raise TypeError(f"Expected integer token ids as a tensor, got {got}; convert with torch.as_tensor(ids).long()")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"Expected vocab_size to be an int >= 1, got {vocab_size!r}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(
            f"Expected ids in [0, {vocab_size}), got values in [{int(ids.min())}, {int(ids.max())}]; "
            f"pass the full vocabulary size (len(vocabulary))"
        )
    out = F.one_hot(ids.long(), vocab_size).to(dtype)
    if zero_padding:
        out = out * (ids != PAD).unsqueeze(-1).to(dtype)
    return out


# ----------------------------------------------------------------------------------------------
# batching
# ----------------------------------------------------------------------------------------------

IGNORE_INDEX = -100
"""Label of padded positions: the default ``ignore_index`` of ``torch.nn.functional.cross_entropy``."""


class TokenBatch(NamedTuple):
    """Right-padded sequences: ``ids`` int64 ``[B, L]`` (padding :data:`PAD`), ``lengths`` int64
    ``[B]``, and per-token ``labels`` int64 ``[B, L]`` (:data:`IGNORE_INDEX` at padding) or
    ``None`` when no labels were given; ``chars``: the bytes of every word, int64 ``[B, L, C]``
    (:func:`word_bytes` ids, 0 at padding), or ``None``. Node ``b * L + i`` of
    :func:`sequence_pattern`'s graph is ``ids[b, i]``."""

    ids: Tensor
    lengths: Tensor
    labels: Tensor | None
    chars: Tensor | None = None

    @property
    def mask(self) -> Tensor:
        """``[B, L]`` bool, ``True`` at real tokens (the dense-mask polarity of the library)."""
        return torch.arange(self.ids.size(1), device=self.ids.device) < self.lengths.to(self.ids.device)[:, None]


def _as_id_rows(rows: Sequence[Tensor | Sequence[int]], name: str) -> list[Tensor]:
    if isinstance(rows, Tensor) or isinstance(rows, str):
        raise TypeError(f"Expected '{name}' as a list of 1-D id sequences, got {type(rows).__name__}")
    out = []
    for position, row in enumerate(rows):
        row = torch.as_tensor(row) if not isinstance(row, Tensor) else row
        if row.numel() == 0:
            row = row.reshape(0).long()
        if row.dim() != 1 or row.dtype.is_floating_point or row.dtype == torch.bool:
            raise ValueError(
                f"Expected {name}[{position}] to hold integer ids of shape [L], got {row.dtype} {list(row.shape)}"
            )
        out.append(row.long())
    return out


def pad_batch(
    sequences: Sequence[Tensor | Sequence[int]],
    labels: Sequence[Tensor | Sequence[int]] | None = None,
    *,
    pad_to: int | None = None,
) -> TokenBatch:
    """Right-pad id sequences (and their per-token labels) into a :class:`TokenBatch`.

    Args:
        sequences: ``B`` 1-D id sequences (tensors or lists).
        labels: ``None``, or one label sequence per sequence, of the same length (e.g. tag ids).
        pad_to: pad to this length (``>=`` the longest) instead of to the longest sequence.

    Returns:
        ``TokenBatch(ids [B, L], lengths [B], labels [B, L] or None)``: ids padded with
        :data:`PAD`, labels with :data:`IGNORE_INDEX`.

    Example:
        >>> b = pad_batch([[5, 6], [7]], [[1, 2], [3]], pad_to=3)
        >>> b.ids.tolist(), b.labels.tolist(), b.mask.tolist()
        ([[5, 6, 0], [7, 0, 0]], [[1, 2, -100], [3, -100, -100]], [[True, True, False], [True, False, False]])
    """
    rows = _as_id_rows(sequences, "sequences")
    if not rows:
        raise ValueError("Expected at least one sequence to pad, got none")
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    width = int(lengths.max())
    if pad_to is not None:
        if isinstance(pad_to, bool) or not isinstance(pad_to, int) or pad_to < width:
            raise ValueError(f"Expected pad_to to be an int >= the longest sequence ({width}), got {pad_to!r}")
        width = pad_to

    def pad(parts: list[Tensor], value: int) -> Tensor:
        if not width:
            return torch.zeros(len(parts), 0, dtype=torch.long)
        out = pad_sequence(parts, batch_first=True, padding_value=value)
        return F.pad(out, (0, width - out.size(1)), value=value) if out.size(1) < width else out

    padded_labels = None
    if labels is not None:
        label_rows = _as_id_rows(labels, "labels")
        if len(label_rows) != len(rows):
            raise ValueError(f"Expected one label sequence per sequence ({len(rows)}), got {len(label_rows)}")
        for position, (row, label_row) in enumerate(zip(rows, label_rows)):
            if len(label_row) != len(row):
                raise ValueError(
                    f"Expected labels[{position}] to have one label per token ({len(row)}), got {len(label_row)}"
                )
        padded_labels = pad(label_rows, IGNORE_INDEX)
    return TokenBatch(pad(rows, PAD), lengths, padded_labels)


def sequence_pattern(
    spec: PatternSpec | str,
    lengths: Tensor | Sequence[int],
    slots: int | None = None,
    *,
    device: torch.device | str | None = None,
) -> AttentionGraph:
    """The attention graph of a padded batch: :func:`graphattn.patterns.sequence_batch` with one
    pattern per sequence, built for that sequence's own length.

    Sequence ``b`` occupies nodes ``b * slots + [0, lengths[b])`` -- the order of
    ``TokenBatch.ids.reshape(-1)`` -- and padded slots have no edges (they neither attend nor
    are attended).

    Args:
        spec: a :class:`~graphattn.patterns.PatternSpec` or its string, e.g. ``"local(window=3)"``.
        lengths: ``[B]`` real tokens per sequence (``TokenBatch.lengths``).
        slots: ``L``, the padded length (default: the longest sequence).
        device: where the graph lives.

    Example:
        >>> g = sequence_pattern("full", torch.tensor([2, 1]), 2)
        >>> g.to_dense().int()
        tensor([[1, 1, 0, 0],
                [1, 1, 0, 0],
                [0, 0, 1, 0],
                [0, 0, 0, 0]], dtype=torch.int32)
    """
    lengths = lengths.tolist() if isinstance(lengths, Tensor) else list(lengths)
    if not lengths:
        raise ValueError("Expected at least one sequence length, got none")
    slots = max(lengths) if slots is None else slots
    return sequence_batch(as_pattern_spec(spec), lengths, query_slots=slots, device=device)


# ----------------------------------------------------------------------------------------------
# part-of-speech tagging: UD English-EWT
# ----------------------------------------------------------------------------------------------

UPOS_TAGS = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT", "SCONJ",
    "SYM", "VERB", "X",
)
"""The 17 universal part-of-speech tags of the UD v2 guidelines
(https://universaldependencies.org/u/pos/), in their alphabetical order; tag id = position."""
_UPOS_INDEX = {tag: i for i, tag in enumerate(UPOS_TAGS)}


def upos_ids(tags: Sequence[str]) -> Tensor:
    """Ids of UPOS tags (positions in :data:`UPOS_TAGS`), int64 ``[len(tags)]``.

    Example:
        >>> upos_ids(["NOUN", "VERB"]).tolist()
        [7, 15]
    """
    try:
        return torch.tensor([_UPOS_INDEX[tag] for tag in tags], dtype=torch.long)
    except KeyError as error:
        raise ValueError(f"Unknown UPOS tag {error.args[0]!r}; expected one of {', '.join(UPOS_TAGS)}") from None


class TaggedSentence(NamedTuple):
    """One example: word ids and UPOS tag ids, int64 ``[L]`` each, and optionally the bytes of
    every word, int64 ``[L, C]`` (:func:`word_bytes`)."""

    words: Tensor
    tags: Tensor
    chars: Tensor | None = None


@dataclass(frozen=True, eq=False)
class PosTaggingData:
    """Sentences as word ids with one UPOS tag per word: a map-style ``Dataset``
    (``DataLoader(data, batch_size=..., collate_fn=collate_tagged)``).

    Attributes:
        split: ``"train"``, ``"valid"`` or ``"test"``.
        words: one int64 ``[L_i]`` tensor of word ids per sentence.
        tags: one int64 ``[L_i]`` tensor of tag ids per sentence (positions in ``tag_names``).
        forms: the words as strings (for character features: :func:`word_bytes`).
        sentence_ids: the ``# sent_id`` of every sentence.
        vocabulary: the word vocabulary (built on the training split).
        tag_names: :data:`UPOS_TAGS`.
        max_word_bytes: with an int, every example also holds the bytes of its words,
            ``chars`` int64 ``[L, max_word_bytes]`` (longer words cut; computed once, on first
            use); ``None``: ``chars`` is ``None``.
    """

    split: str
    words: list[Tensor]
    tags: list[Tensor]
    forms: tuple[tuple[str, ...], ...]
    sentence_ids: tuple[str, ...]
    vocabulary: Vocabulary
    tag_names: tuple[str, ...] = UPOS_TAGS
    max_word_bytes: int | None = None

    def __post_init__(self) -> None:
        value = self.max_word_bytes
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"Expected max_word_bytes to be None or an int >= 1, got {value!r}")

    def __len__(self) -> int:
        return len(self.words)

    def __getitem__(self, index: int) -> TaggedSentence:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"Expected an int index, got {type(index).__name__}")
        chars = self.chars[index] if self.max_word_bytes is not None else None
        return TaggedSentence(self.words[index], self.tags[index], chars)

    @functools.cached_property
    def chars(self) -> list[Tensor]:
        """The bytes of the words of every sentence, int64 ``[L_i, max_word_bytes]`` each
        (:func:`word_bytes`); needs ``max_word_bytes``."""
        if self.max_word_bytes is None:
            raise ValueError("This data set has no character features; load it with max_word_bytes=<int>")
        return [word_bytes(forms, max_bytes=self.max_word_bytes) for forms in self.forms]

    @property
    def num_tags(self) -> int:
        """17."""
        return len(self.tag_names)

    def num_tokens(self) -> int:
        """Words over all sentences."""
        return sum(len(w) for w in self.words)

    def lengths(self) -> Tensor:
        """Words per sentence, int64 ``[N]``."""
        return torch.tensor([len(w) for w in self.words], dtype=torch.long)

    def tag_counts(self) -> Tensor:
        """Words per tag, int64 ``[17]``."""
        if not self.tags:
            return torch.zeros(self.num_tags, dtype=torch.long)
        return torch.bincount(torch.cat(self.tags), minlength=self.num_tags)

    def oov_rate(self) -> float:
        """Fraction of words that are not in the vocabulary (mapped to ``UNK`` or a signature)."""
        total = self.num_tokens()
        if not total:
            return 0.0
        return float((~self.vocabulary.is_known(torch.cat(self.words))).sum()) / total

    def __repr__(self) -> str:
        return (
            f"PosTaggingData({self.split}: {len(self)} sentences, {self.num_tokens()} words, "
            f"{self.num_tags} tags, vocabulary {len(self.vocabulary)})"
        )


def collate_tagged(examples: Sequence[TaggedSentence], *, pad_to: int | None = None) -> TokenBatch:
    """:func:`pad_batch` over :class:`TaggedSentence` examples (a ``DataLoader`` ``collate_fn``);
    when the examples hold ``chars`` ``[L_i, C]``, the batch holds them as ``[B, L, C]``
    (0 at padded words).

    Example:
        >>> a = TaggedSentence(torch.tensor([5, 6]), torch.tensor([7, 1]), word_bytes(["a", "cat"]))
        >>> b = TaggedSentence(torch.tensor([9]), torch.tensor([3]), word_bytes(["hi"]))
        >>> batch = collate_tagged([a, b])
        >>> batch.ids.tolist(), batch.chars.shape
        ([[5, 6], [9, 0]], torch.Size([2, 2, 3]))
    """
    batch = pad_batch([e.words for e in examples], [e.tags for e in examples], pad_to=pad_to)
    with_chars = [len(e) > 2 and e[2] is not None for e in examples]
    if not any(with_chars):
        return batch
    if not all(with_chars):
        raise ValueError(
            f"Expected every example to hold chars or none, but example {with_chars.index(False)} has none"
        )
    slots = batch.ids.size(1)
    width = max(int(e.chars.size(1)) for e in examples)
    chars = torch.full((len(examples), slots, width), PAD, dtype=torch.long)
    for row, example in enumerate(examples):
        if example.chars.dim() != 2 or example.chars.size(0) != len(example.words):
            raise ValueError(
                f"Expected example {row}'s chars as [L, C] with L = {len(example.words)} words, got "
                f"{list(example.chars.shape)}"
            )
        chars[row, : example.chars.size(0), : example.chars.size(1)] = example.chars
    return batch._replace(chars=chars)


def _tagged_words(path: Path) -> tuple[list[Sentence], list[Tensor]]:
    sentences = read_conllu(path)
    tags = []
    for sentence in sentences:
        for token in sentence.tokens:
            if token.upos not in _UPOS_INDEX:
                raise ConlluError(
                    str(path), token.line, f"unknown UPOS tag {token.upos!r}; expected one of {', '.join(UPOS_TAGS)}"
                )
        tags.append(torch.tensor([_UPOS_INDEX[token.upos] for token in sentence.tokens], dtype=torch.long))
    return sentences, tags


def load_ud_pos(
    root: PathLike,
    split: str = "train",
    *,
    vocabulary: Vocabulary | None = None,
    min_frequency: int = 2,
    max_size: int | None = None,
    lowercase: bool = False,
    unknown_signatures: bool = True,
    max_word_bytes: int | None = None,
) -> PosTaggingData:
    """Part-of-speech tagging on UD English-EWT: every sentence as word ids, every word's UPOS tag.

    The words are the treebank's syntactic words (``do`` + ``n't``, not the surface token
    ``don't``; multiword tokens and empty nodes are skipped). The 17 tags are fixed
    (:data:`UPOS_TAGS`), not read from the data. The vocabulary is built from the **train**
    file only (the train file is read when ``split`` is another and no ``vocabulary`` is given;
    pass ``vocabulary=train.vocabulary`` to avoid reading it again).

    Args:
        root: the folder holding ``en_ewt-ud-{train,dev,test}.conllu``.
        split: ``"train"``, ``"valid"`` (alias ``"dev"``) or ``"test"``.
        vocabulary: use this vocabulary instead of building one (the next four arguments are
            then unused).
        min_frequency, max_size, lowercase, unknown_signatures: see :meth:`Vocabulary.build`.
            The default (``min_frequency=2`` with signatures) leaves the training words seen
            once as unknown, so the model learns what to do with unknown words.
        max_word_bytes: also give every example the bytes of its words (``chars``, for
            character features; see :class:`PosTaggingData`).

    Returns:
        :class:`PosTaggingData`.

    Raises:
        FileNotFoundError: the folder or the split's file is missing (the message gives the
            expected path).
        ConlluError: a malformed line or an unknown UPOS tag (naming the file and line).
    """
    path = _ewt_file(root, split)
    split = SPLITS[_split_code(split)]
    sentences, tags = _tagged_words(path)
    if vocabulary is None:
        train = sentences if split == "train" else read_conllu(_ewt_file(root, "train"))
        vocabulary = Vocabulary.build(
            (s.forms for s in train), min_frequency=min_frequency, max_size=max_size, lowercase=lowercase,
            unknown_signatures=unknown_signatures,
        )
    elif not isinstance(vocabulary, Vocabulary):
        raise TypeError(f"Expected vocabulary to be a Vocabulary or None, got {type(vocabulary).__name__}")
    return PosTaggingData(
        split,
        [vocabulary.encode(s.forms) for s in sentences],
        tags,
        tuple(s.forms for s in sentences),
        tuple(s.sent_id or "" for s in sentences),
        vocabulary,
        max_word_bytes=max_word_bytes,
    )

