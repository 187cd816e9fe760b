"""Moving batches to a device and reaching the module inside training wrappers."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["move_to_device", "unwrap_model"]


def move_to_device(obj: Any, device: torch.device | str, *, non_blocking: bool = False) -> Any:
    """``obj`` with every tensor moved to ``device``.

    Handles tensors, (named) tuples, lists, dicts, dataclass instances and objects with a
    ``.to(device)`` method (PyG ``Data``/``Batch``); anything else is returned as is.
    """
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # NamedTuple
        return type(obj)(*(move_to_device(item, device, non_blocking=non_blocking) for item in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to_device(item, device, non_blocking=non_blocking) for item in obj)
    if isinstance(obj, Mapping):
        moved = {key: move_to_device(value, device, non_blocking=non_blocking) for key, value in obj.items()}
        try:
            return type(obj)(moved)
        except TypeError:
            return moved
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {
            f.name: move_to_device(getattr(obj, f.name), device, non_blocking=non_blocking)
            for f in dataclasses.fields(obj)
            if f.init
        }
        return dataclasses.replace(obj, **changes)
    to = getattr(obj, "to", None)
    if callable(to) and not isinstance(obj, (type, str, bytes)):
        return to(device)
    return obj


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` / ``torch.compile``
    wrappers (the one whose ``state_dict`` checkpoints store)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model
