"""One process of the two-process data-parallel test in tests/test_train.py.

Launched (like ``torchrun`` would) with ``WORLD_SIZE=2``, ``RANK``/``LOCAL_RANK`` = 0 or 1,
``MASTER_ADDR``/``MASTER_PORT`` in the environment::

    python tests/ddp_worker.py RESULT_FILE OUT_DIR

:func:`graphattn.train.fit` initializes the gloo process group from those variables. Rank 0
saves the final parameters, the history and the error message of a global batch size that is
not divisible by the world size to ``RESULT_FILE``. The test runs the same problem
(:func:`make_problem`, :data:`CONFIG`) in a single process and compares.
"""
from __future__ import annotations

import dataclasses
import sys

import torch
import torch.nn.functional as F
from torch import nn

from graphattn.train import TrainConfig, TrainState, cleanup_distributed, fit

CONFIG = TrainConfig(
    epochs=2,
    batch_size=8,
    grad_accumulation=2,
    lr=0.01,
    schedule="linear",
    warmup_steps=1,
    clip_grad_norm=0.5,
    eval_every=2,
    log_every=1,
    progress=False,
    device="cpu",
)
"""36 samples / 8 = 4 full global batches and one of 4 (2 per rank): 5 batches, 3 steps per epoch."""


def make_problem() -> tuple[nn.Module, list, list]:
    """A small regression MLP (same initial weights in every process) and its data."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(44, 5, generator=generator)
    y = x @ torch.randn(5, 2, generator=generator) + 0.1 * torch.randn(44, 2, generator=generator)
    data = list(zip(x, y))
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 2))
    return model, data[:36], data[36:]


def loss_fn(model: nn.Module, batch: list, state: TrainState) -> torch.Tensor:
    """Mean squared error: a mean over equally weighted samples, so DDP's average is exact."""
    x, y = batch
    return F.mse_loss(model(x), y)


def main(result_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    model, train, val = make_problem()
    try:
        fit(model, train, loss_fn=loss_fn, config=dataclasses.replace(CONFIG, batch_size=7))
        error = None
    except ValueError as exc:
        error = str(exc)
    result = fit(model, train, loss_fn=loss_fn, config=CONFIG, val_data=val, out_dir=out_dir)
    if torch.distributed.get_rank() == 0:
        torch.save(
            {
                "state_dict": model.state_dict(),
                "history": result.history,
                "steps": result.steps,
                "error": error,
                "world_size": torch.distributed.get_world_size(),
            },
            result_file,
        )
    cleanup_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
