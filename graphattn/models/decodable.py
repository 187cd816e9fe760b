"""What a model offers to :func:`graphattn.decoding.generate`: the incremental-decoding protocol.

It lives here, below :mod:`graphattn.decoding`, so that models implement it without importing
the decoding algorithms (dependencies flow ``models <- decoding``); :mod:`graphattn.decoding`
re-exports both names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["DecodingStart", "Decodable"]


@dataclass
class DecodingStart:
    """What :meth:`Decodable.start_decoding` returns.

    Attributes:
        logits: ``[B, V]`` scores of the first new token (unnormalized log-probabilities).
        state: model-specific decoding state (e.g. a key/value cache), opaque to
            :func:`graphattn.decoding.generate`; it only passes it to :meth:`Decodable.decode_step` and
            :meth:`Decodable.reorder_state`.
        prefix: ``[B, P]`` int64, the tokens already in the output context (for an
            encoder-decoder the BOS / decoder start token; for a causal LM the prompt),
            right-padded (with any id). The repetition penalty, no-repeat n-grams and
            ``min_length`` see them, as Hugging Face's processors see ``input_ids``.
        prefix_lengths: ``[B]`` int64, the real length of each row of ``prefix``.
    """

    logits: Tensor
    state: Any
    prefix: Tensor
    prefix_lengths: Tensor


@runtime_checkable
class Decodable(Protocol):
    """The protocol a model implements to be decoded by :func:`graphattn.decoding.generate`.

    Rows of the decoding batch never interact: row ``i`` of the logits depends only on row ``i``
    of the state and of the tokens (that is what makes decoding batch invariant).

    Optional attributes, read when the corresponding :func:`graphattn.decoding.generate` argument is None:

    * ``eos_id: int | None``: the end-of-sequence token.
    * ``pad_id: int``: the token written after EOS in the output.
    """

    def start_decoding(self, inputs: Any, *, max_new_tokens: int) -> DecodingStart:
        """Encode ``inputs`` (whatever the model takes: source ids ``[B, S]`` for an
        encoder-decoder, prompts ``[B, L]`` for a causal LM, ...) and score the first new
        token. ``max_new_tokens`` is how many tokens will be generated at most (for sizing a
        cache)."""
        ...

    def decode_step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """``tokens [B']`` int64, the token just chosen for every row of the current batch ->
        ``(logits [B', V] for the next token, new state)``."""
        ...

    def reorder_state(self, state: Any, index: Tensor) -> Any:
        """``index [B'']`` int64: the rows of the current batch to keep, duplicate and reorder
        (beam expansion, beam reordering, dropping finished rows) -> the state of the new
        batch, whose row ``r`` is old row ``index[r]``."""
        ...
