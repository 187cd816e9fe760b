"""Guided attention for monotonic alignments: location-aware attention, a monotonic window
pattern and the diagonal guide loss.

An attention-based recognizer (or a synthesizer) reads its encoder states ``h_1 .. h_T`` from
left to right: output step ``i`` should attend a little later than step ``i - 1``. Three tools
push attention that way, each on the graphattn core (every decoder step is one query per row of
the batch; its candidate encoder positions are the in-edges of an
:class:`~graphattn.graph.AttentionGraph` with ``num_queries = B`` and ``num_keys = B * T``, key
``b * T + j`` being position ``j`` of row ``b``):

* :class:`LocationAwareAttention` (Chorowski et al. 2015, "Attention-Based Models for Speech
  Recognition"): the score of encoder position ``j`` at step ``i`` is
  ``e_ij = w . tanh(W s_i + V h_j + U f_ij)`` where ``f_i = Conv1d(alpha_{i-1})`` are
  convolutional features of the previous alignment at every encoder position. The location term
  ``U f_ij`` is added to the keys of that step, so the score is the additive (Bahdanau) score of
  :class:`~graphattn.nn.MultiheadAttention` (``score="additive"``) and softmax and aggregation
  run on the sparse core. With ``location=False`` it is plain content-only additive attention.
* :func:`monotonic_window_graph`: a hard monotonic constraint that is itself a sparse attention
  pattern: step ``i`` may attend only positions ``[c - back, c + ahead]`` around the peak (or
  centroid) ``c`` of the previous alignment; everything else has no edge, hence weight exactly 0.
  :func:`step_graph` is the unconstrained pattern (every real position of the row).
* :func:`diagonal_guide_loss` (Tachibana et al. 2017, "Efficiently Trainable Text-to-Speech
  System Based on Deep Convolutional Networks with Guided Attention"): a soft penalty on
  attention far from the diagonal, with weights ``W_nt = 1 - exp(-(n/N - t/T)^2 / (2 g^2))``.

:func:`dense_alignment` turns the per-edge weights of one step into ``[B, H, T]``.

Example:
    >>> import torch
    >>> attend = LocationAwareAttention(query_dim=8, key_dim=6, attention_dim=4)
    >>> memory = attend.prepare(torch.randn(2, 5, 6), torch.tensor([5, 3]))   # [B, T, key_dim], lengths
    >>> step = attend(torch.randn(2, 8), memory, attend.initial_alignment(memory))
    >>> step.context.shape, step.alignment.shape                              # [B, query_dim], [B, H, T]
    (torch.Size([2, 8]), torch.Size([2, 1, 5]))
    >>> bool(torch.allclose(step.alignment.sum(-1), torch.ones(2, 1)))
    True
    >>> float(step.alignment[1, 0, 3:].detach().abs().sum())                 # row 1 has 3 real positions
    0.0
"""
from __future__ import annotations

import operator
from typing import NamedTuple

import torch
from torch import Tensor, nn

from graphattn.graph import AttentionGraph
from graphattn.nn.attention import MultiheadAttention

__all__ = [
    "WINDOW_CENTERS",
    "EncodedMemory",
    "AlignmentStep",
    "LocationAwareAttention",
    "step_graph",
    "monotonic_window_graph",
    "window_center",
    "dense_alignment",
    "diagonal_guide_weights",
    "diagonal_guide_loss",
]

WINDOW_CENTERS = ("argmax", "mean")
"""How :func:`monotonic_window_graph` finds the previous alignment's position: its peak or its centroid."""


# ---------------------------------------------------------------------- argument checks
def _int_at_least(value: object, name: str, minimum: int) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"Expected '{name}' to be an int >= {minimum}, got {type(value).__name__}: {value!r}") from None
    if number < minimum:
        raise ValueError(f"Expected '{name}' to be an int >= {minimum}, got {number}")
    return number


def _check_lengths(lengths: object, batch: int | None, num_slots: int | None, name: str = "lengths") -> Tensor:
    """``lengths`` as int64 ``[B]`` with every value in ``[1, num_slots]``, or raise."""
    if not isinstance(lengths, Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"Expected '{name}' to be an integer tensor [B], got {type(lengths).__name__}") from None
    if lengths.dim() != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.is_complex():
        raise ValueError(f"Expected '{name}' to be an integer tensor [B], got {lengths.dtype} {list(lengths.shape)}")
    if batch is not None and lengths.numel() != batch:
        raise ValueError(f"Expected '{name}' of shape [B] = [{batch}], got {list(lengths.shape)}")
    lengths = lengths.long()
    if lengths.numel():
        low, high = int(lengths.min()), int(lengths.max())
        limit = "" if num_slots is None else f", {num_slots}"
        if low < 1 or (num_slots is not None and high > num_slots):
            raise ValueError(
                f"Expected every value of '{name}' in [1{limit}] (at least one real position per row"
                f"{'' if num_slots is None else ', at most the padded size T'}), got values in [{low}, {high}]"
            )
    return lengths


def _check_alignment(alignment: object, name: str) -> Tensor:
    """``[B, T]`` or ``[B, H, T]`` float -> ``[B, H, T]``."""
    if not isinstance(alignment, Tensor) or not alignment.is_floating_point() or alignment.dim() not in (2, 3):
        got = f"{alignment.dtype} {list(alignment.shape)}" if isinstance(alignment, Tensor) else type(alignment).__name__
        raise ValueError(f"Expected '{name}' to be a float tensor [B, T] or [B, H, T], got {got}")
    return alignment if alignment.dim() == 3 else alignment.unsqueeze(1)


# ---------------------------------------------------------------------- patterns of one decoder step
def step_graph(lengths: Tensor, num_slots: int) -> AttentionGraph:
    """The unconstrained pattern of one decoder step: query ``b`` (row ``b`` of the batch) ->
    every real encoder position of its row.

    Args:
        lengths: ``[B]`` int, real encoder positions per row (``1 <= lengths <= num_slots``).
        num_slots: ``T``, the padded encoder length.

    Returns:
        An :class:`~graphattn.graph.AttentionGraph` with ``num_queries = B``, ``num_keys = B * T``;
        key ``b * T + j`` is position ``j`` of row ``b``; ``sum(lengths)`` edges.

    Example:
        >>> step_graph(torch.tensor([3, 1]), 3).to_dense().int().tolist()
        [[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0]]
    """
    num_slots = _int_at_least(num_slots, "num_slots", 1)
    lengths = _check_lengths(lengths, None, num_slots)
    batch = lengths.numel()
    positions = torch.arange(num_slots, device=lengths.device)
    allowed = positions < lengths[:, None]  # [B, T]
    keys = torch.arange(batch, device=lengths.device)[:, None] * num_slots + positions  # [B, T]
    return _row_graph(keys[allowed], allowed.sum(1), batch, batch * num_slots)


def window_center(previous_alignment: Tensor, lengths: Tensor, center: str = "argmax") -> Tensor:
    """The position of each row's previous alignment: ``[B, T]`` or ``[B, H, T]`` (heads are
    averaged) -> ``[B]`` int64 in ``[0, lengths - 1]``.

    ``center="argmax"``: the peak (ties: the first); ``"mean"``: the centroid
    ``sum_j j alpha_j / sum_j alpha_j``, rounded (0 for an all-zero row).
    """
    if center not in WINDOW_CENTERS:
        raise ValueError(f"Expected center to be one of {WINDOW_CENTERS}, got {center!r}")
    alignment = _check_alignment(previous_alignment, "previous_alignment").detach().float().mean(1)  # [B, T]
    batch, num_slots = alignment.shape
    lengths = _check_lengths(lengths, batch, num_slots).to(alignment.device)
    positions = torch.arange(num_slots, device=alignment.device)
    alignment = alignment.masked_fill(positions >= lengths[:, None], 0.0)
    if center == "argmax":
        middle = alignment.argmax(1)
    else:
        total = alignment.sum(1)
        middle = torch.where(total > 0, (alignment * positions).sum(1) / total.clamp_min(1e-30), torch.zeros_like(total))
        middle = middle.round().long()
    return torch.minimum(middle.clamp_min(0), lengths - 1)


def monotonic_window_graph(
    previous_alignment: Tensor,
    lengths: Tensor,
    back: int = 1,
    ahead: int = 3,
    *,
    center: str = "argmax",
) -> AttentionGraph:
    """A monotonic attention window as a sparse pattern: step ``i`` may attend only positions
    ``j`` with ``c_b - back <= j <= c_b + ahead`` and ``0 <= j < lengths[b]``, where ``c_b`` is the
    position of the previous alignment of row ``b`` (:func:`window_center`). The window never
    empties: ``c_b`` is clamped into the row.

    Args:
        previous_alignment: ``[B, T]`` or ``[B, H, T]`` float, the alignment of step ``i - 1``
            (for the first step, e.g. a one-hot at position 0).
        lengths: ``[B]`` int, real encoder positions per row.
        back: how many positions before the centre stay allowed (0: never move back).
        ahead: how many positions after it are allowed (the largest jump per step).
        center: ``"argmax"`` or ``"mean"`` (see :func:`window_center`).

    Returns:
        An :class:`~graphattn.graph.AttentionGraph` with ``num_queries = B`` and
        ``num_keys = B * T`` (key ``b * T + j`` = position ``j`` of row ``b``), at most
        ``back + ahead + 1`` edges per row. Attention over it gives exactly zero weight outside
        the window.

    Example:
        >>> previous = torch.tensor([[0.1, 0.7, 0.2, 0.0, 0.0, 0.0]])
        >>> monotonic_window_graph(previous, torch.tensor([6]), back=0, ahead=2).to_dense().int().tolist()
        [[0, 1, 1, 1, 0, 0]]
    """
    back = _int_at_least(back, "back", 0)
    ahead = _int_at_least(ahead, "ahead", 0)
    alignment = _check_alignment(previous_alignment, "previous_alignment")
    batch, num_slots = alignment.size(0), alignment.size(-1)
    lengths = _check_lengths(lengths, batch, num_slots).to(alignment.device)
    middle = window_center(alignment, lengths, center)  # [B]
    offsets = torch.arange(-back, ahead + 1, device=alignment.device)  # [W]
    positions = middle[:, None] + offsets  # [B, W], increasing along W
    allowed = (positions >= 0) & (positions < lengths[:, None])
    keys = torch.arange(batch, device=alignment.device)[:, None] * num_slots + positions
    return _row_graph(keys[allowed], allowed.sum(1), batch, batch * num_slots)


def _row_graph(col: Tensor, counts: Tensor, num_queries: int, num_keys: int) -> AttentionGraph:
    crow = torch.zeros(num_queries + 1, dtype=torch.long, device=col.device)
    crow[1:] = torch.cumsum(counts, 0)
    return AttentionGraph(crow, col.long(), num_queries, num_keys, validate=False)


def dense_alignment(weights: Tensor, graph: AttentionGraph, num_slots: int) -> Tensor:
    """Per-edge weights of one decoder step ``[E, H]`` over a step pattern (:func:`step_graph`,
    :func:`monotonic_window_graph`: ``num_keys = B * T``) -> ``[B, H, T]``, zero where there is no
    edge. Differentiable."""
    num_slots = _int_at_least(num_slots, "num_slots", 1)
    if weights.dim() != 2 or weights.size(0) != graph.num_edges:
        raise ValueError(f"Expected per-edge weights [E, H] with E = {graph.num_edges}, got {list(weights.shape)}")
    if graph.num_keys != graph.num_queries * num_slots:
        raise ValueError(
            f"Expected a step pattern with num_keys = B * T = {graph.num_queries} * {num_slots}, got "
            f"num_keys = {graph.num_keys}"
        )
    dense = weights.new_zeros(graph.num_keys, weights.size(1)).index_add(0, graph.col.to(weights.device), weights)
    return dense.view(graph.num_queries, num_slots, weights.size(1)).transpose(1, 2)


# ---------------------------------------------------------------------- location-aware attention
class EncodedMemory(NamedTuple):
    """The encoder states as an attention layer reads them, computed once per utterance by
    :meth:`LocationAwareAttention.prepare`.

    Attributes:
        keys: ``[B * T, H, D]`` the projected keys ``V h_j`` (plus the projection's bias).
        values: ``[B * T, H, Dv]`` the projected values.
        lengths: ``[B]`` int64 real positions per row.
        num_slots: ``T``.
        graph: :func:`step_graph` of ``lengths`` (every real position).
    """

    keys: Tensor
    values: Tensor
    lengths: Tensor
    num_slots: int
    graph: AttentionGraph

    @property
    def batch(self) -> int:
        return self.lengths.numel()

    def select(self, index: Tensor) -> "EncodedMemory":
        """The rows ``index`` ``[B']`` (reordered, duplicated: beam search) as a new memory."""
        index = index.to(self.lengths.device).long()
        T = self.num_slots
        keys = self.keys.view(self.batch, T, *self.keys.shape[1:])[index].reshape(-1, *self.keys.shape[1:])
        values = self.values.view(self.batch, T, *self.values.shape[1:])[index].reshape(-1, *self.values.shape[1:])
        lengths = self.lengths[index]
        return EncodedMemory(keys, values, lengths, T, step_graph(lengths, T))


class AlignmentStep(NamedTuple):
    """One decoder step of :class:`LocationAwareAttention`.

    Attributes:
        context: ``[B, query_dim]`` the attended encoder summary (after the output projection).
        alignment: ``[B, H, T]`` the softmax weights over encoder positions, zero at padding and
            off the step's pattern; every row sums to 1.
        weights: ``[E, H]`` the same weights per edge of ``graph`` (CSR order).
        graph: the step's pattern (``num_queries = B``, ``num_keys = B * T``).
    """

    context: Tensor
    alignment: Tensor
    weights: Tensor
    graph: AttentionGraph


class LocationAwareAttention(nn.Module):
    """Location-aware additive attention of one decoder step (Chorowski et al. 2015), on the
    graphattn core.

    For decoder state ``s_i`` (the query), encoder states ``h_j`` and the previous alignment
    ``alpha_{i-1}`` ``[B, H, T]``, head ``h`` scores position ``j`` as

        ``e_ij = w_h . tanh(W s_i + V h_j + U f_ij)``,   ``f_i = Conv1d(alpha_{i-1})``

    (``location_channels`` filters of width ``location_kernel`` over the encoder positions, one
    input channel per head; zero padding, so padded positions, whose alignment is 0, change
    nothing), then ``alpha_i = softmax_j(e_ij)`` over the step's pattern and the context is
    ``out_proj(sum_j alpha_ij v_j)``. ``W``, ``V``, ``w_h`` and the value/output projections are
    those of a :class:`~graphattn.nn.MultiheadAttention` with ``score="additive"``
    (``self.attention``); ``U f_i`` is added to its keys for the step, so the per-edge additive
    score, the softmax and the weighted sum run on :func:`graphattn.attention`.

    With ``location=False`` there is no ``U f`` term: content-only additive (Bahdanau) attention.

    Args:
        query_dim: size of the decoder state ``s_i``; also the size of the returned context.
        key_dim: size of the encoder states ``h_j``.
        attention_dim: total size of ``W s``, ``V h``, ``U f`` over heads (``H * D``).
        num_heads: ``H`` (Chorowski et al.: 1).
        location: add the location term.
        location_channels: number of convolution filters (``k`` in the paper).
        location_kernel: odd filter width ``r`` (in encoder positions).
        backend: :func:`graphattn.attention` backend.

    Shapes:
        :meth:`prepare`: memory ``[B, T, key_dim]``, lengths ``[B]`` -> :class:`EncodedMemory`;
        :meth:`forward`: query ``[B, query_dim]``, memory, previous alignment ``[B, H, T]`` (or
        ``[B, T]`` with one head) -> :class:`AlignmentStep`.
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        attention_dim: int = 128,
        *,
        num_heads: int = 1,
        location: bool = True,
        location_channels: int = 10,
        location_kernel: int = 15,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        query_dim = _int_at_least(query_dim, "query_dim", 1)
        key_dim = _int_at_least(key_dim, "key_dim", 1)
        attention_dim = _int_at_least(attention_dim, "attention_dim", 1)
        num_heads = _int_at_least(num_heads, "num_heads", 1)
        if attention_dim % num_heads:
            raise ValueError(
                f"Expected attention_dim divisible by num_heads (got attention_dim={attention_dim}, "
                f"num_heads={num_heads})"
            )
        self.attention = MultiheadAttention(
            query_dim, num_heads, kdim=key_dim, vdim=key_dim, head_dim=attention_dim // num_heads,
            score="additive", backend=backend,
        )
        self.location = bool(location)
        if self.location:
            location_channels = _int_at_least(location_channels, "location_channels", 1)
            location_kernel = _int_at_least(location_kernel, "location_kernel", 1)
            if location_kernel % 2 == 0:
                raise ValueError(f"Expected an odd 'location_kernel' (centred filters), got {location_kernel}")
            self.location_conv: nn.Conv1d | None = nn.Conv1d(
                num_heads, location_channels, location_kernel, padding=location_kernel // 2, bias=False
            )
            self.location_proj: nn.Linear | None = nn.Linear(location_channels, attention_dim, bias=False)
        else:
            self.location_conv = None
            self.location_proj = None
        self.query_dim, self.key_dim, self.num_heads = query_dim, key_dim, num_heads
        self.head_dim = attention_dim // num_heads

    def extra_repr(self) -> str:
        if not self.location:
            return "location=False"
        conv = self.location_conv
        return f"location=True, location_channels={conv.out_channels}, location_kernel={conv.kernel_size[0]}"

    def prepare(self, memory: Tensor, lengths: Tensor) -> EncodedMemory:
        """Project the encoder states once per utterance: ``memory [B, T, key_dim]`` (values at
        padded slots are ignored), ``lengths [B]`` -> :class:`EncodedMemory`."""
        if not isinstance(memory, Tensor) or memory.dim() != 3 or not memory.is_floating_point():
            got = f"{memory.dtype} {list(memory.shape)}" if isinstance(memory, Tensor) else type(memory).__name__
            raise ValueError(f"Expected 'memory' to be a float tensor [B, T, key_dim], got {got}")
        if memory.size(-1) != self.key_dim:
            raise ValueError(f"Expected memory with key_dim = {self.key_dim} features, got {list(memory.shape)}")
        batch, num_slots = memory.shape[:2]
        lengths = _check_lengths(lengths, batch, num_slots).to(memory.device)
        flat = memory.reshape(batch * num_slots, self.key_dim)
        keys, values = self.attention.project_key_value(flat, flat)
        return EncodedMemory(keys, values, lengths, num_slots, step_graph(lengths, num_slots))

    def initial_alignment(self, memory: EncodedMemory) -> Tensor:
        """``[B, H, T]``: all the weight on position 0 (the alignment "before" the first step)."""
        alignment = memory.keys.new_zeros(memory.batch, self.num_heads, memory.num_slots)
        alignment[:, :, 0] = 1.0
        return alignment

    def location_features(self, previous_alignment: Tensor) -> Tensor:
        """``U Conv1d(alpha_{i-1})``: ``[B, H, T]`` -> ``[B, T, H, D]`` (zeros without the location
        term)."""
        batch, heads, num_slots = previous_alignment.shape
        if self.location_conv is None:
            return previous_alignment.new_zeros(batch, num_slots, heads, self.head_dim)
        features = self.location_conv(previous_alignment).transpose(1, 2)  # [B, T, channels]
        return self.location_proj(features).view(batch, num_slots, heads, self.head_dim)

    def forward(
        self,
        query: Tensor,
        memory: EncodedMemory,
        previous_alignment: Tensor | None = None,
        *,
        graph: AttentionGraph | None = None,
    ) -> AlignmentStep:
        """One decoder step.

        Args:
            query: ``[B, query_dim]`` decoder states ``s_i``.
            memory: from :meth:`prepare`.
            previous_alignment: ``[B, H, T]`` (or ``[B, T]`` with one head) ``alpha_{i-1}``;
                needed with the location term (start with :meth:`initial_alignment`).
            graph: the step's pattern, e.g. :func:`monotonic_window_graph`; default
                ``memory.graph`` (every real position). ``num_queries = B``, ``num_keys = B * T``.

        Returns:
            :class:`AlignmentStep` ``(context [B, query_dim], alignment [B, H, T], weights [E, H], graph)``.
        """
        if not isinstance(memory, EncodedMemory):
            raise TypeError(f"Expected 'memory' from LocationAwareAttention.prepare, got {type(memory).__name__}")
        batch, num_slots = memory.batch, memory.num_slots
        if not isinstance(query, Tensor) or query.shape != (batch, self.query_dim) or not query.is_floating_point():
            got = f"{query.dtype} {list(query.shape)}" if isinstance(query, Tensor) else type(query).__name__
            raise ValueError(f"Expected 'query' to be a float tensor [B, query_dim] = [{batch}, {self.query_dim}], got {got}")
        keys = memory.keys
        if self.location:
            if previous_alignment is None:
                raise ValueError(
                    "Location-aware attention needs 'previous_alignment' [B, H, T]; start with "
                    "initial_alignment(memory)"
                )
            previous = _check_alignment(previous_alignment, "previous_alignment")
            if previous.shape != (batch, self.num_heads, num_slots):
                raise ValueError(
                    f"Expected 'previous_alignment' of shape [B, H, T] = [{batch}, {self.num_heads}, {num_slots}], "
                    f"got {list(previous_alignment.shape)}"
                )
            keys = keys + self.location_features(previous.to(keys.dtype)).reshape_as(keys)
        if graph is None:
            graph = memory.graph
        elif not isinstance(graph, AttentionGraph):
            raise TypeError(f"Expected 'graph' to be an AttentionGraph, got {type(graph).__name__}")
        elif graph.num_queries != batch or graph.num_keys != batch * num_slots:
            raise ValueError(
                f"Expected a step pattern with num_queries = B = {batch} and num_keys = B * T = {batch * num_slots}, "
                f"got num_queries = {graph.num_queries}, num_keys = {graph.num_keys}"
            )
        q = self.attention.project_query(query)  # [B, H, D]
        heads, weights = self.attention.attend(q, keys, memory.values, graph, None, need_weights=True)
        context = self.attention.project_output(heads, graph)  # [B, query_dim]
        return AlignmentStep(context, dense_alignment(weights, graph, num_slots), weights, graph)


# ---------------------------------------------------------------------- the diagonal guide loss
def diagonal_guide_weights(out_length: int, in_length: int, g: float = 0.2, *, device=None, dtype=None) -> Tensor:
    """Tachibana et al.'s penalty ``W_nt = 1 - exp(-(n/N - t/T)^2 / (2 g^2))`` for ``n < N`` output
    steps and ``t < T`` input positions: ``[N, T]`` (0 on the diagonal ``n/N = t/T``, towards 1
    far from it).

    Example:
        >>> diagonal_guide_weights(2, 2, g=0.5)
        tensor([[0.0000, 0.3935],
                [0.3935, 0.0000]])
    """
    out_length = _int_at_least(out_length, "out_length", 1)
    in_length = _int_at_least(in_length, "in_length", 1)
    g = _positive_float(g, "g")
    n = torch.arange(out_length, device=device, dtype=dtype or torch.float32) / out_length
    t = torch.arange(in_length, device=device, dtype=dtype or torch.float32) / in_length
    return 1.0 - torch.exp(-((n[:, None] - t[None, :]) ** 2) / (2.0 * g * g))


def _positive_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"Expected '{name}' to be a positive number, got {value!r}")
    return float(value)


def diagonal_guide_loss(
    alignments: Tensor,
    out_lengths: Tensor,
    in_lengths: Tensor,
    g: float = 0.2,
) -> Tensor:
    """The guided-attention loss of Tachibana et al. (2017): the attention mass off the diagonal,
    ``sum_b sum_{n < N_b, t < T_b} A_bnt W_nt^{(b)} / sum_b N_b`` with
    ``W_nt^{(b)} = 1 - exp(-(n/N_b - t/T_b)^2 / (2 g^2))`` (:func:`diagonal_guide_weights`): the
    mean penalty per real output step. Every row of an alignment sums to 1, so the loss lies in
    ``[0, 1)``; it is 0 when every step attends only where ``t/T_b = n/N_b``.

    Args:
        alignments: ``[B, N, T]`` (or ``[B, H, N, T]``: heads are averaged) attention weights of
            output step ``n`` over input position ``t``; steps ``n >= out_lengths[b]`` and
            positions ``t >= in_lengths[b]`` are ignored.
        out_lengths: ``[B]`` int, real output steps per row (``1 <= N_b <= N``).
        in_lengths: ``[B]`` int, real input positions per row (``1 <= T_b <= T``).
        g: width of the allowed band (0.2 in the paper; larger is more lenient).

    Returns:
        A scalar tensor, differentiable with respect to ``alignments``.
    """
    if not isinstance(alignments, Tensor) or not alignments.is_floating_point() or alignments.dim() not in (3, 4):
        got = f"{alignments.dtype} {list(alignments.shape)}" if isinstance(alignments, Tensor) else type(alignments).__name__
        raise ValueError(f"Expected 'alignments' to be a float tensor [B, N, T] or [B, H, N, T], got {got}")
    if alignments.dim() == 4:
        alignments = alignments.mean(1)
    batch, steps, slots = alignments.shape
    out_lengths = _check_lengths(out_lengths, batch, steps, "out_lengths").to(alignments.device)
    in_lengths = _check_lengths(in_lengths, batch, slots, "in_lengths").to(alignments.device)
    g = _positive_float(g, "g")
    n = torch.arange(steps, device=alignments.device, dtype=alignments.dtype)
    t = torch.arange(slots, device=alignments.device, dtype=alignments.dtype)
    relative_n = n[None, :] / out_lengths[:, None].to(alignments.dtype)  # [B, N]
    relative_t = t[None, :] / in_lengths[:, None].to(alignments.dtype)  # [B, T]
    weights = 1.0 - torch.exp(-((relative_n[:, :, None] - relative_t[:, None, :]) ** 2) / (2.0 * g * g))  # [B, N, T]
    real = (n[None, :] < out_lengths[:, None])[:, :, None] & (t[None, :] < in_lengths[:, None])[:, None, :]
    penalty = (alignments * weights).masked_fill(~real, 0.0).sum()
    return penalty / out_lengths.sum().to(alignments.dtype)
