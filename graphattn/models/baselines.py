"""PyTorch Geometric baselines in the harness of :class:`~graphattn.models.graph_transformer.GraphTransformer`.

:class:`PygGNN` wraps one PyG layer type -- ``GINEConv``, ``GCNConv``, ``GATConv`` or ``GPSConv``
-- with the same atom/bond embeddings (:class:`CategoricalEmbedding`), optional positional
encodings, pooling (:class:`GraphPooling`) and output head as the graph transformer, and the
same ``forward(batch) -> Tensor``, so an experiment swaps one model for another without other
changes. :func:`count_parameters` counts what an optimizer would train.

:class:`ImageCNN` is the small convolutional network that pixel attention
(:func:`graphattn.data.image.image_to_nodes` + a pixel pattern) is compared with on images:
``images [B, C, H, W] -> logits [B, num_classes]``.

Example:
    >>> from torch_geometric.data import Batch
    >>> from graphattn.data.molecule import smiles_to_graph
    >>> model = PygGNN("gin", hidden=32, layers=2).eval()
    >>> batch = Batch.from_data_list([smiles_to_graph("CCO"), smiles_to_graph("c1ccccc1")])
    >>> model(batch).shape
    torch.Size([2, 1])
    >>> count_parameters(model) > 0
    True
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.models.graph_transformer import (
    NORMS,
    POOLINGS,
    POSITIONAL_ENCODINGS,
    TASK_LEVELS,
    CategoricalEmbedding,
    GraphPooling,
    GraphTransformerConfig,
    _choice,
    _feature_dims,
    _make_norm,
    _PositionalInput,
    _positive_int,
    append_graph_features,
    check_graph_feature_dim,
    _read_molecule_batch,
)

__all__ = ["PygGNN", "ImageCNN", "count_parameters", "BASELINES"]

BASELINES = ("gin", "gcn", "gat", "gps")
"""Layer types of :class:`PygGNN`."""


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of parameter elements of ``model`` (only those with ``requires_grad`` by default).

    Example:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class PygGNN(nn.Module):
    """A PyG message-passing (or GPS) network over featurized molecules.

    ``h = atom_encoder(x) (+ positional encoding)``, then ``layers`` x the chosen layer, then
    pooling and ``Linear(d, d) -> ReLU -> Linear(d, num_tasks)`` (graph level) or that MLP per
    atom (node level), exactly as :class:`~graphattn.models.graph_transformer.GraphTransformer`.

    Layers (``kind``):

    * ``"gin"``: ``GINEConv`` (learned epsilon, MLP ``d -> 2d -> d``) with a bond embedding per
      layer (as OGB's GIN);
    * ``"gcn"``: ``GCNConv`` (bond features unused);
    * ``"gat"``: ``GATConv`` with ``heads`` heads of ``d / heads`` channels and the bond
      embedding as ``edge_attr`` (a bond embedding per layer);
    * each of these as ``h = h + dropout(relu(norm(conv(h))))``;
    * ``"gps"``: ``GPSConv`` (Rampášek et al. 2022) with ``GINEConv`` (MLP ``d -> d -> d``) as
      the local MPNN and ``torch.nn.MultiheadAttention`` with ``heads`` heads as global attention,
      bonds embedded once and shared by the layers (as GraphGPS).

    Args:
        kind: one of :data:`BASELINES`.
        hidden: ``d``.
        layers: number of layers.
        heads: attention heads (``"gat"``, ``"gps"``); must divide ``hidden``.
        dropout: dropout after every layer (inside ``GPSConv`` for ``"gps"``).
        attention_dropout: dropout on attention weights (``"gat"``, ``"gps"``).
        featurizer, atom_feature_dims, bond_feature_dims, positional_encoding, pe_size, pooling,
        graph_feature_dim, num_tasks, task_level, norm: as in
            :class:`~graphattn.models.graph_transformer.GraphTransformerConfig`.

    Shapes:
        ``forward(batch) -> [G, num_tasks]`` (graph level) or ``[N, num_tasks]`` (node level).
    """

    def __init__(
        self,
        kind: str = "gin",
        hidden: int = 64,
        layers: int = 4,
        *,
        heads: int = 4,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        featurizer: str = "ogb",
        atom_feature_dims: Sequence[int] | None = None,
        bond_feature_dims: Sequence[int] | None = None,
        positional_encoding: str = "none",
        pe_size: int = 16,
        pooling: str = "mean",
        graph_feature_dim: int = 0,
        num_tasks: int = 1,
        task_level: str = "graph",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        from torch_geometric.nn import GATConv, GCNConv, GINEConv, GPSConv

        self.kind = _choice(kind, BASELINES, "kind")
        hidden = _positive_int(hidden, "hidden")
        layers = _positive_int(layers, "layers")
        heads = _positive_int(heads, "heads")
        for name, value in (("dropout", dropout), ("attention_dropout", attention_dropout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"Expected 0 <= {name} < 1, got {value!r}")
        if kind in ("gat", "gps") and hidden % heads:
            raise ValueError(
                f"Expected hidden divisible by heads for {kind!r}, got hidden={hidden}, heads={heads}"
            )
        _choice(positional_encoding, POSITIONAL_ENCODINGS, "positional_encoding")
        _choice(pooling, POOLINGS, "pooling")
        _choice(task_level, TASK_LEVELS, "task_level")
        _choice(norm, NORMS, "norm")
        check_graph_feature_dim(graph_feature_dim, task_level)
        # the config resolves the featurizer's vocabularies and checks the remaining settings
        shared = GraphTransformerConfig(
            hidden_dim=hidden,
            featurizer=featurizer,
            atom_feature_dims=None if atom_feature_dims is None else tuple(_feature_dims(atom_feature_dims, "atom_feature_dims")),
            bond_feature_dims=None if bond_feature_dims is None else tuple(_feature_dims(bond_feature_dims, "bond_feature_dims")),
            num_heads=1,
            pe_size=pe_size,
            num_tasks=num_tasks,
        )
        self.atom_dims, self.bond_dims = shared.atom_dims, shared.bond_dims
        # the constructor arguments, JSON-friendly: PygGNN(**model.settings) rebuilds the model
        self.settings: dict[str, Any] = dict(
            kind=kind, hidden=hidden, layers=layers, heads=heads, dropout=dropout,
            attention_dropout=attention_dropout, featurizer=featurizer,
            atom_feature_dims=list(self.atom_dims), bond_feature_dims=list(self.bond_dims),
            positional_encoding=positional_encoding, pe_size=pe_size, pooling=pooling,
            graph_feature_dim=graph_feature_dim, num_tasks=num_tasks, task_level=task_level, norm=norm,
        )
        self.dropout = float(dropout)

        self.atom_encoder = CategoricalEmbedding(self.atom_dims, hidden)
        self.positional = (
            _PositionalInput(positional_encoding, pe_size, hidden) if positional_encoding != "none" else None
        )
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.bond_encoders = nn.ModuleList()  # per layer for gin / gat, one shared for gps
        for _ in range(layers):
            if kind == "gin":
                mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, hidden))
                self.convs.append(GINEConv(mlp, train_eps=True))
            elif kind == "gcn":
                self.convs.append(GCNConv(hidden, hidden))
            elif kind == "gat":
                self.convs.append(
                    GATConv(hidden, hidden // heads, heads=heads, edge_dim=hidden, dropout=attention_dropout)
                )
            else:
                mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
                self.convs.append(
                    GPSConv(
                        hidden,
                        GINEConv(mlp),
                        heads=heads,
                        dropout=dropout,
                        norm="batch_norm" if norm == "batch" else "layer_norm",
                        norm_kwargs=None if norm == "batch" else {"mode": "node"},
                        attn_kwargs={"dropout": attention_dropout},
                    )
                )
            if kind in ("gin", "gat"):
                self.bond_encoders.append(CategoricalEmbedding(self.bond_dims, hidden))
            if kind != "gps":
                self.norms.append(_make_norm(norm, hidden))
        if kind == "gps":
            self.bond_encoders.append(CategoricalEmbedding(self.bond_dims, hidden))
        self.pooling = GraphPooling(pooling, hidden) if task_level == "graph" else None
        self.head = nn.Sequential(nn.Linear(hidden + graph_feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_tasks))

    @classmethod
    def from_config(cls, kind: str, config: GraphTransformerConfig, *, layers: int | None = None) -> "PygGNN":
        """A baseline with a graph transformer's width, heads, dropout, vocabularies, positional
        encoding, pooling, tasks and norm (``layers`` defaults to ``config.num_layers``)."""
        if not isinstance(config, GraphTransformerConfig):
            raise TypeError(f"Expected a GraphTransformerConfig, got {type(config).__name__}")
        return cls(
            kind,
            config.hidden_dim,
            config.num_layers if layers is None else layers,
            heads=config.num_heads,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            atom_feature_dims=config.atom_dims,
            bond_feature_dims=config.bond_dims,
            positional_encoding=config.positional_encoding,
            pe_size=config.pe_size,
            pooling=config.pooling,
            graph_feature_dim=config.graph_feature_dim,
            num_tasks=config.num_tasks,
            task_level=config.task_level,
            norm=config.norm,
        )

    def forward(self, batch: Any) -> Tensor:
        inputs = _read_molecule_batch(batch, self.atom_dims, self.bond_dims, need_bonds=self.kind != "gcn")
        h = self.atom_encoder(inputs.x)  # [N, d]
        if self.positional is not None:
            h = h + self.positional(batch, inputs, h)
        edge_index = inputs.edge_index
        if self.kind == "gps":
            edge_features = self.bond_encoders[0](inputs.edge_attr)  # [E, d], shared by the layers
            for conv in self.convs:
                h = conv(h, edge_index, inputs.batch, edge_attr=edge_features)
        else:
            for index, (conv, norm) in enumerate(zip(self.convs, self.norms)):
                if self.kind == "gcn":
                    update = conv(h, edge_index)
                else:
                    update = conv(h, edge_index, self.bond_encoders[index](inputs.edge_attr))
                update = F.relu(norm(update))
                h = h + F.dropout(update, self.dropout, training=self.training)
        if self.pooling is not None:
            h = self.pooling(h, inputs.batch, inputs.num_graphs)  # [G, d]
            h = append_graph_features(h, batch, self.settings["graph_feature_dim"])  # [G, d + F]
        return self.head(h)

    def extra_repr(self) -> str:
        s = self.settings
        return f"kind={s['kind']!r}, hidden={s['hidden']}, layers={s['layers']}, pooling={s['pooling']!r}"


class ImageCNN(nn.Module):
    """A small convolutional network for image classification, the baseline of pixel attention.

    One stage per entry of ``channels``: ``(Conv2d(k x k, same padding) -> BatchNorm2d -> ReLU)``
    twice, then ``MaxPool2d(2)`` (``ceil_mode``: odd or tiny maps keep at least one pixel); then
    the global average over the remaining map, dropout and ``Linear(channels[-1], num_classes)``.
    The default (two stages of 32 and 64 channels, 3x3 kernels) has 65,834 parameters for grey
    images and 10 classes; after the two stages every output sees a 16x16 window of the input,
    the whole of an 8x8 digit.

    Args:
        in_channels: ``C``, channels of the input images (1 for grey).
        num_classes: number of classes (``>= 2``).
        channels: output channels of each stage (a non-empty sequence of positive ints).
        kernel_size: odd side of the square convolution kernels (default 3).
        dropout: dropout before the output layer, in ``[0, 1)``.

    Shapes:
        ``forward(images [B, C, H, W]) -> logits [B, num_classes]`` for any ``H, W >= 1``.

    Example:
        >>> model = ImageCNN(in_channels=1, num_classes=10)
        >>> model(torch.rand(4, 1, 8, 8)).shape
        torch.Size([4, 10])
        >>> count_parameters(model)
        65834
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: Sequence[int] = (32, 64),
        *,
        kernel_size: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        in_channels = _positive_int(in_channels, "in_channels")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"Expected 'num_classes' to be an int >= 2, got {num_classes!r}")
        if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or not channels:
            raise ValueError(
                f"Expected 'channels' to be a non-empty sequence of positive ints (one per stage), got {channels!r}; "
                "e.g. channels=(32, 64)"
            )
        channels = tuple(_positive_int(width, "channels[]") for width in channels)
        kernel_size = _positive_int(kernel_size, "kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(
                f"Expected an odd 'kernel_size' (same padding keeps the map size), got {kernel_size}; use "
                f"{kernel_size - 1} or {kernel_size + 1}"
            )
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"Expected 0 <= dropout < 1, got {dropout!r}")
        self.in_channels, self.num_classes, self.channels = in_channels, num_classes, channels
        self.kernel_size, self.dropout = kernel_size, float(dropout)
        layers: list[nn.Module] = []
        width = in_channels
        for out in channels:
            for _ in range(2):
                layers += [
                    nn.Conv2d(width, out, kernel_size, padding=kernel_size // 2, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(),
                ]
                width = out
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(self.dropout), nn.Linear(width, num_classes))

    def forward(self, images: Tensor) -> Tensor:
        """``images [B, C, H, W]`` (float) -> logits ``[B, num_classes]``."""
        if not isinstance(images, Tensor) or images.dim() != 4 or images.size(1) != self.in_channels:
            got = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
            fix = " (for grey images [B, H, W] use images.unsqueeze(1))" if isinstance(images, Tensor) and images.dim() == 3 else ""
            raise ValueError(f"Expected images of shape [B, {self.in_channels}, H, W], got {got}{fix}")
        maps = self.features(images)  # [B, channels[-1], H / 2^stages, W / 2^stages]
        return self.head(maps.mean(dim=(2, 3)))  # [B, channels[-1]] -> [B, num_classes]

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, num_classes={self.num_classes}, channels={self.channels}, "
            f"kernel_size={self.kernel_size}, dropout={self.dropout}"
        )
