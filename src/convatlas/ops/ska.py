"""Small-Kernel Aggregation (SKA, card: lsnet): per-pixel, per-group dynamic k x k depthwise aggregation.

``ska(x, w)``: x (B, C, H, W), w (B, Cw, k*k, H, W) with C a multiple of Cw ->

    out[b, c, h, w] = sum_{i,j} x[b, c, h+i-k//2, w+j-k//2] * w[b, c mod Cw, i*k + j, h, w]   (zero padding)

Channels ``Cw`` apart share a kernel (``c mod Cw``, not ``c // (C/Cw)``). The official kernel is Triton (GPU); this
is the pure-PyTorch form as k*k shifted multiply-adds on a padded view, which keeps the temporary memory at
O(B*C*H*W) instead of unfold's O(B*C*k^2*H*W). :func:`ska_reference` is the slow unfold version used in tests.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["ska", "ska_reference"]


def _check(x: Tensor, w: Tensor) -> tuple[int, int, int]:
    if x.ndim != 4 or w.ndim != 5:
        raise ValueError(f"ska: expected x (B, C, H, W) and w (B, Cw, k*k, H, W), got {tuple(x.shape)}, {tuple(w.shape)}")
    b, c, h, wd = x.shape
    cw, kk = w.shape[1], w.shape[2]
    k = int(round(kk**0.5))
    if k * k != kk or k % 2 == 0:
        raise ValueError(f"ska: w.shape[2] must be an odd square k*k, got {kk}")
    if c % cw or w.shape[0] != b or tuple(w.shape[3:]) != (h, wd):
        raise ValueError(f"ska: incompatible x {tuple(x.shape)} and w {tuple(w.shape)} (need C % Cw == 0, same B, H, W)")
    return c // cw, cw, k


def ska(x: Tensor, w: Tensor) -> Tensor:
    """Small-kernel aggregation: x (B, C, H, W), w (B, Cw, k*k, H, W) -> (B, C, H, W)."""
    groups, cw, k = _check(x, w)
    b, c, h, wd = x.shape
    p = k // 2
    xp = F.pad(x, (p, p, p, p)).view(b, groups, cw, h + 2 * p, wd + 2 * p)
    out = None
    for i in range(k):
        for j in range(k):
            term = xp[..., i : i + h, j : j + wd] * w[:, None, :, i * k + j]
            out = term if out is None else out + term
    return out.reshape(b, c, h, wd)


def ska_reference(x: Tensor, w: Tensor) -> Tensor:
    """Slow, obviously-correct SKA via ``F.unfold`` (for tests)."""
    groups, cw, k = _check(x, w)
    b, c, h, wd = x.shape
    cols = F.unfold(x, k, padding=k // 2).view(b, c, k * k, h, wd)
    idx = [ch % cw for ch in range(c)]
    return (cols * w[:, idx]).sum(2)
