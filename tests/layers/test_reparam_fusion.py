"""Re-parameterisation helpers, Dilated Reparam Block, SE and GRN (cards: unireplknet, lsnet)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convatlas.layers.dilated_reparam import DILATED_BRANCHES, DilatedReparamBlock, dilated_branches_reference
from convatlas.layers.grn import GRN
from convatlas.layers.reparam import (
    BNLinear,
    ConvBN,
    dilate_kernel,
    fuse_submodules,
    identity_kernel,
    pad_kernel,
    reparameterize_model,
)
from convatlas.layers.squeeze_excite import SqueezeExcite, make_divisible


def _rand_bn_(m: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = mod.num_features
                mod.weight.copy_(torch.randn(n, generator=g))
                mod.bias.copy_(torch.randn(n, generator=g))
                mod.running_mean.copy_(torch.randn(n, generator=g))
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return m


def test_dilate_kernel_equals_dilated_conv() -> None:
    k = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    x = torch.randn(1, 4, 15, 15, dtype=torch.float64)
    dense = dilate_kernel(k, 3)
    assert dense.shape[-1] == 7 and dense[0, 0, 1:3].abs().sum() == 0
    torch.testing.assert_close(F.conv2d(x, dense, padding=3, groups=4), F.conv2d(x, k, padding=3, dilation=3, groups=4))
    with pytest.raises(ValueError):
        pad_kernel(k, 4)


@pytest.mark.parametrize("K", sorted(DILATED_BRANCHES))
def test_dilated_reparam_block_merge(K: int) -> None:
    blk = _rand_bn_(DilatedReparamBlock(6, K).double()).eval()
    with torch.no_grad():
        for p in blk.parameters():
            if p.ndim == 4:
                p.normal_()
    x = torch.randn(2, 6, 19, 17, dtype=torch.float64)
    y0 = blk(x)
    torch.testing.assert_close(y0, dilated_branches_reference(x, blk))
    blk.reparameterize()
    assert blk.deploy and sum(1 for _ in blk.parameters()) == 2
    torch.testing.assert_close(blk(x), y0)
    blk.reparameterize()  # idempotent


def test_dilated_block_validation() -> None:
    with pytest.raises(ValueError, match="no default branches"):
        DilatedReparamBlock(4, 12)
    with pytest.raises(ValueError, match="does not fit"):
        DilatedReparamBlock(4, 7, branches=((5,), (3,)))


def test_convbn_bnlinear_identity_kernel_fuse() -> None:
    cb = _rand_bn_(ConvBN(4, 6, 3, 2, groups=2).double()).eval()
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(cb.fuse()(x), cb(x))
    bl = _rand_bn_(BNLinear(5, 3).double()).eval()
    v = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(bl.fuse()(v), bl(v))
    ik = identity_kernel(6, 3, groups=2, like=x)
    xi = torch.randn(1, 6, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(F.conv2d(xi, ik, padding=1, groups=2), xi)
    seq = nn.Sequential(_rand_bn_(ConvBN(4, 4, 3)), nn.ReLU(), nn.Sequential(_rand_bn_(ConvBN(4, 4, 1)))).eval()
    xs = torch.randn(1, 4, 6, 6)
    y = seq(xs)
    fuse_submodules(seq)
    assert not any(isinstance(m, ConvBN) for m in seq.modules())
    torch.testing.assert_close(seq(xs), y, rtol=1e-4, atol=1e-5)


def test_reparameterize_model_visits_all() -> None:
    net = nn.Sequential(DilatedReparamBlock(4, 7), nn.Sequential(DilatedReparamBlock(4, 5))).train()
    reparameterize_model(net)
    assert not net.training and all(m.deploy for m in net.modules() if isinstance(m, DilatedReparamBlock))


def test_grn_and_se() -> None:
    x = torch.randn(2, 5, 6, 8)
    g = GRN(8)
    torch.testing.assert_close(g(x), x)  # zero-initialised: identity
    with torch.no_grad():
        g.gamma.fill_(1.0)
        g.beta.fill_(0.5)
    gx = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)
    torch.testing.assert_close(g(x), x * (gx / (gx.mean(-1, keepdim=True) + 1e-6)) + x + 0.5)
    assert GRN(8, bias=False).beta is None
    se = SqueezeExcite(32, rd_channels=8, names=("down", "up"))
    assert se.down.out_channels == 8 and se(torch.randn(2, 32, 4, 4)).shape == (2, 32, 4, 4)
    assert SqueezeExcite(96, 0.25).rd_channels == 24 and make_divisible(20) == 24
    tn = SqueezeExcite(240, rd_channels=56, norm=True, act_layer=nn.SiLU)
    assert isinstance(tn.fc1[1], nn.BatchNorm2d)
