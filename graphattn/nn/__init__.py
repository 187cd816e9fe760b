"""Layers on top of :func:`graphattn.attention`.

* :class:`MultiheadAttention`: multi-head attention over ``[B, L, E]`` sequences with a pattern
  and ``key_padding_mask``, or over node features ``[N, E]`` with a graph / ``edge_index``;
  scoring ``scaled_dot``, ``dot``, ``additive``, ``bilinear``.
* :class:`TorchCompatibleMultiheadAttention`: a drop-in for ``torch.nn.MultiheadAttention``
  (same forward, layout and mask polarity), made by :meth:`MultiheadAttention.from_torch`.
* :class:`TransformerLayer`: self-attention, optional cross-attention and feed-forward over node
  features with an :class:`AttentionContext` (graph, per-edge position bias, positions), pre- or
  post-norm; :class:`KeyValueCache` / :class:`LayerCache` for incremental decoding.
* Attention mechanisms beyond a fixed pattern (:mod:`graphattn.nn.mechanism`): a layer runs
  one in place of softmax over its pattern -- clustered :class:`LSHAttention` (Reformer) and
  :class:`RoutingAttention` (k-means), learned :class:`SinkhornAttention`, low-rank
  :class:`LinformerAttention` and :class:`CompressedAttention`, kernelized
  :class:`LinearAttention` (elu+1) and :class:`PerformerAttention` (FAVOR+),
  :class:`SynthesizerAttention`; :class:`HeadGroups` gives each group of heads its own.
* Positions (:mod:`graphattn.nn.positional`): sinusoidal and learned embeddings, T5 relative
  bias and ALiBi per edge, rotary (RoPE); for graphs Laplacian-eigenvector and random-walk
  encodings.
"""
from graphattn.nn.attention import SCORES, AttentionOutput, MultiheadAttention, TorchCompatibleMultiheadAttention
from graphattn.nn.positional import (
    ALiBi,
    LaplacianPositionalEncoding,
    LearnedPositionalEmbedding,
    RandomWalkPositionalEncoding,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionalEmbedding,
    alibi_slopes,
    graph_positions,
    laplacian_eigenvector_pe,
    random_walk_pe,
)
from graphattn.nn.transformer import AttentionContext, FeedForward, KeyValueCache, LayerCache, TransformerLayer
from graphattn.nn.mechanism import (
    MECHANISM_NAMES,
    AttentionMechanism,
    HeadGroups,
    MechanismSpec,
    SequenceLayout,
    SoftmaxAttention,
    as_mechanism_spec,
)
from graphattn.nn.clustered import LSHAttention, RoutingAttention
from graphattn.nn.efficient import (
    CompressedAttention,
    LinearAttention,
    LinformerAttention,
    PerformerAttention,
    SynthesizerAttention,
)
from graphattn.nn.sinkhorn import SinkhornAttention

__all__ = [
    "MultiheadAttention",
    "TorchCompatibleMultiheadAttention",
    "AttentionOutput",
    "SCORES",
    "TransformerLayer",
    "FeedForward",
    "AttentionContext",
    "KeyValueCache",
    "LayerCache",
    # positions
    "SinusoidalPositionalEmbedding",
    "LearnedPositionalEmbedding",
    "RelativePositionBias",
    "RotaryEmbedding",
    "ALiBi",
    "alibi_slopes",
    "graph_positions",
    "laplacian_eigenvector_pe",
    "random_walk_pe",
    "LaplacianPositionalEncoding",
    "RandomWalkPositionalEncoding",
    # attention mechanisms
    "AttentionMechanism",
    "SequenceLayout",
    "SoftmaxAttention",
    "HeadGroups",
    "MechanismSpec",
    "MECHANISM_NAMES",
    "as_mechanism_spec",
    "LSHAttention",
    "RoutingAttention",
    "SinkhornAttention",
    "LinformerAttention",
    "CompressedAttention",
    "LinearAttention",
    "PerformerAttention",
    "SynthesizerAttention",
]
