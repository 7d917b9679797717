"""Atrous spatial pyramid pooling (DeepLabv3) as used by the segmentation models of cards aff and tvconv.

``ASPP``: 1x1 conv, three 3x3 atrous convs (rates), image pooling (global average -> 1x1 conv -> bilinear
upsampling), each conv -> BN -> act, concatenated (5 * out channels) -> 1x1 projection (BN, act) -> dropout.
Branch modules can be replaced (TVConv's optic-disc/cup model swaps the atrous convs for TVConv inverted
residuals). Shapes: (B, C_in, H, W) -> (B, C_out, H, W).

Key layout: ``convs.0`` (Sequential conv, bn, act), ``convs.1..3`` (same, or the custom branch), ``convs.4``
(Sequential pool, conv, bn, act), ``project`` (Sequential conv, bn, act) -- torchvision's / TVConv's layout.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ASPP", "ASPPPooling", "conv_bn_act"]


def conv_bn_act(cin: int, cout: int, k: int = 1, dilation: int = 1,
                act_layer: Callable[[], nn.Module] = nn.ReLU) -> nn.Sequential:
    """conv (no bias, 'same' padding) -> BN -> activation."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, dilation * (k - 1) // 2, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), act_layer())


class ASPPPooling(nn.Sequential):
    """Image-level branch: global average -> 1x1 conv -> BN -> act -> bilinear back to (H, W)."""

    def __init__(self, cin: int, cout: int, act_layer: Callable[[], nn.Module] = nn.ReLU) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                         act_layer())

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """DeepLabv3 ASPP: (B, C_in, H, W) -> (B, C_out, H, W).

    Args:
        in_chs, out_chs: channels (out 256 in DeepLabv3).
        rates: the three atrous rates ((6, 12, 18) at output stride 16, (12, 24, 36) at 8).
        act_layer: activation of every conv (ReLU; swish in cvnets models).
        dropout: dropout after the projection (0.1).
        dropout_2d: channel-wise ``Dropout2d`` (cvnets) instead of element-wise ``Dropout`` (torchvision).
        branch: optional ``branch(in_chs, out_chs, rate) -> nn.Module`` replacing the three atrous convs.
    """

    def __init__(self, in_chs: int, out_chs: int = 256, rates: Sequence[int] = (6, 12, 18),
                 act_layer: Callable[[], nn.Module] = nn.ReLU, dropout: float = 0.1, dropout_2d: bool = False,
                 branch: Callable[[int, int, int], nn.Module] | None = None) -> None:
        super().__init__()
        if len(rates) != 3:
            raise ValueError(f"ASPP: expected three atrous rates, got {tuple(rates)}")
        mods: list[nn.Module] = [conv_bn_act(in_chs, out_chs, 1, act_layer=act_layer)]
        for r in rates:
            mods.append(branch(in_chs, out_chs, r) if branch is not None
                        else conv_bn_act(in_chs, out_chs, 3, r, act_layer=act_layer))
        mods.append(ASPPPooling(in_chs, out_chs, act_layer))
        self.convs = nn.ModuleList(mods)
        self.project = conv_bn_act(5 * out_chs, out_chs, 1, act_layer=act_layer)
        self.drop = (nn.Dropout2d if dropout_2d else nn.Dropout)(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.project(torch.cat([c(x) for c in self.convs], dim=1)))
