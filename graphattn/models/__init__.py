"""Models built from graphattn's layers.

* :mod:`graphattn.models.transformer`: :class:`TransformerConfig`, :class:`Encoder`, :class:`Decoder`,
  :class:`EncoderDecoder` (optionally with a copy mechanism), :class:`CausalLM` (decoder-only),
  :class:`MaskedLM` (encoder-only) and :func:`mask_tokens`.
"""
from graphattn.models.transformer import (
    POSITIONS,
    CausalLM,
    Decoder,
    DecoderPass,
    Encoder,
    EncoderDecoder,
    MaskedLM,
    TransformerConfig,
    mask_tokens,
)

__all__ = ["TransformerConfig", "Encoder", "Decoder", "DecoderPass", "EncoderDecoder", "CausalLM", "MaskedLM", "mask_tokens", "POSITIONS"]
