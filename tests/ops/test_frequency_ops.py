"""ops/frequency.py helpers (cards: fdconv, aff)."""

from __future__ import annotations

import torch

from convatlas.ops.frequency import (
    circular_conv2d,
    kernel_from_spectrum,
    radial_frequency_order,
    spectral_filter2d,
)


def _loop_circular(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    for i in range(h):
        for j in range(w):
            for u in range(h):
                for v in range(w):
                    out[..., i, j] += k[..., u, v] * x[..., (i - u) % h, (j - v) % w]
    return out


def test_circular_conv_matches_loop_and_spectrum() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    k = torch.randn(3, 5, 6, dtype=torch.float64)
    ref = _loop_circular(x, k)
    assert torch.allclose(circular_conv2d(x, k), ref, atol=1e-12)
    spec = torch.fft.rfft2(k)
    assert torch.allclose(spectral_filter2d(x, spec), ref, atol=1e-12)
    assert torch.allclose(kernel_from_spectrum(spec, 5, 6), k, atol=1e-12)
    kb = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    assert torch.allclose(circular_conv2d(x, kb), _loop_circular(x, kb), atol=1e-12)


def test_radial_order_is_a_permutation_sorted_by_radius() -> None:
    idx = radial_frequency_order(6, 8)
    assert idx.shape == (2, 6 * 5)
    flat = idx[0] * 5 + idx[1]
    assert torch.equal(flat.sort().values, torch.arange(30))
    fh = torch.fft.fftfreq(6)[idx[0]]
    fw = torch.fft.rfftfreq(8)[idx[1]]
    r = (fh**2 + fw**2).sqrt()
    assert bool((r[1:] >= r[:-1] - 1e-12).all())
