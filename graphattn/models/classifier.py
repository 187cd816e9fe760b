"""Sequence classification on the graphattn encoder: one label per sequence.

:class:`SequenceClassifier` is the model of Long-Range-Arena-style comparisons: the
:class:`~graphattn.models.Encoder` of a :class:`~graphattn.models.TransformerConfig` (so every
layer may use any pattern -- ``local(window=128)``, ``bigbird(...)`` -- or any attention
mechanism -- ``linear``, ``lsh(...)``, ``performer(...)``), a pooling of the encoder states over
the real tokens of each sequence, and a small MLP head (LRA: mean pooling, then
``Linear -> ReLU -> Linear``).

Example:
    >>> import torch
    >>> from graphattn.models import TransformerConfig
    >>> config = TransformerConfig(vocab_size=16, d_model=32, num_heads=4, num_layers=2,
    ...                            encoder_pattern="local(window=2)")
    >>> model = SequenceClassifier(config, num_classes=10)
    >>> ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])      # right-padded with pad_id = 0
    >>> model(ids).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from graphattn.models.transformer import Encoder, TransformerConfig, Vectors

__all__ = ["SequenceClassifier", "CLASSIFIER_POOLINGS"]

CLASSIFIER_POOLINGS = ("mean", "cls", "max")
"""How :class:`SequenceClassifier` turns ``[B, L, E]`` encoder states into ``[B, E]``."""


class SequenceClassifier(nn.Module):
    """Encoder + pooling over the real tokens + an MLP head: token ids ``[B, L]`` (or vectors)
    -> logits ``[B, C]``.

    Pooling (padded slots never count):

    * ``"mean"``: the mean of the final states of the real tokens (LRA's choice);
    * ``"max"``: the element-wise maximum over the real tokens;
    * ``"cls"``: the final state of the first token (position 0). The data sets here have no
      ``[CLS]`` token: put a reserved id first yourself for BERT-style pooling, or use a
      pattern that makes position 0 global (``longformer(window=..., positions=(0,))``).

    Head: ``Linear(E, head_dim) -> ReLU -> Dropout -> Linear(head_dim, C)``.

    The result for a sequence does not depend on the padding of its batch (for the patterns and
    mechanisms whose attention ignores padded keys, which is all of graphattn's) in eval mode.

    Args:
        config: the encoder's config (``vocab_size``, sizes, ``encoder_pattern``,
            ``encoder_attention``, ``pad_id``; mechanisms that need the longest sequence --
            Linformer, Synthesizer, Sinkhorn -- read ``max_positions``).
        num_classes: ``C >= 2``.
        pooling: one of :data:`CLASSIFIER_POOLINGS` (default ``"mean"``).
        head_dim: hidden size of the head (default ``config.d_model``).
        head_dropout: dropout inside the head (default ``config.dropout``).

    Shapes:
        ``forward(ids [B, L]) -> [B, C]`` (int64 ids right-padded with ``config.pad_id``, every
        row at least one real token), or ``forward(Vectors(features [B, L, F], lengths [B]))``
        when ``config.input_features = F``; :meth:`pool` ``(hidden [B, L, E], lengths [B]) -> [B, E]``.

    Example:
        >>> config = TransformerConfig(vocab_size=16, d_model=16, num_heads=2, num_layers=1,
        ...                            encoder_attention="linear")
        >>> model = SequenceClassifier(config, 3, pooling="max")
        >>> model(torch.tensor([[4, 5, 6]])).shape
        torch.Size([1, 3])
    """

    def __init__(
        self,
        config: TransformerConfig,
        num_classes: int,
        *,
        pooling: str = "mean",
        head_dim: int | None = None,
        head_dropout: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"Expected config to be a TransformerConfig, got {type(config).__name__}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"Expected num_classes to be an int >= 2, got {num_classes!r}")
        if pooling not in CLASSIFIER_POOLINGS:
            raise ValueError(f"Unknown pooling {pooling!r}; expected one of {', '.join(CLASSIFIER_POOLINGS)}")
        head_dim = config.d_model if head_dim is None else head_dim
        if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
            raise ValueError(f"Expected head_dim to be a positive int or None, got {head_dim!r}")
        head_dropout = config.dropout if head_dropout is None else float(head_dropout)
        if not 0.0 <= head_dropout < 1.0:
            raise ValueError(f"Expected 0 <= head_dropout < 1, got {head_dropout}")
        self.config = config
        self.num_classes = num_classes
        self.pooling = pooling
        self.encoder = Encoder(config)
        self.head = nn.Sequential(
            nn.Linear(config.d_model, head_dim),
            nn.ReLU(),
            nn.Dropout(head_dropout),
            nn.Linear(head_dim, num_classes),
        )

    def reset_parameters(self) -> None:
        """Re-initialize the head (the encoder keeps its weights)."""
        for module in self.head:
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def forward(self, inputs: Tensor | Vectors) -> Tensor:
        """``inputs`` -- ``[B, L]`` right-padded token ids, or :class:`~graphattn.models.Vectors`
        ``(features [B, L, F], lengths [B])`` with ``config.input_features = F`` (speech frames,
        pixels) -- -> logits ``[B, C]``."""
        hidden, lengths = self.encoder.encode(inputs)  # [B, L, E], [B]
        return self.head(self.pool(hidden, lengths))  # [B, C]

    def pool(self, hidden: Tensor, lengths: Tensor) -> Tensor:
        """Pool ``hidden`` ``[B, L, E]`` over the first ``lengths[b]`` slots of each row -> ``[B, E]``."""
        if hidden.dim() != 3 or lengths.shape != hidden.shape[:1]:
            raise ValueError(
                f"Expected hidden [B, L, E] and lengths [B], got {list(hidden.shape)} and {list(lengths.shape)}"
            )
        if hidden.size(0) and bool((lengths < 1).any()):
            row = int((lengths < 1).nonzero()[0])
            raise ValueError(
                f"Every sequence needs at least one real token to pool over, but row {row} is all padding "
                f"(pad_id = {self.config.pad_id}); drop empty sequences from the batch"
            )
        if self.pooling == "cls":
            return hidden[:, 0]
        real = torch.arange(hidden.size(1), device=hidden.device) < lengths[:, None]  # [B, L]
        if self.pooling == "max":
            return hidden.masked_fill(~real[..., None], float("-inf")).amax(1)
        summed = hidden.masked_fill(~real[..., None], 0.0).sum(1)  # [B, E]; padded slots may hold anything
        return summed / lengths[:, None].to(hidden.dtype)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, pooling={self.pooling!r}"
