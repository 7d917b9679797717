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


@pytest.fixture(scope="session")
def timm():
    """The timm module, or a clean skip where the reference library is not installed (CI)."""
    return pytest.importorskip("timm", reason="timm (reference library) not installed; run with /work/refvenv/bin/python")
