"""Learning-rate schedules and optimizers built from a :class:`~graphattn.train.TrainConfig`."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from graphattn.train._common import check_choice
from graphattn.train.config import SCHEDULES, TrainConfig

__all__ = ["lr_multiplier", "make_scheduler", "make_optimizer", "BudgetCosine"]

_NEED_TOTAL_STEPS = ("linear", "cosine")  # the schedules that decay to 0 at the last step


def lr_multiplier(step: int, *, schedule: str, warmup_steps: int = 0, total_steps: int | None = None) -> float:
    """The factor multiplying the peak learning rate at optimizer step ``step`` (0-based).

    With ``n = step + 1`` (1-based step number), ``W = warmup_steps``, ``T = total_steps``:

    * warm-up (every schedule), ``n <= W``: ``n / W``;
    * ``"constant"``: 1;
    * ``"linear"``: ``(T - step) / (T - W)``: 1 right after warm-up, falling by the same amount
      each step to reach 0 at step ``T`` (one past the last step, which uses ``1 / (T - W)``,
      so no step is wasted at lr 0; the convention of HF ``get_linear_schedule_with_warmup``);
    * ``"cosine"``: ``(1 + cos(pi * (step - W) / (T - W))) / 2``, same end point;
    * ``"inverse_sqrt"``: ``sqrt(W / n)`` (``1 / sqrt(n)`` without warm-up). Together with the
      warm-up this is Vaswani et al.'s ``d_model**-0.5 * min(n**-0.5, n * W**-1.5)`` up to the
      constant: ``lr = d_model**-0.5 * W**-0.5`` gives the paper's schedule exactly.

    Example:
        >>> [round(lr_multiplier(i, schedule="linear", warmup_steps=2, total_steps=6), 3) for i in range(6)]
        [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    """
    check_choice(schedule, SCHEDULES, "schedule")
    n = step + 1
    if warmup_steps and n <= warmup_steps:
        return n / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "inverse_sqrt":
        return math.sqrt(warmup_steps / n) if warmup_steps else 1.0 / math.sqrt(n)
    _check_total_steps(schedule, total_steps)
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, *, warmup_steps: int = 0, total_steps: int | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_multiplier`; call ``scheduler.step()`` after every
    ``optimizer.step()``. The optimizer's current lr of each group is the peak."""
    check_choice(schedule, SCHEDULES, "schedule")
    _check_total_steps(schedule, total_steps)

    def multiplier(step: int) -> float:  # a plain function: LambdaLR.state_dict() does not store it
        return lr_multiplier(step, schedule=schedule, warmup_steps=warmup_steps, total_steps=total_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def make_optimizer(parameters: Any, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` over ``parameters`` with ``config``'s lr, weight decay,
    betas / eps (Adam, AdamW) or momentum (SGD)."""
    if config.optimizer in ("adamw", "adam"):
        adam = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        return adam(parameters, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)



def _check_total_steps(schedule: str, total_steps: int | None) -> None:
    if schedule in _NEED_TOTAL_STEPS and total_steps is None:
        raise ValueError(f"schedule={schedule!r} needs total_steps (the number of optimizer steps); got None")


class BudgetCosine:
    """Learning-rate multiplier (for ``torch.optim.lr_scheduler.LambdaLR``) for training to a
    budget of steps, of wall-clock time, or of both: linear warm-up over ``warmup`` steps, then a
    cosine from 1 to 0 over the larger of the two progress fractions, ``(step - warmup) /
    (total_steps - warmup)`` and ``elapsed seconds / seconds`` -- the rate reaches 0 when the
    first budget is used up (budgeted training, Li et al. 2020). The clock starts at the first
    call.

    Example:
        >>> schedule = BudgetCosine(warmup=2, total_steps=6)
        >>> [round(schedule(step), 3) for step in range(7)]
        [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    """

    def __init__(self, warmup: int = 0, *, total_steps: int | None = None, seconds: float | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"Expected warmup to be an int >= 0, got {warmup!r}")
        if total_steps is None and not seconds:
            raise ValueError("Expected a budget: total_steps, seconds or both")
        if total_steps is not None and total_steps < 1:
            raise ValueError(f"Expected total_steps >= 1, got {total_steps}")
        if seconds is not None and seconds < 0:
            raise ValueError(f"Expected seconds >= 0, got {seconds}")
        self.warmup, self.total_steps, self.seconds, self.clock = warmup, total_steps, seconds, clock
        self.start: float | None = None

    def __call__(self, step: int) -> float:
        if self.start is None:
            self.start = self.clock()
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        progress = 0.0
        if self.total_steps is not None:
            progress = (step - self.warmup) / max(1, self.total_steps - self.warmup)
        if self.seconds:
            progress = max(progress, (self.clock() - self.start) / self.seconds)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
