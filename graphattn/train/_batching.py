"""The data order of :func:`~graphattn.train.fit`: batches per epoch, seeded epoch permutations,
and each rank's share of every global batch."""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from graphattn.train.config import TrainConfig

__all__ = ["Plan", "make_plan", "epoch_seed", "epoch_order", "RankBatches", "check_dataset"]


@dataclass(frozen=True)
class Plan:
    """How many batches and steps this run has."""

    num_samples: int
    batch_size: int
    world_size: int
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int


def make_plan(num_samples: int, config: TrainConfig, world_size: int) -> Plan:
    """The :class:`Plan` of training on ``num_samples`` samples with ``world_size`` processes."""
    full, last = divmod(num_samples, config.batch_size)
    if world_size > 1:
        last -= last % world_size  # an incomplete last batch is trimmed to a multiple of the world size
    batches = full + (1 if last and not config.drop_last else 0)
    if batches == 0:
        raise ValueError(
            f"The training data yields no batch: {num_samples} samples, batch_size={config.batch_size}, "
            f"drop_last={config.drop_last}, world_size={world_size}; use a smaller batch_size or drop_last=False"
        )
    steps_per_epoch = math.ceil(batches / config.grad_accumulation)
    total = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    return Plan(num_samples, config.batch_size, world_size, batches, steps_per_epoch, total)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s data order (and of its DataLoader's generator)."""
    return seed * 1_000_003 + epoch


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool) -> Tensor:
    """``[num_samples]`` sample indices in the order of epoch ``epoch``."""
    if not shuffle:
        return torch.arange(num_samples)
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(num_samples, generator=generator)


class RankBatches:
    """This rank's share of the global batches ``start, start+1, ...`` of one epoch (a DataLoader
    ``batch_sampler``)."""

    def __init__(self, plan: Plan, order: Tensor, start: int, rank: int) -> None:
        self.plan, self.order, self.start, self.rank = plan, order, start, rank

    def __len__(self) -> int:
        return self.plan.batches_per_epoch - self.start

    def __iter__(self) -> Iterator[list[int]]:
        size, world = self.plan.batch_size, self.plan.world_size
        for b in range(self.start, self.plan.batches_per_epoch):
            indices = self.order[b * size : (b + 1) * size]
            usable = len(indices) - len(indices) % world
            share = usable // world
            yield indices[self.rank * share : (self.rank + 1) * share].tolist()


def check_dataset(data: Any, name: str) -> int:
    """``len(data)``, after checking that ``data`` is a map-style dataset (``name`` for the message)."""
    if isinstance(data, IterableDataset) or not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise TypeError(
            f"Expected '{name}' to be a map-style dataset (len() and integer indexing: a torch Dataset, "
            f"a list, a PyG dataset), got {type(data).__name__}; wrap an iterable in a list first"
        )
    return len(data)
