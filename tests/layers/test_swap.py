"""swap_convs / create_swapped (cards: tvconv, fdconv)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convatlas.layers.fdconv import FDConv
from convatlas.layers.swap import create_swapped, swap_convs
from convatlas.layers.tvconv import TVConv


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.dw = nn.Conv2d(32, 32, 3, 2, 1, groups=32)
        self.pw = nn.Conv2d(32, 32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(self.conv(x)))


def test_swap_tvconv_needs_and_uses_shapes() -> None:
    net = _Net()
    with pytest.raises(ValueError, match="example_input"):
        swap_convs(_Net(), "tvconv", "depthwise3x3")
    names = swap_convs(net, "tvconv", "depthwise3x3", example_input=torch.randn(1, 3, 16, 16))
    assert names == ["dw"] and isinstance(net.dw, TVConv) and (net.dw.h, net.dw.w) == (8, 8)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 32, 8, 8)


def test_swap_with_callable_rule_and_factory() -> None:
    net = _Net()
    names = swap_convs(net, "fdconv", lambda n, c, s: c.kernel_size == (1, 1), kernel_num=4)
    assert names == ["pw"] and isinstance(net.pw, FDConv)
    custom = swap_convs(_Net(), lambda conv, shape: nn.Identity() if conv.in_channels == 3 else conv, "all")
    assert custom == ["conv", "dw", "pw"]


def test_create_swapped_registered_models() -> None:
    with torch.device("meta"):
        m = create_swapped("fdconv_resnet50_host", layer="fdconv", rule="fdconv_paper", layer_kwargs={"kernel_num": 64})
    assert len(m.swapped) == 48 and not any("downsample" in n for n in m.swapped)
    with torch.device("meta"):
        tv = create_swapped("mobilenetv2_face_x0_1", layer="tvconv", rule="depthwise3x3")
        assert len(tv.swapped) == 17 and tv(torch.randn(2, 3, 96, 96)).shape == (2, 1000)
        assert {(m.h, m.stride) for m in tv.modules() if isinstance(m, TVConv)} == {(96, 1), (48, 2), (48, 1), (24, 2),
                                                                                  (24, 1), (12, 2), (12, 1), (6, 2), (6, 1)}
