"""Squeeze-and-Excitation (SENet): channel gating from globally pooled statistics.

``SqueezeExcite``: (B, C, H, W) -> (B, C, H, W); ``x * gate(fc2(act(fc1(mean_hw(x)))))`` with 1x1 convs.
Covers the variants used across families:

- UniRepLKNet's ``SEBlock``: reduced channels C/4 (``rd_channels=C // 4``), ReLU, sigmoid, keys ``down``/``up``
  (pass ``names=("down", "up")``);
- timm's ``SqueezeExcite`` (LSNet, EfficientNet-style): ``rd_ratio=0.25`` rounded with :func:`make_divisible`
  to a multiple of 8, keys ``fc1``/``fc2``;
- TinyNAS/DeepMAD's SE: conv+BN in both projections, SiLU (``norm=True, act_layer=nn.SiLU``,
  ``rd_channels = max(1, round(C * 0.25) // 8) * 8``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

__all__ = ["SqueezeExcite", "make_divisible"]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (never below ``round_limit * v``); timm's convention."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation gate: (B, C, H, W) -> (B, C, H, W).

    Args:
        channels: C.
        rd_ratio: reduction ratio, used when ``rd_channels`` is None (rounded by ``rd_divisor``).
        rd_channels: explicit reduced width.
        rd_divisor: multiple for the rounded width (1: plain ``int(C * rd_ratio)``).
        act_layer: activation between the two 1x1 convs.
        gate: gating function (sigmoid).
        norm: add BatchNorm after each 1x1 conv (TinyNAS form; the convs then have no bias).
        names: attribute names of the two projections (for official key layouts).
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 0.25,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
        gate: Callable[[Tensor], Tensor] = torch.sigmoid,
        norm: bool = False,
        names: tuple[str, str] = ("fc1", "fc2"),
    ) -> None:
        super().__init__()
        if rd_channels is None:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0) if rd_divisor > 1 \
                else max(1, int(channels * rd_ratio))
        self.rd_channels = rd_channels
        self._names = names

        def proj(i: int, o: int) -> nn.Module:
            if norm:
                return nn.Sequential(nn.Conv2d(i, o, 1, bias=False), nn.BatchNorm2d(o))
            return nn.Conv2d(i, o, 1, bias=True)

        setattr(self, names[0], proj(channels, rd_channels))
        self.act = act_layer()
        setattr(self, names[1], proj(rd_channels, channels))
        self.gate = gate

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = getattr(self, self._names[1])(self.act(getattr(self, self._names[0])(s)))
        return x * self.gate(s)
