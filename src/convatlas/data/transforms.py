"""Image tensor transforms shared by the datasets, ``convatlas predict`` and the trainer.

All images are returned as float32 ``(C, H, W)`` tensors normalised to ``[-1, 1]`` (mean 0.5, std 0.5 on the
``[0, 1]`` scale), resized with bilinear interpolation (antialiased when shrinking) by :func:`resize_normalize`,
so that training data and images given to ``predict`` go through exactly the same arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["resize_normalize", "to_channels"]


def to_channels(x: Tensor, channels: int) -> Tensor:
    """Adapt the channel count of ``(N, C, H, W)``: 1 -> k repeats the plane, 3 -> 1 averages RGB (luma-free mean)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1:
        return x.expand(-1, channels, -1, -1).contiguous()
    if c == 3 and channels == 1:
        return x.mean(dim=1, keepdim=True)
    raise ValueError(f"cannot convert {c} channels to {channels}")


def resize_normalize(images: Tensor, size: int | tuple[int, int], max_value: float, channels: int = 3) -> Tensor:
    """Integer/float images ``(N, C, H, W)`` with values in ``[0, max_value]`` -> float32 in ``[-1, 1]``.

    Args:
        images: ``(N, C, H, W)`` (or ``(C, H, W)``, returned without the batch dimension).
        size: output side (int) or ``(H, W)``.
        max_value: the value that maps to 1.0 (16 for scikit-learn digits, 255 for 8-bit images).
        channels: output channels (1 or 3).
    """
    single = images.dim() == 3
    if single:
        images = images[None]
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W) or (C, H, W), got {tuple(images.shape)}")
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if min(hw) < 1:
        raise ValueError(f"size must be positive, got {size}")
    x = images.to(torch.float32) / float(max_value)
    x = to_channels(x, channels)
    if tuple(x.shape[-2:]) != hw:
        shrink = hw[0] < x.shape[-2] or hw[1] < x.shape[-1]
        x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=shrink)
    x = (x * 2.0 - 1.0).clamp_(-1.0, 1.0)
    return x[0] if single else x
