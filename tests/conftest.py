"""Shared test fixtures: deterministic seeding for every test and the optional timm reference library."""

from __future__ import annotations

import random

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same RNG state (torch, random, numpy if present)."""
    torch.manual_seed(0)
    random.seed(0)
    try:
        import numpy as np

        np.random.seed(0)
    except ImportError:  # pragma: no cover - numpy is a core dependency
        pass


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: small tensors gain nothing from threads, and on a shared 2-core machine
    OpenMP spin-waiting makes small-model training 10-20x slower (use ``pytestmark =
    pytest.mark.usefixtures("one_thread")`` for a whole module)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def timm():
    """The timm module, or a clean skip where the reference library is not installed (CI)."""
    return pytest.importorskip("timm", reason="timm (reference library) not installed; run with /work/refvenv/bin/python")
