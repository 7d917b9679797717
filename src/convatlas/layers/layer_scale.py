"""Per-channel learnable scales: layer-scale (CaiT) and res-scale (MetaFormer, card: metaformer).

:class:`Scale` multiplies (B, C, H, W) (``channels_first=True``) or (..., C) inputs by a learnable vector of
``C`` entries; its key ``scale`` matches timm's MetaFormer ``Scale``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Scale"]


class Scale(nn.Module):
    """``x * scale`` with a per-channel ``scale`` (C,), initialised to ``init_value``.

    Args:
        dim: C.
        init_value: initial value (1.0 for MetaFormer res-scale, 1e-6 for layer-scale).
        trainable: learn the scale.
        channels_first: input is (B, C, H, W); else channels-last (..., C).
    """

    def __init__(self, dim: int, init_value: float = 1.0, trainable: bool = True, channels_first: bool = True) -> None:
        super().__init__()
        self.channels_first = channels_first
        self.scale = nn.Parameter(torch.full((dim,), float(init_value)), requires_grad=trainable)

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_first:
            return x * self.scale.view(-1, *([1] * (x.ndim - 2)))
        return x * self.scale

    def extra_repr(self) -> str:
        return f"dim={self.scale.shape[0]}, channels_first={self.channels_first}"
