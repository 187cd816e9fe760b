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
* Hard attention (:mod:`graphattn.nn.hard`): :func:`hard_attention` / :class:`HardMultiheadAttention`
  read the value of one key per query (argmax, or a sample trained with :func:`reinforce_loss`
  and a :class:`MovingAverageBaseline`).
* Guided attention (:mod:`graphattn.nn.guided`): :class:`LocationAwareAttention` (Chorowski et al.
  2015: convolutional features of the previous alignment in the additive score),
  :func:`monotonic_window_graph` (a monotonic window around the previous alignment, as a sparse
  pattern) and :func:`diagonal_guide_loss` (Tachibana et al. 2017).
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
from graphattn.nn.guided import (
    AlignmentStep,
    EncodedMemory,
    LocationAwareAttention,
    dense_alignment,
    diagonal_guide_loss,
    diagonal_guide_weights,
    monotonic_window_graph,
    step_graph,
    window_center,
)
from graphattn.nn.hard import (
    HardAttentionOutput,
    HardMultiheadAttention,
    MovingAverageBaseline,
    hard_attention,
    reinforce_loss,
)

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
    # hard attention
    "hard_attention",
    "HardAttentionOutput",
    "HardMultiheadAttention",
    "reinforce_loss",
    "MovingAverageBaseline",
    # guided attention (graphattn.nn.guided)
    "LocationAwareAttention",
    "EncodedMemory",
    "AlignmentStep",
    "step_graph",
    "monotonic_window_graph",
    "window_center",
    "dense_alignment",
    "diagonal_guide_weights",
    "diagonal_guide_loss",
]
