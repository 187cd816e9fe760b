"""Sequence tagging on the graphattn encoder: one label per vector (part-of-speech tags, ...).

:class:`SequenceTagger` turns every word into a vector -- a learned word embedding, joined with
a character CNN over the word's bytes when ``char_filters > 0`` (so unknown words still show
their suffixes, capitals and digits) -- and gives those vectors to the
:class:`~graphattn.models.Encoder` as :class:`~graphattn.models.Vectors`, whose every layer
may use any pattern (``full``, ``longformer(window=4, positions=(0,))`` ...). A linear layer
scores the tags of every word.

Example:
    >>> import torch
    >>> from graphattn.models import TransformerConfig
    >>> from graphattn.data.text import word_bytes
    >>> config = TransformerConfig(vocab_size=100, d_model=32, num_heads=4, num_layers=2,
    ...                            encoder_pattern="local(window=2)")
    >>> tagger = SequenceTagger(config, num_tags=17, char_filters=16)
    >>> ids = torch.tensor([[5, 6, 7], [9, 10, 0]])                   # right-padded with pad_id 0
    >>> chars = torch.stack([word_bytes(["the", "cat", "sat"]), word_bytes(["hi", "you", ""])])
    >>> tagger(ids, chars).shape                                      # [B, L, tags]
    torch.Size([2, 3, 17])
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.graph import AttentionGraph
from graphattn.models.transformer import Encoder, TransformerConfig, Vectors, _check_ids, _lengths

__all__ = ["CharCNN", "SequenceTagger"]

BYTE_IDS = 257
"""Byte ids of :func:`graphattn.data.text.word_bytes`: ``byte + 1``, and 0 for padding."""
BOUNDARY = BYTE_IDS
"""The id :class:`CharCNN` puts before and after every word's bytes, so that the convolution
sees prefixes and suffixes as such (``<ing>`` at the end differs from ``ing`` inside)."""


def _positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Expected {name} to be an int >= {minimum}, got {value!r}")
    return value


class CharCNN(nn.Module):
    """Character features of words: byte embeddings, one convolution over each word's bytes
    between two boundary marks (:data:`BOUNDARY`), then the maximum over those positions and
    ``tanh`` (Ma & Hovy 2016).

    Args:
        filters: output features per word ``D``.
        char_dim: byte embedding size.
        kernel_size: width of the convolution (odd; padded to keep the length).

    Shapes:
        ``bytes`` int64 ``[..., C]`` (ids ``byte + 1`` left-aligned, 0 = padding after them,
        as :func:`~graphattn.data.text.word_bytes` gives) -> ``[..., D]``; a word with no bytes
        (a padded slot) gets zeros.
    """

    def __init__(self, filters: int, char_dim: int = 32, kernel_size: int = 3) -> None:
        super().__init__()
        _positive_int(filters, "char_filters")
        _positive_int(char_dim, "char_dim")
        if _positive_int(kernel_size, "char_kernel") % 2 == 0:
            raise ValueError(f"Expected an odd char_kernel (the word keeps its length), got {kernel_size}")
        self.embedding = nn.Embedding(BYTE_IDS + 1, char_dim, padding_idx=0)
        self.conv = nn.Conv1d(char_dim, filters, kernel_size, padding=kernel_size // 2)
        self.filters = filters

    def forward(self, chars: Tensor) -> Tensor:
        if chars.dim() < 2 or chars.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"Expected byte ids as an integer tensor [..., C], got {chars.dtype} {list(chars.shape)}")
        if chars.numel() and (int(chars.min()) < 0 or int(chars.max()) >= BYTE_IDS):
            raise ValueError(
                f"Expected byte ids in [0, {BYTE_IDS}) (word_bytes: byte + 1, 0 = padding), got values in "
                f"[{int(chars.min())}, {int(chars.max())}]"
            )
        leading, width = chars.shape[:-1], chars.size(-1)
        flat = chars.reshape(-1, width).long()  # [W, C]
        lengths = (flat != 0).sum(-1)  # [W]; bytes are left-aligned (word_bytes)
        marked = F.pad(flat, (1, 1))  # [W, C + 2]: <word>
        marked[:, 0] = BOUNDARY
        marked[torch.arange(len(flat), device=flat.device), lengths + 1] = BOUNDARY
        x = self.conv(self.embedding(marked).transpose(1, 2))  # [W, D, C + 2]
        real = (marked != 0)[:, None, :]  # [W, 1, C + 2]
        pooled = x.masked_fill(~real, float("-inf")).amax(-1)  # [W, D]
        pooled = torch.where((lengths > 0)[:, None], pooled, torch.zeros_like(pooled))
        return torch.tanh(pooled).reshape(*leading, self.filters)


class SequenceTagger(nn.Module):
    """Word embedding (+ character CNN) -> Transformer encoder -> tag scores per word.

    Args:
        config: the encoder's config: ``vocab_size`` (the word vocabulary), sizes,
            ``encoder_pattern`` / ``encoder_attention``, positions, ``pad_id``, dropout. Its
            ``input_features`` must be ``None``: the tagger sets it to the width of its word
            vectors.
        num_tags: ``T >= 2``.
        word_dim: word embedding size (default ``config.d_model``).
        char_filters: character-CNN features per word (0: words only).
        char_dim, char_kernel: byte embedding size and convolution width of the CNN.
        word_dropout: in training, each real word's id is replaced by ``unk_id`` with this
            probability (its characters stay), so the model learns to tag unknown words.
        unk_id: the id of unknown words (:data:`graphattn.data.text.UNK` = 1).

    Shapes:
        ``forward(ids [B, L], chars [B, L, C] or None) -> [B, L, T]`` (ids right-padded with
        ``config.pad_id``; ``chars`` needed when ``char_filters > 0``);
        :meth:`loss` ``(ids, chars, labels [B, L]) -> scalar`` (mean over labelled words, label
        ``-100`` ignored).
    """

    def __init__(
        self,
        config: TransformerConfig,
        num_tags: int,
        *,
        word_dim: int | None = None,
        char_filters: int = 64,
        char_dim: int = 32,
        char_kernel: int = 3,
        word_dropout: float = 0.0,
        unk_id: int = 1,
    ) -> None:
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"Expected config to be a TransformerConfig, got {type(config).__name__}")
        if config.input_features is not None:
            raise ValueError(
                f"The tagger builds its own word vectors and sets input_features; got input_features="
                f"{config.input_features}: leave it None"
            )
        _positive_int(num_tags, "num_tags", 2)
        word_dim = config.d_model if word_dim is None else _positive_int(word_dim, "word_dim")
        _positive_int(char_filters, "char_filters", 0)
        if not 0.0 <= float(word_dropout) < 1.0:
            raise ValueError(f"Expected 0 <= word_dropout < 1, got {word_dropout}")
        if not 0 <= unk_id < config.vocab_size or unk_id == config.pad_id:
            raise ValueError(f"Expected unk_id in [0, vocab_size) and not pad_id, got {unk_id}")
        self.config = config
        self.num_tags = num_tags
        self.word_dropout = float(word_dropout)
        self.unk_id = unk_id
        self.words = nn.Embedding(config.vocab_size, word_dim, padding_idx=config.pad_id)
        self.chars = CharCNN(char_filters, char_dim, char_kernel) if char_filters else None
        self.encoder = Encoder(dataclasses.replace(config, input_features=word_dim + char_filters))
        self.classifier = nn.Linear(config.d_model, num_tags)

    def word_vectors(self, ids: Tensor, chars: Tensor | None = None) -> Vectors:
        """The encoder's input: ``Vectors(features [B, L, word_dim + char_filters], lengths [B])``."""
        lengths = _lengths(ids, self.config.pad_id, "ids")  # checks [B, L] integer ids, right-padded
        _check_ids(ids, self.config.vocab_size, "ids")
        real = ids != self.config.pad_id
        if self.training and self.word_dropout > 0:
            drop = real & (torch.rand(ids.shape, device=ids.device) < self.word_dropout)
            ids = ids.masked_fill(drop, self.unk_id)
        features = [self.words(ids)]
        if self.chars is not None:
            if chars is None:
                raise ValueError("This tagger reads the bytes of every word: pass chars [B, L, C] (word_bytes)")
            if chars.dim() != 3 or chars.shape[:2] != ids.shape:
                raise ValueError(f"Expected chars [B, L, C] with [B, L] = {list(ids.shape)}, got {list(chars.shape)}")
            features.append(self.chars(chars))
        return Vectors(torch.cat(features, -1), lengths)

    def forward(self, ids: Tensor, chars: Tensor | None = None) -> Tensor:
        """Tag scores ``[B, L, T]`` (rows at padded slots are not meaningful)."""
        hidden, _ = self.encoder.encode(self.word_vectors(ids, chars))
        return self.classifier(hidden)

    def loss(self, ids: Tensor, chars: Tensor | None, labels: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
        """Cross-entropy over the labelled words (``labels`` ``[B, L]``, ``-100`` ignored)."""
        logits = self(ids, chars)
        if labels.shape != ids.shape:
            raise ValueError(f"Expected labels of the ids' shape {list(ids.shape)}, got {list(labels.shape)}")
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, label_smoothing=label_smoothing)

    @torch.no_grad()
    def attention_weights(self, ids: Tensor, chars: Tensor | None = None) -> list[tuple[AttentionGraph, Tensor]]:
        """Per layer ``(graph, weights [num_edges, H])`` over the words (node ``b * L + i``), for
        plots; see :meth:`~graphattn.models.Encoder.attention_weights`."""
        return self.encoder.attention_weights(self.word_vectors(ids, chars))

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}, word_dropout={self.word_dropout}"
