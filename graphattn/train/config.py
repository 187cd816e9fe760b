"""What :func:`~graphattn.train.fit` is told and what it tells back: :class:`TrainConfig`,
:class:`TrainState`, :class:`FitResult`, :class:`Callback`, and the names of the schedules and
optimizers a config may ask for."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from graphattn.train._common import check_choice, check_int

__all__ = ["SCHEDULES", "OPTIMIZERS", "TrainConfig", "TrainState", "FitResult", "Callback"]

SCHEDULES = ("constant", "linear", "cosine", "inverse_sqrt")
"""Learning-rate schedules of :class:`TrainConfig` / :func:`~graphattn.train.make_scheduler`."""
OPTIMIZERS = ("adamw", "adam", "sgd")
"""Optimizers of :class:`TrainConfig` / :func:`~graphattn.train.make_optimizer`."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything :func:`~graphattn.train.fit` needs to know, passed whole (and stored in checkpoints).

    Attributes:
        epochs: passes over the training data.
        max_steps: optimizer steps; training ends at ``epochs`` or ``max_steps``, whichever
            comes first. ``None`` = no step limit.
        batch_size: the GLOBAL batch of one forward pass (split evenly across processes).
            An optimizer step uses ``batch_size * grad_accumulation`` samples.
        lr: peak learning rate (the schedules multiply it by a factor <= 1).
        weight_decay: decoupled (AdamW) or L2 (Adam, SGD) weight decay, on every parameter.
        betas, eps: Adam / AdamW coefficients (defaults of Vaswani et al. 2017).
        momentum: SGD momentum.
        optimizer: one of :data:`OPTIMIZERS`; ignored when ``fit`` receives an optimizer.
        schedule: one of :data:`SCHEDULES`, see :func:`~graphattn.train.lr_multiplier`.
        warmup_steps: optimizer steps of linear warm-up.
        clip_grad_norm: clip the global gradient 2-norm to this value (``None`` = no clipping).
        grad_accumulation: global batches per optimizer step.
        seed: seeds the data order and, at the start of a fresh run, the global RNGs
            (``torch``, ``numpy``, ``random``) with ``seed + rank``.
        shuffle: draw a new seeded permutation of the training data each epoch.
        drop_last: drop an incomplete last batch of each epoch. With several processes an
            incomplete last batch is always trimmed to a multiple of the world size.
        eval_every: optimizer steps between validations; ``None`` = at the end of each epoch.
            There is always a validation after the last step.
        monitor: the validation metric that picks the best model and drives early stopping.
        mode: ``"min"`` or ``"max"``: whether a smaller or a larger ``monitor`` is better.
        min_delta: an improvement must beat the best value by more than this.
        patience: validations without improvement before stopping; ``None`` = never stop early.
        checkpoint_every: optimizer steps between checkpoints; ``None`` = at every validation
            point (each epoch end when ``eval_every`` is None). Always at the end, and on an
            exception.
        log_every: optimizer steps between train-loss log events (mean over those steps).
        progress: show a tqdm bar (rank 0 only, and only when stderr is a terminal: tqdm's
            ``disable=None``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``... Default: ``cuda:LOCAL_RANK`` in a
            multi-process CUDA run, else the device of the model's parameters when not CPU,
            else CUDA when available, else CPU.
        num_workers: DataLoader worker processes.
    """

    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    momentum: float = 0.0
    optimizer: str = "adamw"
    schedule: str = "constant"
    warmup_steps: int = 0
    clip_grad_norm: float | None = None
    grad_accumulation: int = 1
    seed: int = 0
    shuffle: bool = True
    drop_last: bool = False
    eval_every: int | None = None
    monitor: str = "val_loss"
    mode: str = "min"
    min_delta: float = 0.0
    patience: int | None = None
    checkpoint_every: int | None = None
    log_every: int = 10
    progress: bool = True
    device: str | None = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", minimum=1)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_int(self.warmup_steps, "warmup_steps", minimum=0)
        check_int(self.grad_accumulation, "grad_accumulation", minimum=1)
        check_int(self.seed, "seed", minimum=0)
        check_int(self.log_every, "log_every", minimum=1)
        check_int(self.num_workers, "num_workers", minimum=0)
        for name in ("max_steps", "eval_every", "checkpoint_every"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, minimum=1)
        if self.patience is not None:
            check_int(self.patience, "patience", minimum=0)
        check_choice(self.optimizer, OPTIMIZERS, "optimizer")
        check_choice(self.schedule, SCHEDULES, "schedule")
        if self.mode not in ("min", "max"):
            raise ValueError(f"Expected mode 'min' or 'max', got {self.mode!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"Expected a positive lr, got {self.lr!r}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"Expected clip_grad_norm > 0 or None, got {self.clip_grad_norm!r}")
        if len(tuple(self.betas)) != 2:
            raise ValueError(f"Expected betas = (beta1, beta2), got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what checkpoints store under ``"config"``)."""
        return dataclasses.asdict(self)


@dataclass
class TrainState:
    """Where training stands; what ``loss_fn`` and callbacks see (one object, updated in place).

    Attributes:
        step: optimizer steps completed.
        epoch: epochs completed (the 0-based index of the current epoch).
        batch_in_epoch: global batches of the current epoch already consumed; while
            ``loss_fn`` runs, the index of the batch being processed.
        batches_per_epoch, steps_per_epoch, total_steps: the plan of this run.
        training: False while evaluating.
        loss: this rank's loss of the last optimizer step (mean over its accumulated batches),
            a detached 0-d tensor (``.item()`` it when you need a float; that synchronizes CUDA).
        lr: learning rate of the first parameter group, as used by the last step.
        metrics: the last validation's metrics.
        best_metric, best_step: best ``monitor`` value so far and the step it was reached at.
        rank, world_size, device: this process.
        should_stop: set it to True in a callback to end training after the current step.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    batches_per_epoch: int = 0
    steps_per_epoch: int = 0
    total_steps: int = 0
    training: bool = True
    loss: Tensor | None = None
    lr: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    best_metric: float | None = None
    best_step: int | None = None
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    should_stop: bool = False

    @property
    def epochs_completed(self) -> float:
        """``epoch + batch_in_epoch / batches_per_epoch``."""
        if not self.batches_per_epoch:
            return float(self.epoch)
        return self.epoch + self.batch_in_epoch / self.batches_per_epoch


@dataclass
class FitResult:
    """What :func:`~graphattn.train.fit` returns.

    Attributes:
        best_metric: best value of ``config.monitor`` (None without validation).
        best_step: the optimizer step that reached it.
        steps: optimizer steps completed (over all resumed runs).
        epochs_completed: epochs as a float (2.5 = two epochs and half of the third).
        stopped_early: patience ran out (or a callback set ``should_stop``).
        history: the log and validation events, as written to ``metrics.jsonl``.
        out_dir: where the files are (None without ``out_dir``).
        resumed_from: the step the run resumed from (None for a fresh run).
    """

    best_metric: float | None
    best_step: int | None
    steps: int
    epochs_completed: float
    stopped_early: bool
    history: list[dict]
    out_dir: Path | None
    resumed_from: int | None = None


class Callback:
    """Hooks into :func:`~graphattn.train.fit`; override what you need. A plain callable
    ``f(state)`` passed in ``callbacks`` is called like :meth:`on_step_end`.

    The hooks run on every rank; a callback that raises stops training after a checkpoint of
    the last completed step is written (see :func:`~graphattn.train.fit`).
    """

    def on_train_start(self, state: TrainState) -> None:
        """Before the first step of this run (after a resume, at the resumed position)."""

    def on_step_end(self, state: TrainState) -> None:
        """After each optimizer step (``state.step`` already counts it), before validation."""

    def on_validation_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        """After each validation; ``state.best_metric`` already accounts for ``metrics``."""

    def on_train_end(self, state: TrainState, result: FitResult) -> None:
        """After the last step and the final checkpoint (not called when training raised)."""

    def state_dict(self) -> dict[str, Any] | None:
        """What this callback must carry over an interruption (tensors, numbers, strings, lists
        and dicts of them), saved in ``checkpoint.pt``; ``None`` (default) = nothing."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` when :func:`~graphattn.train.fit` resumes (before
        :meth:`on_train_start`)."""


LossOutput = Tensor | tuple[Tensor, Mapping[str, Any]]
"""What a ``loss_fn`` returns: a scalar loss, or the loss and extra values to log."""
LossFn = Callable[[nn.Module, Any, TrainState], LossOutput]
"""``loss_fn(model, batch, state)``, the training objective :func:`~graphattn.train.fit` takes."""
EvaluateFn = Callable[[nn.Module, Any], Mapping[str, float]]
"""``evaluate_fn(model, val_data) -> {metric: value}``, a custom validation."""
