"""Models built from graphattn's layers.

* :mod:`graphattn.models.transformer`: :class:`TransformerConfig`, :class:`Encoder`, :class:`Decoder`,
  :class:`EncoderDecoder` (optionally with a copy mechanism), :class:`CausalLM` (decoder-only),
  :class:`MaskedLM` (encoder-only) and :func:`mask_tokens`.
* :mod:`graphattn.models.classifier`: :class:`SequenceClassifier` (encoder + pooling + head, one
  label per sequence).
* :mod:`graphattn.models.ctc`: :class:`CTCModel` (encoder + a CTC output layer, a label per
  frame), :func:`ctc_greedy_decode`, :func:`ctc_beam_search` and :func:`character_error_rate`.
* :mod:`graphattn.models.nat`: :class:`NonAutoregressiveTransformer` (NAT with a length
  classifier, offset, fertility, uniform copy or cut-at-END output length; uniform-copy,
  fertility-copy or [MASK] decoder inputs for Mask-Predict), :class:`CTCNAT` (upsampled
  encoder + CTC, Imputer-style refinement), :class:`InsertionTransformer` (parallel insertions,
  balanced-binary-tree or uniform slot loss) and :class:`LevenshteinTransformer` (insert /
  delete editing); decoding in :mod:`graphattn.decoding`.
* :mod:`graphattn.models.pointer`: :class:`PointerNetwork` (Vinyals et al. 2015: attention over the
  encoded inputs is the output distribution; LSTM or graphattn Transformer encoder, LSTM or
  Transformer decoder, TSP / convex-hull masks; greedy and beam decoding through
  :func:`graphattn.decoding.generate`) and :class:`PointerConfig`.
* :mod:`graphattn.models.guided`: :class:`AttentionRecognizer` (speech frames -> characters: the
  graphattn encoder + an LSTM decoder with location-aware or content-only attention, an optional
  monotonic window, the diagonal guide loss; greedy decoding with alignments, or
  :func:`graphattn.decoding.generate`) and :class:`RecognizerConfig`.
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
from graphattn.models.nat import (
    CTCNAT,
    NAT_INPUTS,
    NAT_LENGTHS,
    CTCNATConfig,
    LevenshteinTransformer,
    NATConfig,
    NATEncoding,
    NATForward,
    NATLoss,
    NonAutoregressiveTransformer,
    cmlm_mask,
    ctc_best_alignment,
    fertilities_from_alignment,
    fertility_copy_index,
    levenshtein_oracle,
    nat_targets,
    uniform_copy_index,
    uniform_fertilities,
)
from graphattn.models.insertion import INSERTION_WEIGHTINGS, InsertionTransformer, slot_targets
from graphattn.models.pointer import POINTER_ENCODERS, POINTER_MASKS, PointerConfig, PointerNetwork, pointer_loss, pointer_mask
from graphattn.models.guided import (
    RECOGNIZER_ATTENTION,
    AttentionRecognizer,
    RecognizerConfig,
    RecognizerLoss,
    RecognizerOutput,
    Transcription,
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
    # non-autoregressive (graphattn.models.nat)
    "NATConfig",
    "NonAutoregressiveTransformer",
    "NATEncoding",
    "NATForward",
    "NATLoss",
    "NAT_LENGTHS",
    "NAT_INPUTS",
    "CTCNATConfig",
    "CTCNAT",
    "LevenshteinTransformer",
    "InsertionTransformer",
    "INSERTION_WEIGHTINGS",
    "slot_targets",
    "levenshtein_oracle",
    "cmlm_mask",
    "ctc_best_alignment",
    "fertilities_from_alignment",
    "fertility_copy_index",
    "nat_targets",
    "uniform_copy_index",
    "uniform_fertilities",
    # pointer networks (graphattn.models.pointer)
    "PointerConfig",
    "PointerNetwork",
    "pointer_loss",
    "pointer_mask",
    "POINTER_MASKS",
    "POINTER_ENCODERS",
    # attention-based recognizer with guided attention (graphattn.models.guided)
    "RecognizerConfig",
    "AttentionRecognizer",
    "RecognizerOutput",
    "RecognizerLoss",
    "Transcription",
    "RECOGNIZER_ATTENTION",
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
