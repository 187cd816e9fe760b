"""Shared test fixtures: small, deterministic, single-threaded (the CI machine has 2 shared cores)."""
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def generator() -> torch.Generator:
    """A CPU generator with a fixed seed, so random test inputs are the same on every run."""
    return torch.Generator().manual_seed(0)
