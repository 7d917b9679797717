"""fft_conv inference with an uncached kernel: the kernel FFT runs inside the cache-blocked pass (flashfftconv)."""

from __future__ import annotations

import pytest
import torch

from convatlas.ops import fft_conv as fc
from convatlas.ops.fft_conv import direct_conv, fft_conv, kernel_spectrum


@pytest.mark.parametrize("workspace", (False, True))
@pytest.mark.parametrize("bsz,h,seq_len,taps", [(1, 10, 500, 500), (3, 10, 300, 40), (2, 3, 257, 900), (5, 2, 64, 64)])
def test_uncached_fused_path_exact(monkeypatch: pytest.MonkeyPatch, workspace: bool, bsz: int, h: int,
                                   seq_len: int, taps: int) -> None:
    # small blocks (several channel blocks and batch groups); optionally force the reused-workspace branch
    monkeypatch.setattr(fc, "_BLOCK_SAMPLES", 1 << 10)
    monkeypatch.setattr(fc, "_WORKSPACE_MIN_SAMPLES", 1 if workspace else 1 << 40)
    fc.clear_workspace()

    def no_spectrum(*args, **kwargs):
        raise AssertionError("the uncached inference path must not build the full kernel spectrum")

    g = torch.Generator().manual_seed(bsz * 100 + h)
    u = torch.randn(bsz, h, seq_len, dtype=torch.float64, generator=g)
    k = torch.randn(h, taps, dtype=torch.float64, generator=g)
    d = torch.randn(h, dtype=torch.float64, generator=g)
    g1 = torch.randn(bsz, h, seq_len, dtype=torch.float64, generator=g)
    g2 = torch.randn(1, h, 1, dtype=torch.float64, generator=g)
    ref = direct_conv(u * g1, k, d) * g2
    cached = fft_conv(u, None, d, pregate=g1, postgate=g2, spectrum=kernel_spectrum(k, seq_len, backend="torch"))
    monkeypatch.setattr(fc, "kernel_spectrum", no_spectrum)
    with torch.no_grad():
        for _ in range(2):  # second call reuses the workspace
            y = fft_conv(u, k, d, pregate=g1, postgate=g2, backend="torch")
            assert y.dtype == torch.float64 and y.shape == u.shape
            assert (y - ref).abs().max().item() < 1e-10
            assert (y - cached).abs().max().item() < 1e-10
        # bf16 activations, fp32 kernel: computed in fp32, cast back
        yb = fft_conv(u.bfloat16(), k.float(), d.float(), backend="torch")
        assert yb.dtype == torch.bfloat16
        refb = direct_conv(u.bfloat16().double(), k.float().double(), d.float().double())
        assert ((yb.double() - refb).abs() <= 1e-2 * refb.abs() + 1e-2 * refb.abs().max()).all()
    fc.clear_workspace()


def test_uncached_grad_path_unchanged() -> None:
    # with gradients the kernel spectrum is still built once and the blocked autograd function is used
    u = torch.randn(2, 3, 40, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 40, dtype=torch.float64, requires_grad=True)
    d = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: fft_conv(a, b, c, backend="torch"), (u, k, d))
