"""The default validation of :func:`~graphattn.train.fit`: the mean loss over a dataset."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from graphattn.train._batching import check_dataset
from graphattn.train._common import check_int
from graphattn.train.config import LossFn, TrainState
from graphattn.train.devices import move_to_device, unwrap_model

__all__ = ["evaluate"]


def split_loss(output: Any) -> tuple[Tensor, Mapping[str, Any]]:
    """``(0-d loss, extra values)`` from what a ``loss_fn`` returned, checking its form."""
    if isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], Mapping):
        loss, extras = output
    else:
        loss, extras = output, {}
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        got = f"a tensor of shape {list(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__
        raise TypeError(
            f"Expected loss_fn to return a scalar tensor or (scalar tensor, dict of logged values), got {got}; "
            "reduce the loss with .mean() or .sum()"
        )
    return loss.reshape(()), extras


def evaluate(
    model: nn.Module,
    data: Any,
    *,
    loss_fn: LossFn,
    collate_fn: Callable[[list], Any] | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    prefix: str = "val_",
) -> dict[str, float]:
    """Mean of ``loss_fn`` over ``data`` in eval mode without gradients.

    Batches are weighted by their number of samples, so the result is the mean over samples of
    per-batch means (the exact sample mean for per-sample losses). Extra values that
    ``loss_fn`` returns are averaged the same way.

    Args:
        model: the model (DDP and compile wrappers are unwrapped; its training mode is restored).
        data: a map-style dataset.
        loss_fn: ``loss_fn(model, batch, state)``; ``state.training`` is False.
        collate_fn: builds a batch from a list of samples (default ``default_collate``).
        batch_size: samples per batch.
        device: where batches go (default: the device of the model's first parameter).
        prefix: prepended to the names: ``{prefix}loss`` and ``{prefix}{extra}``.

    Returns:
        ``{"val_loss": ..., "val_<extra>": ...}`` (with the default prefix).
    """
    num_samples = check_dataset(data, "data")
    check_int(batch_size, "batch_size", minimum=1)
    if num_samples == 0:
        raise ValueError("Expected a non-empty evaluation dataset, got 0 samples")
    module = unwrap_model(model)
    if device is None:
        parameter = next(iter(module.parameters()), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    device = torch.device(device)
    state = TrainState(training=False, device=device)
    sums: dict[str, Tensor] = {}
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for start in range(0, num_samples, batch_size):
                indices = range(start, min(start + batch_size, num_samples))
                batch = (collate_fn or default_collate)([data[i] for i in indices])
                state.batch_in_epoch = start // batch_size
                loss, extras = split_loss(loss_fn(module, move_to_device(batch, device), state))
                for name, value in {"loss": loss, **extras}.items():
                    weighted = torch.as_tensor(value, dtype=torch.float64, device=device).detach().reshape(()) * len(indices)
                    sums[name] = sums[name] + weighted if name in sums else weighted
    finally:
        module.train(was_training)
    return {f"{prefix}{name}": float(total) / num_samples for name, total in sums.items()}
