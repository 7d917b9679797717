"""FlashFFTConv operator: fft_conv (all backends) and the Monarch FFT against obviously-correct references."""

from __future__ import annotations

import pytest
import torch

from convatlas.identities import identities_for
from convatlas.ops.fft_conv import (
    DISPATCH,
    choose_backend,
    direct_conv,
    fast_fft_size,
    fft_conv,
    frequency_sparse_fft_conv,
    kernel_spectrum,
    monarch_fft_conv,
    naive_fft_conv,
    partial_fft_conv,
)
from convatlas.ops.monarch_fft import (
    digit_permutation,
    freq_block_rows,
    monarch_dft,
    monarch_factors,
    monarch_idft,
    permute_spectrum,
)

BACKENDS = ("torch", "monarch", "gemm", "direct", "blocked", "auto")


def loop_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Slowest, obviously correct causal convolution: y[t] = sum_j k[j] u[t-j]."""
    seq_len, taps = u.shape[-1], k.shape[-1]
    y = torch.zeros_like(u)
    for j in range(min(taps, seq_len)):
        y[..., j:] += k[:, j : j + 1] * u[..., : seq_len - j]
    return y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "seq_len,taps", [(1, 1), (2, 5), (7, 7), (64, 3), (100, 100), (129, 40), (300, 300), (257, 600), (1000, 17)]
)
def test_fft_conv_equals_loop_float64(backend: str, seq_len: int, taps: int) -> None:
    g = torch.Generator().manual_seed(seq_len * 1000 + taps)
    u = torch.randn(3, 4, seq_len, dtype=torch.float64, generator=g)
    k = torch.randn(4, taps, dtype=torch.float64, generator=g)
    y = fft_conv(u, k, backend=backend)
    assert y.shape == u.shape and y.dtype == torch.float64
    assert (y - loop_conv(u, k)).abs().max().item() < 1e-10


def test_direct_reference_equals_loop() -> None:
    u = torch.randn(2, 3, 50, dtype=torch.float64)
    k = torch.randn(3, 20, dtype=torch.float64)
    assert (direct_conv(u, k) - loop_conv(u, k)).abs().max() < 1e-12


@pytest.mark.parametrize("backend", ("torch", "monarch", "gemm"))
def test_gates_and_skip(backend: str) -> None:
    u = torch.randn(3, 4, 200, dtype=torch.float64)
    k = torch.randn(4, 200, dtype=torch.float64)
    d = torch.randn(4, dtype=torch.float64)
    g1, g2 = torch.randn_like(u), torch.randn_like(u)
    y = fft_conv(u, k, d, pregate=g1, postgate=g2, backend=backend)
    ref = (loop_conv(u * g1, k) + d[:, None] * u * g1) * g2
    assert (y - ref).abs().max() < 1e-10
    # card identity: fft_conv(u, k, pregate=g1, postgate=g2) == fft_conv(u*g1, k) * g2
    assert (fft_conv(u, k, pregate=g1, postgate=g2) - fft_conv(u * g1, k) * g2).abs().max() < 1e-10
    # broadcastable gate (1, H, 1)
    g3 = torch.randn(1, 4, 1, dtype=torch.float64)
    assert (fft_conv(u, k, pregate=g3, backend=backend) - loop_conv(u * g3, k)).abs().max() < 1e-10


def test_explicit_n_is_circular_like_flashfftconv() -> None:
    u = torch.randn(2, 3, 64, dtype=torch.float64)
    k = torch.randn(3, 64, dtype=torch.float64)
    n = 64  # FlashFFTConv(N) with L = N: circular convolution
    ref = torch.fft.irfft(torch.fft.rfft(u, n) * torch.fft.rfft(k, n), n)
    for b in ("torch", "monarch", "gemm"):
        assert (fft_conv(u, k, n=n, backend=b) - ref).abs().max() < 1e-10
    assert (monarch_fft_conv(u, k, n) - ref).abs().max() < 1e-10
    # kernel longer than L with n = 2L (SGConv bidirectional form)
    k2 = torch.randn(3, 128, dtype=torch.float64)
    ref2 = torch.fft.irfft(torch.fft.rfft(u, 128) * torch.fft.rfft(k2, 128), 128)[..., :64]
    for b in ("torch", "monarch", "gemm"):
        assert (fft_conv(u, k2, n=128, backend=b) - ref2).abs().max() < 1e-10


@pytest.mark.parametrize("backend", ("torch", "monarch", "gemm", "blocked", "direct"))
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
def test_low_precision_within_card_tolerance(backend: str, dtype: torch.dtype) -> None:
    """bf16/fp16 activations, fp32 kernel, fp32 compute, one rounding at the output (card pitfall): the error is
    bounded by the output format's unit roundoff (bf16 2^-8 = 3.9e-3, fp16 2^-11 = 4.9e-4) relative to max|y|.
    Thresholds: fp16 1e-3 (the card's ~1e-3), bf16 5e-3 (its rounding floor alone is 3.9e-3); measured 2.2-3.4e-3
    (bf16) and 2.9-4.0e-4 (fp16). A computation in bf16 would exceed them."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 8, 1024, generator=g).to(dtype)
    k = torch.randn(8, 1024 if backend not in ("blocked", "direct") else 64, generator=g) / 32
    y = fft_conv(u, k, backend=backend)
    assert y.dtype == dtype
    ref = direct_conv(u.double(), k.double())
    rel = ((y.double() - ref).abs().max() / ref.abs().max()).item()
    assert rel < (5e-3 if dtype == torch.bfloat16 else 1e-3), rel


def test_cached_spectrum_matches_and_is_reused() -> None:
    u = torch.randn(2, 4, 300)
    k = torch.randn(4, 300)
    for b in ("torch", "monarch", "gemm", "blocked", "direct"):
        s = kernel_spectrum(k, 300, backend=b)
        assert torch.allclose(fft_conv(u, spectrum=s), fft_conv(u, k, backend=b), atol=1e-4)
    s = kernel_spectrum(k, 300, backend="torch")
    with pytest.raises(ValueError, match="prepared for L=300"):
        fft_conv(torch.randn(2, 4, 200), spectrum=s)
    with pytest.raises(ValueError, match="either k or spectrum"):
        fft_conv(u, k, spectrum=s)


def test_gradcheck_float64() -> None:
    for b in ("torch", "monarch", "gemm", "blocked", "direct"):
        u = torch.randn(2, 2, 9, dtype=torch.float64, requires_grad=True)
        k = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
        d = torch.randn(2, dtype=torch.float64, requires_grad=True)
        g = torch.randn(2, 2, 9, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda u, k, d, g: fft_conv(u, k, d, postgate=g, backend=b), (u, k, d, g), fast_mode=True
        )


def test_gradcheck_gates_sparse_and_circular_forms() -> None:
    """Gradients of every input (u, k, D, pregate, postgate) on every backend, and of the frequency-sparse,
    circular (explicit n < L + Lk - 1) and partial forms (float64 gradcheck)."""

    def mk(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    for b in ("torch", "monarch", "gemm", "blocked", "direct"):
        args = (mk(2, 3, 11), mk(3, 7), mk(3), mk(2, 3, 11), mk(1, 3, 11))
        assert torch.autograd.gradcheck(
            lambda u, k, d, g1, g2: fft_conv(u, k, d, pregate=g1, postgate=g2, backend=b), args, fast_mode=True
        )
    for b in ("torch", "monarch", "gemm"):
        assert torch.autograd.gradcheck(
            lambda u, k, d: frequency_sparse_fft_conv(u, k, 10, d, backend=b), (mk(2, 3, 12), mk(3, 12), mk(3)),
            fast_mode=True,
        )
        assert torch.autograd.gradcheck(lambda u, k: fft_conv(u, k, n=16, backend=b), (mk(2, 3, 12), mk(3, 16)),
                                         fast_mode=True)
    assert torch.autograd.gradcheck(lambda u, k: partial_fft_conv(u, k, 4), (mk(2, 3, 40), mk(3, 40)), fast_mode=True)


@pytest.mark.slow
def test_torch_compile_fullgraph_train_and_inference() -> None:
    """fft_conv under torch.compile(fullgraph=True) (no graph breaks) on the FFT path, with gates and skip term:
    equal to eager in training (gradients too) and inference (aot_eager backend: traces the same graph as
    inductor without the C++ code generation)."""
    from convatlas.layers.long_conv import LongConv

    torch.manual_seed(0)
    layer = LongConv(4, 200, backend="torch")  # the FFT path (independent of the auto dispatch table)
    u, g1, g2 = torch.randn(2, 4, 256), torch.randn(2, 4, 256), torch.randn(1, 4, 256)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    y = compiled(u, g1, g2)
    y.sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    ref = layer(u, g1, g2)
    ref.sum().backward()
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    for g, p in zip(grads, layer.parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-4, rtol=1e-4)
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(u, g1, g2), layer(u, g1, g2), atol=1e-5, rtol=1e-5)


def test_partial_and_frequency_sparse() -> None:
    u = torch.randn(2, 3, 256, dtype=torch.float64)
    k = torch.randn(3, 256, dtype=torch.float64)
    assert (partial_fft_conv(u, k, 30) - loop_conv(u, k[:, :30])).abs().max() < 1e-10
    assert (partial_fft_conv(u, k, 256) - loop_conv(u, k)).abs().max() < 1e-10  # N_partial >= L: full conv
    n = 512
    full = torch.fft.irfft(torch.fft.rfft(u, n) * torch.fft.rfft(k, n), n)[..., :256]
    for b in ("torch", "monarch", "gemm"):
        assert (frequency_sparse_fft_conv(u, k, n + 2, backend=b) - full).abs().max() < 1e-10
        for npart in (2, 64, 130, 300):
            kf = torch.fft.rfft(k, n)
            kf[..., npart // 2 :] = 0
            ref = torch.fft.irfft(torch.fft.rfft(u, n) * kf, n)[..., :256]
            assert (frequency_sparse_fft_conv(u, k, npart, backend=b) - ref).abs().max() < 1e-10
    # partial convolution: the cached spectrum scales with N_partial, not L (overlap-save blocks of 4·N_partial)
    kl = torch.randn(3, 4096)
    s_part, s_whole = kernel_spectrum(kl[:, :200], 4096, backend="blocked"), kernel_spectrum(kl, 4096)
    assert s_part.backend == "blocked" and s_part.k_f.numel() * 7 <= s_whole.k_f.numel()  # 513 vs 4097 bins
    # the sparse spectrum really is smaller (memory saving)
    s_full = kernel_spectrum(k.float(), 256, n=n, backend="monarch")
    s_sparse = kernel_spectrum(k.float(), 256, n=n, backend="monarch", freq_keep=32)
    assert s_sparse.k_f.numel() * 4 <= s_full.k_f.numel()


@pytest.mark.parametrize("n", [12, 100, 256, 512, 1024, 2048, 4096, 8192, 65536])
def test_monarch_dft_equals_torch_fft(n: int) -> None:
    f = monarch_factors(n)
    x = torch.randn(2, n, dtype=torch.complex128)
    ref = torch.fft.fft(x)
    tol = 1e-9
    assert (monarch_dft(x, f) - ref).abs().max() < tol
    assert (monarch_idft(ref, f) - x).abs().max() < tol
    perm = digit_permutation(f)
    assert sorted(perm.tolist()) == list(range(n))
    assert (monarch_dft(x, f, permuted=True) - ref[..., perm]).abs().max() < tol
    assert (monarch_idft(permute_spectrum(ref, f), f, permuted=True) - x).abs().max() < tol


def test_monarch_orders_match_card() -> None:
    assert monarch_factors(1024) == (32, 32)
    assert monarch_factors(4096) == (16, 16, 16)
    assert monarch_factors(32768) == (32, 32, 32)
    assert len(monarch_factors(65536)) == 4
    for n in (2**20, 2**22, 3 * 2**10, 1000):
        assert torch.tensor(monarch_factors(n)).prod().item() == n


def test_monarch_implicit_padding_and_freq_blocks() -> None:
    n, valid = 1024, 300
    f = monarch_factors(n)
    x = torch.randn(3, valid, dtype=torch.complex128)
    ref = torch.fft.fft(x, n)
    assert (monarch_dft(x, f, valid_in=valid) - ref).abs().max() < 1e-10
    assert (monarch_idft(ref, f, valid_out=valid) - x).abs().max() < 1e-10
    lo, hi = freq_block_rows(n, f, 100)
    y = monarch_dft(torch.randn(3, n, dtype=torch.complex128), f, permuted=True, freq_blocks=(lo, hi))
    assert y.shape[-1] == n // f[-1] * (lo + hi) < n


def test_bad_inputs_raise_value_errors_naming_shapes() -> None:
    u = torch.randn(2, 4, 32)
    with pytest.raises(ValueError, match=r"\(B, H, L\)"):
        fft_conv(torch.randn(4, 32), torch.randn(4, 32))
    with pytest.raises(ValueError, match="has 3 channels"):
        fft_conv(u, torch.randn(3, 32))
    with pytest.raises(ValueError, match=r"\(H, Lk\)"):
        fft_conv(u, torch.randn(4, 1, 32))
    with pytest.raises(ValueError, match="D must have H=4"):
        fft_conv(u, torch.randn(4, 32), torch.randn(5))
    with pytest.raises(ValueError, match="pregate"):
        fft_conv(u, torch.randn(4, 32), pregate=torch.randn(2, 3, 32))
    with pytest.raises(ValueError, match="floating-point"):
        fft_conv(u.long(), torch.randn(4, 32))
    with pytest.raises(ValueError, match="backend"):
        fft_conv(u, torch.randn(4, 32), backend="cuda")
    with pytest.raises(ValueError, match="smaller than the (kernel|sequence)"):  # n=16 < Lk = L = 32
        fft_conv(u, torch.randn(4, 32), n=16)
    with pytest.raises(ValueError, match=r"n=32 is smaller than the sequence length L=64 of u \(2, 4, 64\)"):
        fft_conv(torch.randn(2, 4, 64), torch.randn(4, 16), n=32)
    s = kernel_spectrum(torch.randn(4, 32), 32, backend="torch")
    with pytest.raises(ValueError, match="come from the cached spectrum"):
        fft_conv(u, spectrum=s, backend="monarch")
    with pytest.raises(ValueError, match="come from the cached spectrum"):
        fft_conv(u, spectrum=s, n=128)
    with pytest.raises(ValueError, match="complex"):
        monarch_dft(torch.randn(4, 16))


def test_dispatch_and_helpers() -> None:
    assert fast_fft_size(1000) == 1000 and fast_fft_size(1001) == 1024 and fast_fft_size(1001, pow2=True) == 1024
    assert choose_backend(4096, 3) == "direct"
    assert choose_backend(4096, 4096) in ("torch", "monarch", "gemm")
    assert choose_backend(65536, 256) == "blocked"
    assert isinstance(DISPATCH["monarch_sizes"], frozenset) and isinstance(DISPATCH["gemm_sizes"], frozenset)
    u, k = torch.randn(2, 3, 100), torch.randn(3, 100)
    assert torch.allclose(naive_fft_conv(u, k), fft_conv(u, k), atol=1e-4)


def test_flashfftconv_identities_pass() -> None:
    checks = identities_for("flashfftconv")
    assert len(checks) >= 3
    for c in checks:
        c.fn()


def test_cache_blocked_path_many_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import convatlas.ops.fft_conv as fc

    monkeypatch.setattr(fc, "_BLOCK_SAMPLES", 16)  # forces 4-row blocks
    for h in (3, 9):
        u = torch.randn(3, h, 40, dtype=torch.float64)
        k = torch.randn(h, 40, dtype=torch.float64)
        d = torch.randn(h, dtype=torch.float64)
        y = fft_conv(u, k, d, backend="torch")
        assert (y - (loop_conv(u, k) + d[:, None] * u)).abs().max() < 1e-10
        u, k, d = (t.clone().requires_grad_() for t in (u[:2, :, :6], k[:, :6], d))
        assert torch.autograd.gradcheck(lambda u, k, d: fft_conv(u, k, d, backend="torch"), (u, k, d), fast_mode=True)


def test_fused_inference_path_equals_autograd_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import convatlas.ops.fft_conv as fc

    monkeypatch.setattr(fc, "_BLOCK_SAMPLES", 16)  # many blocks
    u = torch.randn(3, 6, 50, dtype=torch.float64)
    k = torch.randn(6, 50, dtype=torch.float64)
    d = torch.randn(6, dtype=torch.float64)
    g1 = torch.randn(1, 6, 50, dtype=torch.float64)  # broadcast over batch
    g2 = torch.randn(3, 6, 50, dtype=torch.float64)
    with torch.no_grad():
        fused = fft_conv(u, k, d, pregate=g1, postgate=g2, backend="torch")
    trained = fft_conv(u.requires_grad_(), k, d, pregate=g1, postgate=g2, backend="torch")
    ref = (loop_conv(u.detach() * g1, k) + d[:, None] * u.detach() * g1) * g2
    assert (fused - ref).abs().max() < 1e-10 and (trained.detach() - ref).abs().max() < 1e-10
