"""Layers on top of :func:`graphattn.attention`.

* :class:`MultiheadAttention`: multi-head attention over ``[B, L, E]`` sequences with a pattern
  and ``key_padding_mask``, or over node features ``[N, E]`` with a graph / ``edge_index``;
  scoring ``scaled_dot``, ``dot``, ``additive``, ``bilinear``.
* :class:`TorchCompatibleMultiheadAttention`: a drop-in for ``torch.nn.MultiheadAttention``
  (same forward, layout and mask polarity), made by :meth:`MultiheadAttention.from_torch`.
"""
from graphattn.nn.attention import SCORES, AttentionOutput, MultiheadAttention, TorchCompatibleMultiheadAttention

__all__ = ["MultiheadAttention", "TorchCompatibleMultiheadAttention", "AttentionOutput", "SCORES"]
