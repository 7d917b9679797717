"""Global Response Normalisation (ConvNeXt-V2), channels-last.

``GRN``: (B, H, W, C) -> (B, H, W, C);  G = ||x||_2 over (H, W) per channel, N = G / (mean_C G + eps),
out = (gamma * N + 1) * x + beta, gamma/beta zero-initialised so the layer starts as the identity.
``bias=False`` drops beta (UniRepLKNet's deploy form, where beta is folded into the next Linear).
Cards: unireplknet (and convnext-v2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["GRN"]


class GRN(nn.Module):
    """Global Response Normalisation on channels-last maps: (B, H, W, C) -> (B, H, W, C).

    Args:
        channels: C.
        eps: added to the channel mean of the norms.
        bias: learn beta (False in fused/deploy forms).
    """

    def __init__(self, channels: int, eps: float = 1e-6, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        g = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        n = g / (g.mean(dim=-1, keepdim=True) + self.eps)
        out = torch.addcmul(x, x, self.gamma * n)
        return out if self.beta is None else out + self.beta
