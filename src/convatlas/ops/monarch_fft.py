"""Monarch (Cooley–Tukey "four-step") FFT as batched matrix multiplies (paper slug: ``flashfftconv``).

A length-``N`` DFT with ``N = N1 · M`` is computed as (time index ``n = M·n1 + m``, frequency ``k = k1 + N1·km``):

1. view ``x`` as ``X[n1, m]`` and take the length-``N1`` DFT over ``n1``: a matmul with the dense ``F_{N1}``,
   ``F_n[j, k] = exp(-2πi·jk/n)``;
2. multiply by the twiddles ``T[k1, m] = exp(-2πi·k1·m/N)``;
3. take the length-``M`` DFT over ``m`` (recursively: an order-``p`` factorisation is order 2 whose inner DFT is
   order ``p-1``; the innermost stage is one dense matmul);
4. the result is indexed ``[k1, km]``; the natural order needs a transpose per level.

``monarch_dft`` returns the natural order (equals ``torch.fft.fft``). ``monarch_dft(..., permuted=True)`` skips the
transposes and returns the *digit-permuted* spectrum; ``monarch_idft(..., permuted=True)`` consumes exactly that
order. A convolution therefore never permutes its data: only the kernel spectrum is permuted once
(:func:`permute_spectrum`), as in the official kernels (``k_f.reshape(H, sqrt_N, sqrt_N).transpose(-1, -2)``).

Two block-skipping options implement the paper's sparse/padded forms without materialising zeros:

- ``valid_in`` (implicit zero padding / partial inputs): only the first ``valid_in`` time samples are non-zero,
  so the first stage multiplies only ``ceil(valid_in / M)`` columns of ``F_{N1}``; symmetrically
  ``monarch_idft(..., valid_out=L)`` only produces the first ``ceil(L / M)`` rows of the last inverse stage.
- ``freq_blocks`` (frequency-sparse convolution): in the permuted order the innermost dense stage produces the
  most significant frequency digit ``k_p`` (``k ≈ k_p · N / N_p``). Keeping only the ``k_p`` rows of a low band and
  its mirrored high band skips whole blocks of the innermost matmul and shrinks every later tensor.

Factorisations follow the card (``flashfftconv/conv.py``): 256 = 16×16, 1024 = 32×32, 4096 = 16×16×16,
8192 = 32×16×16, 16384 = 16×32×32, 32768 = 32×32×32, 65536 = 16×16×16×16, ... (order 2, 3, 4). The official
kernels use a real-input trick for N = 512 and 2048 (an N/2 complex FFT plus a post-twiddle): it is
:func:`monarch_rfft` / :func:`monarch_irfft` here (any even N; the half-length complex DFT runs on the Monarch
factors of N/2, e.g. 512 -> 256 = 16×16 and 2048 -> 1024 = 32×32 as official). The ``monarch`` backend of
:func:`convatlas.ops.fft_conv.fft_conv` uses the equivalent "two-for-one" packing instead (two real signals
sharing one kernel are the real and imaginary part of one complex signal), which saves the same factor 2 for
every size without the post-twiddle pass.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from convatlas.identities import register_component, register_identity

__all__ = [
    "monarch_factors",
    "monarch_dft",
    "monarch_idft",
    "monarch_rfft",
    "monarch_irfft",
    "digit_permutation",
    "permute_spectrum",
    "freq_block_rows",
]

# Card table (official FlashFFTConv factorisations); other powers of two are split into factors <= 32.
_CARD_FACTORS: dict[int, tuple[int, ...]] = {
    256: (16, 16),
    512: (16, 32),
    1024: (32, 32),
    2048: (32, 64),
    4096: (16, 16, 16),
    8192: (32, 16, 16),
    16384: (16, 32, 32),
    32768: (32, 32, 32),
    65536: (16, 16, 16, 16),
    131072: (32, 16, 16, 16),
    262144: (32, 32, 16, 16),
    524288: (32, 16, 32, 32),
    1048576: (32, 32, 32, 32),
    2097152: (64, 32, 32, 32),
    4194304: (128, 32, 32, 32),
}


def monarch_factors(n: int, max_factor: int = 32) -> tuple[int, ...]:
    """Factorisation of ``n`` used by the Monarch FFT: the card's table for powers of two in [256, 4M], otherwise
    a split into as few factors <= ``max_factor`` as possible (any ``n`` whose prime factors are <= max_factor;
    a larger prime factor becomes one dense stage)."""
    if n < 1:
        raise ValueError(f"monarch_factors: FFT size must be >= 1, got {n}")
    if n in _CARD_FACTORS and max_factor == 32:
        return _CARD_FACTORS[n]
    if n <= max_factor:
        return (n,)
    if n & (n - 1) == 0:
        bits = n.bit_length() - 1
        per = max(1, int(math.log2(max_factor)))
        p = -(-bits // per)
        base, extra = divmod(bits, p)
        return tuple(2 ** (base + (1 if i < extra else 0)) for i in range(p))
    # General n: greedy prime grouping.
    primes: list[int] = []
    r, f = n, 2
    while f * f <= r:
        while r % f == 0:
            primes.append(f)
            r //= f
        f += 1
    if r > 1:
        primes.append(r)
    factors: list[int] = []
    for q in sorted(primes, reverse=True):
        for i, g in enumerate(factors):
            if g * q <= max_factor:
                factors[i] = g * q
                break
        else:
            factors.append(q)
    return tuple(sorted(factors, reverse=True))


@lru_cache(maxsize=256)
def _dft_matrix_cpu(n: int, dtype: torch.dtype, inverse: bool) -> Tensor:
    j = torch.arange(n, dtype=torch.float64)
    # jk mod n keeps the angle small and exact for large n.
    jk = torch.remainder(torch.outer(j, j), n)
    sign = 1.0 if inverse else -1.0
    return torch.polar(torch.ones_like(jk), sign * 2 * math.pi * jk / n).to(dtype)


@lru_cache(maxsize=256)
def _twiddle_cpu(n1: int, m: int, dtype: torch.dtype, inverse: bool) -> Tensor:
    k1 = torch.arange(n1, dtype=torch.float64)[:, None]
    mm = torch.arange(m, dtype=torch.float64)[None, :]
    ang = torch.remainder(k1 * mm, n1 * m) * (2 * math.pi / (n1 * m))
    return torch.polar(torch.ones_like(ang), (1.0 if inverse else -1.0) * ang).to(dtype)


def _buf(fn, *args, device: torch.device) -> Tensor:  # cached constants, moved to the data's device
    t = fn(*args)
    return t if device.type == "cpu" else t.to(device)


def _check_complex(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor) or not x.is_complex():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a complex tensor (..., N), got {got}")


def monarch_dft(
    x: Tensor,
    factors: tuple[int, ...] | None = None,
    *,
    permuted: bool = False,
    valid_in: int | None = None,
    freq_blocks: tuple[int, int] | None = None,
) -> Tensor:
    """Forward DFT over the last dim by the Monarch decomposition (equals ``torch.fft.fft(x)``).

    Args:
        x: complex tensor ``(..., N)``, or ``(..., valid_in)`` when ``valid_in`` is given (implicit zero padding
            to ``N = prod(factors)``).
        factors: ``(N_1, ..., N_p)``; default :func:`monarch_factors` of ``x.shape[-1]``.
        permuted: return the digit-permuted order (no transposes), for :func:`monarch_idft` with ``permuted=True``.
        valid_in: number of leading non-zero samples; the rest are implicit zeros (first stage skips them).
        freq_blocks: ``(lo, hi)``: only with ``permuted=True``; keep rows ``k_p < lo`` and ``k_p >= N_p - hi`` of
            the innermost stage (a frequency-sparse spectrum); the last dim of the result shrinks accordingly.

    Returns:
        complex tensor ``(..., N)`` (or fewer entries with ``freq_blocks``).
    """
    _check_complex("monarch_dft", x)
    if factors is None:
        factors = monarch_factors(x.shape[-1] if valid_in is None else int(valid_in))
    n = math.prod(factors)
    if valid_in is None:
        if x.shape[-1] != n:
            raise ValueError(f"monarch_dft: last dim {x.shape[-1]} != prod(factors) = {n} (factors {factors})")
    elif x.shape[-1] != valid_in or not 0 < valid_in <= n:
        raise ValueError(f"monarch_dft: valid_in={valid_in} must equal x.shape[-1]={x.shape[-1]} and be <= {n}")
    if freq_blocks is not None and not permuted:
        raise ValueError("monarch_dft: freq_blocks needs permuted=True")
    return _fwd(x, tuple(factors), permuted, x.shape[-1], freq_blocks)


def _fwd(x: Tensor, factors: tuple[int, ...], permuted: bool, valid: int, fb: tuple[int, int] | None) -> Tensor:
    dev, dt = x.device, x.dtype
    lead = x.shape[:-1]
    if len(factors) == 1:
        (n,) = factors
        f = _buf(_dft_matrix_cpu, n, dt, False, device=dev)  # symmetric
        fT = f[:, :valid]  # columns of the (symmetric) matrix used by the non-zero samples
        if fb is not None:
            lo, hi = fb
            rows = torch.cat([torch.arange(lo), torch.arange(n - hi, n)]).to(dev)
            fT = fT.index_select(0, rows)
        return x @ fT.transpose(0, 1)
    n1, m = factors[0], math.prod(factors[1:])
    r = -(-valid // m)  # non-zero rows n1 < r
    if r * m != valid:
        x = torch.nn.functional.pad(x, (0, r * m - valid))
    xv = x.reshape(*lead, r, m)
    f1 = _buf(_dft_matrix_cpu, n1, dt, False, device=dev)[:, :r]
    a = f1 @ xv  # (..., n1[k1], m)
    a = a * _buf(_twiddle_cpu, n1, m, dt, False, device=dev)
    b = _fwd(a, factors[1:], permuted, m, fb)  # (..., n1, m' )
    if permuted:
        return b.reshape(*lead, -1)
    return b.transpose(-1, -2).reshape(*lead, n1 * m)


def monarch_idft(
    y: Tensor,
    factors: tuple[int, ...],
    *,
    permuted: bool = False,
    valid_out: int | None = None,
    freq_blocks: tuple[int, int] | None = None,
) -> Tensor:
    """Inverse DFT (equals ``torch.fft.ifft``, 1/N applied once) by the Monarch decomposition.

    Args:
        y: complex spectrum ``(..., N)`` in natural order, or digit-permuted order when ``permuted=True`` (as
            returned by ``monarch_dft(..., permuted=True)``, possibly reduced by ``freq_blocks``).
        factors: the factorisation used by the forward transform.
        valid_out: only the first ``valid_out`` time samples are computed (the last stage skips the others).
        freq_blocks: the same ``(lo, hi)`` given to :func:`monarch_dft`.

    Returns:
        complex tensor ``(..., valid_out or N)``.
    """
    _check_complex("monarch_idft", y)
    factors = tuple(factors)
    n = math.prod(factors)
    if freq_blocks is not None and not permuted:
        raise ValueError("monarch_idft: freq_blocks needs permuted=True")
    expect = n if freq_blocks is None else n // factors[-1] * (freq_blocks[0] + freq_blocks[1])
    if y.shape[-1] != expect:
        raise ValueError(f"monarch_idft: last dim {y.shape[-1]} != expected {expect} for factors {factors}")
    valid = n if valid_out is None else int(valid_out)
    if not 0 < valid <= n:
        raise ValueError(f"monarch_idft: valid_out={valid_out} must be in (0, {n}]")
    out = _inv(y, factors, permuted, valid, freq_blocks)
    return out * (1.0 / n)


def _inv(y: Tensor, factors: tuple[int, ...], permuted: bool, valid: int, fb: tuple[int, int] | None) -> Tensor:
    """Unnormalised inverse (conjugate matrices/twiddles); returns the first ``valid`` samples."""
    dev, dt = y.device, y.dtype
    lead = y.shape[:-1]
    if len(factors) == 1:
        (n,) = factors
        f = _buf(_dft_matrix_cpu, n, dt, True, device=dev)
        g = f[:valid]  # output rows
        if fb is not None:
            lo, hi = fb
            cols = torch.cat([torch.arange(lo), torch.arange(n - hi, n)]).to(dev)
            g = g.index_select(1, cols)
        return y @ g.transpose(0, 1)
    n1, m = factors[0], math.prod(factors[1:])
    r = -(-valid // m)
    if permuted:
        yv = y.reshape(*lead, n1, -1)
    else:
        yv = y.reshape(*lead, -1, n1).transpose(-1, -2)
    b = _inv(yv, factors[1:], permuted, m, fb)  # (..., n1[k1], m)
    b = b * _buf(_twiddle_cpu, n1, m, dt, True, device=dev)
    g1 = _buf(_dft_matrix_cpu, n1, dt, True, device=dev)[:r]
    out = (g1 @ b).reshape(*lead, r * m)
    return out[..., :valid] if r * m != valid else out


@lru_cache(maxsize=64)
def _digit_perm_cpu(factors: tuple[int, ...]) -> Tensor:
    if len(factors) == 1:
        return torch.arange(factors[0])
    n1 = factors[0]
    inner = _digit_perm_cpu(factors[1:])  # position j of the inner output holds frequency inner[j]
    k1 = torch.arange(n1)[:, None]
    return (k1 + n1 * inner[None, :]).reshape(-1)


def digit_permutation(factors: tuple[int, ...], freq_blocks: tuple[int, int] | None = None) -> Tensor:
    """Index tensor ``p`` with ``monarch_dft(x, factors, permuted=True) == torch.fft.fft(x)[..., p]``."""
    perm = _digit_perm_cpu(tuple(factors))
    if freq_blocks is None:
        return perm
    lo, hi = freq_blocks
    np_ = factors[-1]
    keep = torch.cat([torch.arange(lo), torch.arange(np_ - hi, np_)])
    return perm.reshape(-1, np_)[:, keep].reshape(-1)


def permute_spectrum(
    k_f: Tensor, factors: tuple[int, ...], freq_blocks: tuple[int, int] | None = None
) -> Tensor:
    """Reorder a natural-order spectrum ``(..., N)`` into the Monarch digit-permuted order (done once per kernel)."""
    return k_f.index_select(-1, digit_permutation(factors, freq_blocks).to(k_f.device))


def freq_block_rows(n: int, factors: tuple[int, ...], n_keep: int) -> tuple[int, int]:
    """``(lo, hi)`` innermost-stage rows covering the frequency-sparse band of :func:`fft_conv` semantics.

    The kept rfft bins are ``k < n_keep`` (and, for a real kernel, the mirrored ``k > n - n_keep``); frequency
    ``k`` lies in innermost row ``k_p = k // (n / N_p)``. Returns the rows of the low band and of the high band.
    """
    np_ = factors[-1]
    blk = n // np_
    lo = min(np_, -(-n_keep // blk))
    hi = min(np_ - lo, -(-max(n_keep - 1, 0) // blk))
    return lo, hi


@lru_cache(maxsize=64)
def _half_twiddle_cpu(n: int, dtype: torch.dtype) -> Tensor:
    """``exp(-2πi·j/n)``, ``j = 0 .. n/2`` (the real-input trick's post-twiddle)."""
    ang = torch.arange(n // 2 + 1, dtype=torch.float64) * (2 * math.pi / n)
    return torch.polar(torch.ones_like(ang), -ang).to(dtype)


def _real_trick_args(name: str, x: Tensor, n: int | None, length: int) -> tuple[int, torch.dtype]:
    if n is None:
        n = length + (length % 2)
    if n < 2 or n % 2:
        raise ValueError(f"{name}: the real-input trick needs an even FFT size n >= 2, got n={n}")
    cdt = torch.complex128 if x.dtype in (torch.float64, torch.complex128) else torch.complex64
    return n, cdt


def monarch_rfft(x: Tensor, n: int | None = None, factors: tuple[int, ...] | None = None) -> Tensor:
    """``torch.fft.rfft(x, n)`` of a real signal by the real-input trick of FlashFFTConv (flashfftconv).

    The even and odd samples form one complex signal ``z[m] = x[2m] + i·x[2m+1]`` of length ``M = n/2``; its
    Monarch DFT ``Z`` (:func:`monarch_dft`, factors of ``M``: e.g. 256 = 16×16 for n = 512) gives the spectra of
    the even and odd parts, ``E[k] = (Z[k] + conj Z[M-k]) / 2``, ``O[k] = (Z[k] - conj Z[M-k]) / 2i``, and the
    post-twiddle combines them: ``X[k] = E[k] + exp(-2πi·k/n)·O[k]``, ``k = 0 .. M``.

    Args:
        x: real ``(..., L)`` with ``L <= n`` (implicit zero padding; the DFT's first stage skips the zeros).
        n: even FFT size (default ``L`` rounded up to even).
        factors: Monarch factors of ``n / 2`` (default :func:`monarch_factors`).

    Returns:
        complex ``(..., n/2 + 1)`` (complex128 for float64 input, else complex64; bf16/fp16 are computed in fp32).
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"monarch_rfft: expected a real floating-point tensor (..., L), got {got}")
    length = x.shape[-1]
    n, cdt = _real_trick_args("monarch_rfft", x, n, length)
    if not 0 < length <= n:
        raise ValueError(f"monarch_rfft: signal length L={length} must be in [1, n={n}] (shape {tuple(x.shape)})")
    m = n // 2
    factors = monarch_factors(m) if factors is None else tuple(factors)
    if math.prod(factors) != m:
        raise ValueError(f"monarch_rfft: factors {factors} must multiply to n/2 = {m}")
    rdt = torch.float64 if cdt == torch.complex128 else torch.float32
    xr = x.to(rdt)
    if length % 2:
        xr = torch.nn.functional.pad(xr, (0, 1))
    z = torch.complex(xr[..., 0::2], xr[..., 1::2])  # (..., ceil(L/2)): implicit zeros up to M
    zf = monarch_dft(z, factors, valid_in=z.shape[-1])  # (..., M)
    k = torch.arange(m + 1, device=x.device)
    zk = zf[..., k % m]
    zc = zf[..., (m - k) % m].conj()
    even, odd = (zk + zc) * 0.5, (zk - zc) * -0.5j
    return even + _buf(_half_twiddle_cpu, n, cdt, device=x.device) * odd


def monarch_irfft(
    X: Tensor, n: int, factors: tuple[int, ...] | None = None, valid_out: int | None = None
) -> Tensor:
    """``torch.fft.irfft(X, n)`` by the real-input trick (inverse of :func:`monarch_rfft`, 1/n applied once).

    ``E[k] = (X[k] + conj X[M-k]) / 2``, ``O[k] = (X[k] - conj X[M-k])·exp(2πi·k/n) / 2``, ``Z = E + i·O``; the
    ``M``-point inverse Monarch DFT of ``Z`` interleaves the even (real part) and odd (imaginary part) samples.
    As ``torch.fft.irfft``, the imaginary parts of bins 0 and ``n/2`` are ignored.

    Args:
        X: complex half spectrum ``(..., n/2 + 1)``.
        n: even FFT size.
        factors: Monarch factors of ``n / 2``.
        valid_out: only the first ``valid_out`` samples are produced (the last inverse stage skips the rest).

    Returns:
        real ``(..., valid_out or n)`` (float64 for complex128 input, else float32).
    """
    _check_complex("monarch_irfft", X)
    n, cdt = _real_trick_args("monarch_irfft", X, n, 0)
    m = n // 2
    if X.shape[-1] != m + 1:
        raise ValueError(f"monarch_irfft: expected a half spectrum (..., n/2+1 = {m + 1}), got {tuple(X.shape)}")
    factors = monarch_factors(m) if factors is None else tuple(factors)
    if math.prod(factors) != m:
        raise ValueError(f"monarch_irfft: factors {factors} must multiply to n/2 = {m}")
    out_len = n if valid_out is None else int(valid_out)
    if not 0 < out_len <= n:
        raise ValueError(f"monarch_irfft: valid_out={valid_out} must be in (0, {n}]")
    X = X.to(cdt)
    ends = torch.stack([X[..., 0].real, X[..., m].real], -1).to(cdt)  # bins 0 and n/2: real parts only
    X = torch.cat([ends[..., :1], X[..., 1:m], ends[..., 1:]], -1)
    k = torch.arange(m, device=X.device)
    xk, xc = X[..., :m], X[..., m - k].conj()
    tw = _buf(_half_twiddle_cpu, n, cdt, device=X.device)[:m].conj()
    zf = (xk + xc) * 0.5 + 1j * ((xk - xc) * tw * 0.5)
    half = -(-out_len // 2)
    z = monarch_idft(zf, factors, valid_out=half)  # 1/M on the half-length signal == 1/n of irfft
    x = torch.stack([z.real, z.imag], -1).reshape(*z.shape[:-1], 2 * half)
    return x[..., :out_len]


register_component("flashfftconv", monarch_dft, name="monarch_dft")
register_component("flashfftconv", monarch_idft, name="monarch_idft")
register_component("flashfftconv", monarch_rfft, name="monarch_rfft")
register_component("flashfftconv", monarch_irfft, name="monarch_irfft")


@register_identity("flashfftconv", "Monarch DFT (order 2/3/4) == torch.fft.fft in complex128")
def _identity_monarch_equals_fft() -> str:
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for n in (256, 1024, 4096, 65536):
        x = torch.randn(2, n, dtype=torch.complex128, generator=g)
        f = monarch_factors(n)
        ref = torch.fft.fft(x)
        err = (monarch_dft(x, f) - ref).abs().max().item()
        err = max(err, (monarch_idft(ref, f) - x).abs().max().item())
        perm = digit_permutation(f)
        err = max(err, (monarch_dft(x, f, permuted=True) - ref[..., perm]).abs().max().item())
        worst = max(worst, err / math.sqrt(n))
        assert err < 1e-9 * n, f"N={n} factors={f}: max abs error {err:.2e}"
    return f"max abs error / sqrt(N) {worst:.2e} (N=256, 1024, 4096 order 3, 65536 order 4)"


@register_identity("flashfftconv", "real-input trick (N=512 as 256=16x16, 2048 as 1024=32x32) == rfft; conv == direct")
def _identity_real_trick() -> str:
    g = torch.Generator().manual_seed(0)
    worst_fft, worst_conv = 0.0, 0.0
    for n, seq_len in ((512, 256), (2048, 1000)):
        assert monarch_factors(n // 2) == {512: (16, 16), 2048: (32, 32)}[n]
        u = torch.randn(2, 3, seq_len, dtype=torch.float64, generator=g)
        k = torch.randn(3, seq_len, dtype=torch.float64, generator=g)
        uf = monarch_rfft(u, n)
        worst_fft = max(worst_fft, (uf - torch.fft.rfft(u, n)).abs().max().item() / math.sqrt(n))
        # official usage: the kernel's rfft is passed; y = irfft(rfft(u) * rfft(k))[:L] (causal, n >= 2L - 1)
        y = monarch_irfft(uf * torch.fft.rfft(k, n), n, valid_out=seq_len)
        ref = torch.nn.functional.conv1d(
            torch.nn.functional.pad(u, (seq_len - 1, 0)), k.flip(-1)[:, None], groups=3
        )
        worst_conv = max(worst_conv, (y - ref).abs().max().item())
    assert worst_fft < 1e-12 and worst_conv < 1e-10, f"rfft {worst_fft:.2e}, conv {worst_conv:.2e}"
    return f"rfft max abs error / sqrt(N) {worst_fft:.2e}; causal conv max abs error {worst_conv:.2e}"


# ---------------------------------------------------------------------------------------------------------------
# Real-GEMM Monarch convolution (CPU form of the FlashFFTConv algorithm).
#
# The complex Monarch above runs complex matmuls; a CPU has real GEMM units only. Here an order-2 decomposition
# n = N1 · N2 (time t = n1 + N1·n2, frequency k = k2 + N2·k1) is written as four real GEMMs with every constant
# folded into the matrices:
#   A. DFT over n2 of the real input (Hermitian: only k2 < N2//2 + 1 rows; implicit zero padding: only the
#      ceil(L / N1) non-zero n2 columns):   [A_re; A_im] = [cos; -sin] (2·N2h × r) @ X (r × rows·N1)
#   B. per k2, the twiddle exp(-2πi·n1·k2/n) fused into the DFT over n1 (batched matmul over k2, output
#      real/imag interleaved so the product with the kernel spectrum is one complex multiply)
#   ·  pointwise product with the kernel spectrum, laid out [k2, h, k1] once per kernel
#   B'. per k2, inverse DFT over k1 with the conjugate twiddle fused (two batched matmuls: real and imaginary out)
#   A'. Hermitian inverse DFT over k2 (weights 1, 2, ..., 2, 1 and 1/n folded in), only the rows n2 that hold the
#      first L outputs:   y (r' × rows·N1) = [cos·w/n, -sin·w/n] (r' × 2·N2h) @ [C_re; C_im]
# Real MACs per row ≈ n·N2 (A, A') + 4·n·N1 (B, B'), smallest for N2 ≈ 4·N1. Batched over many rows, every GEMM
# has a large dimension (rows·N1 or rows), which is what makes MKL/oneDNN GEMMs efficient.
# ---------------------------------------------------------------------------------------------------------------


def real_monarch_split(n: int) -> tuple[int, int]:
    """``(N1, N2)`` with ``N1 · N2 = n`` and ``N2 ≈ 4·N1`` (fewest real MACs of :func:`real_monarch_conv`)."""
    if n < 1:
        raise ValueError(f"real_monarch_split: FFT size must be >= 1, got {n}")
    target = math.sqrt(n / 4)
    best = 1
    for d in range(1, int(math.isqrt(n)) + 1):
        if n % d == 0:
            for c in (d, n // d):
                if abs(math.log(c / target)) < abs(math.log(best / target)):
                    best = c
    return best, n // best


@lru_cache(maxsize=64)
def _real_monarch_mats(n: int, n1: int, seq_len: int, out_len: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
    n2 = n // n1
    n2h = n2 // 2 + 1
    r_in, r_out = -(-seq_len // n1), -(-out_len // n1)
    f64 = torch.float64
    k2 = torch.arange(n2h, dtype=f64)
    t2 = torch.arange(n2, dtype=f64)
    t1 = torch.arange(n1, dtype=f64)
    ang = (2 * math.pi / n2) * torch.remainder(torch.outer(k2, t2[:r_in]), n2)
    wa = torch.cat([torch.cos(ang), -torch.sin(ang)], 0)  # (2·N2h, r_in)
    # G_k2[n1, k1] = exp(-2πi (n1·k2 / n + n1·k1 / N1)), angles reduced exactly before scaling
    ang = 2 * math.pi * (
        torch.remainder(t1[None, :, None] * k2[:, None, None], n) / n
        + torch.remainder(t1[None, :, None] * t1[None, None, :], n1) / n1
    )
    gr, gi = torch.cos(ang), -torch.sin(ang)  # (N2h, n1, k1)
    p = torch.stack([gr, gi], -1).reshape(n2h, n1, 2 * n1)  # A_re contribution, columns (k1, re/im)
    q = torch.stack([-gi, gr], -1).reshape(n2h, n1, 2 * n1)  # A_im contribution
    hr, hi = gr.transpose(1, 2), -gi.transpose(1, 2)  # conj(G)^T: (N2h, k1, n1)
    inv_re = torch.stack([hr, -hi], 2).reshape(n2h, 2 * n1, n1)  # rows (k1, re/im) -> real part
    inv_im = torch.stack([hi, hr], 2).reshape(n2h, 2 * n1, n1)  # -> imaginary part
    w = torch.full((n2h,), 2.0, dtype=f64)
    w[0] = 1.0
    if n2 % 2 == 0:
        w[-1] = 1.0
    ang = (2 * math.pi / n2) * torch.remainder(torch.outer(t2[:r_out], k2), n2)
    v = torch.cat([torch.cos(ang) * w, -torch.sin(ang) * w], 1) / n  # (r_out, 2·N2h)
    return tuple(m.to(dtype).contiguous() for m in (wa, p, q, inv_re, inv_im, v))


def real_monarch_spectrum(k: Tensor, n: int, n1: int | None = None, freq_keep: int | None = None) -> Tensor:
    """Kernel spectrum ``(H, N2h, N1)`` complex in the layout of :func:`real_monarch_conv` (frequency
    ``k2 + N2·k1`` at ``[h, k2, k1]``), from kernels ``(H, Lk)``; ``freq_keep`` zeroes rfft bins ``>= freq_keep``."""
    if n1 is None:
        n1 = real_monarch_split(n)[0]
    n2 = n // n1
    n2h = n2 // 2 + 1
    kf = torch.fft.fft(k, n)  # (H, n)
    idx = torch.arange(n2h, device=k.device)[:, None] + n2 * torch.arange(n1, device=k.device)[None, :]
    if freq_keep is not None:
        keep = (idx < freq_keep) | (idx > n - freq_keep)
        return kf[:, idx] * keep
    return kf[:, idx]


def real_monarch_conv(
    x: Tensor, k_f: Tensor, n: int, n1: int, out_len: int | None = None, compute_dtype: torch.dtype | None = None
) -> Tensor:
    """``irfft(rfft(x, n) · K, n)[..., :out_len]`` by four real GEMMs (real-GEMM Monarch, flashfftconv).

    Args:
        x: real input ``(B, H, L)`` with ``L <= n`` (implicit zero padding to ``n``).
        k_f: kernel spectrum ``(H, N2h, N1)`` from :func:`real_monarch_spectrum`.
        n, n1: FFT size and its first factor (``N2 = n / N1``).
        out_len: outputs kept (default ``L``); only the GEMM rows that produce them are computed.
        compute_dtype: GEMM dtype (default ``x.dtype``); ``torch.bfloat16`` runs the matmuls in bf16 (fp32
            accumulation in oneDNN/MKL), the kernel product in fp32.

    Returns:
        ``(B, H, out_len)`` of ``x.dtype``.
    """
    bsz, h, seq_len = x.shape
    out_len = seq_len if out_len is None else out_len
    n2 = n // n1
    if n1 * n2 != n or seq_len > n or out_len > n:
        raise ValueError(f"real_monarch_conv: need N1 | n and L, out_len <= n; got n={n}, N1={n1}, L={seq_len}")
    n2h = n2 // 2 + 1
    gdt = x.dtype if compute_dtype is None else compute_dtype
    wa, p, q, inv_re, inv_im, v = (
        m.to(x.device) for m in _real_monarch_mats(n, n1, seq_len, out_len, gdt)
    )
    r_in, r_out = wa.shape[1], v.shape[0]
    rows = bsz * h
    xr = x.reshape(rows, seq_len).to(gdt)
    if r_in * n1 != seq_len:
        xr = torch.nn.functional.pad(xr, (0, r_in * n1 - seq_len))
    xt = xr.view(rows, r_in, n1).transpose(0, 1).reshape(r_in, rows * n1)
    a = (wa @ xt).view(2, n2h, rows, n1)  # stage A: [re; im] over k2
    z = torch.baddbmm(torch.bmm(a[0], p), a[1], q)  # stage B: (N2h, rows, 2·N1), (k1, re/im) interleaved
    zc = torch.view_as_complex(z.to(x.dtype).view(n2h, bsz, h, n1, 2))
    zc.mul_(k_f.permute(1, 0, 2)[:, None])  # kernel product (fp32 even for bf16 GEMMs)
    zz = zc.view(n2h, rows, n1)
    zr = torch.view_as_real(zz).reshape(n2h, rows, 2 * n1).to(gdt)
    if torch.is_grad_enabled() and (zr.requires_grad or inv_re.requires_grad):
        c = torch.stack([torch.bmm(zr, inv_re), torch.bmm(zr, inv_im)])
    else:  # stage B': real and imaginary parts of the inverse over k1, written in place
        c = torch.empty(2, n2h, rows, n1, dtype=gdt, device=x.device)
        torch.bmm(zr, inv_re, out=c[0])
        torch.bmm(zr, inv_im, out=c[1])
    y = v @ c.view(2 * n2h, rows * n1)  # stage A': Hermitian inverse over k2 -> (r_out, rows·N1)
    y = y.view(r_out, rows, n1).transpose(0, 1).reshape(rows, r_out * n1)[:, :out_len]
    return y.reshape(bsz, h, out_len).to(x.dtype)


def real_monarch_macs(n: int, n1: int, seq_len: int, out_len: int, rows: int) -> int:
    """Real multiply-accumulates of :func:`real_monarch_conv` for ``rows`` rows (GEMMs + the complex product)."""
    n2 = n // n1
    n2h = n2 // 2 + 1
    r_in, r_out = -(-seq_len // n1), -(-out_len // n1)
    gemm = 2 * n2h * r_in * n1 + 2 * n2h * n1 * 2 * n1 + 2 * n2h * 2 * n1 * n1 + r_out * 2 * n2h * n1
    return rows * (gemm + 4 * n2h * n1)


register_component("flashfftconv", real_monarch_conv, name="real_monarch_conv")
