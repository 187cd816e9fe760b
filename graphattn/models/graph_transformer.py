"""A GPS-style graph transformer for molecules, on the graphattn core.

Every layer (Rampášek et al. 2022, "Recipe for a General, Powerful, Scalable Graph
Transformer") runs two attentions over the atoms of a batch of molecules and adds them::

    h_local  = norm(h + dropout(local_attention(h)))      # atoms attend their bonded neighbours (and themselves)
    h_global = norm(h + dropout(global_attention(h)))     # atoms attend every atom of their own molecule
    h        = h_local + h_global
    h        = norm(h + dropout(feed_forward(h)))

* The local branch is :class:`BondAttention`: :func:`graphattn.attention` over
  :func:`graphattn.patterns.adjacency` (bonds plus self loops), with the bond features either as
  a learned per-edge, per-head **score bias** (``"bias"``) or as **edge-conditioned values**
  ``sum_j a_ij (v_j + W_e e_ij)`` (``"values"``), computed without any ``[E, H, D]`` tensor.
* The global branch is :class:`~graphattn.nn.MultiheadAttention` over
  :func:`graphattn.patterns.full_per_graph`: attention never crosses molecules.
* Atoms and bonds are embedded by :class:`CategoricalEmbedding` (one ``nn.Embedding`` per
  categorical feature column, summed, as OGB's ``AtomEncoder`` / ``BondEncoder``); Laplacian or
  random-walk positional encodings are added to the atom embeddings.
* Graph-level outputs pool the atoms (:class:`GraphPooling`: sum, mean or gated attention) and
  apply an MLP; node-level outputs apply the MLP to every atom.

Both attention graphs are built once per batch (:meth:`GraphTransformer.prepare`) and shared by
every layer. Positional encodings can be precomputed once per molecule with the PyG transform
:class:`AddGraphPositionalEncoding` (stored as ``data.lap_pe`` / ``data.rw_pe``); the model
computes them on the fly when a batch lacks them.

Example:
    >>> import torch
    >>> from torch_geometric.data import Batch
    >>> from graphattn.data.molecule import smiles_to_graph
    >>> from graphattn.models.graph_transformer import GraphTransformer, GraphTransformerConfig
    >>> config = GraphTransformerConfig(hidden_dim=32, num_heads=4, num_layers=2, num_tasks=3)
    >>> model = GraphTransformer(config).eval()
    >>> batch = Batch.from_data_list([smiles_to_graph(s) for s in ["CCO", "c1ccccc1", "[Na+].[Cl-]"]])
    >>> model(batch).shape                                       # one row per molecule
    torch.Size([3, 3])
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from graphattn.graph import AttentionGraph
from graphattn.nn.attention import MultiheadAttention
from graphattn.nn.positional import (
    LaplacianPositionalEncoding,
    RandomWalkPositionalEncoding,
    laplacian_eigenvector_pe,
    random_walk_pe,
)
from graphattn.nn.transformer import FeedForward
from graphattn.patterns.graph import adjacency, full_per_graph

__all__ = [
    "GraphTransformerConfig",
    "GraphTransformer",
    "GPSLayer",
    "BondAttention",
    "GraphContext",
    "CategoricalEmbedding",
    "GraphPooling",
    "AddGraphPositionalEncoding",
    "LOCAL_ATTENTION",
    "POSITIONAL_ENCODINGS",
    "POOLINGS",
    "TASK_LEVELS",
    "NORMS",
]

LOCAL_ATTENTION = ("bias", "values", "none")
"""Kinds of local (bond) attention: bond features as score bias, as edge-conditioned values, or no local branch."""
POSITIONAL_ENCODINGS = ("laplacian", "random_walk", "none")
"""Graph positional encodings (``GraphTransformerConfig.positional_encoding``)."""
POOLINGS = ("sum", "mean", "attention")
"""Graph-level readouts (:class:`GraphPooling`)."""
TASK_LEVELS = ("graph", "node")
"""One prediction per molecule or one per atom."""
NORMS = ("batch", "layer")
"""Normalization after each residual connection."""
FEATURIZERS = ("ogb", "zinc")

# The attribute a batch carries for each precomputed positional encoding.
_PE_ATTRIBUTE = {"laplacian": "lap_pe", "random_walk": "rw_pe"}


# ====================================================================== config
@dataclass(frozen=True)
class GraphTransformerConfig:
    """Everything that defines a :class:`GraphTransformer` (passed whole; JSON via :meth:`to_dict`).

    Args:
        hidden_dim: width of atom states ``d``.
        num_heads: attention heads of both branches (``hidden_dim`` must be divisible by it).
        num_layers: GPS layers.
        ff_dim: feed-forward hidden size (default ``2 * hidden_dim``, as GPS).
        dropout: on the outputs of every sub-layer and inside the feed-forward.
        attention_dropout: on attention weights, in both branches.
        featurizer: ``"ogb"`` (9 atom / 3 bond features) or ``"zinc"`` (28 atom / 4 bond types),
            as produced by :func:`graphattn.data.molecule.smiles_to_graph`; sets the vocabulary
            sizes unless they are given explicitly.
        atom_feature_dims: vocabulary size of every atom feature column (overrides ``featurizer``).
        bond_feature_dims: vocabulary size of every bond feature column (overrides ``featurizer``).
        local_attention: one of :data:`LOCAL_ATTENTION` (see :class:`BondAttention`).
        global_attention: add the attention within each molecule.
        positional_encoding: one of :data:`POSITIONAL_ENCODINGS`.
        pe_size: number of Laplacian eigenvectors ``k``, or random-walk length.
        pooling: one of :data:`POOLINGS` (graph-level tasks).
        graph_feature_dim: ``F``, molecule-level input features (e.g. the normalized RDKit
            descriptors of :mod:`graphattn.data.descriptors`) read from ``batch.graph_features``
            ``[G, F]`` and concatenated to the pooled state before the head, as chemprop's
            ``--features_generator``; ``0`` (default) = none. Graph-level tasks only.
        num_tasks: outputs per molecule (or per atom).
        task_level: ``"graph"`` (``[G, num_tasks]``) or ``"node"`` (``[N, num_tasks]``).
        norm: ``"batch"`` (BatchNorm over atoms, as GPS) or ``"layer"`` (LayerNorm).
        backend: :func:`graphattn.attention` backend of every attention.

    Example:
        >>> config = GraphTransformerConfig(hidden_dim=64, featurizer="zinc", pooling="sum")
        >>> GraphTransformerConfig.from_dict(config.to_dict()) == config
        True
        >>> config.atom_dims, config.bond_dims
        ((28,), (4,))
    """

    hidden_dim: int = 64
    num_heads: int = 4
    num_layers: int = 4
    ff_dim: int | None = None
    dropout: float = 0.0
    attention_dropout: float = 0.0
    featurizer: str = "ogb"
    atom_feature_dims: tuple[int, ...] | None = None
    bond_feature_dims: tuple[int, ...] | None = None
    local_attention: str = "bias"
    global_attention: bool = True
    positional_encoding: str = "random_walk"
    pe_size: int = 16
    pooling: str = "mean"
    graph_feature_dim: int = 0
    num_tasks: int = 1
    task_level: str = "graph"
    norm: str = "batch"
    backend: str = "auto"

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "num_heads", "num_layers", "pe_size", "num_tasks"):
            _positive_int(getattr(self, name), name)
        if self.ff_dim is not None:
            _positive_int(self.ff_dim, "ff_dim")
        check_graph_feature_dim(self.graph_feature_dim, self.task_level)
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"Expected hidden_dim divisible by num_heads, got hidden_dim={self.hidden_dim}, "
                f"num_heads={self.num_heads}; change one of them"
            )
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"Expected 0 <= {name} < 1, got {value!r}")
        _choice(self.featurizer, FEATURIZERS, "featurizer")
        _choice(self.local_attention, LOCAL_ATTENTION, "local_attention")
        _choice(self.positional_encoding, POSITIONAL_ENCODINGS, "positional_encoding")
        _choice(self.pooling, POOLINGS, "pooling")
        _choice(self.task_level, TASK_LEVELS, "task_level")
        _choice(self.norm, NORMS, "norm")
        if not isinstance(self.global_attention, bool):
            raise TypeError(f"Expected 'global_attention' to be True or False, got {self.global_attention!r}")
        if self.local_attention == "none" and not self.global_attention:
            raise ValueError(
                "Expected at least one attention branch, got local_attention='none' and "
                "global_attention=False; enable one of them"
            )
        for name in ("atom_feature_dims", "bond_feature_dims"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _feature_dims(value, name))

    @property
    def atom_dims(self) -> tuple[int, ...]:
        """Vocabulary size of every atom feature column."""
        if self.atom_feature_dims is not None:
            return self.atom_feature_dims
        from graphattn.data.molecule import atom_feature_dims

        return tuple(atom_feature_dims(self.featurizer))

    @property
    def bond_dims(self) -> tuple[int, ...]:
        """Vocabulary size of every bond feature column."""
        if self.bond_feature_dims is not None:
            return self.bond_feature_dims
        from graphattn.data.molecule import bond_feature_dims

        return tuple(bond_feature_dims(self.featurizer))

    @property
    def feed_forward_dim(self) -> int:
        return self.ff_dim or 2 * self.hidden_dim

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict; :meth:`from_dict` inverts it."""
        out = dataclasses.asdict(self)
        for name in ("atom_feature_dims", "bond_feature_dims"):
            if out[name] is not None:
                out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GraphTransformerConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(
                f"Unknown GraphTransformerConfig fields {sorted(unknown)}; expected a subset of {sorted(fields)}"
            )
        return cls(**data)


# ====================================================================== embeddings, pooling, norms
class CategoricalEmbedding(nn.Module):
    """Sum of one embedding per categorical feature column (OGB's ``AtomEncoder`` / ``BondEncoder``).

    ``out[n] = sum_c embeddings[c].weight[x[n, c]]``. Weights are Xavier-uniform, as in OGB.

    Args:
        feature_dims: vocabulary size of every column (e.g.
            :func:`graphattn.data.molecule.atom_feature_dims`).
        dim: embedding size.

    Shapes:
        ``forward(x [N, C] int64) -> [N, dim]``; :meth:`table` is every embedding row stacked,
        ``[sum(feature_dims), dim]``, and ``x + offsets`` indexes it.

    Example:
        >>> embed = CategoricalEmbedding([3, 2], dim=4)
        >>> x = torch.tensor([[2, 1], [0, 0]])
        >>> torch.allclose(embed(x), embed.table()[x + embed.offsets].sum(1))
        True
    """

    def __init__(self, feature_dims: Sequence[int], dim: int) -> None:
        super().__init__()
        self.feature_dims = _feature_dims(feature_dims, "feature_dims")
        self.dim = _positive_int(dim, "dim")
        self.embeddings = nn.ModuleList(nn.Embedding(size, self.dim) for size in self.feature_dims)
        starts = torch.tensor((0,) + self.feature_dims[:-1], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", starts, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for embedding in self.embeddings:
            nn.init.xavier_uniform_(embedding.weight)

    @property
    def num_rows(self) -> int:
        return sum(self.feature_dims)

    def table(self) -> Tensor:
        """``[sum(feature_dims), dim]``: the embedding rows of all columns, column after column."""
        return torch.cat([embedding.weight for embedding in self.embeddings])

    def forward(self, x: Tensor) -> Tensor:
        _check_categorical(x, self.feature_dims, "x", "feature")
        x = x.long()
        out = self.embeddings[0](x[:, 0])
        for column in range(1, len(self.embeddings)):
            out = out + self.embeddings[column](x[:, column])
        return out

    def extra_repr(self) -> str:
        return f"feature_dims={list(self.feature_dims)}, dim={self.dim}"


class GraphPooling(nn.Module):
    """Pool node states ``[N, d]`` into one vector per graph ``[G, d]``.

    * ``"sum"``: ``sum_i h_i``; ``"mean"``: ``sum_i h_i / n`` (0 for an empty graph);
    * ``"attention"`` (gated attention pooling, Li et al. 2016, PyG's ``AttentionalAggregation``):
      ``sum_i softmax_i(gate(h_i)) h_i`` with a gate MLP ``Linear(d, d) -> ReLU -> Linear(d, 1)``
      and the softmax over the nodes of each graph.

    Empty graphs give zeros.

    Args:
        kind: one of :data:`POOLINGS`.
        dim: ``d`` (needed for the gate of ``"attention"``).

    Shapes:
        ``forward(h [N, d], batch [N], num_graphs) -> [G, d]``.
    """

    def __init__(self, kind: str, dim: int) -> None:
        super().__init__()
        self.kind = _choice(kind, POOLINGS, "pooling")
        dim = _positive_int(dim, "dim")
        self.gate = (
            nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1)) if kind == "attention" else None
        )

    def forward(self, h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        summed = h.new_zeros(num_graphs, h.size(1))
        if self.kind == "sum":
            return summed.index_add_(0, batch, h)
        if self.kind == "mean":
            counts = torch.bincount(batch, minlength=num_graphs).clamp(min=1).to(h.dtype)
            return summed.index_add_(0, batch, h) / counts.unsqueeze(1)
        scores = self.gate(h).squeeze(1)  # [N]
        weights = _segment_softmax(scores, batch, num_graphs)
        return summed.index_add_(0, batch, weights.unsqueeze(1) * h)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


class _BatchNorm(nn.BatchNorm1d):
    """BatchNorm over nodes that also accepts batches of fewer than two nodes in training (a lone
    atom, an empty batch): those use the running statistics, which they leave unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.size(0) <= 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def _make_norm(kind: str, dim: int) -> nn.Module:
    return _BatchNorm(dim) if kind == "batch" else nn.LayerNorm(dim)


# ====================================================================== positional encodings
class AddGraphPositionalEncoding:
    """PyG transform: precompute a graph positional encoding once per molecule.

    A plain callable (what PyG datasets and ``Compose`` accept as a transform), so that importing
    the models does not import ``torch_geometric.transforms`` (seconds).

    Stores :func:`~graphattn.nn.laplacian_eigenvector_pe` as ``data.lap_pe`` ``[N, size]``
    (``kind="laplacian"``, ``size`` eigenvectors) or :func:`~graphattn.nn.random_walk_pe` as
    ``data.rw_pe`` ``[N, size]`` (``kind="random_walk"``, ``size`` steps), in float32. Use it as a
    dataset's ``transform`` / ``pre_transform`` so that encodings are not recomputed every epoch;
    :class:`GraphTransformer` uses them when a batch has them.

    Args:
        kind: ``"laplacian"`` or ``"random_walk"``.
        size: eigenvector count or walk length.

    Example:
        >>> from graphattn.data.molecule import smiles_to_graph
        >>> data = AddGraphPositionalEncoding("random_walk", 4)(smiles_to_graph("CCO"))
        >>> data.rw_pe.shape
        torch.Size([3, 4])
    """

    def __init__(self, kind: str, size: int) -> None:
        if kind not in _PE_ATTRIBUTE:
            raise ValueError(
                f"Expected kind 'laplacian' or 'random_walk', got {kind!r}; a model without "
                f"positional encodings needs no transform"
            )
        self.kind = kind
        self.size = _positive_int(size, "size")

    @property
    def attribute(self) -> str:
        """The name the encoding is stored under: ``"lap_pe"`` or ``"rw_pe"``."""
        return _PE_ATTRIBUTE[self.kind]

    def __call__(self, data: Any) -> Any:
        import copy

        return self.forward(copy.copy(data))

    def forward(self, data: Any) -> Any:
        setattr(data, self.attribute, _compute_pe(self.kind, self.size, data.edge_index, data.num_nodes, None))
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind!r}, {self.size})"


def _compute_pe(kind: str, size: int, edge_index: Tensor, num_nodes: int, batch: Tensor | None) -> Tensor:
    if kind == "laplacian":
        return laplacian_eigenvector_pe(edge_index, num_nodes, size, batch=batch)
    return random_walk_pe(edge_index, num_nodes, size, batch=batch)


class _PositionalInput(nn.Module):
    """Positional encoding of every atom, embedded to ``dim``: precomputed (``data.lap_pe`` /
    ``data.rw_pe``) when the batch has it, else computed here."""

    def __init__(self, kind: str, size: int, dim: int) -> None:
        super().__init__()
        self.kind, self.size = kind, size
        if kind == "laplacian":
            self.encoder: nn.Module = LaplacianPositionalEncoding(size, dim)
        else:
            self.encoder = RandomWalkPositionalEncoding(size, dim)

    def forward(self, data: Any, inputs: "_MoleculeInputs", like: Tensor) -> Tensor:
        name = _PE_ATTRIBUTE[self.kind]
        pe = getattr(data, name, None)
        num_nodes = inputs.x.size(0)
        if pe is None:
            pe = _compute_pe(self.kind, self.size, inputs.edge_index, num_nodes, inputs.batch)
        elif not isinstance(pe, Tensor) or not pe.is_floating_point() or tuple(pe.shape) != (num_nodes, self.size):
            got = list(pe.shape) if isinstance(pe, Tensor) else type(pe).__name__
            raise ValueError(
                f"Expected a precomputed 'data.{name}' float tensor of shape [N, pe_size] = "
                f"[{num_nodes}, {self.size}], got {got}; recompute it with "
                f"AddGraphPositionalEncoding({self.kind!r}, {self.size}) or delete it to compute it on the fly"
            )
        pe = pe.to(device=like.device, dtype=like.dtype)
        if self.kind == "laplacian":
            return self.encoder(pe, inputs.batch)
        return self.encoder(pe)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, size={self.size}"


# ====================================================================== batch reading
@dataclass
class _MoleculeInputs:
    """A validated batch: categorical features as ``[N, C]`` / ``[E, Cb]`` and the graph layout."""

    x: Tensor
    edge_index: Tensor
    edge_attr: Tensor | None
    batch: Tensor
    ptr: Tensor
    num_graphs: int


def _read_molecule_batch(
    data: Any, atom_dims: Sequence[int], bond_dims: Sequence[int], *, need_bonds: bool
) -> _MoleculeInputs:
    """Check a PyG ``Data`` / ``Batch`` of featurized molecules and return its tensors."""
    x = getattr(data, "x", None)
    if not isinstance(x, Tensor):
        raise TypeError(
            f"Expected a PyG Data/Batch with 'x' [N, {len(atom_dims)}] (atom feature indices), got "
            f"{type(data).__name__} with x = {type(x).__name__}; featurize molecules with "
            f"graphattn.data.molecule.smiles_to_graph"
        )
    if x.dim() == 1:
        x = x.unsqueeze(1)
    _check_categorical(x, atom_dims, "x", "atom feature", fix="featurize with the featurizer the model was built for")
    x = x.long()
    num_nodes = x.size(0)
    edge_index = getattr(data, "edge_index", None)
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.size(0) != 2:
        got = list(edge_index.shape) if isinstance(edge_index, Tensor) else type(edge_index).__name__
        raise ValueError(f"Expected 'edge_index' of shape [2, E] (PyG convention), got {got}")
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"Expected an integer 'edge_index', got '{edge_index.dtype}'")
    edge_index = edge_index.long()
    edge_attr = getattr(data, "edge_attr", None)
    if need_bonds:
        if not isinstance(edge_attr, Tensor):
            raise ValueError(
                f"Expected 'edge_attr' [E, {len(bond_dims)}] (bond feature indices) for bond attention, got "
                f"{type(edge_attr).__name__}; featurize with smiles_to_graph, or use local_attention='none'"
            )
        if edge_attr.dim() == 1:
            edge_attr = edge_attr.unsqueeze(1)
        _check_categorical(edge_attr, bond_dims, "edge_attr", "bond feature", fix="featurize with the featurizer the model was built for")
        edge_attr = edge_attr.long()
        if edge_attr.size(0) != edge_index.size(1):
            raise ValueError(
                f"Expected one 'edge_attr' row per edge, got {edge_attr.size(0)} rows for "
                f"{edge_index.size(1)} edges"
            )
    batch = getattr(data, "batch", None)
    if batch is None:
        batch = torch.zeros(num_nodes, dtype=torch.long, device=x.device)
    elif not isinstance(batch, Tensor) or tuple(batch.shape) != (num_nodes,):
        got = list(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
        raise ValueError(
            f"Expected 'batch' of shape [N] = [{num_nodes}] (molecule id of every atom), got {got}; "
            f"build batches with torch_geometric.data.Batch.from_data_list"
        )
    batch = batch.long()
    ptr = getattr(data, "ptr", None)
    if ptr is None:
        if num_nodes and bool((batch.diff() < 0).any()):
            raise ValueError(
                "Expected the atoms of each molecule to be contiguous ('batch' non-decreasing), as in "
                "a PyG Batch; build batches with Batch.from_data_list or a PyG DataLoader"
            )
        num_graphs = int(getattr(data, "num_graphs", 0) or 0)
        num_graphs = max(num_graphs, int(batch.max()) + 1 if num_nodes else 1)
        counts = torch.bincount(batch, minlength=num_graphs)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    ptr = ptr.long().to(x.device)
    return _MoleculeInputs(x, edge_index, edge_attr, batch, ptr, ptr.numel() - 1)


# ====================================================================== local attention
@dataclass
class GraphContext:
    """What every layer needs for one batch, built once by :meth:`GraphTransformer.prepare`.

    Attributes:
        batch: ``[N]`` molecule id of every atom.
        ptr: ``[G + 1]`` atom offsets of the molecules.
        num_graphs: ``G`` (molecules without atoms included).
        local_graph: bonds in both directions plus a self loop per atom (``None`` without the
            local branch).
        edge_types: ``[E_local, Cb]`` rows of the bond table (:meth:`CategoricalEmbedding.table`
            of the model's ``bond_encoder``) for every edge of ``local_graph`` in its CSR order:
            bond feature ``f`` of column ``c`` is row ``offsets[c] + f + 1``, and row
            ``offsets[c]`` marks a self loop.
        global_graph: every atom to every atom of its molecule (``None`` without the global
            branch).
        bond_table: ``[T, d]`` bond embedding rows, filled in by the model for each forward.
    """

    batch: Tensor
    ptr: Tensor
    num_graphs: int
    local_graph: AttentionGraph | None = None
    edge_types: Tensor | None = None
    global_graph: AttentionGraph | None = None
    bond_table: Tensor | None = None


class BondAttention(nn.Module):
    """Attention of every atom over its bonded neighbours and itself, with bond features.

    With ``a_ij = softmax_j(q_i . k_j / sqrt(D) + b_ij)`` over the edges ``j -> i`` of
    ``context.local_graph`` and ``e_ij`` the bond embedding of edge ``j -> i`` (a learned
    self-loop embedding for ``i = j``), per head:

    * ``kind="bias"``: ``b_ij = W_b e_ij`` (``W_b`` ``[H, d]``: one score bias per edge and head),
      output ``sum_j a_ij v_j``;
    * ``kind="values"``: ``b_ij = 0``, output ``sum_j a_ij (v_j + W_e e_ij)`` (``W_e``
      ``[H * Dv, d]``, edge-conditioned values).

    Both run on the sparse core, and neither builds an ``[E, H, D]`` tensor: ``e_ij`` is a sum of
    rows of a small bond table (``T`` rows, 16 for OGB bonds), so ``W e_ij`` is a sum of rows of
    the projected table. For ``"values"``, ``sum_j a_ij W_e e_ij = sum_t m_it (W_e table)_t``
    where ``m_it`` is the attention mass query ``i`` puts on edges of bond category ``t``
    (``[N, T, H]``), scattered from the core's per-edge weights; its backward (through ``a_ij``
    into ``q`` and ``k``) is written out (``[E, H]`` and sparse products only).

    Attention dropout (training) under ``"values"``: the core drops weights for ``sum a v`` with
    its own mask, the edge term drops them with another, independent mask (the core does not
    expose its mask); each term is still unbiased.

    Args:
        hidden_dim: ``d``.
        num_heads: ``H``.
        kind: ``"bias"`` or ``"values"``.
        attention_dropout: dropout on attention weights.
        backend: :func:`graphattn.attention` backend.

    Shapes:
        ``forward(h [N, d], context) -> [N, d]``.
    """

    def __init__(
        self, hidden_dim: int, num_heads: int, *, kind: str = "bias", attention_dropout: float = 0.0, backend: str = "auto"
    ) -> None:
        super().__init__()
        if kind not in ("bias", "values"):
            raise ValueError(f"Expected kind 'bias' or 'values', got {kind!r}")
        self.kind = kind
        self.attn = MultiheadAttention(hidden_dim, num_heads, dropout=attention_dropout, backend=backend)
        out = num_heads if kind == "bias" else num_heads * self.attn.value_head_dim
        self.edge_proj = nn.Linear(hidden_dim, out, bias=False)  # a constant per head would cancel / repeat out_proj's bias

    def forward(self, h: Tensor, context: GraphContext) -> Tensor:
        graph, types, table = context.local_graph, context.edge_types, context.bond_table
        if graph is None or types is None or table is None:
            raise ValueError("BondAttention needs context.local_graph, edge_types and bond_table (see GraphTransformer.prepare)")
        attn = self.attn
        q, k, v = attn.project(h, h, h)  # [N, H, D] each
        projected = self.edge_proj(table)  # [T, H] or [T, H * Dv]
        if self.kind == "bias":
            bias = projected[types].sum(1)  # [E, Cb, H] -> [E, H]
            out, _ = attn.attend(q, k, v, graph, bias)
        else:
            out, weights = attn.attend(q, k, v, graph, None, need_weights=True)
            keep_scale = None
            if self.training and attn.dropout > 0.0:
                keep_scale = F.dropout(torch.ones_like(weights), attn.dropout, training=True)
            table_heads = projected.view(-1, attn.num_heads, attn.value_head_dim)  # [T, H, Dv]
            out = out + edge_value_term(q, k, table_heads, weights, graph, types, scale=attn.scale, keep_scale=keep_scale)
        return attn.project_output(out, graph)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def edge_value_term(
    q: Tensor,
    k: Tensor,
    table: Tensor,
    weights: Tensor,
    graph: AttentionGraph,
    edge_types: Tensor,
    *,
    scale: float,
    keep_scale: Tensor | None = None,
) -> Tensor:
    """``sum_j a_ij e_ij`` for edge values that are sums of table rows, differentiable in q and k.

    ``a = softmax(scale * q . k)`` over each query's edges must be ``weights`` (the core's, no
    bias); ``e_ij = sum_c table[edge_types[e, c]]``. The gradient flows into ``table`` and, through
    ``a``, into ``q`` and ``k``.

    Args:
        q: ``[Nq, H, D]``; k: ``[Nk, H, D]`` (the inputs the weights were computed from).
        table: ``[T, H, Dv]``.
        weights: ``[E, H]`` softmax weights in the graph's CSR order (treated as constants; their
            gradient is computed here).
        graph: the attention graph (no per-head mask).
        edge_types: ``[E, C]`` int64 rows of ``table``.
        scale: the score scale.
        keep_scale: optional ``[E, H]`` dropout factors (0 or ``1 / (1 - p)``) applied to ``a``.

    Returns:
        ``[Nq, H, Dv]``.
    """
    num_types = table.size(0)
    flat_index = (graph.row.unsqueeze(1) * num_types + edge_types).reshape(-1)  # [E * C]
    return _EdgeValueTerm.apply(
        q, k, table, weights.detach(), graph.row, graph.col, flat_index, edge_types.size(1), scale, keep_scale
    )


class _EdgeValueTerm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, table, weights, row, col, flat_index, columns, scale, keep_scale):  # type: ignore[override]
        num_queries, heads = q.size(0), q.size(1)
        num_types = table.size(0)
        work = _work_dtype(table.dtype)
        used = weights.to(work) if keep_scale is None else weights.to(work) * keep_scale.to(work)
        expanded = used.unsqueeze(1).expand(-1, columns, -1).reshape(-1, heads)  # [E * C, H]
        mass = used.new_zeros(num_queries * num_types, heads).index_add_(0, flat_index, expanded)
        mass = mass.view(num_queries, num_types, heads)  # attention mass per bond category
        out = torch.einsum("nth,thd->nhd", mass, table.to(work))
        ctx.save_for_backward(q, k, table, weights, keep_scale, mass, out, row, col, flat_index)
        ctx.columns, ctx.scale = columns, scale
        return out.to(q.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, table, weights, keep_scale, mass, out, row, col, flat_index = ctx.saved_tensors
        work = mass.dtype
        g = grad_out.to(work)
        num_queries, heads = q.size(0), q.size(1)
        grad_q = grad_k = grad_table = None
        if ctx.needs_input_grad[2]:
            grad_table = torch.einsum("nth,nhd->thd", mass, g).to(table.dtype)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            # x_ij = g_i . e_ij through the table: [Nq, T, H] dot products, gathered per edge
            per_type = torch.einsum("nhd,thd->nth", g, table.to(work)).reshape(-1, heads)
            x = per_type[flat_index].view(-1, ctx.columns, heads).sum(1)  # [E, H]
            if keep_scale is not None:
                x = x * keep_scale.to(work)
            mean = (g * out).sum(-1)  # [Nq, H]: sum_j a'_ij x_ij
            d_scores = weights.to(work) * (x - mean[row]) * ctx.scale  # softmax backward, [E, H]
            if ctx.needs_input_grad[0]:
                grad_q = _spmm(d_scores, row, col, k.to(work), num_queries).to(q.dtype)
            if ctx.needs_input_grad[1]:
                grad_k = _spmm(d_scores, col, row, q.to(work), k.size(0)).to(k.dtype)
        return grad_q, grad_k, grad_table, None, None, None, None, None, None, None


def _spmm(values: Tensor, out_index: Tensor, in_index: Tensor, x: Tensor, num_out: int) -> Tensor:
    """``out[o, h] = sum_{e: out_index[e] = o} values[e, h] * x[in_index[e], h]`` without an
    ``[E, H, D]`` tensor: one block-diagonal (per head) sparse matrix product.

    Shapes: values ``[E, H]``, x ``[N_in, H, D]`` -> ``[num_out, H, D]``.
    """
    heads, num_in, dim = x.size(1), x.size(0), x.size(2)
    offsets = torch.arange(heads, device=x.device).unsqueeze(1)  # [H, 1]
    rows = (out_index.unsqueeze(0) + offsets * num_out).reshape(-1)
    cols = (in_index.unsqueeze(0) + offsets * num_in).reshape(-1)
    matrix = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), values.t().reshape(-1), (heads * num_out, heads * num_in), check_invariants=False
    )
    dense = x.transpose(0, 1).reshape(heads * num_in, dim)
    return torch.sparse.mm(matrix, dense).view(heads, num_out, dim).transpose(0, 1)


# ====================================================================== the model
class GPSLayer(nn.Module):
    """One GPS layer: local bond attention and global attention in parallel, then feed-forward.

    ``h_l = norm_local(h + drop(local(h)))``, ``h_g = norm_global(h + drop(global(h)))``,
    ``h = h_l + h_g`` (just one of them when the other branch is off),
    ``out = norm_ff(h + drop(ff(h)))`` with ``ff = Linear(d, ff_dim) -> ReLU -> dropout ->
    Linear(ff_dim, d)``.

    Args:
        hidden_dim, num_heads, ff_dim, dropout, attention_dropout, norm, backend: as in
            :class:`GraphTransformerConfig`.
        local_attention: ``"bias"``, ``"values"`` or ``"none"``.
        global_attention: add the per-molecule global attention.

    Shapes:
        ``forward(h [N, d], context) -> [N, d]``.
    """

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int,
        *,
        local_attention: str = "bias",
        global_attention: bool = True,
        ff_dim: int | None = None,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        norm: str = "batch",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        _choice(local_attention, LOCAL_ATTENTION, "local_attention")
        _choice(norm, NORMS, "norm")
        if local_attention == "none" and not global_attention:
            raise ValueError("Expected at least one attention branch (local_attention='none' and global_attention=False)")
        self.local: BondAttention | None = None
        self.norm_local: nn.Module | None = None
        if local_attention != "none":
            self.local = BondAttention(
                hidden_dim, num_heads, kind=local_attention, attention_dropout=attention_dropout, backend=backend
            )
            self.norm_local = _make_norm(norm, hidden_dim)
        self.global_attn: MultiheadAttention | None = None
        self.norm_global: nn.Module | None = None
        if global_attention:
            self.global_attn = MultiheadAttention(hidden_dim, num_heads, dropout=attention_dropout, backend=backend)
            self.norm_global = _make_norm(norm, hidden_dim)
        self.feed_forward = FeedForward(hidden_dim, ff_dim or 2 * hidden_dim, dropout=dropout)
        self.norm_ff = _make_norm(norm, hidden_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, context: GraphContext) -> Tensor:
        out = None
        if self.local is not None:
            out = self.norm_local(h + self.dropout(self.local(h, context)))
        if self.global_attn is not None:
            if context.global_graph is None:
                raise ValueError("GPSLayer with global attention needs context.global_graph")
            h_global = self.norm_global(h + self.dropout(self.global_attn.forward_graph(h, context.global_graph)))
            out = h_global if out is None else out + h_global
        return self.norm_ff(out + self.dropout(self.feed_forward(out)))


class GraphTransformer(nn.Module):
    """GPS graph transformer for molecules: ``forward(batch) -> [G, num_tasks]`` or ``[N, num_tasks]``.

    ``h = atom_encoder(x) (+ pe_encoder(positional encoding))``, then ``num_layers`` x
    :class:`GPSLayer`, then, for graph-level tasks, :class:`GraphPooling` and the head MLP
    ``Linear(d, d) -> ReLU -> Linear(d, num_tasks)``; for node-level tasks the head MLP on every
    atom.

    Args:
        config: a :class:`GraphTransformerConfig`.

    Inputs:
        ``batch``: a PyG ``Batch`` (or one ``Data``) of featurized molecules: ``x`` ``[N, C]``
        int64 atom features, ``edge_index`` ``[2, E]``, ``edge_attr`` ``[E, Cb]`` int64 bond
        features (not needed with ``local_attention="none"``), ``batch`` / ``ptr``; optionally
        ``lap_pe`` / ``rw_pe`` from :class:`AddGraphPositionalEncoding`. Molecules without
        atoms, single atoms and molecules without bonds are fine (empty molecules pool to zero).
    """

    def __init__(self, config: GraphTransformerConfig) -> None:
        super().__init__()
        if not isinstance(config, GraphTransformerConfig):
            raise TypeError(f"Expected a GraphTransformerConfig, got {type(config).__name__}")
        self.config = config
        d = config.hidden_dim
        self.atom_encoder = CategoricalEmbedding(config.atom_dims, d)
        # one extra row per bond column: row 0 of every column marks a self loop
        self.bond_encoder = (
            CategoricalEmbedding([size + 1 for size in config.bond_dims], d) if config.local_attention != "none" else None
        )
        self.positional = (
            _PositionalInput(config.positional_encoding, config.pe_size, d) if config.positional_encoding != "none" else None
        )
        self.layers = nn.ModuleList(
            GPSLayer(
                d,
                config.num_heads,
                local_attention=config.local_attention,
                global_attention=config.global_attention,
                ff_dim=config.feed_forward_dim,
                dropout=config.dropout,
                attention_dropout=config.attention_dropout,
                norm=config.norm,
                backend=config.backend,
            )
            for _ in range(config.num_layers)
        )
        self.pooling = GraphPooling(config.pooling, d) if config.task_level == "graph" else None
        self.head = nn.Sequential(nn.Linear(d + config.graph_feature_dim, d), nn.ReLU(), nn.Linear(d, config.num_tasks))

    def prepare(self, batch: Any) -> GraphContext:
        """Validate ``batch`` and build the attention graphs every layer shares (once per batch).

        ``forward`` calls it; it is public for inspecting the graphs and for running single
        layers (set ``context.bond_table = model.bond_encoder.table()`` first).
        """
        return self._prepare(batch)[1]

    def _prepare(self, batch: Any) -> tuple[_MoleculeInputs, GraphContext]:
        config = self.config
        local = config.local_attention != "none"
        inputs = _read_molecule_batch(batch, config.atom_dims, config.bond_dims, need_bonds=local)
        num_nodes = inputs.x.size(0)
        context = GraphContext(inputs.batch, inputs.ptr, inputs.num_graphs)
        if local:
            graph = adjacency(inputs.edge_index, num_nodes, self_loops=True)
            types = graph.align_edge_values(inputs.edge_attr + 1, reduce="amax")  # self loops: 0
            context.local_graph = graph
            context.edge_types = types + self.bond_encoder.offsets
        if config.global_attention:
            context.global_graph = full_per_graph(ptr=inputs.ptr)
        return inputs, context

    def forward(self, batch: Any) -> Tensor:
        inputs, context = self._prepare(batch)
        h = self.atom_encoder(inputs.x)  # [N, d]
        if self.positional is not None:
            h = h + self.positional(batch, inputs, h)
        if self.bond_encoder is not None:
            context.bond_table = self.bond_encoder.table()  # [T, d]
        if h.size(0):  # a batch without atoms skips the layers (they map [0, d] to [0, d])
            for layer in self.layers:
                h = layer(h, context)
        if self.pooling is not None:
            h = self.pooling(h, inputs.batch, inputs.num_graphs)  # [G, d]
            h = append_graph_features(h, batch, self.config.graph_feature_dim)  # [G, d + F]
        return self.head(h)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"local_attention={c.local_attention!r}, global_attention={c.global_attention}, "
            f"positional_encoding={c.positional_encoding!r}, pooling={c.pooling!r}, task_level={c.task_level!r}"
        )


# ====================================================================== helpers
def check_graph_feature_dim(value: object, task_level: str) -> int:
    """Validate a ``graph_feature_dim`` setting (a non-negative int; 0 for node-level tasks)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Expected 'graph_feature_dim' to be a non-negative int, got {value!r}")
    if value and task_level != "graph":
        raise ValueError(
            f"graph_feature_dim={value} needs task_level='graph' (molecule-level features join the pooled "
            f"state), got task_level={task_level!r}"
        )
    return value


def append_graph_features(pooled: Tensor, data: Any, num_features: int) -> Tensor:
    """``[G, d]`` pooled states -> ``[G, d + F]`` with ``data.graph_features`` ``[G, F]`` appended
    (unchanged when ``num_features`` is 0)."""
    if not num_features:
        return pooled
    features = getattr(data, "graph_features", None)
    expected = [pooled.size(0), num_features]
    if not isinstance(features, Tensor):
        raise ValueError(
            f"The model was built with graph_feature_dim={num_features}: expected 'graph_features' "
            f"{expected} on the batch (one [1, {num_features}] row per Data), got {type(features).__name__}; "
            f"attach the molecule-level features (graphattn.property does this for its descriptors)"
        )
    if list(features.shape) != expected or not features.is_floating_point():
        raise ValueError(
            f"Expected float 'graph_features' of shape {expected} (molecules x graph_feature_dim), got "
            f"{features.dtype} {list(features.shape)}"
        )
    return torch.cat([pooled, features.to(pooled)], dim=1)


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected '{name}' to be a positive int, got {value!r}")
    return value


def _choice(value: object, options: Sequence[str], name: str) -> str:
    if value not in options:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {', '.join(map(repr, options))}")
    return value  # type: ignore[return-value]


def _feature_dims(value: object, name: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"Expected '{name}' to be a non-empty sequence of vocabulary sizes, got {value!r}")
    dims = tuple(value)
    for size in dims:
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"Expected '{name}' to hold positive ints (vocabulary sizes), got {list(dims)}")
    return dims


def _check_categorical(x: object, dims: Sequence[int], name: str, what: str, fix: str = "") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"Expected '{name}' to be an int64 tensor [N, {len(dims)}], got {type(x).__name__}")
    if x.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(
            f"Expected '{name}' to hold integer {what} indices [N, {len(dims)}], got '{x.dtype}'"
            + (f"; {fix}" if fix else "")
        )
    if x.dim() != 2 or x.size(1) != len(dims):
        raise ValueError(
            f"Expected '{name}' of shape [N, {len(dims)}] ({len(dims)} {what} columns), got {list(x.shape)}"
            + (f"; {fix}" if fix else "")
        )
    if x.numel():
        low = int(x.min())
        high = x.amax(0).tolist()
        bad = [c for c, (top, size) in enumerate(zip(high, dims)) if top >= size]
        if low < 0 or bad:
            column = bad[0] if bad else int((x.amin(0) < 0).nonzero()[0])
            value = high[column] if bad else low
            raise ValueError(
                f"Expected {what} column {column} of '{name}' in [0, {dims[column]}), found {value}"
                + (f"; {fix}" if fix else "")
            )


def _segment_softmax(scores: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Softmax of ``scores`` ``[N]`` within each segment ``index`` ``[N]``."""
    if scores.numel() == 0:
        return scores
    top = scores.new_full((num_segments,), float("-inf")).scatter_reduce(0, index, scores.detach(), "amax")
    exp = torch.exp(scores - top[index])
    total = scores.new_zeros(num_segments).index_add_(0, index, exp)
    return exp / total[index]


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
