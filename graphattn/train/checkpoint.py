"""The files :func:`~graphattn.train.fit` writes in ``out_dir``, written atomically, and
:func:`load_checkpoint` to read them back."""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from graphattn.train.devices import unwrap_model

__all__ = ["CheckpointInfo", "load_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"
"""Everything needed to resume (rank 0's RNG states included)."""
BEST_NAME = "best.pt"
"""The model at the best validation."""
METRICS_NAME = "metrics.jsonl"
"""One JSON object per log or validation event."""
CHECKPOINT_FORMAT = "graphattn.train/1"
"""The ``"format"`` entry of every file :func:`~graphattn.train.fit` writes with ``torch.save``."""


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in ``path``'s folder, fsync, then ``os.replace``: a
    reader sees the old file or the new one, never a partial one."""
    _atomic_write(Path(path), lambda handle: torch.save(obj, handle), binary=True)


def atomic_write_text(text: str, path: Path) -> None:
    """Write ``text`` (UTF-8) to ``path`` the way :func:`atomic_save` writes."""
    _atomic_write(Path(path), lambda handle: handle.write(text), binary=False)


def rank_file(out_dir: Path, rank: int) -> Path:
    """Where rank ``rank > 0`` keeps its own RNG states and running log sums."""
    return out_dir / f"checkpoint.rank{rank}.pt"


def _atomic_write(path: Path, write: Callable[[IO], Any], *, binary: bool) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb" if binary else "w", encoding=None if binary else "utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _fsync_directory(path.parent)


def _fsync_directory(folder: Path) -> None:
    if sys.platform.startswith("win"):
        return
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`load_checkpoint` read besides the weights.

    Attributes:
        kind: ``"checkpoint"`` (``checkpoint.pt``: resumable) or ``"best"`` (``best.pt``: model only).
        step, epoch, batch_in_epoch: the training position the file was written at.
        best_metric, best_step: best monitored value so far (for ``best.pt``: its own value).
        metrics: the validation metrics at that step (``best.pt``), else the last ones.
        config: the :class:`~graphattn.train.TrainConfig` as a dict.
        payload: everything the file holds (``torch.load(..., weights_only=True)``).
    """

    kind: str
    step: int
    epoch: int
    batch_in_epoch: int
    best_metric: float | None
    best_step: int | None
    metrics: dict[str, float]
    config: dict[str, Any]
    payload: dict[str, Any] = field(repr=False)


def load_checkpoint(
    path: str | Path,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    *,
    map_location: str | torch.device | None = "cpu",
    strict: bool = True,
) -> CheckpointInfo:
    """Load a ``checkpoint.pt`` or ``best.pt`` written by :func:`~graphattn.train.fit` (``weights_only=True``).

    Args:
        path: the file.
        model: receives the weights (``load_state_dict(strict=strict)``; wrappers such as DDP
            are unwrapped first).
        optimizer, scheduler: receive their states; only ``checkpoint.pt`` has them.
        map_location: where tensors are loaded (default CPU; ``load_state_dict`` copies them to
            the model's device).
        strict: passed to ``model.load_state_dict``.

    Returns:
        :class:`CheckpointInfo`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}; expected a file written by graphattn.train.fit")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a graphattn.train checkpoint (expected a dict with format={CHECKPOINT_FORMAT!r}, got "
            f"{type(payload).__name__}{' with format=' + repr(payload.get('format')) if isinstance(payload, dict) else ''})"
        )
    if model is not None:
        unwrap_model(model).load_state_dict(payload["model"], strict=strict)
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler)):
        if target is None:
            continue
        if name not in payload:
            raise ValueError(
                f"{path} holds no {name} state (it is a {payload['kind']!r} file, which stores the model only); "
                f"load {CHECKPOINT_NAME} to resume training, or pass {name}=None"
            )
        target.load_state_dict(payload[name])
    return CheckpointInfo(
        kind=payload["kind"],
        step=payload["step"],
        epoch=payload["epoch"],
        batch_in_epoch=payload["batch_in_epoch"],
        best_metric=payload.get("best_metric"),
        best_step=payload.get("best_step"),
        metrics=dict(payload.get("metrics", {})),
        config=dict(payload.get("config", {})),
        payload=payload,
    )
