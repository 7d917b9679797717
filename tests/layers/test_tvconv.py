"""TVConv layer (card: tvconv)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convatlas.identities import identities_for
from convatlas.layers.tvconv import TVConv, tvconv_unfold_reference


@pytest.mark.parametrize("c,hw,expected", [(3, 96, 633_456), (96, 48, 283_968)])
def test_param_counts_from_card(c: int, hw: int, expected: int) -> None:
    with torch.device("meta"):
        layer = TVConv(c, hw, hw)
    assert sum(p.numel() for p in layer.parameters()) == expected


def test_stride2_shape_and_weights_independent_of_input() -> None:
    layer = TVConv(4, 6, 6, stride=2)
    x = torch.randn(2, 4, 12, 12, requires_grad=True)
    y = layer(x)
    assert y.shape == (2, 4, 6, 6)
    w = layer.generate_weight()
    assert not w.requires_grad or torch.autograd.grad(w.sum(), x, allow_unused=True)[0] is None
    y.sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_matches_official_unfold_and_reparam_keeps_output() -> None:
    torch.manual_seed(0)
    layer = TVConv(5, 7, 7, bias=True)
    with torch.no_grad():
        layer.posi_map.normal_()
    x = torch.randn(2, 5, 7, 7)
    with torch.no_grad():
        ref = tvconv_unfold_reference(x, layer.generate_weight(), 3, 1) + layer.generate_bias()
        assert torch.allclose(layer(x), ref, atol=1e-6)
        layer.reparameterize()
        assert torch.allclose(layer(x), ref, atol=1e-6)
    assert set(layer.state_dict()) == {"weight_maps", "bias_map"}


def test_wrong_resolution_raises() -> None:
    with pytest.raises(ValueError, match="fixed at construction"):
        TVConv(4, 8, 8)(torch.randn(1, 4, 9, 9))


def test_from_conv_rejects_non_depthwise() -> None:
    with pytest.raises(ValueError):
        TVConv.from_conv(nn.Conv2d(4, 8, 3, padding=1), (8, 8))
    assert TVConv.from_conv(nn.Conv2d(4, 4, 3, 2, 1, groups=4), (4, 4)).stride == 2


def test_identities() -> None:
    checks = identities_for("tvconv")
    assert len(checks) >= 2
    for c in checks:
        c.fn()
