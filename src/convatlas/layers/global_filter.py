"""HorNet's Global-Local Filter (card: hornet, arXiv 2207.14284; official code raoyongming/HorNet, MIT).

:class:`GlobalLocalFilter` (B, D, H, W) -> (B, D, H, W): LayerNorm over channels, then half the channels go through
a 3x3 depthwise conv (local) and half through a learnable global filter in the Fourier domain
(``irfft2(rfft2(x, ortho) * W, ortho)``, W complex (D/2, h, w) stored as a real (D/2, h, w, 2) tensor and
bilinearly resized, align_corners=True, when the spectrum size differs), the halves are interleaved channel-wise
(a0, b0, a1, b1, ...) and normalised again. The FFT runs in float32 even under autocast (as in the official code).

:func:`global_filter` is the stateless Fourier-domain product; it equals a circular convolution with the
spatial kernel ``irfft2(W, s=(H, W))`` (registered identity below).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.identities import register_component, register_identity
from convatlas.layers.norm import LayerNorm2d

__all__ = ["GlobalLocalFilter", "global_filter"]


def global_filter(x: Tensor, weight: Tensor) -> Tensor:
    """Fourier-domain depthwise filter: (B, C, H, W), real weight (C, h, w, 2) -> (B, C, H, W) float32.

    The weight is the half-spectrum (``w = W // 2 + 1`` for a native size) as (real, imag) pairs; it is resized
    bilinearly (align_corners=True) when (h, w) differs from the input's spectrum size.
    """
    h, w = x.shape[-2:]
    spec = torch.fft.rfft2(x.float(), dim=(2, 3), norm="ortho")
    weight = weight.float()
    if tuple(weight.shape[1:3]) != tuple(spec.shape[2:4]):
        weight = F.interpolate(weight.permute(3, 0, 1, 2), size=spec.shape[2:4], mode="bilinear", align_corners=True)
        weight = weight.permute(1, 2, 3, 0)
    spec = spec * torch.view_as_complex(weight.contiguous())
    return torch.fft.irfft2(spec, s=(h, w), dim=(2, 3), norm="ortho")


@register_component("hornet")
class GlobalLocalFilter(nn.Module):
    """Global-Local Filter: (B, D, H, W) -> (B, D, H, W) (card: hornet). Keys match the official code.

    Args:
        dim: D (even).
        h / w: size of the learnable half-spectrum (14 x 8 for a 14 x 14 map; 24 x 13 for 24 x 24).
    """

    def __init__(self, dim: int, h: int = 14, w: int = 8) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"GlobalLocalFilter: dim must be even, got {dim}")
        self.dw = nn.Conv2d(dim // 2, dim // 2, 3, padding=1, bias=False, groups=dim // 2)
        self.complex_weight = nn.Parameter(torch.empty(dim // 2, h, w, 2))
        nn.init.trunc_normal_(self.complex_weight, std=0.02)
        self.pre_norm = LayerNorm2d(dim, eps=1e-6)
        self.post_norm = LayerNorm2d(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pre_norm(x)
        x1, x2 = torch.chunk(x, 2, dim=1)
        x1 = self.dw(x1)
        x2 = global_filter(x2, self.complex_weight)
        b, c, h, w = x1.shape
        # Under autocast keep the float32 FFT half (the official torch.cat promotes); a pure low-precision model
        # (e.g. .bfloat16()) gets its own dtype back so post_norm's parameters match.
        autocast = x.device.type in ("cpu", "cuda", "xpu") and torch.is_autocast_enabled(x.device.type)
        dt = torch.promote_types(x1.dtype, x2.dtype) if autocast else x1.dtype
        x = torch.stack((x1.to(dt), x2.to(dt)), dim=2).reshape(b, 2 * c, h, w)
        return self.post_norm(x)


def _circular_conv(x: Tensor, k: Tensor) -> Tensor:
    """Obvious depthwise circular convolution: y[c, i, j] = sum_{m, n} k[c, m, n] x[c, i - m, j - n] (mod H, W)."""
    out = torch.zeros_like(x)
    for m in range(k.shape[-2]):
        for n in range(k.shape[-1]):
            out += k[:, m, n, None, None] * torch.roll(x, shifts=(m, n), dims=(-2, -1))
    return out


@register_identity("hornet", "global filter == circular depthwise conv with kernel irfft2(W); interpolated W accepted")
def _global_filter_identity() -> str:
    g = torch.Generator().manual_seed(0)
    errs = []
    for hh, ww in ((6, 5), (7, 8)):
        x = torch.randn(2, 3, hh, ww, generator=g, dtype=torch.float64)
        wgt = torch.randn(3, hh, ww // 2 + 1, 2, generator=g, dtype=torch.float64)
        y = torch.fft.irfft2(torch.fft.rfft2(x, norm="ortho") * torch.view_as_complex(wgt), s=(hh, ww), norm="ortho")
        kernel = torch.fft.irfft2(torch.view_as_complex(wgt), s=(hh, ww))
        errs.append((y - _circular_conv(x, kernel)).abs().max().item())
    err = max(errs)
    assert err < 1e-12, f"max abs error {err:.2e}"
    # float32 path of the layer's helper on a different-size input (weight resized) runs and round-trips:
    x = torch.randn(1, 4, 24, 24, generator=g)
    ones = torch.zeros(4, 14, 8, 2)
    ones[..., 0] = 1.0
    rt = (global_filter(x, ones) - x).abs().max().item()
    assert rt < 1e-5, f"unit-weight round trip error {rt:.2e}"
    return f"circular-conv max abs error {err:.1e} (float64); unit filter at 24x24 from a 14x8 weight: {rt:.1e}"


@register_identity("hornet", "GlobalLocalFilter with unit spectrum and delta 3x3 == post_norm(interleave(pre_norm(x)))")
def _glf_identity() -> str:
    torch.manual_seed(0)
    m = GlobalLocalFilter(8, 7, 4)
    with torch.no_grad():
        m.complex_weight.zero_()
        m.complex_weight[..., 0] = 1.0
        m.dw.weight.zero_()
        m.dw.weight[:, 0, 1, 1] = 1.0
        x = torch.randn(2, 8, 7, 7)
        xn = m.pre_norm(x)
        a, b = xn.chunk(2, 1)
        ref = m.post_norm(torch.stack((a, b), 2).reshape(2, 8, 7, 7))
        err = (m(x) - ref).abs().max().item()
    assert err < 1e-5, f"max abs error {err:.2e}"
    return f"max abs error {err:.1e} (float32)"
