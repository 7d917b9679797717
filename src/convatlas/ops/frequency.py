"""Frequency-domain helpers shared by FDConv and AFFNet (cards: fdconv, aff).

- :func:`fft2_frequencies` / :func:`radial_frequency_order`: the (normalised) frequency of every rfft2 bin and
  the bins sorted by radial frequency (FDConv's Fourier Disjoint Weight groups).
- :func:`max_norm_lowpass_masks`: FDConv's FBM low-pass masks ``max(|f_h|, |f_w|) < 0.5 / s``.
- :func:`frequency_bands`: split a map into telescoping high-frequency bands plus a residual low band.
- :func:`circular_conv2d`: direct (FFT-free) circular depthwise convolution, the reference for the convolution
  theorem; :func:`spectral_filter2d`: multiply an rfft2 spectrum by a filter and transform back.

All functions take/return real tensors (B, C, H, W) unless stated; FFTs run in float32 or float64.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "fft2_frequencies",
    "radial_frequency_order",
    "max_norm_lowpass_masks",
    "frequency_bands",
    "spectral_filter2d",
    "circular_conv2d",
    "kernel_from_spectrum",
    "autocast_off",
]


def autocast_off(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Context that disables autocast on ``device`` (FFTs run in float32); a no-op where autocast does not exist
    (e.g. the meta device used for counting)."""
    kind = device.type if isinstance(device, torch.device) else str(device)
    if torch.amp.is_autocast_available(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()


def fft2_frequencies(h: int, w: int, rfft: bool = True) -> Tensor:
    """(h, w', 2) normalised frequencies (cycles/sample) of every 2-D FFT bin; w' = w//2+1 for rfft."""
    fh = torch.fft.fftfreq(h, device="cpu")
    fw = torch.fft.rfftfreq(w, device="cpu") if rfft else torch.fft.fftfreq(w, device="cpu")
    return torch.stack(torch.meshgrid(fh, fw, indexing="ij"), dim=-1)


def radial_frequency_order(h: int, w: int, rfft: bool = True) -> Tensor:
    """Row/col indices (2, h*w') of the bins sorted by radial frequency sqrt(f_h^2 + f_w^2), low to high.

    Ties keep row-major order (stable sort); the official FDConv uses ``torch.sort`` (not guaranteed stable),
    which gives the same order on CPU for these sizes in practice.
    """
    freq = fft2_frequencies(h, w, rfft)
    dist = freq.norm(dim=-1).flatten()
    order = torch.sort(dist, stable=True).indices
    wp = freq.shape[1]
    return torch.stack([order // wp, order % wp], dim=0)


def max_norm_lowpass_masks(h: int, w: int, scales: tuple[int, ...] | list[int]) -> Tensor:
    """(len(scales), 1, h, w//2+1) boolean rfft2 masks ``max(|f_h|, |f_w|) < 0.5 / s (+1e-8)``."""
    fmax = fft2_frequencies(h, w, rfft=True).abs().amax(dim=-1)
    return torch.stack([fmax < 0.5 / s + 1e-8 for s in scales], dim=0).unsqueeze(1)


def frequency_bands(x: Tensor, masks: Tensor) -> tuple[list[Tensor], Tensor]:
    """Telescoping band split of ``x`` (B, C, H, W) by nested low-pass ``masks`` (S, 1, H, W//2+1).

    Returns ``([high_1, ..., high_S], low_S)`` with ``high_s = low_{s-1} - low_s`` (``low_0 = x``), so
    ``sum(highs) + low_S == x`` exactly up to round-off. FFTs use ``norm="ortho"`` in float32 (or float64).
    """
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(dtype)
    h, w = x.shape[-2:]
    spec = torch.fft.rfft2(x, norm="ortho")
    prev, highs = x, []
    for s in range(masks.shape[0]):
        low = torch.fft.irfft2(spec * masks[s].to(spec.real.dtype), s=(h, w), norm="ortho")
        highs.append(prev - low)
        prev = low
    return highs, prev


def spectral_filter2d(x: Tensor, spectrum_filter: Tensor) -> Tensor:
    """irfft2(rfft2(x, ortho) * filter, ortho) for x (B, C, H, W) and a complex filter broadcastable to the
    (B, C, H, W//2+1) spectrum. By the convolution theorem this is a circular convolution (see
    :func:`kernel_from_spectrum`)."""
    h, w = x.shape[-2:]
    return torch.fft.irfft2(torch.fft.rfft2(x, norm="ortho") * spectrum_filter, s=(h, w), norm="ortho")


def kernel_from_spectrum(spectrum_filter: Tensor, h: int, w: int) -> Tensor:
    """Spatial kernel (..., h, w) whose circular convolution equals :func:`spectral_filter2d` with this filter.

    Filtering an ortho-normalised spectrum by M equals circular convolution with ``k = irfft2(M, norm="backward")``
    (the unnormalised DFT of k is M), computed here as ``irfft2(M, norm="ortho") / sqrt(h*w)``.
    """
    return torch.fft.irfft2(spectrum_filter, s=(h, w), norm="ortho") / (h * w) ** 0.5


def circular_conv2d(x: Tensor, kernel: Tensor) -> Tensor:
    """Direct circular depthwise convolution (FFT-free reference), anchored at index 0.

    ``out[b, c, i, j] = sum_{u, v} kernel[c, u, v] * x[b, c, (i - u) mod H, (j - v) mod W]``
    for x (B, C, H, W) and kernel (C, H, W) (or (B, C, H, W) for a per-sample kernel).
    """
    b, c, h, w = x.shape
    # Flip the kernel so the correlation computed by conv2d becomes a convolution, and wrap-pad the input.
    k = torch.flip(kernel, dims=(-2, -1))
    k = torch.roll(k, shifts=(1, 1), dims=(-2, -1))  # index 0 of the flipped kernel sits at (h-1, w-1) before roll
    xp = F.pad(x, (0, w - 1, 0, h - 1), mode="circular")
    if k.ndim == 3:
        return F.conv2d(xp, k.unsqueeze(1), groups=c)
    out = F.conv2d(xp.reshape(1, b * c, xp.shape[-2], xp.shape[-1]), k.reshape(b * c, 1, h, w), groups=b * c)
    return out.reshape(b, c, h, w)
