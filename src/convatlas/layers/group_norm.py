"""GroupNorm with one group: normalise each sample over (C, H, W) jointly, then a per-channel affine.

Used by PoolFormer / IdentityFormer / RandFormer / PoolFormerV2 (card: metaformer), where the block norm
normalises over all channels and positions at once. ``bias=False`` gives MetaFormer's ``GroupNorm1NoBias``
(weight only, the state dict has no ``bias`` key, as in timm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GroupNorm1"]


class GroupNorm1(nn.Module):
    """(B, C, *spatial) -> same shape; statistics over everything but the batch dim.

    Args:
        num_channels: C.
        eps: numerical epsilon (1e-6 in MetaFormer).
        affine: learn a per-channel weight (and bias if ``bias``).
        bias: learn a per-channel bias.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine and bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, 1, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, bias={self.bias is not None}"
