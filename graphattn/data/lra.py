"""Long-Range-Arena-style classification tasks, generated offline or read from real files.

Every task gives a :class:`SequenceClassificationData`: one int64 token sequence and one class
per example, with the vocabulary size, the class count and the class names. Token id ``0``
(:data:`PAD`) is never used by a task, so :func:`collate` can right-pad a batch with it and
return ``(tokens [B, L], lengths [B], labels [B])``.

Tasks:

* **ListOps** (:func:`make_listops`): nested ``MIN``/``MAX``/``MED``/``SM`` expressions over
  digits, the generator of Nangia & Bowman (2018) with the settings of LRA (Tay et al. 2021):
  a node below depth 10 is an operator with probability 0.25, an operator has 2-10 arguments,
  only expressions strictly longer than 500 and shorter than 2000 tokens are kept, without
  duplicates. 10 classes (the value), 16 token ids. :func:`evaluate_listops` computes the
  value of an expression with a stack, independently of the generator.
* **Byte-level genre classification** (:func:`load_ewt_genre`): documents of the Universal
  Dependencies English Web Treebank as UTF-8 bytes (token = byte + 1, 257 ids), labelled with
  their genre (answers, email, newsgroup, reviews, weblog), in the treebank's own
  train / dev / test split. Documents outside 1,000-4,000 bytes are split (at sentence
  boundaries) or joined with neighbours of the same genre and split; see
  ``datasets/lra.md`` for the counts.
* **Pathfinder** (:func:`make_pathfinder`): 32x32 grey images of dashed curved paths and two
  round markers, flattened to 1,024 pixel tokens; positive when one path joins the markers
  (after Linsley et al. 2018). Each example keeps its layout (:class:`PathfinderLayout`).
* **Shapes** (:func:`make_shapes`): 32x32 grey images of 10 shape classes (disc, ring, square,
  ...) as 1,024 pixel tokens -- the pixel-sequence image task, **not CIFAR-10**.
  :func:`load_digits32` gives scikit-learn's 8x8 digits upsampled to 32x32 instead, where
  scikit-learn is installed.

Generated tasks draw from ``numpy.random.default_rng`` seeded with ``(seed, task, split[,
index])``: the same arguments give the same data (with the same NumPy version: NumPy does not
promise identical streams across versions). Pathfinder and Shapes seed every example by its
index, so example ``i`` does not depend on ``n``; ListOps is one stream (rejection sampling),
so ``make_listops(n)`` starts with ``make_listops(m)`` for ``m < n``.

Example:
    >>> data = make_listops(2, seed=1, min_length=5, max_length=16)
    >>> data
    SequenceClassificationData(listops: 2 examples, lengths 10-13, 10 classes, vocab 16)
    >>> listops_to_text(data[1].tokens)
    '[MIN [MAX 6 7 2 1 0 7 8 ] 1 7 ]'
    >>> evaluate_listops(data[1].tokens) == data[1].label == 1
    True
    >>> batch = collate([data[0], data[1]])
    >>> batch.tokens.shape, batch.lengths.tolist(), batch.labels.tolist()
    (torch.Size([2, 13]), [10, 13], [6, 1])
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "PAD",
    "SPLITS",
    "LabeledSequence",
    "PaddedBatch",
    "SequenceClassificationData",
    "collate",
    # ListOps
    "LISTOPS_SYMBOLS",
    "LISTOPS_VOCAB_SIZE",
    "LISTOPS_OPERATORS",
    "make_listops",
    "evaluate_listops",
    "listops_to_text",
    "listops_tokenize",
    # text
    "EWT_GENRES",
    "EWT_FILES",
    "BYTE_VOCAB_SIZE",
    "EwtDocument",
    "TextChunk",
    "read_ewt_documents",
    "load_ewt_genre",
    "bytes_to_tokens",
    "tokens_to_text",
    # Pathfinder
    "PathfinderConfig",
    "PathfinderLayout",
    "make_pathfinder",
    # images
    "SHAPE_CLASSES",
    "ShapeParameters",
    "make_shapes",
    "load_digits32",
    "upsample_bilinear",
    "quantize",
]

PAD = 0
SPLITS = ("train", "valid", "test")
PathLike = Union[str, "os.PathLike[str]"]

# stream identifiers mixed into every seed, so that tasks and splits never share random numbers
_TASK_CODES = {"listops": 1, "pathfinder": 2, "shapes": 3, "digits": 4}


# ----------------------------------------------------------------------------------------------
# containers and batching
# ----------------------------------------------------------------------------------------------


class LabeledSequence(NamedTuple):
    """One example: ``tokens`` (int64 ``[L]``, ids in ``[1, vocab_size)``) and its class."""

    tokens: Tensor
    label: int


class PaddedBatch(NamedTuple):
    """A right-padded batch: ``tokens`` int64 ``[B, L]`` (padding :data:`PAD`), ``lengths`` int64
    ``[B]`` (real tokens per row), ``labels`` int64 ``[B]``."""

    tokens: Tensor
    lengths: Tensor
    labels: Tensor


@dataclass(frozen=True, eq=False)
class SequenceClassificationData:
    """A list-like data set of token sequences with one class each.

    ``data[i]`` is a :class:`LabeledSequence`; the object works as a map-style
    ``torch.utils.data.Dataset`` with ``collate_fn=collate``.

    Attributes:
        task: the task's name (``"listops"``, ``"ewt_genre"``, ``"pathfinder"``, ``"shapes"``,
            ``"digits32"``).
        tokens: one int64 ``[L_i]`` tensor per example, ids in ``[1, vocab_size)``.
        labels: int64 ``[N]``, classes in ``[0, num_classes)``.
        vocab_size: number of token ids, :data:`PAD` included.
        num_classes: number of classes.
        class_names: the name of each class.
        metadata: empty, or one record per example saying where it came from
            (:class:`TextChunk`, :class:`PathfinderLayout`, :class:`ShapeParameters`).
    """

    task: str
    tokens: list[Tensor]
    labels: Tensor
    vocab_size: int
    num_classes: int
    class_names: tuple[str, ...]
    metadata: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.labels.dim() != 1 or len(self.labels) != len(self.tokens):
            raise ValueError(
                f"Expected labels of shape [{len(self.tokens)}] (one per sequence), got {list(self.labels.shape)}"
            )
        if self.metadata and len(self.metadata) != len(self.tokens):
            raise ValueError(
                f"Expected no metadata or one record per example ({len(self.tokens)}), got {len(self.metadata)}"
            )
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"Expected {self.num_classes} class names, got {len(self.class_names)}")

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> LabeledSequence:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"Expected an int index, got {type(index).__name__}; use subset() for several examples")
        return LabeledSequence(self.tokens[index], int(self.labels[index]))

    def subset(self, indices: Tensor | Sequence[int] | slice) -> "SequenceClassificationData":
        """The examples at ``indices`` (a slice, a list or an integer tensor), in that order."""
        if isinstance(indices, slice):
            indices = range(len(self))[indices]
        rows = [int(i) for i in indices]
        return SequenceClassificationData(
            self.task,
            [self.tokens[i] for i in rows],
            self.labels[torch.tensor(rows, dtype=torch.long)] if rows else self.labels[:0],
            self.vocab_size,
            self.num_classes,
            self.class_names,
            tuple(self.metadata[i] for i in rows) if self.metadata else (),
        )

    def lengths(self) -> Tensor:
        """Sequence lengths, int64 ``[N]``."""
        return torch.tensor([len(t) for t in self.tokens], dtype=torch.long)

    def class_counts(self) -> Tensor:
        """Examples per class, int64 ``[num_classes]``."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def __repr__(self) -> str:
        lengths = self.lengths()
        span = f"lengths {int(lengths.min())}-{int(lengths.max())}" if len(self) else "empty"
        return (
            f"SequenceClassificationData({self.task}: {len(self)} examples, {span}, "
            f"{self.num_classes} classes, vocab {self.vocab_size})"
        )


def collate(examples: Sequence[LabeledSequence], *, pad_to: int | None = None) -> PaddedBatch:
    """Right-pad examples into a :class:`PaddedBatch` (padding id :data:`PAD` = 0).

    Args:
        examples: ``(tokens [L_i], label)`` pairs, e.g. items of a
            :class:`SequenceClassificationData`.
        pad_to: pad every row to this length (at least the longest example) instead of to the
            longest example: a fixed ``L`` for fixed attention patterns.

    Returns:
        ``PaddedBatch(tokens [B, L], lengths [B], labels [B])``, all int64.

    Example:
        >>> batch = collate([LabeledSequence(torch.tensor([5, 6, 7]), 1), LabeledSequence(torch.tensor([8]), 0)])
        >>> batch.tokens.tolist(), batch.lengths.tolist(), batch.labels.tolist()
        ([[5, 6, 7], [8, 0, 0]], [3, 1], [1, 0])
    """
    if len(examples) == 0:
        raise ValueError("Expected at least one example to collate, got none")
    rows = []
    for position, (tokens, _) in enumerate(examples):
        tokens = torch.as_tensor(tokens)
        if tokens.dim() != 1 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise ValueError(
                f"Expected example {position} to hold integer token ids of shape [L], got "
                f"{tokens.dtype} {list(tokens.shape)}"
            )
        rows.append(tokens)
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    width = int(lengths.max())
    if pad_to is not None:
        if pad_to < width:
            raise ValueError(f"Expected pad_to >= the longest example ({width}), got {pad_to}")
        width = pad_to
    out = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    labels = torch.tensor([int(label) for _, label in examples], dtype=torch.long)
    return PaddedBatch(out, lengths, labels)


def _check_count(n: int, name: str = "n") -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"Expected {name} to be a non-negative int, got {n!r}")


def _split_code(split: str) -> int:
    if split == "dev":
        split = "valid"
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)} ('dev' = 'valid')")
    return SPLITS.index(split)


def _seed_sequence(seed: int, task: str, split: str, *index: int) -> np.random.SeedSequence:
    _check_count(seed, "seed")
    return np.random.SeedSequence([int(seed), _TASK_CODES[task], _split_code(split), *index])


def _balanced_label(seed: int, task: str, split: str, index: int, num_classes: int) -> int:
    """The class of example ``index``: every block of ``num_classes`` consecutive indices holds
    each class once, in a seeded random order (exact balance for any multiple of the class count)."""
    block, offset = divmod(index, num_classes)
    order = np.random.default_rng(_seed_sequence(seed, task, split, 1, block)).permutation(num_classes)
    return int(order[offset])


# ----------------------------------------------------------------------------------------------
# ListOps
# ----------------------------------------------------------------------------------------------

LISTOPS_OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
#: token id -> symbol; an operator token includes its opening bracket, as in LRA's data files
LISTOPS_SYMBOLS = ("<pad>",) + tuple(str(d) for d in range(10)) + LISTOPS_OPERATORS + ("]",)
LISTOPS_VOCAB_SIZE = len(LISTOPS_SYMBOLS)  # 16
_DIGIT0 = 1
_FIRST_OPERATOR = _DIGIT0 + 10
_CLOSE = _FIRST_OPERATOR + len(LISTOPS_OPERATORS)
_MIN, _MAX, _MED, _SM = range(4)


def make_listops(
    n: int,
    *,
    seed: int = 0,
    split: str = "train",
    min_length: int = 500,
    max_length: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
    operator_probability: float = 0.25,
) -> SequenceClassificationData:
    """``n`` distinct ListOps expressions and their values.

    The tree distribution is that of LRA's ``listops.py`` (after Nangia & Bowman 2018): a node at
    depth ``d < max_depth`` (the root has depth 1) is an operator with probability
    ``operator_probability`` (else a leaf), a node at ``max_depth`` is always a leaf; an
    operator has ``uniform{2..max_args}`` arguments and is one of MIN, MAX, MED, SM with equal
    probability, a leaf is a uniform digit 0-9. The length counts one token per leaf and two per
    operator (``[OP`` and ``]``); a tree is kept when ``min_length < length < max_length``
    (strict, as in LRA) and it is not a duplicate of an earlier one. Values: MIN, MAX; MED is
    ``int(numpy.median(args))`` (the mean of the two middle values rounded down for an even
    count); SM is the sum modulo 10.

    This is exact rejection sampling from that distribution: trees are drawn breadth first, one
    level at a time (vectorized), and a tree is abandoned as soon as its length must reach
    ``max_length`` -- only work is saved, no tree is accepted or rejected differently. About 1
    tree in 12 lands in the default range. The digits and operator kinds are drawn once a shape
    is accepted (they do not affect the length).

    Args:
        n: number of expressions.
        seed: random seed (a non-negative int).
        split: ``"train"``, ``"valid"`` or ``"test"``: an independent stream each. Duplicates are
            removed within one call; two 500-token trees from different splits coincide with
            negligible probability.
        min_length, max_length: kept lengths are strictly between these.
        max_depth: depth at which every node is a leaf (LRA: 10).
        max_args: most arguments of an operator (LRA: 10).
        operator_probability: chance that a node above ``max_depth`` is an operator (LRA: 0.25).

    Returns:
        ``SequenceClassificationData`` with ``vocab_size`` 16 (:data:`LISTOPS_SYMBOLS`) and 10
        classes (the value).

    Example:
        >>> data = make_listops(3, seed=1, min_length=20, max_length=40)
        >>> [len(t) for t in data.tokens], data.labels.tolist()
        ([30, 34, 24], [0, 1, 7])
    """
    _check_count(n)
    for name, value, least in (("min_length", min_length, 0), ("max_depth", max_depth, 1), ("max_args", max_args, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"Expected {name} to be an int >= {least}, got {value!r}")
    if not isinstance(max_length, int) or max_length <= min_length + 1:
        raise ValueError(
            f"Expected max_length > min_length + 1 (lengths are strictly between them), got "
            f"min_length={min_length}, max_length={max_length}"
        )
    if not 0 < operator_probability < 1:
        raise ValueError(f"Expected 0 < operator_probability < 1, got {operator_probability}")
    longest_possible = _longest_listops(max_depth, max_args)
    if longest_possible <= min_length:
        raise ValueError(
            f"No tree of depth <= {max_depth} with <= {max_args} arguments is longer than min_length="
            f"{min_length} (the longest has {longest_possible} tokens); raise max_depth or max_args"
        )
    rng = np.random.default_rng(_seed_sequence(seed, "listops", split))
    seen: set[bytes] = set()
    tokens: list[Tensor] = []
    labels: list[int] = []
    while len(tokens) < n:
        shape = _listops_shape(rng, min_length, max_length, max_depth, max_args, operator_probability)
        if shape is None:
            continue
        sequence, value = _listops_fill(rng, shape)
        key = sequence.tobytes()
        if key in seen:
            continue
        seen.add(key)
        tokens.append(torch.from_numpy(sequence))
        labels.append(value)
    return SequenceClassificationData(
        "listops",
        tokens,
        torch.tensor(labels, dtype=torch.long),
        LISTOPS_VOCAB_SIZE,
        10,
        tuple(str(d) for d in range(10)),
    )


def _longest_listops(max_depth: int, max_args: int) -> int:
    length = 1  # a leaf
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


class _Level(NamedTuple):
    is_operator: np.ndarray  # bool [n_d]
    arity: np.ndarray  # int64 [operators at this level]: children, in node order


def _listops_shape(
    rng: np.random.Generator, min_length: int, max_length: int, max_depth: int, max_args: int, p: float
) -> list[_Level] | None:
    """One tree shape, level by level, or None when its length falls outside the range."""
    levels = []
    nodes, length = 1, 0
    for depth in range(1, max_depth + 1):
        if depth < max_depth:
            is_operator = rng.random(nodes) < p
        else:
            is_operator = np.zeros(nodes, dtype=bool)
        operators = int(is_operator.sum())
        arity = rng.integers(2, max_args + 1, size=operators)
        children = int(arity.sum())
        length += nodes + operators  # a leaf is 1 token, an operator 2
        levels.append(_Level(is_operator, arity))
        if length + children >= max_length:  # every pending child adds at least one token
            return None
        if children == 0:
            break
        nodes = children
    return levels if min_length < length else None


def _listops_fill(rng: np.random.Generator, levels: list[_Level]) -> tuple[np.ndarray, int]:
    """Digits and operator kinds for a shape; its preorder token ids and its value.

    Values are computed bottom-up with segment reductions (children of the ``k``-th operator of
    a level are a contiguous run of the next level); token positions top-down from subtree sizes.
    """
    digits = [rng.integers(0, 10, size=int((~level.is_operator).sum())) for level in levels]
    kinds = [rng.integers(0, 4, size=len(level.arity)) for level in levels]
    values: list[np.ndarray] = [np.empty(0, np.int64)] * len(levels)
    sizes: list[np.ndarray] = [np.empty(0, np.int64)] * len(levels)
    for d in range(len(levels) - 1, -1, -1):
        is_operator, arity = levels[d]
        value = np.empty(len(is_operator), dtype=np.int64)
        size = np.ones(len(is_operator), dtype=np.int64)
        value[~is_operator] = digits[d]
        if len(arity):
            starts = np.concatenate(([0], np.cumsum(arity)[:-1]))
            child = values[d + 1]
            segment = np.repeat(np.arange(len(arity)), arity)
            ordered = child[np.lexsort((child, segment))]
            median = (ordered[starts + (arity - 1) // 2] + ordered[starts + arity // 2]) // 2
            results = np.stack(
                [
                    np.minimum.reduceat(child, starts),
                    np.maximum.reduceat(child, starts),
                    median,
                    np.add.reduceat(child, starts) % 10,
                ]
            )  # [4 kinds, operators]
            value[is_operator] = results[kinds[d], np.arange(len(arity))]
            size[is_operator] = 2 + np.add.reduceat(sizes[d + 1], starts)
        values[d], sizes[d] = value, size
    sequence = np.empty(int(sizes[0][0]), dtype=np.int64)
    start = np.zeros(1, dtype=np.int64)
    for d, (is_operator, arity) in enumerate(levels):
        sequence[start[~is_operator]] = _DIGIT0 + digits[d]
        operator_start = start[is_operator]
        sequence[operator_start] = _FIRST_OPERATOR + kinds[d]
        sequence[operator_start + sizes[d][is_operator] - 1] = _CLOSE
        if len(arity):
            child_size = sizes[d + 1]
            before = np.cumsum(child_size) - child_size  # exclusive prefix sum over the level
            first = np.concatenate(([0], np.cumsum(arity)[:-1]))
            start = np.repeat(operator_start + 1 - before[first], arity) + before
    return sequence, int(values[0][0])


def listops_tokenize(text: str) -> Tensor:
    """Token ids (int64 ``[L]``) of a ListOps expression written with spaces between symbols.

    Example:
        >>> listops_tokenize("[MAX 4 3 [MIN 2 3 ] 1 0 ]").tolist()
        [12, 5, 4, 11, 3, 4, 15, 2, 1, 15]
    """
    index = {symbol: i for i, symbol in enumerate(LISTOPS_SYMBOLS) if i != PAD}
    ids = []
    for position, symbol in enumerate(text.split()):
        if symbol not in index:
            raise ValueError(
                f"Unknown ListOps symbol {symbol!r} at position {position}; expected a digit, one of "
                f"{', '.join(LISTOPS_OPERATORS)} or ']' separated by spaces"
            )
        ids.append(index[symbol])
    return torch.tensor(ids, dtype=torch.long)


def listops_to_text(tokens: Tensor | Sequence[int]) -> str:
    """The expression written out, symbols separated by spaces (padding dropped)."""
    ids = [int(t) for t in torch.as_tensor(tokens).flatten().tolist()]
    for position, token in enumerate(ids):
        if not 0 <= token < LISTOPS_VOCAB_SIZE:
            raise ValueError(
                f"Expected ListOps token ids in [0, {LISTOPS_VOCAB_SIZE}), got {token} at position {position}"
            )
    return " ".join(LISTOPS_SYMBOLS[t] for t in ids if t != PAD)


def evaluate_listops(expression: str | Tensor | Sequence[int]) -> int:
    """The value of a ListOps expression (text or token ids), computed with a stack.

    Independent of :func:`make_listops`'s own computation; used by the tests to check its labels.
    MED of an even number of values is the mean of the two middle values rounded down (what
    LRA's ``int(np.median(...))`` gives for digits).

    Raises:
        ValueError: the expression is malformed (unbalanced brackets, an operator without
            arguments, several top-level values, unknown symbols).

    Example:
        >>> [evaluate_listops(e) for e in ("[MAX 4 3 [MIN 2 3 ] 1 0 ]", "[MED 1 2 7 9 ]", "[SM 8 5 ]")]
        [4, 4, 3]
    """
    text = expression if isinstance(expression, str) else listops_to_text(expression)
    stack: list[tuple[str, list[int]]] = []
    result: list[int] = []
    for position, symbol in enumerate(text.split()):
        if symbol in LISTOPS_OPERATORS:
            stack.append((symbol, []))
            continue
        if symbol == "]":
            if not stack:
                raise ValueError(f"Unbalanced ']' at position {position} of a ListOps expression")
            operator, arguments = stack.pop()
            if not arguments:
                raise ValueError(f"Operator {operator} closed without arguments at position {position}")
            value = _apply_operator(operator, arguments)
        elif symbol.isdigit() and len(symbol) == 1:
            value = int(symbol)
        else:
            raise ValueError(f"Unknown ListOps symbol {symbol!r} at position {position}")
        (stack[-1][1] if stack else result).append(value)
    if stack:
        raise ValueError(f"Unclosed operator {stack[-1][0]} in a ListOps expression")
    if len(result) != 1:
        raise ValueError(f"Expected one top-level value in a ListOps expression, got {len(result)}")
    return result[0]


def _apply_operator(operator: str, arguments: list[int]) -> int:
    if operator == "[MIN":
        return min(arguments)
    if operator == "[MAX":
        return max(arguments)
    if operator == "[SM":
        return sum(arguments) % 10
    ordered = sorted(arguments)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) // 2


# ----------------------------------------------------------------------------------------------
# byte-level text: UD English-EWT genres
# ----------------------------------------------------------------------------------------------

EWT_GENRES = ("answers", "email", "newsgroup", "reviews", "weblog")
EWT_FILES = {"train": "en_ewt-ud-train.conllu", "valid": "en_ewt-ud-dev.conllu", "test": "en_ewt-ud-test.conllu"}
BYTE_VOCAB_SIZE = 257  # byte b -> token b + 1; 0 is padding
_EWT_URL = "https://github.com/UniversalDependencies/UD_English-EWT"


class EwtDocument(NamedTuple):
    """A document of the treebank (the sentences after one ``# newdoc id`` line)."""

    doc_id: str
    genre: str
    split: str
    sentence_ids: tuple[str, ...]
    sentences: tuple[str, ...]  # the ``# text`` lines

    @property
    def text(self) -> str:
        """The sentences joined with single spaces."""
        return " ".join(self.sentences)


class TextChunk(NamedTuple):
    """Where an example of :func:`load_ewt_genre` comes from.

    ``kind`` is ``"document"`` (one whole document), ``"part"`` (a run of sentences of one
    document longer than ``max_bytes``) or ``"joined"`` (consecutive short documents, or the
    short last part of a long one, of one genre and split, joined). ``sentence_ids`` are the
    sentences it holds, in order; a sentence longer than ``max_bytes`` on its own is cut, and
    its id then appears once per piece.
    """

    genre: str
    split: str
    kind: str
    doc_ids: tuple[str, ...]
    sentence_ids: tuple[str, ...]
    num_bytes: int


def _ewt_file(root: PathLike, split: str) -> Path:
    split = SPLITS[_split_code(split)]
    root = Path(root)
    path = root / EWT_FILES[split]
    if not root.is_dir():
        raise FileNotFoundError(
            f"No UD English-EWT folder at {root}; expected a folder holding {', '.join(EWT_FILES.values())} "
            f"(from {_EWT_URL})"
        )
    if not path.is_file():
        raise FileNotFoundError(f"Expected the {split} file of UD English-EWT at {path} (from {_EWT_URL})")
    return path


def read_ewt_documents(root: PathLike, split: str = "train") -> list[EwtDocument]:
    """The documents of one official split file of UD English-EWT, in file order.

    Args:
        root: the folder holding ``en_ewt-ud-{train,dev,test}.conllu``.
        split: ``"train"``, ``"valid"`` (alias ``"dev"``: the dev file) or ``"test"``.

    Raises:
        FileNotFoundError: the folder or the split's file is missing (the message gives the
            expected path).
        ValueError: a sentence before the first ``# newdoc id``, a sentence without ``# text``,
            or a sentence id whose genre prefix is unknown or differs from its document's
            (naming the file and line).
    """
    path = _ewt_file(root, split)
    split = SPLITS[_split_code(split)]
    documents: list[EwtDocument] = []
    doc_id: str | None = None
    sentence_ids: list[str] = []
    sentences: list[str] = []
    sentence_id: str | None = None
    text: str | None = None
    sentence_line = 0

    def close_sentence() -> None:
        nonlocal sentence_id, text
        if sentence_id is None:
            return
        if text is None:
            raise ValueError(f"{path}, line {sentence_line}: sentence {sentence_id} has no '# text = ' line")
        if doc_id is None:
            raise ValueError(f"{path}, line {sentence_line}: sentence {sentence_id} comes before any '# newdoc id'")
        genre = sentence_id.split("-", 1)[0]
        if genre != _genre_of(doc_id, path, sentence_line):
            raise ValueError(
                f"{path}, line {sentence_line}: sentence {sentence_id} has genre {genre!r} but its document "
                f"{doc_id} has another"
            )
        sentence_ids.append(sentence_id)
        sentences.append(text)
        sentence_id, text = None, None

    def close_document() -> None:
        if doc_id is not None and sentences:
            genre = _genre_of(doc_id, path, sentence_line)
            documents.append(EwtDocument(doc_id, genre, split, tuple(sentence_ids), tuple(sentences)))
        sentence_ids.clear()
        sentences.clear()

    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.startswith("# newdoc id"):
                close_sentence()
                close_document()
                doc_id = line.split("=", 1)[1].strip()
                _genre_of(doc_id, path, number)
            elif line.startswith("# sent_id"):
                close_sentence()
                sentence_id, sentence_line = line.split("=", 1)[1].strip(), number
            elif line.startswith("# text ="):
                text = line.split("=", 1)[1].strip()
    close_sentence()
    close_document()
    return documents


def _genre_of(identifier: str, path: Path, line: int) -> str:
    genre = identifier.split("-", 1)[0]
    if genre not in EWT_GENRES:
        raise ValueError(
            f"{path}, line {line}: id {identifier!r} does not start with a genre; expected one of "
            f"{', '.join(g + '-' for g in EWT_GENRES)}"
        )
    return genre


def bytes_to_tokens(text: str) -> Tensor:
    """UTF-8 bytes of ``text`` as token ids ``byte + 1`` (int64 ``[num_bytes]``).

    Example:
        >>> bytes_to_tokens("hé").tolist()
        [105, 196, 170]
    """
    return torch.from_numpy(np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) + 1)


def tokens_to_text(tokens: Tensor | Sequence[int]) -> str:
    """The inverse of :func:`bytes_to_tokens` (padding dropped, invalid UTF-8 replaced)."""
    ids = torch.as_tensor(tokens).flatten()
    ids = ids[ids != PAD]
    if len(ids) and (int(ids.min()) < 1 or int(ids.max()) >= BYTE_VOCAB_SIZE):
        raise ValueError(
            f"Expected byte token ids in [1, {BYTE_VOCAB_SIZE}), got values in [{int(ids.min())}, {int(ids.max())}]"
        )
    return bytes((ids - 1).tolist()).decode("utf-8", errors="replace")


class _Unit(NamedTuple):
    doc_id: str
    whole: bool  # the whole document
    sentence_ids: tuple[str, ...]
    sentences: tuple[str, ...]

    @property
    def num_bytes(self) -> int:
        return _joined_size([len(s.encode("utf-8")) for s in self.sentences])


def _joined_size(sizes: Sequence[int]) -> int:
    return sum(sizes) + max(len(sizes) - 1, 0)


def load_ewt_genre(
    root: PathLike,
    split: str = "train",
    *,
    min_bytes: int = 1000,
    max_bytes: int = 4000,
    pack: bool = True,
) -> SequenceClassificationData:
    """Byte-level genre classification on UD English-EWT (5 classes, :data:`EWT_GENRES`).

    A document's text is its sentences' ``# text`` lines joined by single spaces (the same
    separator everywhere, so joins leave no trace a model could use). Tokens are UTF-8 bytes
    + 1 (:func:`bytes_to_tokens`, vocabulary 257). The genre is the prefix of the document id
    (and of every sentence id).

    With ``pack=False`` an example is a document of ``min_bytes``-``max_bytes`` bytes; others
    are left out. With ``pack=True`` (the default) every split and genre is cut into chunks
    instead, in file order and never across the split's file:

    1. a document longer than ``max_bytes`` is cut at sentence boundaries into the fewest
       near-equal parts of at most ``max_bytes`` (a single sentence over ``max_bytes`` is cut
       at character boundaries first);
    2. a document or part of ``min_bytes``-``max_bytes`` bytes is an example;
    3. shorter ones are joined, in file order, with the next shorter ones of the same genre
       (documents that stand alone are skipped over) until the chunk reaches ``min_bytes``; if
       the next one would push it over ``max_bytes`` (possible only when ``max_bytes < 2 *
       min_bytes``), or the split ends, the unfinished chunk is dropped.

    Args:
        root: the folder of the treebank (``en_ewt-ud-{train,dev,test}.conllu``).
        split: ``"train"``, ``"valid"`` (the dev file; alias ``"dev"``) or ``"test"``.
        min_bytes, max_bytes: kept examples have ``min_bytes <= len <= max_bytes`` bytes.
        pack: split and join documents as above, or keep only documents already in range.

    Returns:
        ``SequenceClassificationData`` (task ``"ewt_genre"``) with one :class:`TextChunk` per
        example in ``metadata``.

    Raises:
        FileNotFoundError: see :func:`read_ewt_documents`.
    """
    for name, value in (("min_bytes", min_bytes), ("max_bytes", max_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected {name} to be a positive int, got {value!r}")
    if min_bytes > max_bytes:
        raise ValueError(f"Expected min_bytes <= max_bytes, got {min_bytes} > {max_bytes}")
    documents = read_ewt_documents(root, split)
    split = SPLITS[_split_code(split)]
    chunks: list[tuple[str, list[_Unit], str]] = []  # (genre, units, kind)
    if not pack:
        for document in documents:
            unit = _Unit(document.doc_id, True, document.sentence_ids, document.sentences)
            if min_bytes <= unit.num_bytes <= max_bytes:
                chunks.append((document.genre, [unit], "document"))
    else:
        pending: dict[str, list[_Unit]] = {}
        for document in documents:
            for unit in _document_units(document, max_bytes):
                size = unit.num_bytes
                if size >= min_bytes:
                    chunks.append((document.genre, [unit], "document" if unit.whole else "part"))
                    continue
                buffer = pending.setdefault(document.genre, [])
                if buffer and _joined_size([u.num_bytes for u in buffer] + [size]) > max_bytes:
                    buffer.clear()  # cannot reach min_bytes without passing max_bytes: dropped
                buffer.append(unit)
                if _joined_size([u.num_bytes for u in buffer]) >= min_bytes:
                    chunks.append((document.genre, list(buffer), "joined"))
                    buffer.clear()
    tokens, labels, metadata = [], [], []
    for genre, units, kind in chunks:
        text = " ".join(" ".join(u.sentences) for u in units)
        encoded = bytes_to_tokens(text)
        tokens.append(encoded)
        labels.append(EWT_GENRES.index(genre))
        metadata.append(
            TextChunk(
                genre,
                split,
                kind,
                tuple(dict.fromkeys(u.doc_id for u in units)),
                tuple(s for u in units for s in u.sentence_ids),
                len(encoded),
            )
        )
    return SequenceClassificationData(
        "ewt_genre",
        tokens,
        torch.tensor(labels, dtype=torch.long),
        BYTE_VOCAB_SIZE,
        len(EWT_GENRES),
        EWT_GENRES,
        tuple(metadata),
    )


def _document_units(document: EwtDocument, max_bytes: int) -> list[_Unit]:
    """The document whole, or cut into the fewest near-equal runs of sentences of at most
    ``max_bytes`` bytes each."""
    ids: list[str] = []
    pieces: list[str] = []
    for sentence_id, sentence in zip(document.sentence_ids, document.sentences):
        for piece in _cut_text(sentence, max_bytes):
            ids.append(sentence_id)
            pieces.append(piece)
    sizes = [len(p.encode("utf-8")) for p in pieces]
    total = _joined_size(sizes)
    if total <= max_bytes and len(pieces) == len(document.sentences):
        return [_Unit(document.doc_id, True, document.sentence_ids, document.sentences)]
    ends = np.cumsum(np.array(sizes) + 1) - 1  # joined length after each piece
    for parts in range(max(1, math.ceil(total / max_bytes)), len(pieces) + 1):
        targets = np.arange(1, parts) * total / parts
        cuts = sorted({int(np.abs(ends[:-1] - t).argmin()) + 1 for t in targets})
        bounds = [0, *cuts, len(pieces)]
        runs = [(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        if all(_joined_size(sizes[a:b]) <= max_bytes for a, b in runs):
            return [_Unit(document.doc_id, False, tuple(ids[a:b]), tuple(pieces[a:b])) for a, b in runs]
    raise AssertionError("unreachable: single pieces always fit")  # pragma: no cover


def _cut_text(text: str, max_bytes: int) -> list[str]:
    """``text`` in pieces of at most ``max_bytes`` UTF-8 bytes, cut between characters."""
    encoded = text.encode("utf-8")
    pieces = []
    while len(encoded) > max_bytes:
        cut = max_bytes
        while cut > 0 and (encoded[cut] & 0xC0) == 0x80:  # do not cut inside a character
            cut -= 1
        cut = cut or max_bytes
        pieces.append(encoded[:cut].decode("utf-8", errors="replace"))
        encoded = encoded[cut:]
    pieces.append(encoded.decode("utf-8", errors="replace"))
    return pieces


# ----------------------------------------------------------------------------------------------
# Pathfinder
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathfinderConfig:
    """Geometry of :func:`make_pathfinder` images (lengths in pixels, pixel centres at integers).

    Attributes:
        image_size: images are ``image_size x image_size``.
        path_segments: dashes per path of the two main paths (Linsley et al.: contour length).
        dash_length: length of a dash; ``gap_length``: the gap before the next dash.
        max_turn_degrees: each dash turns by ``uniform(-max_turn, max_turn)`` from the previous
            one (curvature; Linsley et al.'s continuity).
        num_distractors: extra paths without markers; ``distractor_segments`` dashes each
            (default ``max(1, path_segments // 3)``, Linsley et al.'s distractor length).
        line_width: stroke width of the dashes.
        marker_radius: radius of the two round markers.
        min_separation: least centre-line distance between different paths (gaps included)
            and between a path and the far parts of itself; main-path ends keep
            ``min_separation + marker_radius`` from every other path.
        levels: grey levels after quantization; pixel tokens are ``level + 1`` (vocabulary
            ``levels + 1``).
        distance_tolerance: a negative example is kept only when two ends of different main
            paths lie within this many pixels of the distance between the ends of one main
            path (the distance the markers would have in a positive example), so that the
            marker distance does not give the label away; ``math.inf`` turns this off.
        max_attempts: layouts tried per example before giving up with a ``RuntimeError``.
    """

    image_size: int = 32
    path_segments: int = 6
    dash_length: float = 2.5
    gap_length: float = 2.0
    max_turn_degrees: float = 30.0
    num_distractors: int = 2
    distractor_segments: int | None = None
    line_width: float = 1.0
    marker_radius: float = 1.5
    min_separation: float = 3.0
    levels: int = 256
    distance_tolerance: float = 1.0
    max_attempts: int = 200

    def __post_init__(self) -> None:
        checks = [
            ("image_size", self.image_size >= 8, ">= 8"),
            ("path_segments", self.path_segments >= 1, ">= 1"),
            ("dash_length", self.dash_length > 0, "> 0"),
            ("gap_length", self.gap_length >= 0, ">= 0"),
            ("max_turn_degrees", 0 <= self.max_turn_degrees <= 180, "in [0, 180]"),
            ("num_distractors", self.num_distractors >= 0, ">= 0"),
            ("line_width", self.line_width > 0, "> 0"),
            ("marker_radius", self.marker_radius > 0, "> 0"),
            ("min_separation", self.min_separation > self.line_width, "> line_width"),
            ("levels", 2 <= self.levels <= 65536, "in [2, 65536]"),
            ("distance_tolerance", self.distance_tolerance >= 0, ">= 0"),
            ("max_attempts", self.max_attempts >= 1, ">= 1"),
        ]
        if self.distractor_segments is not None:
            checks.append(("distractor_segments", self.distractor_segments >= 1, ">= 1"))
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"Expected PathfinderConfig.{name} {expected}, got {getattr(self, name)!r}")

    @property
    def num_distractor_segments(self) -> int:
        """Dashes per distractor path: ``distractor_segments``, or ``max(1, path_segments // 3)``."""
        return self.distractor_segments or max(1, self.path_segments // 3)


class PathfinderLayout(NamedTuple):
    """The ground truth of a Pathfinder image (coordinates ``(x, y)`` = ``(column, row)``).

    Attributes:
        dashes: float64 ``[D, 2, 2]``: start and end point of every drawn dash.
        dash_path: int64 ``[D]``: the path each dash belongs to; paths 0 and 1 are the main
            paths, the others distractors.
        markers: float64 ``[2, 2]``: the marker centres (each at an end of a main path).
        marker_paths: int64 ``[2]``: the path whose end each marker sits on (equal for a
            positive example).
    """

    dashes: Tensor
    dash_path: Tensor
    markers: Tensor
    marker_paths: Tensor


def make_pathfinder(
    n: int,
    *,
    seed: int = 0,
    split: str = "train",
    config: PathfinderConfig = PathfinderConfig(),
    first_index: int = 0,
) -> SequenceClassificationData:
    """``n`` Pathfinder images (after Linsley et al. 2018, LRA's Pathfinder-32), flattened
    row-major to ``image_size**2`` pixel tokens.

    An image holds two main paths of ``path_segments`` dashes and ``num_distractors`` shorter
    paths: each path is a chain of straight dashes separated by gaps, turning by a random angle
    at every dash, inside the image, at least ``min_separation`` from every other path (no
    crossings, no touching) and from its own earlier dashes. The layout is drawn without
    knowing the label; then two round markers go on main-path ends: both ends of one main path
    (label 1, "connected") or one end of each (label 0) -- for a negative, the pair of ends
    whose distance is closest to one main path's end-to-end distance, and the layout is drawn
    again unless it is within ``distance_tolerance`` (without this, the marker distance alone
    predicted the label 74% of the time; with it 57%, where shuffled labels give 54% -- best
    thresholds fitted on 600 images). Strokes are anti-aliased (a pixel's
    grey value falls linearly from 1 to 0 over one pixel at the stroke's edge), white on black,
    quantized to ``levels`` grey levels.

    Example ``i`` is drawn from its own seed ``(seed, split, i)``; labels are balanced exactly
    over every two consecutive indices (in random order).

    Args:
        n: number of images.
        seed: random seed (a non-negative int).
        split: ``"train"``, ``"valid"`` or ``"test"``: independent streams.
        config: the geometry (:class:`PathfinderConfig`).
        first_index: index of the first image (to generate a large set in pieces).

    Returns:
        ``SequenceClassificationData`` (task ``"pathfinder"``, classes ``("disconnected",
        "connected")``, vocabulary ``levels + 1``) with one :class:`PathfinderLayout` per
        example in ``metadata``.

    Raises:
        RuntimeError: no layout fit after ``config.max_attempts`` tries (too many or too long
            paths for the image).

    Example:
        >>> data = make_pathfinder(4, seed=0)
        >>> data.labels.tolist(), data.tokens[0].shape, data.vocab_size
        ([1, 0, 1, 0], torch.Size([1024]), 257)
    """
    _check_count(n)
    _check_count(first_index, "first_index")
    if not isinstance(config, PathfinderConfig):
        raise ValueError(f"Expected config to be a PathfinderConfig, got {type(config).__name__}")
    size = config.image_size
    rows, cols = np.mgrid[0:size, 0:size]
    pixels = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float64)  # [S*S, 2] as (x, y)
    tokens, labels, layouts = [], [], []
    for index in range(first_index, first_index + n):
        label = _balanced_label(seed, "pathfinder", split, index, 2)
        rng = np.random.default_rng(_seed_sequence(seed, "pathfinder", split, 0, index))
        layout = _pathfinder_layout(rng, config, label)
        if layout is None:
            raise RuntimeError(
                f"No Pathfinder layout fit after {config.max_attempts} attempts (example {index}); use fewer "
                f"or shorter paths, a smaller min_separation or a larger image_size (config: {config})"
            )
        image = _render_pathfinder(layout, pixels, config)
        tokens.append(torch.from_numpy(quantize(image, config.levels).ravel() + 1))
        labels.append(label)
        layouts.append(layout)
    return SequenceClassificationData(
        "pathfinder",
        tokens,
        torch.tensor(labels, dtype=torch.long),
        config.levels + 1,
        2,
        ("disconnected", "connected"),
        tuple(layouts),
    )


def _point_segment_distance(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Distances from points to segments, broadcasting over leading axes (``[..., 2]`` each)."""
    dx, dy = ends[..., 0] - starts[..., 0], ends[..., 1] - starts[..., 1]
    px, py = points[..., 0] - starts[..., 0], points[..., 1] - starts[..., 1]
    t = np.minimum(np.maximum((px * dx + py * dy) / np.maximum(dx * dx + dy * dy, 1e-12), 0.0), 1.0)
    return np.hypot(px - t * dx, py - t * dy)


def _segments_distance(a: np.ndarray, b: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Least distance from each candidate segment ``a, b [C, 2]`` to the segments ``starts, ends
    [M, 2]``: ``[C]`` (``inf`` when ``M = 0``); 0 for segments that cross."""
    if len(starts) == 0:
        return np.full(len(a), np.inf)
    a, b = a[:, None], b[:, None]  # [C, 1, 2]
    starts, ends = starts[None], ends[None]  # [1, M, 2]
    distance = np.minimum(
        np.minimum(_point_segment_distance(a, starts, ends), _point_segment_distance(b, starts, ends)),
        np.minimum(_point_segment_distance(starts, a, b), _point_segment_distance(ends, a, b)),
    )  # [C, M]

    def side(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
        return (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0])

    crossing = (side(a, b, starts) * side(a, b, ends) < 0) & (side(starts, ends, a) * side(starts, ends, b) < 0)
    return np.where(crossing, 0.0, distance).min(1)


class _Obstacles:
    """What a new path must keep clear of: the centre-line steps (a dash and the gap after it)
    of the paths drawn so far, and the ends of the main paths (where markers may go)."""

    def __init__(self) -> None:
        self.starts = np.zeros((0, 2))
        self.ends = np.zeros((0, 2))
        self.spots = np.zeros((0, 2))

    def add(self, steps: np.ndarray, spots: np.ndarray) -> None:
        self.starts = np.concatenate([self.starts, steps[:, 0]])
        self.ends = np.concatenate([self.ends, steps[:, 1]])
        self.spots = np.concatenate([self.spots, spots])


_CANDIDATES = 12  # directions tried at once for every dash


def _grow_path(
    rng: np.random.Generator, config: PathfinderConfig, segments: int, obstacles: _Obstacles, main: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """Dashes ``[segments, 2, 2]`` and centre-line steps ``[segments, 2, 2]`` of one path, or
    None when none fits after a few starts."""
    size = config.image_size
    margin = (config.marker_radius if main else config.line_width / 2) + 0.5
    separation = config.min_separation
    end_clearance = separation + config.marker_radius
    max_turn = math.radians(config.max_turn_degrees)
    step_length = config.dash_length + config.gap_length

    def inside(p: np.ndarray) -> np.ndarray:
        return ((p >= margin) & (p <= size - 1 - margin)).all(-1)

    def clear_of_paths(points: np.ndarray) -> bool:
        distance = _point_segment_distance(points[:, None], obstacles.starts[None], obstacles.ends[None])
        return bool(distance.min(initial=np.inf) >= end_clearance)

    for _ in range(20):
        start = rng.uniform(margin, size - 1 - margin, size=2)
        if main and not clear_of_paths(start[None]):
            continue
        heading = rng.uniform(0, 2 * math.pi)
        point = start
        steps = np.zeros((segments, 2, 2))
        for k in range(segments):
            if k == 0:
                turned = np.concatenate([[heading], rng.uniform(0, 2 * math.pi, _CANDIDATES - 1)])
            else:
                turned = heading + rng.uniform(-max_turn, max_turn, _CANDIDATES)
            direction = np.stack([np.cos(turned), np.sin(turned)], axis=1)  # [C, 2]
            last = k == segments - 1
            # a step is a dash and the gap after it (the last step: the dash alone)
            end = point + (config.dash_length if last else step_length) * direction
            starts = np.broadcast_to(point, end.shape)
            ok = inside(point + config.dash_length * direction) & inside(end)
            ok &= _segments_distance(starts, end, obstacles.starts, obstacles.ends) >= separation
            if len(obstacles.spots):
                spot_distance = _point_segment_distance(obstacles.spots[None], starts[:, None], end[:, None])
                ok &= spot_distance.min(1) >= end_clearance
            if k >= 2:  # not too close to its own earlier steps (the previous one it continues)
                ok &= _segments_distance(starts, end, steps[: k - 1, 0], steps[: k - 1, 1]) >= separation
            if main and k >= 2:  # nor to its own start, where a marker may go
                ok &= _point_segment_distance(start, starts, end) >= end_clearance
            chosen = np.flatnonzero(ok)
            if not len(chosen):
                break
            c = chosen[0]
            steps[k] = (point, end[c])
            point, heading = end[c], turned[c]
        else:
            end_point = steps[-1, 1]
            if main and not clear_of_paths(end_point[None]):
                continue
            if main and segments > 2:
                if _point_segment_distance(end_point, steps[:-2, 0], steps[:-2, 1]).min() < end_clearance:
                    continue
            unit = (steps[:, 1] - steps[:, 0]) / np.linalg.norm(steps[:, 1] - steps[:, 0], axis=1, keepdims=True)
            dashes = np.stack([steps[:, 0], steps[:, 0] + config.dash_length * unit], axis=1)
            return dashes, steps
    return None


def _pathfinder_layout(rng: np.random.Generator, config: PathfinderConfig, label: int) -> PathfinderLayout | None:
    for _ in range(config.max_attempts):
        obstacles = _Obstacles()
        paths: list[np.ndarray] = []
        markers: list[np.ndarray] = []
        marker_paths: list[int] = []
        for path in range(2 + config.num_distractors):
            main = path < 2
            segments = config.path_segments if main else config.num_distractor_segments
            grown = _grow_path(rng, config, segments, obstacles, main)
            if grown is None:
                break
            dashes, steps = grown
            obstacles.add(steps, np.stack([dashes[0, 0], dashes[-1, 1]]) if main else np.zeros((0, 2)))
            paths.append(dashes)
            if path == 1:  # both main paths are drawn: place the markers (distractors do not matter)
                placed = _place_markers(rng, config, paths, label)
                if placed is None:
                    break  # a negative without a distance-matched pair of ends: draw another layout
                markers, marker_paths = placed
        else:
            return PathfinderLayout(
                torch.from_numpy(np.concatenate(paths)),
                torch.tensor([p for p, dashes in enumerate(paths) for _ in dashes], dtype=torch.long),
                torch.from_numpy(np.stack(markers)),
                torch.tensor(marker_paths, dtype=torch.long),
            )
    return None


def _place_markers(
    rng: np.random.Generator, config: PathfinderConfig, paths: list[np.ndarray], label: int
) -> tuple[list[np.ndarray], list[int]] | None:
    """Marker centres and the main path of each, or None for a negative whose ends cannot match
    the positive's marker distance."""
    ends = [(paths[p][0, 0], paths[p][-1, 1]) for p in (0, 1)]
    path = int(rng.integers(2))
    if label == 1:
        return [ends[path][0], ends[path][1]], [path, path]
    # the pair of ends (one per main path) whose distance is closest to the distance a positive
    # would have (the chosen path's end-to-end distance): distance alone then says little
    target = float(np.linalg.norm(ends[path][0] - ends[path][1]))
    pairs = [(ends[0][i], ends[1][j]) for i in (0, 1) for j in (0, 1)]
    mismatch = [abs(float(np.linalg.norm(a - b)) - target) for a, b in pairs]
    if min(mismatch) > config.distance_tolerance:
        return None
    markers, marker_paths = list(pairs[int(np.argmin(mismatch))]), [0, 1]
    if rng.random() < 0.5:
        markers, marker_paths = markers[::-1], marker_paths[::-1]
    return markers, marker_paths


def _render_pathfinder(layout: PathfinderLayout, pixels: np.ndarray, config: PathfinderConfig) -> np.ndarray:
    """Grey image ``[S, S]`` in ``[0, 1]``: anti-aliased strokes and discs, white on black."""
    dashes = layout.dashes.numpy()
    stroke = _point_segment_distance(pixels[:, None], dashes[None, :, 0], dashes[None, :, 1]).min(1)  # [S*S]
    markers = layout.markers.numpy()
    disc = np.sqrt(((pixels[:, None, :] - markers[None]) ** 2).sum(-1)).min(1)
    image = np.maximum(
        np.clip(config.line_width / 2 + 0.5 - stroke, 0, 1), np.clip(config.marker_radius + 0.5 - disc, 0, 1)
    )
    return image.reshape(config.image_size, config.image_size)


def quantize(image: np.ndarray, levels: int = 256) -> np.ndarray:
    """Grey values in ``[0, 1]`` -> int64 levels ``round(value * (levels - 1))`` in ``[0, levels)``.

    Example:
        >>> quantize(np.array([0.0, 0.5, 1.0]), 256).tolist()
        [0, 128, 255]
    """
    if not 2 <= levels <= 65536:
        raise ValueError(f"Expected 2 <= levels <= 65536, got {levels}")
    return np.rint(np.clip(image, 0.0, 1.0) * (levels - 1)).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# images as pixel sequences: shapes (not CIFAR-10) and scikit-learn digits
# ----------------------------------------------------------------------------------------------

SHAPE_CLASSES = (
    "disc",
    "ring",
    "square",
    "square_outline",
    "triangle_up",
    "triangle_down",
    "plus",
    "cross",
    "diamond",
    "ellipse",
)


class ShapeParameters(NamedTuple):
    """How a :func:`make_shapes` image was drawn: centre ``(x, y)`` in pixels, ``radius`` (the
    shape's scale), ``rotation`` in degrees, and the ``foreground`` / ``background`` grey values
    in ``[0, 1]`` (before noise)."""

    shape: str
    center: tuple[float, float]
    radius: float
    rotation: float
    foreground: float
    background: float


def _inside_shape(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of points ``(u, v)`` in the unit-scale shape (``v`` points down)."""
    au, av = np.abs(u), np.abs(v)
    r2 = u**2 + v**2
    if shape == "disc":
        return r2 <= 1
    if shape == "ring":
        return (r2 <= 1) & (r2 >= 0.55**2)
    if shape == "square":
        return np.maximum(au, av) <= 0.8
    if shape == "square_outline":
        return (np.maximum(au, av) <= 0.8) & (np.maximum(au, av) >= 0.45)
    if shape in ("triangle_up", "triangle_down"):
        if shape == "triangle_down":
            v = -v
        # apex (0, -0.95), base corners (+-0.95, 0.7)
        return (v <= 0.7) & (v >= -0.95 + 1.65 / 0.95 * au)
    if shape == "plus":
        return ((au <= 0.25) & (av <= 0.95)) | ((av <= 0.25) & (au <= 0.95))
    if shape == "cross":
        return _inside_shape("plus", (u - v) / math.sqrt(2), (u + v) / math.sqrt(2))
    if shape == "diamond":
        return au + av <= 1.05
    if shape == "ellipse":
        return u**2 + (v / 0.5) ** 2 <= 1
    raise ValueError(f"Unknown shape {shape!r}; expected one of {', '.join(SHAPE_CLASSES)}")


def make_shapes(
    n: int,
    *,
    seed: int = 0,
    split: str = "train",
    image_size: int = 32,
    levels: int = 256,
    noise_std: float = 0.05,
    max_rotation_degrees: float = 15.0,
    first_index: int = 0,
) -> SequenceClassificationData:
    """``n`` grey ``image_size x image_size`` images of 10 shapes (:data:`SHAPE_CLASSES`),
    flattened row-major to pixel tokens ``level + 1`` -- a generated stand-in for LRA's image
    task. **Not CIFAR-10**: no natural images; the classes differ in global shape only.

    Every image draws its class (balanced exactly over each block of 10 consecutive indices),
    a scale ``radius ~ U(0.22, 0.36) * image_size``, a centre that keeps the shape inside, a
    rotation ``~ U(-max_rotation, max_rotation)``, a background grey ``~ U(0, 0.3)`` and a
    foreground grey ``~ U(0.6, 1)``; the shape is rendered with 4x4 supersampling, Gaussian
    noise of ``noise_std`` is added, and values are clipped to ``[0, 1]`` and quantized to
    ``levels`` levels. Example ``i`` has its own seed ``(seed, split, i)``.

    Args:
        n: number of images.
        seed: random seed (a non-negative int).
        split: ``"train"``, ``"valid"`` or ``"test"``: independent streams.
        image_size: side in pixels (at least 16).
        levels: grey levels (vocabulary ``levels + 1``).
        noise_std: standard deviation of the pixel noise (grey values in ``[0, 1]``).
        max_rotation_degrees: largest rotation (keep below 22.5 so squares and diamonds stay
            apart).
        first_index: index of the first image.

    Returns:
        ``SequenceClassificationData`` (task ``"shapes"``) with one :class:`ShapeParameters`
        per example in ``metadata``.

    Example:
        >>> data = make_shapes(10, seed=0)
        >>> sorted(data.labels.tolist()) == list(range(10)), data.tokens[0].shape
        (True, torch.Size([1024]))
    """
    _check_count(n)
    _check_count(first_index, "first_index")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"Expected image_size to be an int >= 16, got {image_size!r}")
    if not noise_std >= 0:
        raise ValueError(f"Expected noise_std >= 0, got {noise_std}")
    if not 0 <= max_rotation_degrees <= 180:
        raise ValueError(f"Expected max_rotation_degrees in [0, 180], got {max_rotation_degrees}")
    supersample = 4
    grid = (np.arange(image_size * supersample) + 0.5) / supersample - 0.5  # sub-pixel centres
    ys, xs = np.meshgrid(grid, grid, indexing="ij")
    tokens, labels, parameters = [], [], []
    for index in range(first_index, first_index + n):
        label = _balanced_label(seed, "shapes", split, index, len(SHAPE_CLASSES))
        rng = np.random.default_rng(_seed_sequence(seed, "shapes", split, 0, index))
        radius = rng.uniform(0.22, 0.36) * image_size
        reach = 1.15 * radius + 0.5  # every shape lies within 1.15 radius of its centre
        center = rng.uniform(reach, image_size - 1 - reach, size=2)
        rotation = rng.uniform(-max_rotation_degrees, max_rotation_degrees)
        background, foreground = rng.uniform(0.0, 0.3), rng.uniform(0.6, 1.0)
        angle = math.radians(rotation)
        dx, dy = xs - center[0], ys - center[1]
        u = (math.cos(angle) * dx + math.sin(angle) * dy) / radius
        v = (-math.sin(angle) * dx + math.cos(angle) * dy) / radius
        inside = _inside_shape(SHAPE_CLASSES[label], u, v).astype(np.float64)
        coverage = inside.reshape(image_size, supersample, image_size, supersample).mean(axis=(1, 3))
        image = background + (foreground - background) * coverage
        if noise_std:
            image = image + rng.normal(0.0, noise_std, size=image.shape)
        tokens.append(torch.from_numpy(quantize(image, levels).ravel() + 1))
        labels.append(label)
        parameters.append(
            ShapeParameters(
                SHAPE_CLASSES[label], (float(center[0]), float(center[1])), float(radius), float(rotation),
                float(foreground), float(background),
            )
        )
    return SequenceClassificationData(
        "shapes", tokens, torch.tensor(labels, dtype=torch.long), levels + 1, len(SHAPE_CLASSES), SHAPE_CLASSES,
        tuple(parameters),
    )


def upsample_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a 2-D image to ``size x size``, pixel areas aligned (pixel centres at
    ``(i + 0.5) / n`` of the side, edges extended): what ``torch.nn.functional.interpolate(...,
    mode="bilinear", align_corners=False)`` does.

    Example:
        >>> upsample_bilinear(np.array([[0.0, 1.0], [0.0, 1.0]]), 4)[0].tolist()
        [0.0, 0.25, 0.75, 1.0]
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"Expected a 2-D image, got shape {image.shape}")

    def weights(n_in: int) -> np.ndarray:
        source = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        matrix = np.zeros((size, n_in))
        np.add.at(matrix, (np.arange(size), low), 1 - (source - low))
        np.add.at(matrix, (np.arange(size), high), source - low)
        return matrix

    return weights(image.shape[0]) @ image @ weights(image.shape[1]).T


def load_digits32(
    split: str = "train", *, seed: int = 0, test_fraction: float = 0.2, levels: int = 256
) -> SequenceClassificationData:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes) upsampled bilinearly to
    32x32 and quantized to ``levels`` grey levels, as 1,024 pixel tokens ``level + 1``. Not
    CIFAR-10.

    The split is a seeded stratified one: within each class, a permutation from ``seed`` puts
    ``round(test_fraction * count)`` images in ``"test"``, the rest in ``"train"``.

    Raises:
        ImportError: scikit-learn is not installed (``pip install scikit-learn``);
            :func:`make_shapes` needs nothing extra.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_digits32 needs scikit-learn (pip install scikit-learn); make_shapes is the image task "
            "that needs nothing extra"
        ) from error
    if split not in ("train", "test"):
        raise ValueError(f"Unknown split {split!r}; expected 'train' or 'test'")
    if not 0 < test_fraction < 1:
        raise ValueError(f"Expected 0 < test_fraction < 1, got {test_fraction}")
    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float64) / 16.0  # [N, 8, 8], values 0-16
    targets = np.asarray(digits.target, dtype=np.int64)
    rng = np.random.default_rng(_seed_sequence(seed, "digits", "train"))
    is_test = np.zeros(len(targets), dtype=bool)
    for digit in range(10):
        members = np.flatnonzero(targets == digit)
        chosen = rng.permutation(members)[: int(round(test_fraction * len(members)))]
        is_test[chosen] = True
    keep = np.flatnonzero(is_test if split == "test" else ~is_test)
    tokens = [torch.from_numpy(quantize(upsample_bilinear(images[i], 32), levels).ravel() + 1) for i in keep]
    return SequenceClassificationData(
        "digits32", tokens, torch.from_numpy(targets[keep]), levels + 1, 10, tuple(str(d) for d in range(10))
    )
