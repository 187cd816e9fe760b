"""Training batches of similar lengths: less padding for sequence data of mixed lengths."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["LengthBuckets"]


class LengthBuckets:
    """A map-style dataset whose items are whole training batches of similar lengths.

    The examples are put in a seeded random order, cut into pools of ``pool`` batches, each
    pool sorted by length and cut into batches of ``batch_size``: the batches hold examples of
    nearly one length (little padding) and still mix the data set. Give it to
    :func:`~graphattn.train.fit` with ``TrainConfig(batch_size=1)``, which then shuffles the
    *batches* every epoch, and ``collate_fn=buckets.collate``.

    Args:
        data: a map-style dataset of examples.
        lengths: ``[N]`` the length of every example (e.g. tokens per sentence).
        batch_size: examples per batch (the last batch of a pool may be smaller).
        collate: builds one batch from a list of examples (e.g. ``collate_tagged``).
        seed: the seed of the order.
        pool: batches per sorted pool (1: random batches; larger: less padding, less mixing).

    Example:
        >>> buckets = LengthBuckets(list("abcdef"), torch.tensor([3, 1, 2, 6, 5, 4]), 2, list, seed=0, pool=3)
        >>> len(buckets), sorted(sum((buckets.collate([b]) for b in buckets), []))
        (3, ['a', 'b', 'c', 'd', 'e', 'f'])
    """

    def __init__(
        self, data: Any, lengths: Tensor | Sequence[int], batch_size: int,
        collate: Callable[[list], Any], *, seed: int = 0, pool: int = 50,
    ) -> None:
        lengths = torch.as_tensor(lengths)
        if lengths.dim() != 1 or lengths.numel() != len(data):
            raise ValueError(
                f"Expected one length per example ({len(data)}), got lengths of shape {list(lengths.shape)}"
            )
        for name, value in (("batch_size", batch_size), ("pool", pool)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected {name} to be a positive int, got {value!r}")
        if not callable(collate):
            raise TypeError(f"Expected collate to be callable on a list of examples, got {type(collate).__name__}")
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(data), generator=generator)
        self.data = data
        self.collate_examples = collate
        self.batches: list[list[int]] = []
        for start in range(0, len(order), pool * batch_size):
            chunk = order[start:start + pool * batch_size]
            chunk = chunk[torch.argsort(lengths[chunk], stable=True)].tolist()
            self.batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> list:
        return [self.data[i] for i in self.batches[index]]

    def collate(self, items: list[list]) -> Any:
        """The ``collate_fn`` of ``fit`` with ``batch_size=1``: collate the one batch in ``items``."""
        if len(items) != 1:
            raise ValueError(
                f"LengthBuckets items are whole batches: train with TrainConfig(batch_size=1), got {len(items)} per step"
            )
        return self.collate_examples(items[0])
