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
        state: model-specific decoding state (e.g. the key/value cache), opaque to generate().
        prefix: ``[B, P]`` int64 tokens already in the output context (BOS for an
            encoder-decoder, the prompt for a causal LM), right-padded with the pad id.
        prefix_lengths: ``[B]`` int64 real length of each row of ``prefix``.
    """

    logits: Tensor
    state: Any
    prefix: Tensor
    prefix_lengths: Tensor


@runtime_checkable
class Decodable(Protocol):
    """A model that :func:`graphattn.decoding.generate` can decode.

    Optional attributes read when generate()'s corresponding argument is None: ``eos_id``
    (``int | None``) and ``pad_id`` (``int``).
    """

    def start_decoding(self, inputs: Any, *, max_new_tokens: int) -> DecodingStart:
        """Prepare decoding of ``inputs`` (source ids ``[B, S]``, prompts ``[B, L]``, ...)."""
        ...

    def decode_step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """``tokens`` ``[B']`` just chosen for every row -> (logits ``[B', V]`` of the next, state)."""
        ...

    def reorder_state(self, state: Any, index: Tensor) -> Any:
        """Keep, duplicate and reorder rows ``index`` ``[B'']`` of the batch; returns the new state."""
        ...
