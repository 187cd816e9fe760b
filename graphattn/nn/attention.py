"""Multi-head attention over sequences and graphs, built on :func:`graphattn.attention`.

One layer serves both worlds:

* **Sequences** ``[B, L, E]`` (``batch_first``) with an optional pattern over one sequence: the
  batch is flattened into ``B * L`` nodes and the pattern replicated block-diagonally
  (:meth:`AttentionGraph.batch` of the *same* graph ``B`` times, so the dense backend can run
  ``[B, L]`` attention). ``key_padding_mask`` removes the edges to padded keys.
* **Node features** ``[N, E]`` with an :class:`~graphattn.AttentionGraph` or a PyG-style
  ``edge_index`` (row 0 = source = key, row 1 = target = query), like a PyG conv; bipartite
  cross attention takes separate key (and value) node features.

:meth:`MultiheadAttention.from_torch` turns a ``torch.nn.MultiheadAttention`` into a
:class:`TorchCompatibleMultiheadAttention` that takes the same tensors, layout and (PyTorch
polarity) masks.

Example:
    >>> import torch
    >>> from graphattn import AttentionGraph
    >>> from graphattn.nn import MultiheadAttention
    >>> attn = MultiheadAttention(16, num_heads=4)
    >>> x = torch.randn(2, 5, 16)                                  # [B, L, E]
    >>> band = (torch.arange(5)[:, None] - torch.arange(5)).abs() <= 1
    >>> attn(x, pattern=AttentionGraph.from_dense(band)).shape
    torch.Size([2, 5, 16])
    >>> nodes = torch.randn(4, 16)                                 # [N, E]
    >>> edge_index = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])    # j -> i: key j, query i
    >>> attn(nodes, edge_index).shape
    torch.Size([4, 16])
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from graphattn.graph import AttentionGraph
from graphattn.ops import BACKENDS, attention

__all__ = ["MultiheadAttention", "TorchCompatibleMultiheadAttention", "AttentionOutput", "SCORES"]

SCORES = ("scaled_dot", "dot", "additive", "bilinear")
"""The scoring functions :class:`MultiheadAttention` accepts as ``score=``."""

# Additive scoring builds [chunk, H, D] per-edge tensors; this bounds one chunk's element count.
_ADDITIVE_CHUNK_ELEMENTS = 1 << 22


class AttentionOutput(NamedTuple):
    """What the layer returns when ``need_weights=True``.

    Attributes:
        output: ``[B, Lq, E]`` (sequences; ``[Lq, B, E]`` when not ``batch_first``) or
            ``[Nq, E]`` (node features).
        weights: sequences: dense ``[B, H, Lq, Lk]`` softmax weights, zero off the pattern and at
            padded keys; node features: per-edge ``[E, H]`` (see
            :meth:`MultiheadAttention.forward_graph` for the edge order).
    """

    output: Tensor
    weights: Tensor


class MultiheadAttention(nn.Module):
    """Multi-head attention restricted to an edge set, for sequences and for graphs.

    ``output = out_proj(concat_h attention_h)`` where head ``h`` of query ``i`` is
    ``sum_j softmax_j(score_h(q_i, k_j) + edge_bias_ijh) v_j`` over the keys ``j`` that ``i`` may
    attend (its in-edges ``j -> i``), with ``q = q_proj(query)``, ``k = k_proj(key)``,
    ``v = v_proj(value)`` split into heads.

    Scoring functions (``score=``), with ``D = head_dim``:

    * ``"scaled_dot"`` (default): ``q . k / sqrt(D)``.
    * ``"dot"``: ``q . k`` (scale 1).
    * ``"bilinear"``: ``q^T W_h k`` with a learned ``bilinear_weight`` ``[H, D, D]``, computed as
      ``q' = q W_h`` followed by a dot product on the sparse core. ``W_h`` starts as
      ``I / sqrt(D)``, so a fresh layer scores like ``"scaled_dot"``.
    * ``"additive"`` (Bahdanau): ``w_h . tanh(q + k)`` with a learned ``additive_weight``
      ``[H, D]``; ``q_proj``/``k_proj`` play the roles of Bahdanau's ``W_q``/``W_k`` (and their
      biases the bias inside the tanh). The score is computed **per edge**, in chunks of at most
      ~4M elements of ``[chunk, H, D]`` (recomputed in backward through activation checkpointing),
      and passed to the core as its per-edge ``bias`` with zero queries/keys, so softmax and
      aggregation still run on the sparse core. This is the one place where ``[E, H, D]``-sized
      per-edge work happens; its cost grows with ``E * H * D``.

    Args:
        embed_dim: ``E``, size of query features and of the output.
        num_heads: ``H``.
        kdim: key feature size (default ``embed_dim``).
        vdim: value feature size (default ``kdim``, as in ``torch.nn.MultiheadAttention``
            where both default to ``embed_dim``).
        head_dim: per-head size of queries and keys (default ``embed_dim // num_heads``, which
            must then divide evenly).
        value_head_dim: per-head size of values (default ``head_dim``); ``out_proj`` maps
            ``H * value_head_dim -> embed_dim``.
        bias: whether the four projections have biases.
        dropout: probability of dropping an attention weight, applied in training mode only.
        score: one of :data:`SCORES`.
        backend: the :func:`graphattn.attention` backend (``"auto"``, ``"reference"``,
            ``"dense"``, ``"csr"``, ...). May be changed later through ``self.backend``.
        batch_first: sequence inputs are ``[B, L, E]`` if True, ``[L, B, E]`` if False.
        device, dtype: where and in which dtype to create the parameters.

    Shapes:
        * :meth:`forward` on sequences: query ``[B, Lq, E]``, key ``[B, Lk, kdim]``, value
          ``[B, Lk, vdim]`` -> ``[B, Lq, E]``.
        * :meth:`forward_graph` (or ``forward(x, edge_index)``): ``x`` ``[Nq, E]``, optional
          ``x_key`` ``[Nk, kdim]`` / ``x_value`` ``[Nk, vdim]`` -> ``[Nq, E]``.

    A query without any key (an empty pattern row, or every key padded) outputs exactly zeros
    (``out_proj``'s bias is not added there), never NaN.
    Attention weights are returned (``need_weights=True``), never stored on the module.

    Example:
        >>> import torch
        >>> attn = MultiheadAttention(8, 2, score="additive")
        >>> out, weights = attn(torch.randn(3, 4, 8), need_weights=True)
        >>> out.shape, weights.shape
        (torch.Size([3, 4, 8]), torch.Size([3, 2, 4, 4]))
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        head_dim: int | None = None,
        value_head_dim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        score: str = "scaled_dot",
        backend: str = "auto",
        batch_first: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        embed_dim = _positive_int(embed_dim, "embed_dim")
        num_heads = _positive_int(num_heads, "num_heads")
        if head_dim is None:
            if embed_dim % num_heads:
                raise ValueError(
                    f"Expected embed_dim divisible by num_heads (got embed_dim={embed_dim}, "
                    f"num_heads={num_heads}); change one of them or pass head_dim explicitly"
                )
            head_dim = embed_dim // num_heads
        head_dim = _positive_int(head_dim, "head_dim")
        value_head_dim = head_dim if value_head_dim is None else _positive_int(value_head_dim, "value_head_dim")
        kdim = embed_dim if kdim is None else _positive_int(kdim, "kdim")
        vdim = kdim if vdim is None else _positive_int(vdim, "vdim")
        if score not in SCORES:
            raise ValueError(f"Unknown score {score!r}; expected one of {', '.join(map(repr, SCORES))}")
        if backend not in BACKENDS:
            raise ValueError(f"Unknown backend {backend!r}; expected one of {', '.join(map(repr, BACKENDS))}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"Expected 0 <= dropout < 1, got {dropout!r}")

        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.kdim = kdim
        self.vdim = vdim
        self.head_dim = head_dim
        self.value_head_dim = value_head_dim
        self.dropout = float(dropout)
        self.score = score
        self.backend = backend
        self.batch_first = bool(batch_first)

        factory = {"device": device, "dtype": dtype}
        self.q_proj = nn.Linear(embed_dim, num_heads * head_dim, bias=bias, **factory)
        self.k_proj = nn.Linear(kdim, num_heads * head_dim, bias=bias, **factory)
        self.v_proj = nn.Linear(vdim, num_heads * value_head_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(num_heads * value_head_dim, embed_dim, bias=bias, **factory)
        if score == "bilinear":
            self.bilinear_weight = nn.Parameter(torch.empty(num_heads, head_dim, head_dim, **factory))
        else:
            self.register_parameter("bilinear_weight", None)
        if score == "additive":
            self.additive_weight = nn.Parameter(torch.empty(num_heads, head_dim, **factory))
        else:
            self.register_parameter("additive_weight", None)
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self) -> None:
        """Re-initialize like ``torch.nn.MultiheadAttention`` (Xavier-uniform projections, zero
        biases); ``bilinear_weight`` = ``I / sqrt(head_dim)`` per head, ``additive_weight``
        uniform in ``+-1/sqrt(head_dim)``."""
        for projection in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(projection.weight)
            if projection.bias is not None:
                nn.init.zeros_(projection.bias)
        self.out_proj.reset_parameters()
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)
        if self.bilinear_weight is not None:
            with torch.no_grad():
                eye = torch.eye(self.head_dim, dtype=self.bilinear_weight.dtype, device=self.bilinear_weight.device)
                self.bilinear_weight.copy_(eye.expand_as(self.bilinear_weight) / math.sqrt(self.head_dim))
        if self.additive_weight is not None:
            bound = 1.0 / math.sqrt(self.head_dim)
            nn.init.uniform_(self.additive_weight, -bound, bound)

    @property
    def scale(self) -> float:
        """The multiplier of ``q . k`` on the core: ``1/sqrt(head_dim)`` for ``scaled_dot``, else 1."""
        return 1.0 / math.sqrt(self.head_dim) if self.score == "scaled_dot" else 1.0

    def extra_repr(self) -> str:
        parts = [f"{self.embed_dim}", f"num_heads={self.num_heads}", f"head_dim={self.head_dim}"]
        if self.value_head_dim != self.head_dim:
            parts.append(f"value_head_dim={self.value_head_dim}")
        if self.kdim != self.embed_dim:
            parts.append(f"kdim={self.kdim}")
        if self.vdim != self.embed_dim:
            parts.append(f"vdim={self.vdim}")
        parts.append(f"score={self.score!r}")
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        parts.append(f"backend={self.backend!r}")
        if not self.batch_first:
            parts.append("batch_first=False")
        return ", ".join(parts)

    # ------------------------------------------------------------------ construction from torch
    @classmethod
    def from_torch(
        cls, module: nn.MultiheadAttention, *, backend: str = "auto"
    ) -> "TorchCompatibleMultiheadAttention":
        """A drop-in replacement for ``module`` with copies of its weights.

        The result's ``forward(query, key, value, key_padding_mask=None, need_weights=True,
        attn_mask=None, average_attn_weights=True, is_causal=False)`` takes the same tensors,
        layout (``module.batch_first``) and mask polarity as ``torch.nn.MultiheadAttention``; see
        :class:`TorchCompatibleMultiheadAttention`. Copies ``in_proj_weight`` (or
        ``q/k/v_proj_weight`` when kdim/vdim differ), ``in_proj_bias``, ``out_proj``,
        ``bias_k``/``bias_v`` and the ``add_zero_attn`` flag.

        Args:
            module: the ``torch.nn.MultiheadAttention`` to copy.
            backend: the :func:`graphattn.attention` backend of the new module.
        """
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(f"Expected a torch.nn.MultiheadAttention, got {type(module).__name__}")
        reference = module.in_proj_weight if module.in_proj_weight is not None else module.q_proj_weight
        new = TorchCompatibleMultiheadAttention(
            module.embed_dim,
            module.num_heads,
            dropout=module.dropout,
            bias=module.in_proj_bias is not None,
            add_bias_kv=module.bias_k is not None,
            add_zero_attn=module.add_zero_attn,
            kdim=module.kdim,
            vdim=module.vdim,
            batch_first=module.batch_first,
            backend=backend,
            device=reference.device,
            dtype=reference.dtype,
        )
        with torch.no_grad():
            if module.in_proj_weight is not None:
                weights = module.in_proj_weight.chunk(3)
            else:
                weights = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
            projections = (new.q_proj, new.k_proj, new.v_proj)
            for projection, weight in zip(projections, weights):
                projection.weight.copy_(weight)
            if module.in_proj_bias is not None:
                for projection, bias in zip(projections, module.in_proj_bias.chunk(3)):
                    projection.bias.copy_(bias)
            new.out_proj.weight.copy_(module.out_proj.weight)
            if module.out_proj.bias is not None:
                new.out_proj.bias.copy_(module.out_proj.bias)
            if module.bias_k is not None:
                new.bias_k.copy_(module.bias_k)
                new.bias_v.copy_(module.bias_v)
        new.train(module.training)
        return new

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        query: Tensor,
        key: Tensor | AttentionGraph | None = None,
        value: Tensor | None = None,
        *,
        pattern: AttentionGraph | None = None,
        key_padding_mask: Tensor | None = None,
        edge_bias: Tensor | None = None,
        need_weights: bool = False,
    ) -> Tensor | AttentionOutput:
        """Attention over a batch of sequences, or (2-D ``query``) over node features.

        **Sequences** (3-D ``query``): self attention when ``key``/``value`` are omitted
        (``value`` defaults to ``key``, ``key`` to ``query``).

        **Node features** (2-D ``query``): ``forward(x, edge_index_or_graph, edge_bias=...,
        need_weights=...)`` is :meth:`forward_graph`, the PyG-conv calling convention; use
        :meth:`forward_graph` directly for bipartite cross attention.

        Args:
            query: ``[B, Lq, E]`` (``[Lq, B, E]`` if not ``batch_first``).
            key: ``[B, Lk, kdim]``; default ``query``.
            value: ``[B, Lk, vdim]``; default ``key``.
            pattern: :class:`~graphattn.AttentionGraph` over **one** sequence
                (``num_queries = Lq``, ``num_keys = Lk``), shared by every sequence of the
                batch; may be per-head (``head_mask`` with ``H`` heads). ``None`` = full
                attention. Batched graphs are cached on the pattern, so reuse pattern objects.
            key_padding_mask: ``[B, Lk]`` bool, **True = padding** (PyTorch's polarity): edges to
                those keys are removed. A query left without keys outputs zeros.
            edge_bias: additive score per edge of ``pattern`` in its CSR order: ``[E_p, H]``
                (shared by all sequences) or ``[B, E_p, H]``; ``E_p = Lq * Lk`` when
                ``pattern`` is None.
            need_weights: also return the attention weights.

        Returns:
            ``[B, Lq, E]`` (layout as the input), or :class:`AttentionOutput` ``(output,
            weights)`` with dense ``weights`` ``[B, H, Lq, Lk]``, zero off the pattern and at
            padded keys (softmax weights before dropout).
        """
        if isinstance(query, Tensor) and query.dim() == 2:
            if value is not None or pattern is not None or key_padding_mask is not None:
                raise ValueError(
                    "A 2-D query is read as node features [N, E]: call forward(x, edge_index) or "
                    "forward_graph(x, graph, x_key=..., x_value=...); 'value', 'pattern' and "
                    "'key_padding_mask' belong to the sequence form, whose query is [B, L, E] "
                    "(use query.unsqueeze(0) for a single sequence)"
                )
            if key is None or (isinstance(key, Tensor) and key.is_floating_point()):
                raise ValueError(
                    "A 2-D query is read as node features [N, E] and needs a graph: call "
                    "forward(x, edge_index) or forward_graph(x, graph, x_key=...); for a single "
                    "sequence [L, E] use query.unsqueeze(0)"
                )
            return self.forward_graph(query, key, edge_bias=edge_bias, need_weights=need_weights)
        if isinstance(key, AttentionGraph):
            raise TypeError(
                "Got an AttentionGraph as 'key' with a 3-D query; for sequences pass it as "
                "pattern=..., for node features pass query of shape [N, E]"
            )
        return self._forward_sequences(query, key, value, pattern, key_padding_mask, edge_bias, need_weights)

    def forward_graph(
        self,
        x: Tensor,
        graph: AttentionGraph | Tensor,
        *,
        x_key: Tensor | None = None,
        x_value: Tensor | None = None,
        edge_bias: Tensor | None = None,
        need_weights: bool = False,
    ) -> Tensor | AttentionOutput:
        """Attention over node features, like a PyG conv: query ``i`` attends its in-edges.

        Args:
            x: ``[Nq, E]`` query node features.
            graph: an :class:`~graphattn.AttentionGraph` with ``num_queries = Nq`` and
                ``num_keys = Nk``, or a PyG-style ``edge_index`` ``[2, E_in]`` (row 0 =
                source = key ``j``, row 1 = target = query ``i``); an ``edge_index`` is sorted
                and de-duplicated on every call, so pass an AttentionGraph to reuse the work.
            x_key: ``[Nk, kdim]`` key node features for cross (bipartite) attention; default
                ``x``.
            x_value: ``[Nk, vdim]``; default ``x_key``.
            edge_bias: additive score per edge ``[E, H]``: in the graph's CSR order for an
                AttentionGraph, in the given ``edge_index`` order for an ``edge_index``
                (duplicate edges are merged and their biases averaged).
            need_weights: also return per-edge weights.

        Returns:
            ``[Nq, E]``, or :class:`AttentionOutput` ``(output, weights)`` with ``weights``
            ``[E, H]`` in the graph's CSR order for an AttentionGraph, and in the input
            ``edge_index`` order (``[E_in, H]``, like PyG's ``return_attention_weights``) for an
            ``edge_index``.
        """
        _check_features(x, "x", self.embed_dim, "embed_dim")
        x_key = x if x_key is None else x_key
        x_value = x_key if x_value is None else x_value
        _check_features(x_key, "x_key", self.kdim, "kdim")
        _check_features(x_value, "x_value", self.vdim, "vdim")
        if x_value.size(0) != x_key.size(0):
            raise ValueError(
                f"Expected x_key and x_value with the same number of nodes, got {x_key.size(0)} "
                f"and {x_value.size(0)}"
            )
        num_queries, num_keys = x.size(0), x_key.size(0)
        input_edge_map = None
        if isinstance(graph, AttentionGraph):
            if graph.num_queries != num_queries or graph.num_keys != num_keys:
                raise ValueError(
                    f"Graph size (num_queries={graph.num_queries}, num_keys={graph.num_keys}) does "
                    f"not match x with {num_queries} nodes and x_key with {num_keys} nodes"
                )
            graph = _on_device(graph, x.device)
        elif isinstance(graph, Tensor):
            graph = AttentionGraph.from_edge_index(graph.to(x.device), num_queries, num_keys)
            input_edge_map = graph.input_edge_map
            if edge_bias is not None:
                self._check_edge_bias(edge_bias, (input_edge_map.numel(), self.num_heads), "[E_in, H]")
                edge_bias = graph.align_edge_values(edge_bias, reduce="mean")
        else:
            raise TypeError(
                f"Expected 'graph' to be an AttentionGraph or an edge_index tensor [2, E], got "
                f"{type(graph).__name__}"
            )
        self._check_graph_heads(graph)
        if edge_bias is not None:
            self._check_edge_bias(edge_bias, (graph.num_edges, self.num_heads), "[E, H]")
        q, k, v = self.project(x, x_key, x_value)
        out, weights = self.attend(q, k, v, graph, edge_bias, need_weights)
        out = self.project_output(out, graph)
        if not need_weights:
            return out
        if input_edge_map is not None:
            weights = weights[input_edge_map]
        return AttentionOutput(out, weights)

    # ------------------------------------------------------------------ internals
    def _forward_sequences(
        self,
        query: Tensor,
        key: Tensor | None,
        value: Tensor | None,
        pattern: AttentionGraph | None,
        key_padding_mask: Tensor | None,
        edge_bias: Tensor | None,
        need_weights: bool,
    ) -> Tensor | AttentionOutput:
        key = query if key is None else key
        value = key if value is None else value
        query, key, value = self._sequences_to_batch_first(query, key, value)
        batch, num_queries, _ = query.shape
        num_keys = key.size(1)
        if pattern is None:
            pattern = _full_graph(num_queries, num_keys, query.device)
        elif not isinstance(pattern, AttentionGraph):
            raise TypeError(
                f"Expected 'pattern' to be an AttentionGraph over one sequence, got "
                f"{type(pattern).__name__}; build one with graphattn.patterns or "
                f"AttentionGraph.from_dense(mask)"
            )
        elif pattern.num_queries != num_queries or pattern.num_keys != num_keys:
            raise ValueError(
                f"Expected a pattern over one sequence with num_queries = Lq = {num_queries} and "
                f"num_keys = Lk = {num_keys}, got {pattern!r}"
            )
        self._check_graph_heads(pattern)
        pattern = _on_device(pattern, query.device)
        graph = _replicated_batch(pattern, batch)

        bias = None
        if edge_bias is not None:
            if isinstance(edge_bias, Tensor) and edge_bias.dim() == 3:
                self._check_edge_bias(edge_bias, (batch, pattern.num_edges, self.num_heads), "[B, E_p, H]")
                bias = edge_bias.reshape(batch * pattern.num_edges, self.num_heads)
            else:
                self._check_edge_bias(edge_bias, (pattern.num_edges, self.num_heads), "[E_p, H]")
                bias = edge_bias.repeat(batch, 1)
        if key_padding_mask is not None:
            _check_padding_mask(key_padding_mask, batch, num_keys, allow_float=False)
            graph, keep = _drop_keys(graph, key_padding_mask.to(query.device).reshape(-1))
            if keep is not None and bias is not None:
                bias = bias[keep]

        q, k, v = self.project(
            query.reshape(batch * num_queries, -1),
            key.reshape(batch * num_keys, -1),
            value.reshape(batch * num_keys, -1),
        )
        out, weights = self.attend(q, k, v, graph, bias, need_weights)
        out = self.project_output(out, graph).view(batch, num_queries, self.embed_dim)
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out
        return AttentionOutput(out, _dense_weights(weights, graph, batch, num_queries, num_keys))

    def _sequences_to_batch_first(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        layout = "[B, L, E]" if self.batch_first else "[L, B, E]"
        for name, t, size, size_name in (
            ("query", query, self.embed_dim, "embed_dim"),
            ("key", key, self.kdim, "kdim"),
            ("value", value, self.vdim, "vdim"),
        ):
            if not isinstance(t, Tensor):
                raise TypeError(f"Expected '{name}' to be a torch.Tensor, got {type(t).__name__}")
            if t.dim() != 3:
                raise ValueError(
                    f"Expected '{name}' of shape {layout} (batch_first={self.batch_first}), got "
                    f"{list(t.shape)}"
                )
            if not t.is_floating_point():
                raise TypeError(f"Expected '{name}' to be floating point, got '{t.dtype}'")
            if t.size(-1) != size:
                raise ValueError(
                    f"Expected '{name}' with last dim {size_name} = {size}, got shape {list(t.shape)}"
                )
        if not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        if key.size(0) != query.size(0) or value.shape[:2] != key.shape[:2]:
            raise ValueError(
                f"Expected query, key and value with one batch size and key/value with one "
                f"length, got (batch, length) = {tuple(query.shape[:2])}, {tuple(key.shape[:2])}, "
                f"{tuple(value.shape[:2])} (batch_first={self.batch_first})"
            )
        return query, key, value

    def _check_graph_heads(self, graph: AttentionGraph) -> None:
        if graph.num_heads is not None and graph.num_heads != self.num_heads:
            raise ValueError(
                f"Per-head pattern has {graph.num_heads} heads but the layer has num_heads = "
                f"{self.num_heads}"
            )

    @staticmethod
    def _check_edge_bias(edge_bias: Tensor, shape: tuple[int, ...], layout: str) -> None:
        if not isinstance(edge_bias, Tensor) or not edge_bias.is_floating_point():
            got = edge_bias.dtype if isinstance(edge_bias, Tensor) else type(edge_bias).__name__
            raise TypeError(f"Expected 'edge_bias' to be a floating point tensor {layout}, got {got}")
        if tuple(edge_bias.shape) != shape:
            raise ValueError(f"Expected 'edge_bias' of shape {layout} = {list(shape)}, got {list(edge_bias.shape)}")

    # The three steps of forward, public so that layers built on this one (Transformer blocks
    # with rotary positions or a key/value cache) can act between them.
    def project(self, x_query: Tensor, x_key: Tensor, x_value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``[Nq, E], [Nk, kdim], [Nk, vdim]`` -> q ``[Nq, H, D]``, k ``[Nk, H, D]``, v ``[Nk, H, Dv]``.

        Self-attention (the same tensor three times) runs one fused matrix product."""
        if x_query is x_key and x_key is x_value:
            fused = self._fused_linear(x_query, (self.q_proj, self.k_proj, self.v_proj))
            if fused is not None:
                q, k, v = fused
                return (q.unflatten(-1, (self.num_heads, self.head_dim)),
                        k.unflatten(-1, (self.num_heads, self.head_dim)),
                        v.unflatten(-1, (self.num_heads, self.value_head_dim)))
        return self.project_query(x_query), *self.project_key_value(x_key, x_value)

    def project_query(self, x_query: Tensor) -> Tensor:
        """``[..., E]`` -> queries ``[..., H, D]``."""
        return self.q_proj(x_query).unflatten(-1, (self.num_heads, self.head_dim))

    def project_key_value(self, x_key: Tensor, x_value: Tensor) -> tuple[Tensor, Tensor]:
        """``[..., kdim], [..., vdim]`` -> keys ``[..., H, D]``, values ``[..., H, Dv]`` (one fused
        matrix product when ``x_key is x_value``)."""
        fused = self._fused_linear(x_key, (self.k_proj, self.v_proj)) if x_key is x_value else None
        k, v = fused if fused is not None else (self.k_proj(x_key), self.v_proj(x_value))
        return k.unflatten(-1, (self.num_heads, self.head_dim)), v.unflatten(-1, (self.num_heads, self.value_head_dim))

    def _fused_linear(self, x: Tensor, layers: tuple[nn.Linear, ...]) -> tuple[Tensor, ...] | None:
        """The layers applied to one input as one ``F.linear`` over their stacked weights (fewer,
        larger matrix products), or None when they cannot be stacked."""
        if any(type(layer) is not nn.Linear for layer in layers):  # e.g. quantized or wrapped layers
            return None
        with_bias = [layer.bias is not None for layer in layers]
        if any(with_bias) and not all(with_bias):
            return None
        weight, bias = self._stacked_parameters(layers, all(with_bias))
        return F.linear(x, weight, bias).split([layer.out_features for layer in layers], dim=-1)

    def _stacked_parameters(self, layers: tuple[nn.Linear, ...], with_bias: bool) -> tuple[Tensor, Tensor | None]:
        """The layers' weights (and biases) stacked along the output dimension.

        With gradients off (inference, ``torch.no_grad``) the stacked copy is kept and reused
        until a parameter changes (a new tensor, or an in-place update such as an optimizer step
        or ``load_state_dict``, which bump its version counter): decoding runs the projections once
        per token or iteration, and re-stacking the weights each time cost about as much as the
        product itself. With gradients on, they are stacked anew so autograd sees the parameters.
        """
        parameters = [layer.weight for layer in layers] + ([layer.bias for layer in layers] if with_bias else [])
        if torch.is_grad_enabled() and any(p.requires_grad for p in parameters):
            weight = torch.cat(parameters[: len(layers)])
            return weight, torch.cat(parameters[len(layers):]) if with_bias else None
        key = tuple((id(p), p.data_ptr(), p._version, p.dtype, p.device) for p in parameters)
        cache = self.__dict__.setdefault("_stacked_cache", {})
        name = tuple(id(layer) for layer in layers)
        found = cache.get(name)
        if found is None or found[0] != key:
            with torch.no_grad():
                weight = torch.cat(parameters[: len(layers)])
                bias = torch.cat(parameters[len(layers):]) if with_bias else None
            found = cache[name] = (key, weight, bias)
        return found[1], found[2]

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        graph: AttentionGraph,
        bias: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Score, softmax and aggregate projected heads on the core (this layer's scoring function,
        scale, dropout and backend): q ``[Nq, H, D]``, k ``[Nk, H, D]``, v ``[Nk, H, Dv]``, per-edge
        ``bias`` ``[E, H]`` -> ``([Nq, H, Dv], weights [E, H] or None)``."""
        if bias is not None:
            bias = bias.to(q.dtype)
        scale = self.scale
        if self.score == "bilinear":
            q = torch.einsum("nhd,hde->nhe", q, self.bilinear_weight)  # [Nq, H, D]: q W_h
        elif self.score == "additive":
            additive = _additive_scores(q, k, graph, self.additive_weight)  # [E, H]
            bias = additive if bias is None else bias + additive
            q = q.new_zeros(q.size(0), self.num_heads, 1)  # the score lives entirely in the bias
            k = k.new_zeros(k.size(0), self.num_heads, 1)
        dropout = self.dropout if self.training else 0.0
        if need_weights:
            output, weights = attention(
                q, k, v, graph, bias=bias, scale=scale, dropout=dropout, backend=self.backend, return_weights=True
            )
            return output, weights
        return attention(q, k, v, graph, bias=bias, scale=scale, dropout=dropout, backend=self.backend), None

    def project_output(self, heads_out: Tensor, graph: AttentionGraph) -> Tensor:
        """``[Nq, H, Dv]`` -> ``out_proj`` -> ``[Nq, E]``, exactly zero at queries without keys."""
        out = self.out_proj(heads_out.reshape(heads_out.size(0), self.num_heads * self.value_head_dim))
        if self.out_proj.bias is not None:
            empty = graph.cached("empty_queries", lambda: _empty_queries(graph))
            if graph.cached("has_empty_queries", lambda: bool(empty.any())):
                out = out.masked_fill(empty.unsqueeze(1), 0.0)
        return out


class TorchCompatibleMultiheadAttention(MultiheadAttention):
    """Drop-in for ``torch.nn.MultiheadAttention``: same constructor, forward, layout and masks.

    Usually made by :meth:`MultiheadAttention.from_torch`. Runs ``scaled_dot`` attention on the
    graphattn core; :meth:`forward` converts PyTorch's mask polarity at this boundary:

    * bool ``attn_mask`` / ``key_padding_mask``: **True = NOT allowed** (PyTorch) -> the edge is
      removed from the graph (graphattn's own masks use True = may attend);
    * float masks are additive: ``-inf`` entries remove the edge, finite entries become per-edge
      score biases.

    Differences from PyTorch: a query whose keys are all masked outputs zeros (PyTorch gives
    NaN); returned weights are the softmax before dropout (PyTorch returns them after dropout);
    ``is_causal`` is only a hint, the given ``attn_mask`` is always applied.

    Args:
        embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn, kdim, vdim,
        batch_first, device, dtype: as in ``torch.nn.MultiheadAttention`` (``batch_first``
            defaults to False there and here).
        backend: the :func:`graphattn.attention` backend.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__(
            embed_dim,
            num_heads,
            kdim=kdim,
            vdim=embed_dim if vdim is None else vdim,
            bias=bias,
            dropout=dropout,
            score="scaled_dot",
            backend=backend,
            batch_first=batch_first,
            device=device,
            dtype=dtype,
        )
        self.add_zero_attn = bool(add_zero_attn)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, embed_dim, device=device, dtype=dtype))
            self.bias_v = nn.Parameter(torch.empty(1, 1, embed_dim, device=device, dtype=dtype))
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)
        else:
            self.register_parameter("bias_k", None)
            self.register_parameter("bias_v", None)

    def extra_repr(self) -> str:
        extra = super().extra_repr()
        if self.bias_k is not None:
            extra += ", add_bias_kv=True"
        if self.add_zero_attn:
            extra += ", add_zero_attn=True"
        return extra

    def forward(  # type: ignore[override]
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """``torch.nn.MultiheadAttention.forward`` semantics on the graphattn core.

        Args:
            query: ``[B, L, E]`` if ``batch_first`` else ``[L, B, E]``; or unbatched ``[L, E]``.
            key: ``[B, S, kdim]`` / ``[S, B, kdim]`` / ``[S, kdim]``.
            value: ``[B, S, vdim]`` / ``[S, B, vdim]`` / ``[S, vdim]``.
            key_padding_mask: ``[B, S]`` (``[S]`` unbatched); bool **True = ignore this key**, or
                float added to the scores (``-inf`` = ignore).
            need_weights: return the attention weights.
            attn_mask: ``[L, S]`` or ``[B * H, L, S]``; bool **True = NOT allowed**, or float
                added to the scores (``-inf`` = not allowed).
            average_attn_weights: average the returned weights over heads.
            is_causal: hint that ``attn_mask`` is causal; as in PyTorch it requires ``attn_mask``.

        Returns:
            ``(output, weights)``: output in the layout of ``query``; weights ``[B, L, S]``
            (averaged) or ``[B, H, L, S]``, without the batch dim for unbatched input, ``None``
            when not ``need_weights``. With ``add_bias_kv`` / ``add_zero_attn``, ``S`` counts the
            extra keys, as in PyTorch.
        """
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, Tensor):
                raise TypeError(f"Expected '{name}' to be a torch.Tensor, got {type(t).__name__}")
        unbatched = query.dim() == 2
        if unbatched:
            if key.dim() != 2 or value.dim() != 2:
                raise ValueError(
                    f"Expected unbatched key and value [S, E] with an unbatched query [L, E], got "
                    f"key {list(key.shape)}, value {list(value.shape)}"
                )
            batch_dim = 0 if self.batch_first else 1
            query, key, value = query.unsqueeze(batch_dim), key.unsqueeze(batch_dim), value.unsqueeze(batch_dim)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        query, key, value = self._sequences_to_batch_first(query, key, value)
        if is_causal and attn_mask is None:
            raise ValueError(
                "is_causal=True is only a hint and needs attn_mask (as in torch.nn.MultiheadAttention); "
                "pass attn_mask=torch.nn.Transformer.generate_square_subsequent_mask(L)"
            )
        batch, num_queries, _ = query.shape
        num_keys, heads = key.size(1), self.num_heads

        q, k, v = self.project(
            query.reshape(batch * num_queries, -1),
            key.reshape(batch * num_keys, -1),
            value.reshape(batch * num_keys, -1),
        )
        k = k.view(batch, num_keys, heads, self.head_dim)
        v = v.view(batch, num_keys, heads, self.value_head_dim)
        if self.bias_k is not None:  # one extra key/value per sequence, always attended
            k = torch.cat([k, self.bias_k.view(1, 1, heads, self.head_dim).expand(batch, 1, -1, -1)], 1)
            v = torch.cat([v, self.bias_v.view(1, 1, heads, self.value_head_dim).expand(batch, 1, -1, -1)], 1)
        if self.add_zero_attn:  # a zero key/value per sequence, always attended
            k = torch.cat([k, k.new_zeros(batch, 1, heads, self.head_dim)], 1)
            v = torch.cat([v, v.new_zeros(batch, 1, heads, self.value_head_dim)], 1)
        total_keys = k.size(1)

        graph, bias = self._torch_masks_to_graph(
            attn_mask, key_padding_mask, batch, num_queries, num_keys, total_keys, q
        )
        out, weights = self.attend(
            q, k.reshape(batch * total_keys, heads, -1), v.reshape(batch * total_keys, heads, -1),
            graph, bias, need_weights,
        )
        out = self.project_output(out, graph).view(batch, num_queries, self.embed_dim)
        if not self.batch_first:
            out = out.transpose(0, 1)
        dense = None
        if need_weights:
            dense = _dense_weights(weights, graph, batch, num_queries, total_keys)
            if average_attn_weights:
                dense = dense.mean(1)
        if unbatched:
            out = out.squeeze(0 if self.batch_first else 1)
            dense = None if dense is None else dense.squeeze(0)
        return out, dense

    def forward_graph(  # type: ignore[override]
        self, x: Tensor, graph: AttentionGraph | Tensor, **kwargs
    ) -> Tensor | AttentionOutput:
        """:meth:`MultiheadAttention.forward_graph`; not available with ``add_bias_kv`` or
        ``add_zero_attn``."""
        if self.bias_k is not None or self.add_zero_attn:
            raise NotImplementedError(
                "forward_graph does not support add_bias_kv / add_zero_attn (they add one key per "
                "sequence); add those keys as nodes of the graph instead"
            )
        return super().forward_graph(x, graph, **kwargs)

    def _torch_masks_to_graph(
        self,
        attn_mask: Tensor | None,
        key_padding_mask: Tensor | None,
        batch: int,
        num_queries: int,
        num_keys: int,
        total_keys: int,
        like: Tensor,
    ) -> tuple[AttentionGraph, Tensor | None]:
        """PyTorch masks -> block-diagonal graph over ``B * L`` queries and ``B * S'`` keys and
        per-edge bias ``[E, H]`` (``S' = total_keys`` includes bias_k / zero-attention keys,
        which every query may attend)."""
        heads, device = self.num_heads, like.device
        extra = total_keys - num_keys
        padded, padding_bias = None, None
        if key_padding_mask is not None:
            _check_padding_mask(key_padding_mask, batch, num_keys, allow_float=True)
            padded, padding_bias = _split_torch_mask(key_padding_mask.to(device), like.dtype)
            padded = torch.nn.functional.pad(padded, (0, extra), value=False)
            if padding_bias is not None:
                padding_bias = torch.nn.functional.pad(padding_bias, (0, extra), value=0.0)

        bias = None
        if attn_mask is None:
            graph = _replicated_batch(_full_graph(num_queries, total_keys, device), batch)
        elif not isinstance(attn_mask, Tensor):
            raise TypeError(f"Expected 'attn_mask' to be a tensor, got {type(attn_mask).__name__}")
        elif attn_mask.dim() == 2:
            if tuple(attn_mask.shape) != (num_queries, num_keys):
                raise ValueError(
                    f"Expected a 2-D attn_mask of shape [L, S] = [{num_queries}, {num_keys}], got "
                    f"{list(attn_mask.shape)}"
                )
            blocked, mask_bias = _split_torch_mask(attn_mask.to(device), like.dtype)
            allowed = torch.nn.functional.pad(~blocked, (0, extra), value=True)  # [L, S']
            pattern = AttentionGraph.from_dense(allowed)
            graph = AttentionGraph.batch([pattern] * batch)
            if mask_bias is not None:
                mask_bias = torch.nn.functional.pad(mask_bias, (0, extra), value=0.0)  # [L, S']
                bias = mask_bias[pattern.row, pattern.col].unsqueeze(1).expand(-1, heads).repeat(batch, 1)
        elif attn_mask.dim() == 3:
            if tuple(attn_mask.shape) != (batch * heads, num_queries, num_keys):
                raise ValueError(
                    f"Expected a 3-D attn_mask of shape [B * H, L, S] = [{batch * heads}, "
                    f"{num_queries}, {num_keys}], got {list(attn_mask.shape)}"
                )
            blocked, mask_bias = _split_torch_mask(attn_mask.to(device), like.dtype)
            allowed = torch.nn.functional.pad(~blocked, (0, extra), value=True)
            allowed = allowed.view(batch, heads, num_queries, total_keys)
            graph = _graph_from_batched_head_masks(allowed)
            if mask_bias is not None:
                mask_bias = torch.nn.functional.pad(mask_bias, (0, extra), value=0.0)
                mask_bias = mask_bias.view(batch, heads, num_queries, total_keys)
                b, i, j = _block_coordinates(graph, batch, num_queries, total_keys)
                bias = mask_bias[b, :, i, j]  # [E, H]
        else:
            raise ValueError(
                f"Expected attn_mask of shape [L, S] or [B * H, L, S], got {list(attn_mask.shape)}"
            )

        if padded is not None:
            graph, keep = _drop_keys(graph, padded.reshape(-1))
            if keep is not None and bias is not None:
                bias = bias[keep]
        if padding_bias is not None:
            key_bias = padding_bias.reshape(-1)[graph.col].unsqueeze(1).expand(-1, heads)
            bias = key_bias if bias is None else bias + key_bias
        return graph, bias


# ---------------------------------------------------------------------- helpers
def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected '{name}' to be a positive int, got {value!r}")
    return value


def _check_features(x: object, name: str, size: int, size_name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"Expected '{name}' to be a torch.Tensor [N, {size_name}], got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(
            f"Expected '{name}' of shape [N, {size_name}] = [N, {size}] (node features), got "
            f"{list(x.shape)}; sequences [B, L, E] go through forward(query, key, value, pattern=...)"
        )
    if not x.is_floating_point():
        raise TypeError(f"Expected '{name}' to be floating point, got '{x.dtype}'")
    if x.size(1) != size:
        raise ValueError(f"Expected '{name}' with last dim {size_name} = {size}, got shape {list(x.shape)}")


def _check_padding_mask(mask: object, batch: int, num_keys: int, *, allow_float: bool) -> None:
    if not isinstance(mask, Tensor):
        raise TypeError(f"Expected 'key_padding_mask' to be a tensor [B, Lk], got {type(mask).__name__}")
    if mask.dtype != torch.bool and not (allow_float and mask.is_floating_point()):
        kinds = "bool (True = padding) or float (additive)" if allow_float else "bool with True = padding"
        raise TypeError(f"Expected 'key_padding_mask' to be {kinds}, got '{mask.dtype}'")
    if tuple(mask.shape) != (batch, num_keys):
        raise ValueError(
            f"Expected 'key_padding_mask' of shape [B, Lk] = [{batch}, {num_keys}], got {list(mask.shape)}"
        )


def _split_torch_mask(mask: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """A PyTorch-polarity mask -> (blocked bool, finite additive bias or None), same shape."""
    if mask.dtype == torch.bool:
        return mask, None
    if not mask.is_floating_point():
        raise TypeError(
            f"Expected a bool mask (True = not allowed) or a float additive mask, got '{mask.dtype}'"
        )
    blocked = torch.isneginf(mask)
    bias = mask.masked_fill(blocked, 0.0).to(dtype)
    return blocked, (bias if bool(bias.any()) else None)


@functools.lru_cache(maxsize=8)
def _full_graph(num_queries: int, num_keys: int, device: torch.device) -> AttentionGraph:
    """Every query attends every key (cached; batched copies are cached on it)."""
    crow = torch.arange(num_queries + 1, device=device) * num_keys
    col = torch.arange(num_keys, device=device).repeat(num_queries)
    return AttentionGraph(crow, col, num_queries, num_keys, validate=False)


def _on_device(graph: AttentionGraph, device: torch.device) -> AttentionGraph:
    if graph.device == device:
        return graph
    return graph.cached(("graphattn.nn.on_device", str(device)), lambda: graph.to(device))


def _replicated_batch(pattern: AttentionGraph, batch: int) -> AttentionGraph:
    """``AttentionGraph.batch([pattern] * batch)``, cached on ``pattern``."""
    return pattern.cached(("graphattn.nn.replicated_batch", batch), lambda: AttentionGraph.batch([pattern] * batch))


def _drop_keys(graph: AttentionGraph, drop: Tensor) -> tuple[AttentionGraph, Tensor | None]:
    """Remove every edge to a key with ``drop[key]`` (``[Nk]`` bool).

    Returns the new graph and ``keep`` ``[E]`` (which old edges survive, for per-edge values),
    or ``(graph, None)`` when nothing is dropped. O(E), no sorting.
    """
    if not bool(drop.any()):
        return graph, None
    keep = ~drop[graph.col]  # [E]
    kept_before = torch.cat([keep.new_zeros(1, dtype=torch.long), keep.long().cumsum(0)])  # [E + 1]
    new = AttentionGraph(
        kept_before[graph.crow],
        graph.col[keep],
        graph.num_queries,
        graph.num_keys,
        head_mask=None if graph.head_mask is None else graph.head_mask[keep],
        query_ptr=graph.query_ptr,
        key_ptr=graph.key_ptr,
        validate=False,
    )
    old_row = graph.row
    new.cached("row", lambda: old_row[keep])
    return new, keep


def _graph_from_batched_head_masks(allowed: Tensor) -> AttentionGraph:
    """``[B, H, L, S]`` bool (True = may attend) -> block-diagonal graph over ``B * L`` queries
    and ``B * S`` keys, with a head mask when the heads differ."""
    batch, heads, num_queries, num_keys = allowed.shape
    union = allowed.any(1)  # [B, L, S]
    b, i, j = union.nonzero(as_tuple=True)  # row-major: sorted by (b, i, j) = CSR order
    rows = b * num_queries + i
    counts = torch.bincount(rows, minlength=batch * num_queries)
    crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    head_mask = allowed[b, :, i, j]  # [E, H]
    if bool(head_mask.all()):
        head_mask = None
    arange = torch.arange(batch + 1, device=allowed.device)
    graph = AttentionGraph(
        crow, b * num_keys + j, batch * num_queries, batch * num_keys,
        head_mask=head_mask, query_ptr=arange * num_queries, key_ptr=arange * num_keys, validate=False,
    )
    graph.cached("row", lambda: rows)
    return graph


def _block_coordinates(
    graph: AttentionGraph, batch: int, num_queries: int, num_keys: int
) -> tuple[Tensor, Tensor, Tensor]:
    """For a block-diagonal batch of ``[L, S]`` blocks: (sequence, query, key) of every edge."""
    row, col = graph.row, graph.col
    b = torch.div(row, num_queries, rounding_mode="floor")
    return b, row - b * num_queries, col - b * num_keys


def _dense_weights(weights: Tensor, graph: AttentionGraph, batch: int, num_queries: int, num_keys: int) -> Tensor:
    """Per-edge weights ``[E, H]`` of a block-diagonal batch -> dense ``[B, H, L, S]``, zeros off edges."""
    b, i, j = _block_coordinates(graph, batch, num_queries, num_keys)
    dense = weights.new_zeros(batch, weights.size(1), num_queries, num_keys)
    dense[b, :, i, j] = weights  # advanced indices around a slice: the indexed view is [E, H]
    return dense


def _empty_queries(graph: AttentionGraph) -> Tensor:
    """``[Nq]`` bool: queries that attend no key in any head."""
    if graph.head_mask is None:
        return graph.degrees == 0
    active = graph.head_mask.any(1).long()  # [E]
    counts = torch.zeros(graph.num_queries, dtype=torch.long, device=graph.device).index_add_(0, graph.row, active)
    return counts == 0


def _additive_scores(q: Tensor, k: Tensor, graph: AttentionGraph, weight: Tensor) -> Tensor:
    """Bahdanau scores ``w_h . tanh(q_i + k_j)`` for every edge: ``[E, H]``.

    Works through the edges in chunks of ``[chunk, H, D]`` and, when gradients are needed,
    recomputes each chunk in backward (activation checkpointing) so that only ``[E, H]`` is kept.
    """
    heads, head_dim = weight.shape
    row, col = graph.row, graph.col
    chunk = max(1, _ADDITIVE_CHUNK_ELEMENTS // max(heads * head_dim, 1))
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or weight.requires_grad)
    pieces = []
    for start in range(0, graph.num_edges, chunk):
        rows, cols = row[start:start + chunk], col[start:start + chunk]
        if needs_grad:
            pieces.append(checkpoint(_additive_chunk, q, k, rows, cols, weight, use_reentrant=False))
        else:
            pieces.append(_additive_chunk(q, k, rows, cols, weight))
    if not pieces:
        return q.new_zeros(0, heads)
    return torch.cat(pieces) if len(pieces) > 1 else pieces[0]


def _additive_chunk(q: Tensor, k: Tensor, rows: Tensor, cols: Tensor, weight: Tensor) -> Tensor:
    hidden = torch.tanh(q[rows] + k[cols])  # [e, H, D]: the documented per-edge exception
    return (hidden * weight).sum(-1)  # [e, H]
