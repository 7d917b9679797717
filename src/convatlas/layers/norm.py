"""Normalisation layers shared across families.

``LayerNorm2d``: LayerNorm over the channel axis of a channels-first map (B, C, H, W) (ConvNeXt, MetaFormer,
InceptionNeXt, ...). ``LayerNorm`` is the ordinary channels-last LayerNorm with eps 1e-6 by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LayerNorm", "LayerNorm2d", "LayerNormGeneral"]


class LayerNorm(nn.LayerNorm):
    """Channels-last LayerNorm over the last dim, (..., C) -> (..., C). Default eps 1e-6 (convnext)."""

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True, bias: bool = True) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=affine, bias=bias)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over C of a channels-first tensor: (B, C, H, W) -> (B, C, H, W), per-pixel statistics.

    Computed by permuting to channels-last and calling the fused ``F.layer_norm`` kernel, which is faster on CPU
    than a mean/var formulation and bit-identical to LayerNorm on the permuted tensor (card: convnext).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True, bias: bool = True) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=affine, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class LayerNormGeneral(nn.Module):
    """LayerNorm with configurable normalised dims and optional scale/bias (MetaFormer's general form).

    Args:
        affine_shape: shape of the scale/bias, e.g. ``(C,)`` for channels-last or ``(C, 1, 1)`` for channels-first.
        normalized_dim: dims to normalise over, e.g. ``(-1,)`` or ``(1, 2, 3)``.
        scale / bias: whether to learn them.
        eps: numerical epsilon.
    """

    def __init__(
        self,
        affine_shape: int | tuple[int, ...],
        normalized_dim: tuple[int, ...] = (-1,),
        scale: bool = True,
        bias: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        shape = (affine_shape,) if isinstance(affine_shape, int) else tuple(affine_shape)
        self.normalized_dim = tuple(normalized_dim)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(shape)) if scale else None
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        c = x - x.mean(self.normalized_dim, keepdim=True)
        s = c.pow(2).mean(self.normalized_dim, keepdim=True)
        x = c / torch.sqrt(s + self.eps)
        if self.weight is not None:
            x = x * self.weight
        if self.bias is not None:
            x = x + self.bias
        return x
