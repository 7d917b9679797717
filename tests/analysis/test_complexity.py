"""analysis.complexity: MACs and activations of small nets counted by hand (fast-scaling definition)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convatlas.analysis.complexity import count_params, measure_complexity


class _Net(nn.Module):
    """conv 3->8 k3 s1 p1 (16x16), depthwise 8 k3 s2 p1 (8x8), BN+ReLU (not counted), pool, linear 8->10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.dw(self.conv(x))))
        return self.fc(x.mean((2, 3)))


def _by_hand(batch: int) -> tuple[int, int, int]:
    params = (3 * 8 * 9 + 8) + (8 * 9) + 16 + (8 * 10 + 10)
    macs = batch * (8 * 16 * 16 * 3 * 9 + 8 * 8 * 8 * 9 + 8 * 10)
    acts = batch * (8 * 16 * 16 + 8 * 8 * 8 + 10)
    return params, macs, acts


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("batch", [1, 3])
def test_conv_linear_by_hand(device, batch):
    with torch.device(device):
        model = _Net()
        x = torch.randn(batch, 3, 16, 16)
    c = measure_complexity(model, (x,))
    params, macs, acts = _by_hand(batch)
    assert c.params == params == count_params(model)
    assert c.gmacs * 1e9 == pytest.approx(macs, abs=0.5)
    assert c.mactivations * 1e6 == pytest.approx(acts, abs=0.5)
    assert c.input_shapes == ((batch, 3, 16, 16),)


def test_matmul_and_attention_counted():
    """Batched matmul q @ k^T and attn @ v: 2 * B*H*N*N*D MACs; outputs B*H*N*N + B*H*N*D."""
    b, h, n, d = 2, 3, 5, 4

    class Attn(nn.Module):
        def forward(self, q, k, v):
            return torch.softmax(q @ k.transpose(-1, -2), -1) @ v

    q = torch.randn(b, h, n, d)
    c = measure_complexity(Attn(), (q, q.clone(), q.clone()))
    assert c.params == 0
    assert c.gmacs * 1e9 == pytest.approx(2 * b * h * n * n * d)
    assert c.mactivations * 1e6 == pytest.approx(b * h * n * n + b * h * n * d)


def test_shared_parameters_counted_once_and_trainable_only():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert count_params(model) == 20
    model[0].bias.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 16


def test_training_mode_restored():
    m = _Net().train()
    measure_complexity(m, (torch.randn(1, 3, 8, 8),))
    assert m.training
