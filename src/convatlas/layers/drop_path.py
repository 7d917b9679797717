"""Stochastic depth (drop-path): drops whole residual branches per sample during training."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["drop_path", "DropPath", "drop_path_rates"]


def drop_path(x: Tensor, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True) -> Tensor:
    """Zero each sample's branch output with probability ``drop_prob``; rescale survivors by 1/keep. x: (B, ...)."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    if scale_by_keep and keep > 0.0:
        mask.div_(keep)
    return x * mask


class DropPath(nn.Module):
    """Module form of :func:`drop_path`; identity at inference."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


def drop_path_rates(depths: tuple[int, ...] | list[int], drop_path_rate: float) -> list[list[float]]:
    """Linear 0 -> ``drop_path_rate`` schedule over all blocks, split per stage (timm's convention)."""
    total = sum(depths)
    rates = torch.linspace(0, drop_path_rate, total, device="cpu").tolist() if total else []  # cpu: works under a meta default device
    out, i = [], 0
    for d in depths:
        out.append(rates[i : i + d])
        i += d
    return out
