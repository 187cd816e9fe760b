"""Models built from graphattn's layers.

* :mod:`graphattn.models.transformer`: :class:`TransformerConfig`, :class:`Encoder`, :class:`Decoder`,
  :class:`EncoderDecoder` (optionally with a copy mechanism), :class:`CausalLM` (decoder-only),
  :class:`MaskedLM` (encoder-only) and :func:`mask_tokens`.
* :mod:`graphattn.models.classifier`: :class:`SequenceClassifier` (encoder + pooling + head, one
  label per sequence).
* :mod:`graphattn.models.ctc`: :class:`CTCModel` (encoder + a CTC output layer, a label per
  frame), :func:`ctc_greedy_decode`, :func:`ctc_beam_search` and :func:`character_error_rate`.
* :mod:`graphattn.models.tagger`: :class:`SequenceTagger` (word + character-CNN vectors ->
  encoder -> a label per word) and :class:`CharCNN`.
* :mod:`graphattn.models.graph_transformer`: :class:`GraphTransformer` (GPS-style: attention over
  bonds + attention within each molecule + feed-forward; atom/bond embeddings, graph positional
  encodings, pooling, graph- or node-level heads) and :class:`GraphTransformerConfig`.
* :mod:`graphattn.models.baselines`: PyG GIN / GCN / GAT / GPSConv baselines with the same
  embeddings, pooling and heads (:class:`PygGNN`).
"""
from graphattn.models.baselines import BASELINES, ImageCNN, PygGNN, count_parameters
from graphattn.models.classifier import CLASSIFIER_POOLINGS, SequenceClassifier
from graphattn.models.ctc import (
    CTCModel,
    CTCOutput,
    character_error_rate,
    ctc_beam_search,
    ctc_collapse,
    ctc_greedy_decode,
    edit_distance,
)
from graphattn.models.tagger import CharCNN, SequenceTagger
from graphattn.models.graph_transformer import (
    AddGraphPositionalEncoding,
    BondAttention,
    CategoricalEmbedding,
    GPSLayer,
    GraphContext,
    GraphPooling,
    GraphTransformer,
    GraphTransformerConfig,
)
from graphattn.models.transformer import (
    POSITIONS,
    CausalLM,
    Decoder,
    DecoderPass,
    Encoder,
    EncoderDecoder,
    MaskedLM,
    TransformerConfig,
    Vectors,
    mask_tokens,
)

__all__ = [
    # sequence Transformers
    "TransformerConfig",
    "Vectors",
    "Encoder",
    "Decoder",
    "DecoderPass",
    "EncoderDecoder",
    "CausalLM",
    "MaskedLM",
    "mask_tokens",
    "POSITIONS",
    "SequenceClassifier",
    "CLASSIFIER_POOLINGS",
    "CTCModel",
    "CTCOutput",
    "ctc_greedy_decode",
    "ctc_beam_search",
    "ctc_collapse",
    "edit_distance",
    "character_error_rate",
    "SequenceTagger",
    "CharCNN",
    # graph transformers
    "GraphTransformerConfig",
    "GraphTransformer",
    "GPSLayer",
    "BondAttention",
    "GraphContext",
    "CategoricalEmbedding",
    "GraphPooling",
    "AddGraphPositionalEncoding",
    # PyG baselines
    "PygGNN",
    "ImageCNN",
    "BASELINES",
    "count_parameters",
]
