"""FDConv drop-in layer (card: fdconv)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convatlas.identities import identities_for
from convatlas.layers.fdconv import FDConv, FrequencyBandModulation, fdconv_dft_to_weight, fdconv_weight_to_dft
from convatlas.ops.frequency import frequency_bands, max_norm_lowpass_masks


def test_single_layer_param_count_matches_official() -> None:
    m = FDConv(64, 64, 3, padding=1, kernel_num=64)
    assert sum(p.numel() for p in m.parameters()) == 46_462
    assert tuple(m.dft_weight.shape) == (1, 192, 97, 2)
    assert tuple(m.KSM_Local.conv.weight.shape) == (576, 1, 5)


@pytest.mark.parametrize("cin,cout,k", [(32, 48, 3), (24, 40, 1), (33, 20, 3)])
def test_weight_dft_roundtrip_any_width(cin: int, cout: int, k: int) -> None:
    w = torch.randn(cout, cin, k, k, dtype=torch.float64)
    back = fdconv_dft_to_weight(fdconv_weight_to_dft(w), cout, cin, k)
    assert torch.allclose(back, w, atol=1e-10)  # odd C_in*k works because the size is passed explicitly


def test_fallback_is_plain_conv() -> None:
    conv = nn.Conv2d(16, 16, 3, padding=1)
    layer = FDConv.from_conv(conv)
    assert not layer.dynamic
    x = torch.randn(2, 16, 8, 8)
    assert torch.allclose(layer(x), conv(x))
    layer5 = FDConv.from_conv(nn.Conv2d(32, 32, 5, padding=2))
    assert not layer5.dynamic


@pytest.mark.parametrize("stride,k,bias", [(1, 3, False), (2, 3, True), (1, 1, False)])
def test_drop_in_shapes_and_grads(stride: int, k: int, bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 48, k, stride, k // 2, bias=bias)
    layer = FDConv.from_conv(conv, kernel_num=4)
    x = torch.randn(2, 32, 12, 12)
    y = layer(x)
    assert y.shape == conv(x).shape
    y.square().sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
    with torch.no_grad():
        rel = (layer.eval()(x) - conv(x)).norm() / conv(x).norm()
    assert rel < 1e-2  # attentions start at ~1


def test_both_attention_placements_agree() -> None:
    # Small maps fold channel/filter attention into the kernel; large maps apply them to input/output.
    torch.manual_seed(0)
    layer = FDConv(24, 32, 3, padding=1, kernel_num=4).eval()
    for m in layer.modules():
        if isinstance(m, nn.Conv2d) and m.weight.std() < 1e-3:
            nn.init.normal_(m.weight, std=0.3)
    x_small = torch.randn(2, 24, 4, 4)
    x_big = torch.nn.functional.pad(x_small, (0, 28, 0, 28))
    with torch.no_grad():
        a = layer(x_small)  # compose branch: 32*24*9 >= (24+32)*16
        b = layer(x_big)  # input/output branch
    assert a.shape[-1] == 4 and b.shape[-1] == 32
    assert torch.isfinite(a).all() and torch.isfinite(b).all()


def test_fbm_bands_telescope_and_constant_image() -> None:
    x = torch.randn(2, 3, 16, 16)
    masks = max_norm_lowpass_masks(16, 16, [2, 4, 8])
    highs, low = frequency_bands(x, masks)
    assert torch.allclose(sum(highs) + low, x, atol=1e-5)
    const = torch.full((1, 2, 16, 16), 3.0)
    highs, low = frequency_bands(const, max_norm_lowpass_masks(16, 16, [2]))
    assert highs[0].abs().max() < 1e-5 and torch.allclose(low, const, atol=1e-5)
    fbm = FrequencyBandModulation(3)
    assert fbm(x).shape == x.shape


def test_bf16_autocast_and_meta() -> None:
    layer = FDConv(32, 32, 3, padding=1, kernel_num=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(2, 32, 8, 8))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    with torch.device("meta"):
        assert FDConv(64, 64, 3, padding=1, kernel_num=64)(torch.randn(2, 64, 8, 8)).shape == (2, 64, 8, 8)


def test_kernel_num_divisibility_error() -> None:
    with pytest.raises(ValueError, match="kernel_num"):
        FDConv(32, 32, 3, kernel_num=5)


def test_identities() -> None:
    checks = identities_for("fdconv")
    assert len(checks) >= 3
    for c in checks:
        c.fn()


@pytest.mark.parametrize("k,stride,pad", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0)])
def test_per_sample_conv_matches_grouped_conv(k: int, stride: int, pad: int) -> None:
    from convatlas.layers.fdconv import per_sample_conv2d

    x = torch.randn(3, 5, 9, 8, dtype=torch.float64)
    w = torch.randn(3, 4, 5, k, k, dtype=torch.float64)
    ref = torch.nn.functional.conv2d(x.reshape(1, 15, 9, 8), w.reshape(12, 5, k, k), None, stride, pad, 1, groups=3)
    out = per_sample_conv2d(x, w, (stride, stride), (pad, pad), (1, 1))
    assert torch.allclose(out, ref.view(3, 4, *ref.shape[-2:]), atol=1e-12)


def test_fbm_placement_options() -> None:
    """FBM goes to 3x3 layers (any stride); ``use_fbm_for_stride`` adds it to strided 1x1 layers (official)."""
    assert FDConv(32, 32, 3, 2, 1, kernel_num=4).FBM is not None
    assert FDConv(32, 32, 1, 2, kernel_num=4).FBM is None
    layer = FDConv(32, 32, 1, 2, kernel_num=4, use_fbm_for_stride=True)
    assert layer.FBM is not None and FDConv(32, 32, 1, 1, kernel_num=4, use_fbm_for_stride=True).FBM is None
    assert layer(torch.randn(2, 32, 8, 8)).shape == (2, 32, 4, 4)


@pytest.mark.parametrize("opts", [{}, {"ksm_local_act": "tanh", "ksm_global_act": "tanh"}, {"use_ksm_local": False}])
@pytest.mark.parametrize(
    "cin,cout,k,stride,pad,hw", [(32, 32, 3, 1, 1, 12), (32, 48, 3, 2, 1, 11), (24, 40, 1, 1, 0, 6), (64, 64, 3, 1, 1, 3)]
)
def test_inference_path_matches_autograd_path(opts: dict, cin: int, cout: int, k: int, stride: int, pad: int,
                                              hw: int) -> None:
    """The no-grad fast path (kernel in irfft2 layout, in-place attentions, GEMM KSM-Local) equals the autograd
    path; (64, 64, 3x3 at 3x3) takes the folded-attention branch, the others the input/output one."""
    layer = FDConv(cin, cout, k, stride, pad, bias=True, kernel_num=8, **opts).eval()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if p.dim() > 1 and name != "dft_weight":
                p.normal_(0, 0.3)
        layer.bias.normal_()
    x = torch.randn(3, cin, hw, hw)
    ref = layer(x)  # grad enabled: the autograd path
    with torch.inference_mode():
        out = layer(x)
        out_cl = layer(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    torch.testing.assert_close(out_cl, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
