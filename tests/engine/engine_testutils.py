"""Shared helpers of the engine tests (imported by module name; not a test file)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset


class TinyNet(nn.Module):
    """(B, C, H, W) -> (B, K): conv, GELU, conv, mean-pool, linear. No BatchNorm/dropout: deterministic."""

    def __init__(self, num_classes: int = 4, in_chans: int = 3, width: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.conv1 = nn.Conv2d(in_chans, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.gamma = nn.Parameter(torch.ones(2 * width))  # a 1-D "layer-scale" parameter
        self.head = nn.Linear(2 * width, num_classes)
        self.nan = False  # tests flip this to produce a non-finite loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.gelu(self.conv1(x))
        x = self.conv2(x) * self.gamma[:, None, None]
        out = self.head(self.drop(x.mean((2, 3))))
        return out * float("nan") if self.nan else out


def synthetic_dataset(n: int = 64, classes: int = 4, size: int = 8, seed: int = 0) -> TensorDataset:
    """Class k shifts all pixels by a class colour (+noise): learnable in a few steps by a pooled conv net."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-1.0, -1.0, -1.0], [1.0, -1.0, 0]])
    x = 0.5 * torch.randn(n, 3, size, size, generator=g) + colours[y % len(colours)][:, :, None, None]
    ds = TensorDataset(x, y)
    ds.classes = [str(k) for k in range(classes)]
    return ds


def state_equal(a: dict, b: dict, atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=0) for k in a)


@pytest.fixture(autouse=True)
def one_thread():
    """Run a test with one intra-op thread (restored after). These tests use tiny tensors, where a second
    thread only adds synchronisation, and on a shared/oversubscribed CI machine spinning OpenMP threads can
    slow them down tenfold."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
