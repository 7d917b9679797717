"""SGConv GConv layer: exact per-layer parameter counts (official module), kernel structure, FFT == direct."""

from __future__ import annotations

import pytest
import torch

from convatlas.identities import identities_for
from convatlas.layers.sgconv import GConv, sgconv_num_scales


pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in tests/conftest.py


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


def test_framework_modes_decay_expand_trunc() -> None:
    """S4-framework gconv.py options: 'decay' init, 'expand' (kernel resampled to l_max), 'trunc' (resampled to L)."""
    torch.manual_seed(0)
    plain = GConv(4, 64, kernel_dim=8, decay_min=1, decay_max=3)
    torch.manual_seed(0)
    dec = GConv(4, 64, kernel_dim=8, mode="cat_randn_decay", decay_min=1, decay_max=3)
    ramp = torch.linspace(1, 2 / (1 + 3), 8)
    for a, b in zip(plain.kernel_list, dec.kernel_list):
        torch.testing.assert_close(b, a * ramp)
    # expand: a 48-tap kernel (l_max 48 -> S = 4, 64 taps) resampled to exactly l_max taps
    exp = GConv(4, 48, kernel_dim=8, mode="cat_randn_expand")
    assert exp.kernel_length == 64 and exp.kernel(100).shape == (4, 100)
    raw = exp.raw_kernel()
    ref = torch.nn.functional.interpolate(raw, size=48, mode="linear") / exp.kernel_norm
    torch.testing.assert_close(exp.kernel(100)[:, :48], ref[0])
    assert (exp.kernel(100)[:, 48:] == 0).all()
    # trunc: first l_max taps resampled to the input length, scaled by l_max / L (same area per tap)
    tr = GConv(4, 64, kernel_dim=8, mode="cat_randn_trunc")
    k64, k128 = tr.kernel(64), tr.kernel(128)
    torch.testing.assert_close(k64, (tr.raw_kernel() / tr.kernel_norm)[0])
    torch.testing.assert_close(k128.sum(-1), k64.sum(-1), atol=0.15 * k64.abs().sum(-1).max().item(), rtol=0)
    for layer in (dec, exp, tr):
        y, _ = layer(torch.randn(2, 4, 30))
        assert y.shape == (2, 4, 30)


def test_hankel_mode_channels_and_linear() -> None:
    torch.manual_seed(0)
    hk = GConv(4, 32, kernel_dim=6, mode="hankel", bidirectional=True)
    assert len(hk.kernel_list) == 1 and hk.kernel_list[0].shape == (2, 4, 6) and hk.eigvecs.shape == (6, 32)
    a = torch.arange(32, dtype=torch.float64) + 1
    m = a.view(1, -1) + a.view(-1, 1)
    hmat = 2 / (m**3 - m)
    full = torch.linalg.eigh(hmat).eigenvectors
    torch.testing.assert_close(hk.eigvecs.double().abs(), full[:6].abs(), atol=1e-5, rtol=0)  # up to sign
    torch.testing.assert_close(hk.raw_kernel(), torch.einsum("chd,dl->chl", hk.kernel_list[0], hk.eigvecs))
    assert hk.kernel_length == 32 and hk(torch.randn(2, 4, 20))[0].shape == (2, 4, 20)
    assert sum(p.numel() for p in hk.parameters()) == 2 * 4 * 6 + 4 + 4 * 8 + 8
    # channels ("heads"): params 2·C·H·kd·S + C·H + (C·H)·2H + 2H; linear=True returns the C·H conv channels
    mc = GConv(4, 64, kernel_dim=8, channels=3, bidirectional=True)
    s = mc.num_scales
    assert sum(p.numel() for p in mc.parameters()) == 2 * 3 * 4 * 8 * s + 3 * 4 + 12 * 8 + 8
    lin = GConv(4, 64, kernel_dim=8, channels=2, linear=True)
    assert lin.output_linear is None and lin(torch.randn(2, 4, 30))[0].shape == (2, 8, 30)
    with pytest.raises(ValueError, match="hankel"):
        GConv(4, 32, mode="cat_hankel")
    with pytest.raises(ValueError, match="channels"):
        GConv(4, 32, channels=0)


def test_interpolation_semantics_nearest_linear_sum() -> None:
    """Pieces written out independently: nearest = repeat each tap 2^max(0,i-1) times; linear (align_corners=False)
    at scale 2 = (3/4, 1/4) mixes of neighbours with edge clamping; 'sum' = sum of zero-padded upsampled pieces."""
    torch.manual_seed(0)
    near = GConv(2, 32, kernel_dim=4, mode="cat_randn_nearest", decay_min=1, decay_max=1)
    k = near.raw_kernel()[0]  # multiplier 1: pieces are the upsampled sub-kernels
    expect = torch.cat([p[0].repeat_interleave(2 ** max(0, i - 1), -1) for i, p in enumerate(near.kernel_list)], -1)
    torch.testing.assert_close(k, expect)
    lin = GConv(2, 32, kernel_dim=4, mode="cat_randn", decay_min=1, decay_max=1)
    x = lin.kernel_list[2][0]  # scale 2 piece, taps 8..15 of the kernel
    left = torch.cat([x[:, :1], x[:, :-1]], -1)
    right = torch.cat([x[:, 1:], x[:, -1:]], -1)
    piece = torch.stack([0.75 * x + 0.25 * left, 0.75 * x + 0.25 * right], -1).flatten(1)
    torch.testing.assert_close(lin.raw_kernel()[0][:, 8:16], piece)
    sm = GConv(2, 32, kernel_dim=4, mode="sum_randn_nearest", decay_min=2, decay_max=2)
    s = sm.num_scales
    total = torch.zeros(2, sm.kernel_length)
    for i, p in enumerate(sm.kernel_list):
        up = (p[0] * 2.0 ** (s - i - 1)).repeat_interleave(2**i, -1)
        total[:, : up.shape[-1]] += up
    torch.testing.assert_close(sm.raw_kernel()[0], total)
