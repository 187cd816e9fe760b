"""Insertion Transformer (Stern, Chan, Kiros & Uszkoreit 2019): the output grows by insertions,
many at once, in about ``log2(n)`` parallel steps.

The decoder reads the current canvas ``[BOS, y'1, ..., y'k, EOS]`` with **non-causal**
self-attention (any pattern) and cross-attention to the encoder -- the encoder and decoder of a
masked-LM :class:`~graphattn.models.NonAutoregressiveTransformer`. Between every two neighbouring
canvas positions lies a *slot* (``k + 1`` of them); slot ``l`` is represented by
``W [h_l; h_{l+1}]`` and scored by the decoder's output layer over the vocabulary, where EOS
means *insert nothing here* (Stern et al.'s end-of-slot token; EOS never appears inside an
output).

Training (:meth:`InsertionTransformer.loss`): for a target ``y1..yn`` a canvas is drawn -- ``k``
uniform in ``0..n``, then ``k`` target positions uniformly, kept in order -- and slot ``l`` must
produce one of the target tokens missing between its neighbours (its *span*), or EOS when the
span is empty. The span's tokens are weighted

* ``"binary_tree"`` (Stern et al.'s balanced binary tree loss): ``w_i ∝ exp(-|i - c| / tau)``
  with ``c`` the span's centre -- the middle token is the preferred insertion, which halves every
  span per step and gives ``~log2(n)`` decoding steps;
* ``"uniform"``: ``w_i = 1 / |span|`` (any missing token is as good).

The loss is ``-sum_l sum_i w_i log p(y_i | slot l)`` averaged over the slots of the batch.

Decoding (:func:`graphattn.decoding.insertion_decode`): from the empty canvas, every step
inserts the arg-max token of every slot that does not choose EOS, all at once, until no slot
inserts anything.

Example:
    >>> import torch
    >>> from graphattn.models import TransformerConfig
    >>> config = TransformerConfig(vocab_size=12, d_model=16, num_heads=2, num_layers=1, ff_dim=32, mask_id=3)
    >>> model = InsertionTransformer(config)
    >>> src = torch.tensor([[4, 5, 6]])
    >>> canvas, lengths = model.canvas([[5]])
    >>> canvas.tolist(), model.slot_logits(model.encode(src), canvas, lengths).shape
    ([[1, 5, 2]], torch.Size([1, 2, 12]))
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphattn.models.nat import NATConfig, NATEncoding, NonAutoregressiveTransformer, canvas_ids
from graphattn.models.transformer import PatternLike, TransformerConfig, Vectors

__all__ = ["InsertionTransformer", "INSERTION_WEIGHTINGS", "slot_targets"]

INSERTION_WEIGHTINGS = ("binary_tree", "uniform")
"""Span weightings of :meth:`InsertionTransformer.loss`."""


def slot_targets(target: Sequence[int], kept: Sequence[int], *, weighting: str = "binary_tree",
                 temperature: float = 1.0) -> list[list[tuple[int, float]]]:
    """For a target and the sorted positions ``kept`` of it on the canvas: per slot (``len(kept)
    + 1`` of them), the ``(token, weight)`` pairs it is trained toward (an empty list: the slot
    must say EOS).

    Example:
        >>> [[(t, round(w, 3)) for t, w in slot] for slot in slot_targets([7, 8, 9], [])]
        [[(8, 0.576), (7, 0.212), (9, 0.212)]]
        >>> slot_targets([7, 8, 9], [1]), slot_targets([7, 8, 9], [0, 1, 2])
        ([[(7, 1.0)], [(9, 1.0)]], [[], [], [], []])
    """
    if weighting not in INSERTION_WEIGHTINGS:
        raise ValueError(f"Expected weighting in {INSERTION_WEIGHTINGS}, got {weighting!r}")
    if temperature <= 0:
        raise ValueError(f"Expected temperature > 0, got {temperature}")
    bounds = [-1, *kept, len(target)]
    slots = []
    for left, right in zip(bounds[:-1], bounds[1:]):
        span = list(range(left + 1, right))
        if not span:
            slots.append([])
            continue
        if weighting == "uniform":
            weights = [1.0 / len(span)] * len(span)
        else:
            centre = (span[0] + span[-1]) / 2
            raw = [math.exp(-abs(i - centre) / temperature) for i in span]
            weights = [r / sum(raw) for r in raw]
        # the centre token first (ties: the left one), for readability of the pairs
        order = sorted(range(len(span)), key=lambda j: (-weights[j], j)) if weighting == "binary_tree" else range(len(span))
        slots.append([(target[span[j]], weights[j]) for j in order])
    return slots


class InsertionTransformer(nn.Module):
    """Insertion Transformer (see the module docstring).

    Args:
        config: sizes, encoder pattern, positions, special ids; needs ``mask_id`` (the decoder
            is a masked-LM NAT decoder; the id is never emitted).
        decoder_pattern: the decoder's self-attention pattern over the canvas (non-causal;
            ``"full"`` by default).

    Shapes:
        ``encode(src [B, S]) -> NATEncoding``; ``slot_logits(encoding, canvas [B, T], lengths [B])
        -> [B, T - 1, V]`` (slot ``l`` between canvas positions ``l`` and ``l + 1``; valid for
        ``l < lengths - 1``); ``loss(src, target [B, n]) -> (scalar, metrics)`` with targets
        without BOS / EOS, right-padded.
    """

    def __init__(self, config: TransformerConfig, *,
                 decoder_pattern: PatternLike | tuple[PatternLike, ...] | None = "full") -> None:
        super().__init__()
        self.nat = NonAutoregressiveTransformer(
            config, NATConfig(length="uniform_copy", decoder_input="mask", decoder_pattern=decoder_pattern)
        )
        self.config = self.nat.config
        width = self.config.d_model
        self.slot_proj = nn.Linear(2 * width, width)

    pad_id = property(lambda self: self.config.pad_id)
    eos_id = property(lambda self: self.config.eos_id)

    def banned_ids(self) -> list[int]:
        """Ids a slot never inserts: PAD, BOS and MASK (EOS is "insert nothing")."""
        cfg = self.config
        return sorted({cfg.pad_id, cfg.bos_id, cfg.mask_id} - {cfg.eos_id})

    def encode(self, src: Tensor | Vectors) -> NATEncoding:
        return self.nat.encode(src)

    def canvas(self, rows: Sequence[Sequence[int]], device: torch.device | None = None) -> tuple[Tensor, Tensor]:
        """``[BOS] + row + [EOS]`` of every row, right-padded: ``(ids [B, T], lengths [B])``."""
        return canvas_ids(rows, self.config, device)

    def slot_logits(self, encoding: NATEncoding, canvas: Tensor, lengths: Tensor) -> Tensor:
        """Scores of every slot over the vocabulary ``[B, T - 1, V]`` (EOS = insert nothing)."""
        states = self.nat.decoder_states(encoding, lengths, tokens=canvas)  # [B, T, E]
        slots = self.slot_proj(torch.cat([states[:, :-1], states[:, 1:]], dim=-1))
        return self.nat.decoder.output(slots)

    def loss(
        self,
        src: Tensor | Vectors,
        target: Tensor,
        *,
        weighting: str = "binary_tree",
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The slot loss on one randomly drawn canvas per example (see the module docstring).

        Args:
            src: ``[B, S]`` source ids (or Vectors).
            target: ``[B, n]`` target ids without BOS / EOS, right-padded with ``pad_id``.
            weighting: ``"binary_tree"`` or ``"uniform"``.
            temperature: ``tau`` of the binary-tree weights.
            generator: random source of the canvases.

        Returns:
            ``(loss, {"slot_accuracy": share of slots whose arg-max is one of their tokens
            (EOS for empty spans)})``.
        """
        cfg = self.config
        if not isinstance(target, Tensor) or target.dim() != 2:
            raise ValueError(f"Expected target ids [B, n] without BOS / EOS, got {getattr(target, 'shape', target)!r}")
        lengths = (target != cfg.pad_id).sum(1).tolist()
        encoding = self.encode(src)
        if len(lengths) != encoding.lengths.numel():
            raise ValueError(f"Expected one target per source ({encoding.lengths.numel()}), got {len(lengths)}")
        rows, kept_tokens = [], []
        for b, n in enumerate(lengths):
            tokens = target[b, :n].tolist()
            k = int(torch.randint(n + 1, (1,), generator=generator))
            kept = sorted(torch.randperm(n, generator=generator)[:k].tolist())
            rows.append(slot_targets(tokens, kept, weighting=weighting, temperature=temperature))
            kept_tokens.append([tokens[i] for i in kept])
        canvas, canvas_lengths = self.canvas(kept_tokens, target.device)
        log_probs = torch.log_softmax(self.slot_logits(encoding, canvas, canvas_lengths).float(), dim=-1)
        batch_index, slot_index, token_index, weights = [], [], [], []
        for b, slots in enumerate(rows):
            for slot, pairs in enumerate(slots):
                for token, weight in (pairs or [(cfg.eos_id, 1.0)]):
                    batch_index.append(b)
                    slot_index.append(slot)
                    token_index.append(token)
                    weights.append(weight)
        device = target.device
        index = (torch.tensor(batch_index, device=device), torch.tensor(slot_index, device=device),
                 torch.tensor(token_index, device=device))
        chosen = log_probs[index]  # [pairs]
        num_slots = sum(len(slots) for slots in rows)
        loss = -(torch.tensor(weights, device=device, dtype=chosen.dtype) * chosen).sum() / num_slots
        with torch.no_grad():
            best = log_probs.argmax(-1)  # [B, T - 1]
            hit = torch.zeros_like(best, dtype=torch.bool)
            hit[index[0], index[1]] |= best[index[0], index[1]] == index[2]
            valid = torch.arange(best.size(1), device=device).unsqueeze(0) < (canvas_lengths - 1).unsqueeze(1)
            accuracy = (hit & valid).sum() / valid.sum()
        return loss, {"slot_accuracy": accuracy}

    def extra_repr(self) -> str:
        return f"decoder_pattern={self.config.decoder_pattern!r}"
