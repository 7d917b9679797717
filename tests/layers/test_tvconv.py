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


def test_custom_op_gradcheck_and_mac_count() -> None:
    from convatlas.analysis.complexity import measure_complexity
    from convatlas.layers.tvconv import tvconv_apply, tvconv_dw

    for s in (1, 2):
        x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
        w = torch.randn(1, 3, 9, 6 // s, 6 // s, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, b: torch.ops.convatlas.tvconv_dw(a, b, s), (x, w))
        assert torch.equal(torch.ops.convatlas.tvconv_dw(x, w, s), tvconv_apply(x, w, 3, s))
        assert torch.equal(tvconv_dw(x, w, s), tvconv_apply(x, w, 3, s))
    with torch.device("meta"):
        layer = TVConv(16, 8, 8)
        layer.reparameterize()
        c = measure_complexity(layer, (torch.randn(1, 16, 8, 8),))
    assert c.gmacs * 1e9 == 16 * 9 * 8 * 8  # one MAC per tap per output, as a depthwise conv
    assert c.params == 0  # deployed form: kernels are buffers (official TVConv_test)


def test_compile_tiny_layer() -> None:
    layer = TVConv(4, 6, 6, inter_chans=4)
    x = torch.randn(2, 4, 6, 6)
    ref = layer(x)
    out = torch.compile(layer, backend="eager")(x)
    torch.testing.assert_close(out, ref)


def test_am_softmax_head() -> None:
    from convatlas.layers.am_softmax import AMSoftmax

    torch.manual_seed(0)
    head = AMSoftmax(8, 5)
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(5))
    e = torch.randn(4, 8)
    y = torch.tensor([0, 1, 4, 2])
    cos = torch.nn.functional.normalize(e) @ torch.nn.functional.normalize(head.weight, dim=1).t()
    torch.testing.assert_close(head(e), 32 * cos)
    out = head(e, y)
    torch.testing.assert_close(out[torch.arange(4), y], 32 * (cos[torch.arange(4), y] - 0.35))
    with pytest.raises(ValueError, match="AMSoftmax"):
        head(torch.randn(4, 7))
    with pytest.raises(ValueError, match="labels"):
        head(e, y[:2])


def test_deployed_tap_cache_follows_the_weights() -> None:
    torch.manual_seed(0)
    layer = TVConv(4, 6, 6, inter_chans=4)
    x = torch.randn(2, 4, 6, 6)
    layer.reparameterize()
    a = layer(x)
    sd = {k: v * 2 for k, v in layer.state_dict().items()}
    layer.load_state_dict(sd)  # in-place copy into weight_maps: the cached per-tap layout must refresh
    torch.testing.assert_close(layer(x), 2 * a)
    with torch.no_grad():
        layer.weight_maps.zero_()
    assert layer(x).abs().max() == 0


def test_reparameterized_layer_converts_to_channels_last_and_loads_the_older_layout() -> None:
    torch.manual_seed(0)
    layer = TVConv(8, 6, 6).eval()
    x = torch.randn(2, 8, 6, 6)
    layer.reparameterize()
    assert layer.weight_maps.shape == (1, 8, 3, 3, 6, 6)  # official TVConv_test layout
    with torch.no_grad():
        ref = layer(x)
        layer.to(memory_format=torch.channels_last)  # a 5-D buffer used to make this raise
        torch.testing.assert_close(layer(x.contiguous(memory_format=torch.channels_last)), ref)
    older = {k: (v.reshape(1, 8, 9, 6, 6) if k == "weight_maps" else v) for k, v in layer.state_dict().items()}
    fresh = TVConv(8, 6, 6).eval()
    fresh.reparameterize()
    fresh.load_state_dict(older)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), ref)
