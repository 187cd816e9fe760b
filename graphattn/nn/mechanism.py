"""The contract of attention mechanisms that are not a fixed edge set.

Fixed patterns (full, local, BigBird, a molecule's bonds) are an :class:`~graphattn.AttentionGraph`
given to :func:`graphattn.attention`. The efficient-attention families of the literature are
different: the edge set depends on the data (LSH buckets, k-means routing, Sinkhorn sorting), or
there is no edge set at all (kernelized linear attention, Linformer's projected keys, compressed
keys, Synthesizer's synthesized weights). Each is an :class:`AttentionMechanism`: a module that
takes the projected heads of ``B`` right-padded sequences and returns the attended values, so the
same :class:`~graphattn.nn.MultiheadAttention` / Transformer layers run any of them in place of
softmax attention over a pattern.

Shapes (``B`` sequences, ``Lq`` / ``Lk`` padded lengths, ``H`` heads, ``D`` / ``Dv`` head dims):
``q [B, Lq, H, D]``, ``k [B, Lk, H, D]``, ``v [B, Lk, H, Dv]`` -> ``[B, Lq, H, Dv]``. Slot ``i`` of
sequence ``b`` is real when ``i < lengths[b]``; padded keys never contribute and padded query
rows come out as zeros.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from graphattn._callspec import Call, format_call, parse_call
from graphattn.graph import AttentionGraph
from graphattn.ops import attention
from graphattn.ops.lowrank import _check_attention_inputs, softmax_attention

__all__ = [
    "SequenceLayout",
    "AttentionMechanism",
    "SoftmaxAttention",
    "MaterializedSoftmaxAttention",
    "HeadGroups",
    "MechanismSpec",
    "MECHANISM_NAMES",
    "as_mechanism_spec",
]


@dataclass
class SequenceLayout:
    """Where the real tokens are, and whether attention must be causal.

    Attributes:
        query_lengths: ``[B]`` int64, real queries of each sequence (a prefix of its ``Lq`` slots).
        key_lengths: ``[B]`` int64, real keys of each sequence.
        causal: query ``i`` may only use keys ``j <= i`` (self-attention, ``Lq == Lk``).
        graph: the layer's pattern over the ``B * Lq`` query and ``B * Lk`` key slots, as nodes
            (``b * L + i``), when the layer has one; :class:`SoftmaxAttention` runs it, other
            mechanisms ignore it.
        bias: per-edge score bias ``[E, H]`` of ``graph`` (relative positions, ALiBi), or None.
    """

    query_lengths: Tensor
    key_lengths: Tensor
    causal: bool = False
    graph: AttentionGraph | None = None
    bias: Tensor | None = None

    @classmethod
    def full(cls, batch: int, length: int, *, causal: bool = False, device: torch.device | str | None = None) -> "SequenceLayout":
        """``batch`` sequences of ``length`` real tokens each (no padding)."""
        lengths = torch.full((batch,), length, dtype=torch.long, device=device)
        return cls(lengths, lengths, causal)

    def query_mask(self, slots: int) -> Tensor:
        """``[B, slots]`` bool, True at real queries."""
        return torch.arange(slots, device=self.query_lengths.device) < self.query_lengths[:, None]

    def key_mask(self, slots: int) -> Tensor:
        """``[B, slots]`` bool, True at real keys."""
        return torch.arange(slots, device=self.key_lengths.device) < self.key_lengths[:, None]


class AttentionMechanism(nn.Module):
    """Base class: ``forward(q, k, v, layout) -> [B, Lq, H, Dv]`` (see the module docstring).

    Class attributes a subclass sets:

    * ``supports_causal``: it can attend causally (leaking nothing from later tokens);
    * ``supports_cross``: it works with ``Lq != Lk`` / keys from another sequence;
    * ``shared_query_key``: it needs ``k = q`` (Reformer's LSH attention); the layer then
      passes the query projection as keys.

    Subclasses own their parameters (projections of keys, centroids, synthesized weights) but not
    the query / key / value / output projections, which stay in the attention layer.
    """

    supports_causal: bool = False
    supports_cross: bool = False
    shared_query_key: bool = False

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_inputs(self, q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout) -> None:
        """Shape and capability checks every subclass runs first; raises ValueError naming the problem."""
        name = type(self).__name__
        _check_attention_inputs(q, k, v, None, name)  # the padded [B, L, H, D] layout's shape rules
        if layout.query_lengths.shape != (q.size(0),) or layout.key_lengths.shape != (q.size(0),):
            raise ValueError(
                f"{name}: expected query_lengths and key_lengths of shape [B] = [{q.size(0)}], got "
                f"{list(layout.query_lengths.shape)} and {list(layout.key_lengths.shape)}"
            )
        if layout.causal and not self.supports_causal:
            raise ValueError(f"{name} has no causal variant; use it in encoders (causal=False) or pick another mechanism")
        if layout.causal and q.size(1) != k.size(1):
            raise ValueError(f"{name}: causal attention needs Lq == Lk, got {q.size(1)} and {k.size(1)}")


class SoftmaxAttention(AttentionMechanism):
    """Softmax attention over the layer's pattern (``layout.graph``) on the sparse core -- what
    a layer does without a mechanism, as a mechanism so it can serve some heads of a
    :class:`HeadGroups` while others run e.g. LSH attention.

    Args:
        dropout: attention dropout (training only).
        backend: :func:`graphattn.attention` backend.
    """

    supports_causal = True
    supports_cross = True

    def __init__(self, dropout: float = 0.0, backend: str = "auto") -> None:
        super().__init__()
        self.dropout, self.backend = float(dropout), backend

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout) -> Tensor:
        self.check_inputs(q, k, v, layout)
        if layout.graph is None:
            raise ValueError("SoftmaxAttention needs the layer's pattern graph in layout.graph")
        batch, lq, heads = q.shape[:3]
        graph = layout.graph
        if graph.num_queries != batch * lq or graph.num_keys != batch * k.size(1):
            raise ValueError(
                f"SoftmaxAttention: expected a graph over {batch * lq} query and {batch * k.size(1)} key slots, got "
                f"{graph.num_queries} and {graph.num_keys}"
            )
        head_mask = graph.head_mask
        if head_mask is not None and head_mask.size(1) != heads:
            raise ValueError(
                f"SoftmaxAttention got {heads} heads but a per-head pattern for {head_mask.size(1)}; per-head "
                "patterns cannot be combined with HeadGroups (give the groups plain patterns)"
            )
        bias = layout.bias
        if bias is not None and bias.size(1) != heads:
            raise ValueError(f"SoftmaxAttention got {heads} heads but a bias for {bias.size(1)}")
        out = attention(
            q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), graph, bias=bias,
            dropout=self.dropout if self.training else 0.0, backend=self.backend,
        )
        return out.view(batch, lq, heads, -1)

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}, backend={self.backend!r}"


class MaterializedSoftmaxAttention(AttentionMechanism):
    """Softmax over every real key computed the textbook way, with the ``[B, H, Lq, Lk]`` score
    matrix in memory -- the vanilla Transformer of the Long Range Arena's speed and memory
    tables. Same values as ``"softmax"`` with the ``full`` (or ``causal``) pattern, which runs
    fused SDPA kernels that never store the scores; use this one only as that baseline.

    Args:
        dropout: attention dropout (training only).
    """

    supports_causal = True
    supports_cross = True

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = float(dropout)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout) -> Tensor:
        self.check_inputs(q, k, v, layout)
        out = softmax_attention(
            q, k, v, key_mask=layout.key_mask(k.size(1)), causal=layout.causal,
            dropout=self.dropout if self.training else 0.0,
        )
        return out * layout.query_mask(q.size(1))[:, :, None, None].to(out.dtype)

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}"


class HeadGroups(AttentionMechanism):
    """A different mechanism per group of heads: heads are split into ``len(mechanisms)``
    contiguous groups of ``num_heads / len(mechanisms)``; group ``g`` runs ``mechanisms[g]`` on its
    slice of q / k / v and the outputs are concatenated along the head axis.

    A per-edge bias of the pattern (``layout.bias [E, H]``) is sliced the same way for softmax
    groups; a group whose mechanism shares queries and keys (LSH) gets its query slice as keys.

    Example:
        >>> groups = HeadGroups([SoftmaxAttention(), SoftmaxAttention()])
        >>> q = torch.randn(2, 5, 4, 8)
        >>> from graphattn.patterns import PatternSpec, sequence_batch
        >>> graph = sequence_batch(PatternSpec.parse("full"), [5, 5], query_slots=5)
        >>> layout = SequenceLayout(torch.tensor([5, 5]), torch.tensor([5, 5]), graph=graph)
        >>> groups(q, q, q, layout).shape
        torch.Size([2, 5, 4, 8])
    """

    def __init__(self, mechanisms: Sequence[AttentionMechanism]) -> None:
        super().__init__()
        if not mechanisms:
            raise ValueError("HeadGroups needs at least one mechanism")
        self.groups = nn.ModuleList(mechanisms)
        self.supports_causal = all(m.supports_causal for m in mechanisms)
        self.supports_cross = all(m.supports_cross for m in mechanisms)
        # groups whose mechanism shares queries and keys (LSH) get their query slice as keys, so
        # the layer passes ordinary keys
        self.shared_query_key = False

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layout: SequenceLayout) -> Tensor:
        self.check_inputs(q, k, v, layout)
        heads, count = q.size(2), len(self.groups)
        if heads % count:
            raise ValueError(f"HeadGroups: {heads} heads cannot be split into {count} equal groups")
        size = heads // count
        outs = []
        for index, mechanism in enumerate(self.groups):
            part = slice(index * size, (index + 1) * size)
            bias = layout.bias[:, part] if layout.bias is not None else None
            sub = SequenceLayout(layout.query_lengths, layout.key_lengths, layout.causal, layout.graph, bias)
            keys = q[:, :, part] if mechanism.shared_query_key else k[:, :, part]
            outs.append(mechanism(q[:, :, part], keys, v[:, :, part], sub))
        return torch.cat(outs, dim=2)


# ---------------------------------------------------------------------- specs
@dataclass(frozen=True)
class MechanismDims:
    """What a layer tells a mechanism factory: heads, head dims, the longest sequence, dropout."""

    num_heads: int
    head_dim: int
    value_head_dim: int
    max_length: int
    dropout: float = 0.0
    backend: str = "auto"


def _softmax(dims: MechanismDims, kwargs: dict[str, Any]) -> AttentionMechanism:
    return SoftmaxAttention(**{"dropout": dims.dropout, "backend": dims.backend, **kwargs})


def _materialized(dims: MechanismDims, kwargs: dict[str, Any]) -> AttentionMechanism:
    return MaterializedSoftmaxAttention(**{"dropout": dims.dropout, **kwargs})


def _lsh(dims: MechanismDims, kwargs: dict[str, Any]) -> AttentionMechanism:
    from graphattn.nn.clustered import LSHAttention

    chunk_size = kwargs.get("chunk_size", 64)
    buckets = 2 * math.ceil(dims.max_length / (2 * chunk_size)) if isinstance(chunk_size, int) and chunk_size > 0 else None
    # a bucket count fixed by the longest sequence (about one chunk per bucket there) keeps a
    # sequence's hashing independent of the batch it is padded in
    return LSHAttention(**{"num_buckets": max(2, buckets or 2), "dropout": dims.dropout, "backend": dims.backend, **kwargs})


def _routing(dims: MechanismDims, kwargs: dict[str, Any]) -> AttentionMechanism:
    from graphattn.nn.clustered import RoutingAttention

    return RoutingAttention(
        **{"num_heads": dims.num_heads, "head_dim": dims.head_dim, "dropout": dims.dropout, "backend": dims.backend, **kwargs}
    )


def _sinkhorn(dims: MechanismDims, kwargs: dict[str, Any]) -> AttentionMechanism:
    from graphattn.nn.sinkhorn import SinkhornAttention

    return SinkhornAttention(**{
        "max_length": dims.max_length, "num_heads": dims.num_heads, "head_dim": dims.head_dim,
        "dropout": dims.dropout, "backend": dims.backend, **kwargs,
    })


def _linear(dims: MechanismDims, kwargs: dict[str, Any]) -> AttentionMechanism:
    from graphattn.nn.efficient import LinearAttention

    return LinearAttention(**kwargs)  # no attention weights, so no attention dropout


def _performer(dims: MechanismDims, kwargs: dict[str, Any]) -> AttentionMechanism:
    from graphattn.nn.efficient import PerformerAttention

    return PerformerAttention(**{"head_dim": dims.head_dim, **kwargs})


def _linformer(dims: MechanismDims, kwargs: dict[str, Any]) -> AttentionMechanism:
    from graphattn.nn.efficient import LinformerAttention

    return LinformerAttention(**{"max_length": dims.max_length, "dropout": dims.dropout, **kwargs})


def _compressed(dims: MechanismDims, kwargs: dict[str, Any]) -> AttentionMechanism:
    from graphattn.nn.efficient import CompressedAttention

    return CompressedAttention(**{
        "head_dim": dims.head_dim, "value_head_dim": dims.value_head_dim, "dropout": dims.dropout, **kwargs,
    })


def _synthesizer(dims: MechanismDims, kwargs: dict[str, Any]) -> AttentionMechanism:
    from graphattn.nn.efficient import SynthesizerAttention

    return SynthesizerAttention(**{
        "kind": "dense", "max_length": dims.max_length, "num_heads": dims.num_heads, "head_dim": dims.head_dim,
        "dropout": dims.dropout, **kwargs,
    })


# name -> factory(dims, kwargs); the factories import their modules lazily, and pass the layer's
# sizes (heads, head dims, longest sequence) and attention dropout / backend unless given.
_FACTORIES: dict[str, Callable[[MechanismDims, dict[str, Any]], AttentionMechanism]] = {
    "softmax": _softmax,
    "materialized_softmax": _materialized,
    "lsh": _lsh,
    "routing": _routing,
    "sinkhorn": _sinkhorn,
    "linear": _linear,
    "performer": _performer,
    "linformer": _linformer,
    "compressed": _compressed,
    "synthesizer": _synthesizer,
}
MECHANISM_NAMES = tuple(_FACTORIES) + ("heads",)
"""Every name a :class:`MechanismSpec` may use (``heads(...)`` groups heads)."""


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class MechanismSpec:
    """An attention mechanism by name, as a config stores it: ``"softmax"`` (the layer's
    pattern, the default), a mechanism call such as ``"lsh(num_buckets=8, num_rounds=2)"``, or
    ``"heads(softmax, lsh(num_buckets=8))"`` for a different mechanism per group of heads.

    :meth:`build` makes the module for a layer's sizes (None for plain ``"softmax"``: the layer
    then runs its usual path).
    """

    name: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    parts: tuple["MechanismSpec", ...] = ()

    def __post_init__(self) -> None:
        if self.name == "heads":
            if not self.parts or self.kwargs:
                raise ValueError("'heads' takes mechanisms as parts, e.g. heads(softmax, linear)")
            if any(part.name == "heads" for part in self.parts):
                raise ValueError("'heads' groups cannot be nested")
        elif self.name not in _FACTORIES:
            raise ValueError(f"Unknown attention mechanism {self.name!r}; expected one of {', '.join(MECHANISM_NAMES)}")
        elif self.parts:
            raise ValueError(f"Mechanism '{self.name}' takes keyword arguments, not parts")
        object.__setattr__(self, "kwargs", tuple(sorted((str(k), _freeze(v)) for k, v in self.kwargs)))
        object.__setattr__(self, "parts", tuple(self.parts))

    @classmethod
    def parse(cls, text: str) -> "MechanismSpec":
        """Parse ``"name"``, ``"name(key=value, ...)"`` or ``"heads(a, b(...), ...)"``."""
        return cls._from_call(parse_call(text, "attention mechanism", "'softmax' or 'performer(num_features=128)'"))

    @classmethod
    def _from_call(cls, call: Call) -> "MechanismSpec":
        name, kwargs, parts = call
        return cls(name, kwargs, tuple(cls._from_call(part) for part in parts))

    @property
    def is_softmax(self) -> bool:
        """Plain softmax over the pattern (no mechanism module needed)."""
        return self.name == "softmax" and not self.kwargs

    def build(self, dims: MechanismDims) -> AttentionMechanism | None:
        """The module for a layer with ``dims`` (None for plain ``softmax``)."""
        if self.is_softmax:
            return None
        if self.name == "heads":
            if dims.num_heads % len(self.parts):
                raise ValueError(f"{self}: {dims.num_heads} heads cannot be split into {len(self.parts)} equal groups")
            size = dims.num_heads // len(self.parts)
            sub = MechanismDims(size, dims.head_dim, dims.value_head_dim, dims.max_length, dims.dropout, dims.backend)
            return HeadGroups([part._build_one(sub) for part in self.parts])
        return self._build_one(dims)

    def _build_one(self, dims: MechanismDims) -> AttentionMechanism:
        try:
            return _FACTORIES[self.name](dims, dict(self.kwargs))
        except TypeError as error:
            raise ValueError(f"Could not build attention mechanism {self}: {error}") from None

    def __str__(self) -> str:
        return format_call(self.name, self.kwargs, tuple(str(part) for part in self.parts), bare=True)

    def __repr__(self) -> str:
        return f"MechanismSpec({str(self)!r})"


def as_mechanism_spec(value: "MechanismSpec | str") -> MechanismSpec:
    """A :class:`MechanismSpec` from a spec or its string form."""
    if isinstance(value, MechanismSpec):
        return value
    if isinstance(value, str):
        return MechanismSpec.parse(value)
    raise TypeError(f"Expected a MechanismSpec or a string like 'linear', got {type(value).__name__}")
