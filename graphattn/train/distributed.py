"""Joining and leaving the ``torch.distributed`` process group that ``torchrun`` describes."""
from __future__ import annotations

import os
import socket
from typing import NamedTuple

import torch
import torch.distributed as dist

__all__ = ["DistributedInfo", "init_distributed", "cleanup_distributed", "find_free_port"]


class DistributedInfo(NamedTuple):
    """This process in a (possibly single-process) run."""

    rank: int
    world_size: int
    local_rank: int
    is_distributed: bool


_TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def init_distributed(backend: str | None = None) -> DistributedInfo:
    """Join the process group ``torchrun`` describes, if any.

    Returns the current group's rank / world size when one is already initialized; else, when
    the environment has ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT`` (``torchrun`` sets them), initializes it with ``backend`` (default ``nccl``
    when CUDA is available, else ``gloo``; with CUDA, ``cuda:LOCAL_RANK`` becomes the current
    device); else a single process: ``DistributedInfo(0, 1, 0, False)``.
    """
    if dist.is_available() and dist.is_initialized():
        return DistributedInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), True)
    present = [name for name in _TORCHRUN_VARIABLES if name in os.environ]
    if not present:
        return DistributedInfo(0, 1, 0, False)
    if len(present) < len(_TORCHRUN_VARIABLES):
        missing = [name for name in _TORCHRUN_VARIABLES if name not in os.environ]
        raise ValueError(
            f"Found {', '.join(present)} but not {', '.join(missing)} in the environment; launch with "
            f"'torchrun --nproc_per_node N script.py', set all of {', '.join(_TORCHRUN_VARIABLES)}, or unset them"
        )
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build; run a single process")
    local_rank = int(os.environ["LOCAL_RANK"])
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://")
    return DistributedInfo(dist.get_rank(), dist.get_world_size(), local_rank, True)


def cleanup_distributed() -> None:
    """Destroy the default process group if one is initialized (call at the end of a script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def find_free_port() -> int:
    """A TCP port that was free a moment ago (for ``MASTER_PORT`` in tests and single-node runs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
