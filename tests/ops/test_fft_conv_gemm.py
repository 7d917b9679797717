"""FlashFFTConv on CPU: the real-GEMM Monarch convolution and the workspace path of the fused FFT conv."""

from __future__ import annotations

import pytest
import torch

import convatlas.ops.fft_conv as fc
from convatlas.ops.fft_conv import DISPATCH, choose_backend, fft_conv, kernel_spectrum, measure_dispatch
from convatlas.ops.monarch_fft import (
    real_monarch_conv,
    real_monarch_macs,
    real_monarch_spectrum,
    real_monarch_split,
)


def loop_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y[t] = sum_j k[j] u[t-j] (obviously correct causal convolution)."""
    y = torch.zeros_like(u)
    for j in range(min(k.shape[-1], u.shape[-1])):
        y[..., j:] += k[:, j : j + 1] * u[..., : u.shape[-1] - j]
    return y


@pytest.mark.parametrize("n,seq_len,out_len", [(512, 256, 256), (14, 7, 7), (400, 300, 123), (96, 96, 96), (2, 1, 1)])
def test_real_monarch_equals_rfft_conv_float64(n: int, seq_len: int, out_len: int) -> None:
    g = torch.Generator().manual_seed(n)
    u = torch.randn(2, 3, seq_len, dtype=torch.float64, generator=g)
    k = torch.randn(3, min(n, 40), dtype=torch.float64, generator=g)
    n1, n2 = real_monarch_split(n)
    assert n1 * n2 == n
    y = real_monarch_conv(u, real_monarch_spectrum(k, n, n1), n, n1, out_len)
    ref = torch.fft.irfft(torch.fft.rfft(u, n) * torch.fft.rfft(k, n), n)[..., :out_len]
    assert y.shape == (2, 3, out_len) and (y - ref).abs().max() < 1e-10


def test_real_monarch_split_and_macs() -> None:
    assert real_monarch_split(4096) in ((32, 128), (64, 64))
    n1, n2 = real_monarch_split(65536)
    assert n1 * n2 == 65536 and n2 >= n1
    # ~ n·N2 + 4·n·N1 real MACs per row (L = n/2), far more than an FFT's ~n·log2(n)
    macs = real_monarch_macs(4096, 32, 2048, 2048, rows=1)
    assert 4096 * 128 <= macs <= 4096 * (128 + 4 * 32) * 1.2


def test_real_monarch_bf16_gemms_within_tolerance() -> None:
    u = torch.randn(2, 4, 512)
    k = torch.randn(4, 512) / 16
    n1 = real_monarch_split(1024)[0]
    y = real_monarch_conv(u, real_monarch_spectrum(k, 1024, n1), 1024, n1, compute_dtype=torch.bfloat16)
    ref = loop_conv(u.double(), k.double())
    assert y.dtype == torch.float32
    assert ((y.double() - ref).abs().max() / ref.abs().max()).item() < 2e-2


def test_gemm_backend_blocked_inference_and_training_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fc, "_BLOCK_SAMPLES", 64)  # several row blocks
    u = torch.randn(3, 5, 40, dtype=torch.float64)
    k = torch.randn(5, 40, dtype=torch.float64)
    d = torch.randn(5, dtype=torch.float64)
    ref = loop_conv(u, k) + d[:, None] * u
    with torch.no_grad():
        assert (fft_conv(u, k, d, backend="gemm") - ref).abs().max() < 1e-10
    s = kernel_spectrum(k, 40, backend="gemm")
    assert s.backend == "gemm" and s.k_f.shape[0] == 5
    uu = u.clone().requires_grad_()
    y = fft_conv(uu, spectrum=s)
    y.sum().backward()
    assert uu.grad is not None and (y.detach() - loop_conv(u, k)).abs().max() < 1e-10


def test_gemm_dispatch_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DISPATCH, "gemm_sizes", frozenset({1024}))
    monkeypatch.setitem(DISPATCH, "monarch_sizes", frozenset())
    assert choose_backend(512, 512) == "gemm"  # n = fast pow2 size of 1023 = 1024
    assert choose_backend(512, 512, n=2048) == "torch"


def test_measure_dispatch_updates_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DISPATCH, "gemm_sizes", frozenset())
    monkeypatch.setitem(DISPATCH, "monarch_sizes", frozenset())
    out = measure_dispatch(sizes=(64, 128), batch=1, channels=4, repeats=1)
    assert out is DISPATCH
    assert DISPATCH["gemm_sizes"] <= {64, 128} and DISPATCH["monarch_sizes"] <= {64, 128}
    assert not DISPATCH["gemm_sizes"] & DISPATCH["monarch_sizes"]


def test_workspace_path_exact_and_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks >= _WORKSPACE_MIN_SAMPLES run through the cached zero-padded workspaces; force it on tiny inputs."""
    monkeypatch.setattr(fc, "_WORKSPACE_MIN_SAMPLES", 0)
    monkeypatch.setattr(fc, "_BLOCK_SAMPLES", 64)
    fc.clear_workspace()
    k = torch.randn(6, 30, dtype=torch.float64)
    d = torch.randn(6, dtype=torch.float64)
    for seq_len in (50, 20, 50):  # same n: the cached workspace's zero tail must follow the length
        u = torch.randn(3, 6, seq_len, dtype=torch.float64)
        g1, g2 = torch.randn(1, 6, seq_len, dtype=torch.float64), torch.randn(3, 6, seq_len, dtype=torch.float64)
        with torch.no_grad():
            y = fft_conv(u, k, d, n=128, pregate=g1, postgate=g2, backend="torch")
            y2 = fft_conv(u, k, d, n=128, backend="torch")
        assert (y - (loop_conv(u * g1, k) + d[:, None] * u * g1) * g2).abs().max() < 1e-10
        assert (y2 - (loop_conv(u, k) + d[:, None] * u)).abs().max() < 1e-10
    assert fc._WS.entry is not None  # kept between calls
    # frequency-sparse through the workspace, and the blocked backward
    u = torch.randn(2, 6, 50, dtype=torch.float64)
    n = 100
    kf = torch.fft.rfft(k, n)
    kf[..., 20:] = 0
    ref = torch.fft.irfft(torch.fft.rfft(u, n) * kf, n)[..., :50]
    with torch.no_grad():
        assert (fft_conv(u, k, n=n, freq_keep=20, backend="torch") - ref).abs().max() < 1e-10
    uu, kk, dd = (t.clone().requires_grad_() for t in (u[:, :, :8], k[:, :5], d))
    assert torch.autograd.gradcheck(lambda a, b, c: fft_conv(a, b, c, backend="torch"), (uu, kk, dd), fast_mode=True)
    fc.set_workspace_limit(0)  # disabling the cache frees it
    try:
        assert fc._WS.entry is None
        with torch.no_grad():
            fft_conv(u, k, backend="torch")
        assert fc._WS.entry is None
    finally:
        fc.set_workspace_limit(1 << 28)
    with pytest.raises(ValueError, match="nbytes"):
        fc.set_workspace_limit(-1)


def test_workspace_path_bf16_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fc, "_WORKSPACE_MIN_SAMPLES", 0)
    u = torch.randn(2, 4, 256).bfloat16()
    k = torch.randn(4, 256) / 16
    with torch.no_grad():
        y = fft_conv(u, k, backend="torch")
    ref = loop_conv(u.double(), k.double())
    assert y.dtype == torch.bfloat16 and ((y.double() - ref).abs().max() / ref.abs().max()).item() < 1e-2
