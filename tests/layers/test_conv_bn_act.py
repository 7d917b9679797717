"""Folded conv-BN(-act) inference path (layers/conv_bn_act.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convatlas.layers.conv_bn_act import ConvBNAct, act_inplace, conv_bn_act, fast_conv_bn


def _random_bn(bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0, 0.5)


@pytest.mark.parametrize("groups,act", [(1, nn.SiLU), (8, nn.ReLU), (8, nn.GELU), (1, None)])
def test_folded_equals_module_by_module(groups: int, act) -> None:
    layers = [nn.Conv2d(8, 16, 3, 2, 1, groups=groups, bias=False), nn.BatchNorm2d(16)] + ([act()] if act else [])
    m = ConvBNAct(*layers).eval()
    _random_bn(m[1])
    x = torch.randn(2, 8, 9, 10)
    ref = nn.Sequential(*m)(x)  # plain Sequential: conv -> BN -> act
    with torch.inference_mode():
        assert fast_conv_bn(x, m[1])
        out = m(x)
        out_cl = m(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_cl, ref, rtol=1e-5, atol=1e-5)
    assert list(m.state_dict()) == list(nn.Sequential(*layers).state_dict())


def test_fast_path_only_for_inference() -> None:
    m = ConvBNAct(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4), nn.SiLU())
    x = torch.randn(2, 4, 5, 5)
    assert not fast_conv_bn(x, m[1])  # training mode: batch statistics
    m.eval()
    assert not fast_conv_bn(x, m[1])  # grad enabled
    with torch.no_grad():
        assert fast_conv_bn(x, m[1])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not fast_conv_bn(x, m[1])
    m.train()
    y = m(x)  # training forward still updates the running statistics and back-propagates
    y.sum().backward()
    assert m[0].weight.grad is not None and m[1].num_batches_tracked.item() == 1


def test_act_inplace_and_conv_bias() -> None:
    x = torch.randn(10)
    y = x.clone()
    assert act_inplace(nn.SiLU(), y) is y and torch.allclose(y, nn.functional.silu(x))
    conv, bn = nn.Conv2d(3, 5, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(5).eval()
    _random_bn(bn)
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(conv_bn_act(x, conv, bn, nn.Hardswish()), nn.Hardswish()(bn(conv(x))))


# 9 positions < 72 weights per output channel: BN after the conv; 1024 positions: folded
@pytest.mark.parametrize("size", [3, 32])
def test_both_bn_placements_with_conv_bias(size: int) -> None:
    m = ConvBNAct(nn.Conv2d(8, 16, 3, 1, 1, bias=True), nn.BatchNorm2d(16), nn.ReLU()).eval()
    _random_bn(m[1])
    x = torch.randn(1, 8, size, size)
    ref = nn.Sequential(*m)(x)
    with torch.inference_mode():
        torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)
