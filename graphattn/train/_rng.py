"""Global RNG states (torch, CUDA, numpy, random): capture, restore, seed, and a checkpoint-safe form."""
from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["RngSnapshot", "capture_rng", "restore_rng", "rng_to_payload", "rng_from_payload", "seed_everything",
           "preserved_rng"]


class RngSnapshot(NamedTuple):
    """The states of the global RNGs at one moment."""

    torch_state: Tensor
    cuda_states: list[Tensor]
    numpy_state: tuple
    python_state: tuple


def capture_rng() -> RngSnapshot:
    """The current global RNG states (CUDA's only when CUDA is initialized)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return RngSnapshot(torch.get_rng_state(), cuda, np.random.get_state(), random.getstate())


def restore_rng(snapshot: RngSnapshot) -> None:
    """Set the global RNGs to ``snapshot`` (CUDA's only with as many devices as it holds)."""
    torch.set_rng_state(snapshot.torch_state)
    if snapshot.cuda_states and torch.cuda.is_available():
        if len(snapshot.cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(snapshot.cuda_states)
        else:
            warnings.warn(
                f"The checkpoint holds {len(snapshot.cuda_states)} CUDA RNG states but "
                f"{torch.cuda.device_count()} devices are visible; CUDA RNG states not restored"
            )
    np.random.set_state(snapshot.numpy_state)
    random.setstate(snapshot.python_state)


def rng_to_payload(snapshot: RngSnapshot) -> dict[str, Any]:
    """Plain types and tensors only, so that ``torch.load(weights_only=True)`` reads it."""
    name, keys, position, has_gauss, cached = snapshot.numpy_state
    version, internal, gauss_next = snapshot.python_state
    return {
        "torch": snapshot.torch_state.clone(),
        "cuda": [state.clone() for state in snapshot.cuda_states],
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": [int(x) for x in internal], "gauss_next": gauss_next},
    }


def rng_from_payload(payload: Mapping[str, Any]) -> RngSnapshot:
    """The inverse of :func:`rng_to_payload`."""
    numpy_payload = payload["numpy"]
    numpy_state = (
        numpy_payload["name"],
        numpy_payload["keys"].numpy().astype(np.uint32),
        numpy_payload["pos"],
        numpy_payload["has_gauss"],
        numpy_payload["cached_gaussian"],
    )
    python_payload = payload["python"]
    python_state = (python_payload["version"], tuple(python_payload["state"]), python_payload["gauss_next"])
    return RngSnapshot(payload["torch"], list(payload["cuda"]), numpy_state, python_state)


def seed_everything(seed: int) -> None:
    """Seed ``torch`` (every device), ``numpy`` and ``random`` with ``seed``."""
    torch.manual_seed(seed)  # seeds every CUDA device too
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without changing the global RNG states seen afterwards."""
    snapshot = capture_rng()
    try:
        yield
    finally:
        restore_rng(snapshot)
