"""SGConv GConv layer: exact per-layer parameter counts (official module), kernel structure, FFT == direct."""

from __future__ import annotations

import pytest
import torch

from convatlas.identities import identities_for
from convatlas.layers.sgconv import GConv, sgconv_num_scales

# card table: (d_model, kernel_dim, l_max, mode, decay min/max, init_scale) -> (S, kernel length, params per layer)
CARD = [
    ((128, 1, 2048, "cat_randn", 2, 2, 0), (12, 2048, 36_224)),  # ListOps
    ((256, 2, 4096, "cat_randn", 2, 2, 0), (12, 4096, 144_128)),  # Text
    ((256, 1, 4000, "cat_randn", 2, 2, 0), (13, 4096, 138_496)),  # Retrieval
    ((512, 32, 1024, "cat_randn_learnable_fixed", 1, 1, 0), (6, 1024, 722_944)),  # Image
    ((256, 32, 1024, "cat_randn", 2, 2, 0), (6, 1024, 230_144)),  # Pathfinder
    ((256, 64, 16384, "cat_cos", 1, 3, 1), (8, 16384, 393_984)),  # Path-X
]


@pytest.mark.parametrize("cfg,expect", CARD)
def test_gconv_params_match_official(cfg, expect) -> None:
    h, kd, lmax, mode, dmin, dmax, init = cfg
    with torch.device("meta"):
        layer = GConv(h, lmax, kd, True, mode=mode, decay_min=dmin, decay_max=dmax, init_scale=init)
    s, klen, params = expect
    assert layer.num_scales == s == sgconv_num_scales(lmax, kd, init)
    assert layer.kernel_length == klen
    assert sum(p.numel() for p in layer.parameters()) == params
    keys = set(layer.state_dict())
    assert {"D", "kernel_list.0", "multiplier", "kernel_norm", "kernel_norm_initialized",
            "output_linear.0.weight", "output_linear.0.bias"} <= keys


def test_identities_pass() -> None:
    checks = identities_for("sgconv")
    assert len(checks) >= 2
    for c in checks:
        c.fn()


def test_kernel_norm_frozen_at_first_call_and_round_trip() -> None:
    torch.manual_seed(0)
    layer = GConv(8, 64, kernel_dim=4, bidirectional=True).eval()
    u = torch.randn(2, 8, 64)
    assert not bool(layer.kernel_norm_initialized)
    y1, _ = layer(u)
    y2, _ = layer(u)
    assert torch.equal(y1, y2) and bool(layer.kernel_norm_initialized)
    norm = layer.kernel_norm.clone()
    with torch.no_grad():
        layer.kernel_list[0].mul_(3.0)
    layer(u)
    assert torch.equal(layer.kernel_norm, norm)  # not recomputed
    sd = layer.state_dict()
    fresh = GConv(8, 64, kernel_dim=4, bidirectional=True).eval()
    fresh.load_state_dict(sd)
    assert torch.equal(fresh(u)[0], layer(u)[0])
    assert torch.equal(fresh.kernel_norm, norm)


def test_causality_and_bidirectionality() -> None:
    torch.manual_seed(0)
    u = torch.randn(1, 4, 40)
    u2 = u.clone()
    u2[..., 30:] += 1.0
    causal = GConv(4, 40, kernel_dim=4).eval()
    y1, y2 = causal(u)[0], causal(u2)[0]
    assert torch.allclose(y1[..., :30], y2[..., :30], atol=1e-6)
    bidir = GConv(4, 40, kernel_dim=4, bidirectional=True).eval()
    assert not torch.allclose(bidir(u)[0][..., :30], bidir(u2)[0][..., :30], atol=1e-4)


@pytest.mark.parametrize("seq_len", [16, 64, 100])
@pytest.mark.parametrize("mode", ["cat_randn", "sum_randn", "cat_cos_nearest", "cat_randn_learnable"])
def test_shapes_any_length_and_modes(seq_len: int, mode: str) -> None:
    layer = GConv(6, 64, kernel_dim=4, mode=mode, transposed=False)
    y, k = layer(torch.randn(2, seq_len, 6), return_kernel=True)
    assert y.shape == (2, seq_len, 6) and k.shape == (6, seq_len)
    y.sum().backward()
    assert all(p.grad is not None for p in layer.parameters() if p.requires_grad)


def test_kernel_decays() -> None:
    torch.manual_seed(0)
    layer = GConv(16, 1024, kernel_dim=8)
    k = layer.kernel(1024).abs()
    assert k[:, :64].mean() > 4 * k[:, 512:].mean()


def test_bad_inputs() -> None:
    layer = GConv(4, 32, kernel_dim=4)
    with pytest.raises(ValueError, match="H=4"):
        layer(torch.randn(2, 5, 32))
    with pytest.raises(ValueError, match=r"\(B, H, L\)"):
        layer(torch.randn(4, 32))
    with pytest.raises(ValueError, match="mode"):
        GConv(4, 32, mode="cat")
    with pytest.raises(ValueError, match="postact"):
        GConv(4, 32, postact="relu")
