"""Monarch FFT (card flashfftconv): the card's factorisation table (orders 2, 3, 4), exactness at every card size,
the real-input trick (N/2-point complex FFT + post-twiddle) and its errors."""

from __future__ import annotations

import math

import pytest
import torch

from convatlas.ops.fft_conv import direct_conv
from convatlas.ops.monarch_fft import (
    digit_permutation,
    monarch_dft,
    monarch_factors,
    monarch_idft,
    monarch_irfft,
    monarch_rfft,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in tests/conftest.py

# Card table (official flashfftconv/conv.py FlashFFTConv.__init__, default use_32_butterfly=True), written as the
# full digit factorisation: outer butterfly factor first, then the inner fused kernel's factors. 512 and 2048 use
# the real-input trick officially (16x16 and 32x32 on N/2; see test_real_trick_uses_card_factors).
CARD_TABLE = {
    256: (16, 16),
    1024: (32, 32),
    4096: (16, 16, 16),
    8192: (32, 16, 16),
    16384: (16, 32, 32),
    32768: (32, 32, 32),
    65536: (16, 16, 16, 16),  # outer 16 x inner 4096 (16x16x16)
    131072: (32, 16, 16, 16),  # outer 32 x 4096
    262144: (32, 32, 16, 16),  # outer 32 x 8192 (32x16x16)
    524288: (32, 16, 32, 32),  # outer 32 x 16384 (16x32x32)
    1048576: (32, 32, 32, 32),  # outer 32 x 32768
    2097152: (64, 32, 32, 32),  # outer 64 x 32768
    4194304: (128, 32, 32, 32),  # outer 128 x 32768
}


def test_factorisations_follow_the_card_table() -> None:
    assert {n: monarch_factors(n) for n in CARD_TABLE} == CARD_TABLE
    orders = {len(f) for f in CARD_TABLE.values()}
    assert orders == {2, 3, 4}


@pytest.mark.parametrize("n", [n for n in CARD_TABLE if n <= 1 << 19])
def test_monarch_exact_at_every_card_size(n: int) -> None:
    """Order 2 (256, 1024), 3 (4096 ... 32768) and 4 (65536 ... 512K) against torch.fft in complex128: forward,
    inverse and the digit-permuted order (tolerance 1e-12·sqrt(N); measured 1-4e-15·sqrt(N))."""
    f = monarch_factors(n)
    g = torch.Generator().manual_seed(n % 9973)
    x = torch.complex(torch.randn(1, n, dtype=torch.float64, generator=g),
                      torch.randn(1, n, dtype=torch.float64, generator=g))
    ref = torch.fft.fft(x)
    tol = 1e-12 * math.sqrt(n)
    assert (monarch_dft(x, f) - ref).abs().max() < tol
    assert (monarch_idft(ref, f) - x).abs().max() < 1e-12
    if n <= 65536:
        assert (monarch_dft(x, f, permuted=True) - ref[..., digit_permutation(f)]).abs().max() < tol


def test_real_trick_uses_card_factors_and_equals_rfft() -> None:
    """Official sizes 512 / 2048: a 256 (16x16) / 1024 (32x32) complex Monarch FFT plus the post-twiddle; also odd
    and non-power-of-two lengths with implicit zero padding."""
    for n, seq_len in ((512, 512), (512, 300), (2048, 2048), (2048, 1001), (24, 13), (2, 1)):
        x = torch.randn(3, 2, seq_len, dtype=torch.float64)
        spec = monarch_rfft(x, n)
        assert spec.shape == (3, 2, n // 2 + 1) and spec.dtype == torch.complex128
        assert (spec - torch.fft.rfft(x, n)).abs().max() < 1e-12 * math.sqrt(n)
        back = monarch_irfft(spec, n)
        assert (back - torch.fft.irfft(spec, n)).abs().max() < 1e-12
        assert (back[..., :seq_len] - x).abs().max() < 1e-12
        assert (monarch_irfft(spec, n, valid_out=seq_len) - x).abs().max() < 1e-12
    # irfft semantics: the imaginary parts of bins 0 and n/2 are ignored
    spec = torch.randn(4, 129, dtype=torch.complex128)
    assert (monarch_irfft(spec, 256) - torch.fft.irfft(spec, 256)).abs().max() < 1e-12
    # float32 in -> complex64 / float32 out; bf16 computed in fp32
    x32 = torch.randn(2, 512)
    assert monarch_rfft(x32).dtype == torch.complex64
    assert monarch_irfft(monarch_rfft(x32), 512).dtype == torch.float32
    xb = x32.bfloat16()
    assert (monarch_rfft(xb) - torch.fft.rfft(xb.float())).abs().max() < 1e-3


def test_real_trick_causal_conv_equals_direct() -> None:
    """FlashFFTConv's r2r path (kernel rfft passed): irfft(rfft(u)·rfft(k), 2L)[:L] == causal conv (float64)."""
    u = torch.randn(2, 4, 300, dtype=torch.float64)
    k = torch.randn(4, 300, dtype=torch.float64)
    n = 1024
    y = monarch_irfft(monarch_rfft(u, n) * torch.fft.rfft(k, n), n, valid_out=300)
    assert (y - direct_conv(u, k)).abs().max() < 1e-10


def test_real_trick_errors_name_shapes() -> None:
    with pytest.raises(ValueError, match="even FFT size"):
        monarch_rfft(torch.randn(2, 8), 9)
    with pytest.raises(ValueError, match=r"L=20 must be in \[1, n=16\].*\(2, 20\)"):
        monarch_rfft(torch.randn(2, 20), 16)
    with pytest.raises(ValueError, match="real floating-point"):
        monarch_rfft(torch.randn(2, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match="multiply to n/2 = 8"):
        monarch_rfft(torch.randn(2, 16), 16, factors=(2, 2))
    with pytest.raises(ValueError, match=r"n/2\+1 = 9.*\(2, 8\)"):
        monarch_irfft(torch.randn(2, 8, dtype=torch.complex64), 16)
    with pytest.raises(ValueError, match="complex"):
        monarch_irfft(torch.randn(2, 9), 16)
