"""Long (per-channel, causal) convolution by FFT: the FlashFFTConv operator (paper slug: ``flashfftconv``).

``y = fft_conv(u, k, D, pregate=g1, postgate=g2)`` computes, for ``u`` of shape ``(B, H, L)`` and one kernel per
channel ``k`` of shape ``(H, Lk)``::

    v = u * g1                                      # optional pre-gate (Hyena / M2 usage)
    y[b, h, t] = sum_{j=0}^{min(t, Lk-1)} k[h, j] * v[b, h, t - j]   # causal LINEAR convolution, t < L
    y = (y + D[h] * v) * g2                         # optional skip term, optional post-gate

Internally everything is computed in float32 (float64 if an input is float64) and cast back to ``u.dtype``, so
bf16/fp16 activations with fp32 kernels are handled as in FlashFFTConv. Backends (``backend=``):

- ``"torch"``: real FFTs (``torch.fft.rfft``/``irfft``, MKL/pocketfft on CPU, cuFFT on GPU) of size ``n``,
  cache-blocked: blocks of ~2^19 samples run cast -> pre-gate -> rfft -> product (in place) -> irfft -> skip
  (written into the output) -> post-gate -> cast back while they are in cache (inference: no full-size
  intermediate but the output; training: a custom autograd function with an equally blocked backward that reuses
  the forward's input spectrum). Blocks of >= 2^23 samples (L ~ 1M) reuse per-thread workspaces, so the zero
  padding is written once and the buffers are not page-faulted in afresh per call (:func:`set_workspace_limit`,
  :func:`clear_workspace`). Inference with the kernel passed as a tensor (not a cached spectrum) computes the
  kernel's rfft per block of channels inside the same pass, right before that block's input (no full
  ``(H, n//2+1)`` kernel spectrum is allocated). From ``L = 64K`` (linear convolution, default ``n``) the same
  backend runs the uniformly partitioned convolution instead (:mod:`convatlas.ops.partitioned_conv`: FFTs of
  ~2^15 points over blocks of the sequence, combined in frequency, overlap-add; inference, training with its own
  backward, and cached kernels as ``(H, P, nb + 1)`` block spectra): MKL's small batched FFTs are ~2x cheaper per
  point than its 2^19-2^21-point ones. Speed-ups over the naive PyTorch version (both with the kernel
  transformed in the call and with a cached spectrum) and peak memory: ``benchmarks/results/long_conv.md``.
- ``"monarch"``: the FlashFFTConv algorithm: the FFT as a Monarch decomposition executed as batched matmuls
  (:mod:`convatlas.ops.monarch_fft`), with the kernel spectrum pre-permuted so data is never permuted, implicit
  zero padding (the first/last stage only touch non-zero rows) and two real signals packed into one complex one.
- ``"gemm"``: the real-GEMM Monarch (:func:`convatlas.ops.monarch_fft.real_monarch_conv`): an order-2 four-step
  FFT conv written as four real GEMMs (twiddles folded into the DFT matrices, real-input symmetry, implicit zero
  padding, only the output rows that are kept), the CPU form of the matmul-unit algorithm. On the development CPU
  it reaches about a third of the matmul peak yet stays 2-7x slower than MKL's FFT (``~8·sqrt(n)`` MACs per
  sample against ``~2.5·log2(n)`` flops), so ``auto`` does not pick it there; :func:`measure_dispatch` re-measures.
- ``"direct"``: ``F.conv1d`` with the flipped kernel (fastest for short kernels).
- ``"blocked"``: overlap-save with a short FFT for kernels much shorter than the sequence (partial convolutions):
  memory and the cached spectrum scale with ``Lk`` instead of ``L``.
- ``"auto"`` (default): picks by a small dispatch table (:data:`DISPATCH`) measured once on the development
  machine with ``benchmarks/long_conv.py``; :func:`measure_dispatch` re-measures it on yours.

The default FFT size is the smallest fast size ``n >= L + Lk - 1`` (no wrap-around: a linear convolution). Passing
``n`` explicitly gives FlashFFTConv's semantics ``irfft(rfft(v, n) · rfft(k, n), n)[..., :L]``, i.e. a circular
convolution of size ``n`` when ``n < L + Lk - 1`` (e.g. SGConv's bidirectional kernel of length ``2L`` with
``n = 2L``).

The sparse forms of the card (``flashfftconv/sparse_conv.py``, FFT size ``2L``):
:func:`partial_fft_conv` (kernel truncated to ``N_partial`` taps; overlap-save when short) and
:func:`frequency_sparse_fft_conv` (``rfft(k, 2L)[..., N_partial // 2:] = 0``; only the kept bins are multiplied
and stored, and the Monarch path skips the zero blocks of its innermost stage).

For a fixed kernel (inference) compute its spectrum once with :func:`kernel_spectrum` and pass
``spectrum=``; :class:`convatlas.layers.long_conv.LongConv` does this automatically.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from convatlas.identities import register_component, register_identity
from convatlas.ops.partitioned_conv import (
    PartitionedConv,
    kernel_block_spectrum,
    partition_plan,
    partitioned_conv,
    partitioned_conv_rows,
    row_blocks,
    rows_per_block,
)
from convatlas.ops.monarch_fft import (
    freq_block_rows,
    monarch_dft,
    monarch_factors,
    monarch_idft,
    permute_spectrum,
    real_monarch_conv,
    real_monarch_spectrum,
    real_monarch_split,
)

__all__ = [
    "fft_conv",
    "direct_conv",
    "naive_fft_conv",
    "kernel_spectrum",
    "KernelSpectrum",
    "partial_fft_conv",
    "frequency_sparse_fft_conv",
    "monarch_fft_conv",
    "choose_backend",
    "fast_fft_size",
    "DISPATCH",
    "measure_dispatch",
    "set_workspace_limit",
    "clear_workspace",
]

Backend = Literal["auto", "torch", "monarch", "gemm", "direct", "blocked"]
_BACKENDS = ("auto", "torch", "monarch", "gemm", "direct", "blocked")

# Dispatch table. Measured on the development CPU (AMD EPYC, 2 cores, AVX-512, MKL FFT, torch 2.13) with
# benchmarks/long_conv.py (results/long_conv.md, sections "dispatch" and "crossover"); re-measure the FFT part
# on another machine with measure_dispatch(). Keys:
#   monarch_sizes: FFT sizes where the Monarch matmul FFT beat torch.fft. Measured: none (Monarch 1.9-13x slower
#       for n = 256 ... 65536 on this CPU: MKL's FFT is fast and dense DFT stages cost n*sum(factors) MACs).
#   gemm_sizes: FFT sizes where the real-GEMM Monarch (four real GEMMs, monarch_fft.real_monarch_conv) beat
#       torch.fft. Measured: none (2-3x slower for n = 512 ... 65536: its GEMMs reach ~1/3 of the matmul peak, but
#       need ~8·sqrt(n) real MACs per sample against MKL's ~2.5·log2(n) flops).
#   direct_max_taps: use conv1d when Lk <= this (direct fastest up to 64 taps at L = 4096, FFT from ~128).
#   direct_max_work: and L * Lk <= this.
#   blocked_ratio: use overlap-save when L >= blocked_ratio * Lk (won at L/Lk = 32, lost at L/Lk = 8).
DISPATCH: dict[str, object] = {
    "monarch_sizes": frozenset(),
    "gemm_sizes": frozenset(),
    "direct_max_taps": 64,
    "direct_max_work": 1 << 40,
    "blocked_ratio": 16,
}


def fast_fft_size(m: int, pow2: bool = False) -> int:
    """Smallest ``n >= m`` whose prime factors are 2, 3 and 5 (or a power of two with ``pow2=True``)."""
    if m <= 1:
        return 1
    p = 1 << (m - 1).bit_length()
    if pow2:
        return p
    best = p
    f5 = 1
    while f5 < best:
        f35 = f5
        while f35 < best:
            v = f35
            while v < m:
                v *= 2
            best = min(best, v)
            f35 *= 3
        f5 *= 5
    return best


@dataclass(frozen=True)
class KernelSpectrum:
    """A kernel's FFT, prepared for one backend (cache it when the kernel is fixed).

    Attributes:
        k_f: complex spectrum: ``(H, n//2+1)`` rfft (torch/blocked), truncated to ``freq_keep`` bins when
            frequency-sparse; ``(H, n')`` digit-permuted full FFT (monarch), ``n'`` reduced by frequency blocks;
            ``(H, N2//2+1, N1)`` half spectrum in four-step order (gemm).
            For ``direct`` it is the real flipped kernel ``(H, 1, Lk)``.
        n: FFT size (block FFT size for ``blocked``).
        backend: the backend it is laid out for.
        taps: kernel length ``Lk`` after truncation.
        seq_len: the sequence length it was prepared for (``None``: any, for ``direct``/``blocked``).
        explicit_n: ``n`` was given by the caller (circular semantics).
        freq_keep: number of kept rfft bins (frequency-sparse), or ``None``.
        factors / freq_blocks: Monarch factorisation (``(N1, N2)`` for gemm) and kept innermost rows.
        partition: ``(nb, P, Pk)`` when the torch backend runs the partitioned convolution (linear, ``L >= 64K``):
            ``k_f`` is then ``(H, Pk, nb + 1)``, one rfft of size ``n = 2·nb`` per kernel block
            (:mod:`convatlas.ops.partitioned_conv`).
    """

    k_f: Tensor
    n: int
    backend: str
    taps: int
    seq_len: int | None
    explicit_n: bool = False
    freq_keep: int | None = None
    factors: tuple[int, ...] = ()
    freq_blocks: tuple[int, int] | None = None
    partition: tuple[int, int, int] | None = None


def _compute_dtype(*ts: Tensor | None) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in ts) else torch.float32


def _check_kernel(name: str, k: object, h: int | None = None) -> None:
    if not isinstance(k, Tensor):
        raise ValueError(f"{name}: expected kernel k as a tensor (H, Lk), got {type(k).__name__}")
    if k.ndim != 2:
        raise ValueError(f"{name}: expected kernel k of shape (H, Lk), got shape {tuple(k.shape)}")
    if not k.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point kernel (H, Lk), got dtype {k.dtype}")
    if h is not None and k.shape[0] != h:
        raise ValueError(f"{name}: kernel k has {k.shape[0]} channels (H, Lk)={tuple(k.shape)} but u has H={h}")


def choose_backend(seq_len: int, taps: int, n: int | None = None) -> str:
    """The backend ``"auto"`` uses for a sequence of ``seq_len`` and a kernel of ``taps`` (see :data:`DISPATCH`)."""
    linear = n is None or n >= seq_len + taps - 1
    if linear and taps <= int(DISPATCH["direct_max_taps"]) and seq_len * taps <= int(DISPATCH["direct_max_work"]):
        return "direct"
    if n is None and seq_len >= int(DISPATCH["blocked_ratio"]) * taps:
        return "blocked"
    size = n if n is not None else fast_fft_size(seq_len + taps - 1, pow2=True)
    if size in DISPATCH["monarch_sizes"]:  # type: ignore[operator]
        return "monarch"
    return "gemm" if size in DISPATCH["gemm_sizes"] else "torch"  # type: ignore[operator]


def _blocked_fft_size(taps: int) -> int:
    # Block FFT of 4x the kernel (at least 64): ~3/4 of every block is useful output.
    return max(64, 1 << (4 * taps - 1).bit_length()) if taps > 1 else 64


def kernel_spectrum(
    k: Tensor,
    seq_len: int,
    *,
    n: int | None = None,
    backend: Backend = "auto",
    freq_keep: int | None = None,
) -> KernelSpectrum:
    """Prepare the FFT of ``k`` ``(H, Lk)`` for sequences of length ``seq_len`` (reuse it while ``k`` is fixed).

    Args:
        k: per-channel kernels ``(H, Lk)``; kept in fp32 (fp64 if given fp64).
        seq_len: sequence length ``L`` of the inputs it will be applied to.
        n: FFT size; default: smallest fast size ``>= L + Lk - 1`` (linear convolution). Taps beyond ``L`` cannot
            reach any output and are dropped when ``n`` is not given.
        backend: ``"auto"``, ``"torch"``, ``"monarch"``, ``"gemm"``, ``"direct"`` or ``"blocked"``.
        freq_keep: keep only rfft bins ``< freq_keep`` (frequency-sparse convolution; the rest are zero).
    """
    _check_kernel("kernel_spectrum", k)
    if backend not in _BACKENDS:
        raise ValueError(f"kernel_spectrum: backend must be one of {_BACKENDS}, got {backend!r}")
    if seq_len < 1:
        raise ValueError(f"kernel_spectrum: seq_len must be >= 1, got {seq_len}")
    explicit = n is not None
    if explicit and n < seq_len:  # type: ignore[operator]
        raise ValueError(f"kernel_spectrum: FFT size n={n} is smaller than the sequence length L={seq_len}")
    if not explicit and k.shape[-1] > seq_len:
        k = k[:, :seq_len]
    taps = k.shape[-1]
    if explicit and n < taps:  # type: ignore[operator]
        raise ValueError(f"kernel_spectrum: FFT size n={n} is smaller than the kernel length Lk={taps}")
    if backend == "auto":
        backend = choose_backend(seq_len, taps, n) if freq_keep is None else choose_backend(seq_len, 1 << 30, n)
        if freq_keep is not None and backend in ("direct", "blocked"):
            backend = "torch"
    if freq_keep is not None and backend in ("direct", "blocked"):
        raise ValueError(f"kernel_spectrum: frequency-sparse convolution needs an FFT backend, got {backend!r}")
    if backend in ("direct", "blocked") and explicit and n < seq_len + taps - 1:  # type: ignore[operator]
        raise ValueError(
            f"kernel_spectrum: backend {backend!r} computes a linear convolution but n={n} < L + Lk - 1 = "
            f"{seq_len + taps - 1} asks for a circular one"
        )
    cdt = _compute_dtype(k)
    kc = k.to(cdt)
    if backend == "direct":
        return KernelSpectrum(kc.flip(-1)[:, None, :].contiguous(), 0, "direct", taps, None)
    if backend == "blocked":
        nb = _blocked_fft_size(taps)
        return KernelSpectrum(torch.fft.rfft(kc, nb), nb, "blocked", taps, None)
    if n is None:
        n = fast_fft_size(seq_len + taps - 1, pow2=(backend == "monarch"))
    if freq_keep is not None and not 0 < freq_keep <= n // 2 + 1:
        raise ValueError(f"kernel_spectrum: freq_keep must be in [1, n//2+1={n // 2 + 1}], got {freq_keep}")
    if backend == "gemm":
        n1, n2 = real_monarch_split(n)
        kf = real_monarch_spectrum(kc, n, n1, freq_keep)
        return KernelSpectrum(kf, n, "gemm", taps, seq_len, explicit, freq_keep, (n1, n2))
    plan = partition_plan(seq_len, taps) if (not explicit and freq_keep is None) else None
    if backend == "torch" and plan is not None:
        nb, _, pk = plan
        return KernelSpectrum(kernel_block_spectrum(kc, nb, pk), 2 * nb, "torch", taps, seq_len, partition=plan)
    if backend == "torch":
        kf = torch.fft.rfft(kc, n)
        if freq_keep is not None:
            kf = kf[:, :freq_keep].contiguous()
        return KernelSpectrum(kf, n, "torch", taps, seq_len, explicit, freq_keep)
    # monarch: full complex spectrum in digit-permuted order.
    factors = monarch_factors(n)
    kf = torch.fft.fft(kc, n)
    fb = None
    if freq_keep is not None:
        idx = torch.arange(n, device=k.device)
        keep = (idx < freq_keep) | (idx > n - freq_keep)
        kf = kf * keep
        fb = freq_block_rows(n, factors, freq_keep)
    return KernelSpectrum(
        permute_spectrum(kf, factors, fb).contiguous(), n, "monarch", taps, seq_len, explicit, freq_keep, factors, fb
    )


def fft_conv(
    u: Tensor,
    k: Tensor | None = None,
    D: Tensor | None = None,
    *,
    n: int | None = None,
    pregate: Tensor | None = None,
    postgate: Tensor | None = None,
    spectrum: KernelSpectrum | None = None,
    backend: Backend = "auto",
    freq_keep: int | None = None,
) -> Tensor:
    """Causal per-channel long convolution ``((u·pregate) * k + D·(u·pregate)) · postgate`` (flashfftconv).

    Args:
        u: input ``(B, H, L)``, any float dtype (bf16/fp16 are computed in fp32 and cast back).
        k: kernels ``(H, Lk)``; ``Lk`` may be shorter than ``L`` (partial) or longer (extra taps are unused
            unless ``n`` is given). Omit when ``spectrum`` is given.
        D: optional skip/bias term per channel, ``(H,)`` (any shape with ``H`` elements).
        n: FFT size; default smallest fast size ``>= L + Lk - 1`` (linear). An explicit ``n`` gives the
            circular ``irfft(rfft(v, n)·rfft(k, n), n)[..., :L]``.
        pregate / postgate: optional gates broadcastable to ``(B, H, L)``.
        spectrum: cached :func:`kernel_spectrum` of the kernel (then ``k``, ``n``, ``backend``, ``freq_keep`` are
            taken from it).
        backend: ``"auto"`` | ``"torch"`` | ``"monarch"`` | ``"gemm"`` | ``"direct"`` | ``"blocked"``.
        freq_keep: frequency-sparse: keep rfft bins ``< freq_keep`` of the kernel.

    Returns:
        ``(B, H, L)`` tensor of ``u.dtype``.
    """
    if not isinstance(u, Tensor) or u.ndim != 3:
        got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
        raise ValueError(f"fft_conv: expected input u of shape (B, H, L), got {got}")
    if not u.is_floating_point():
        raise ValueError(f"fft_conv: expected a floating-point input u (B, H, L), got dtype {u.dtype}")
    bsz, h, seq_len = u.shape
    if n is not None and n < seq_len:
        raise ValueError(
            f"fft_conv: FFT size n={n} is smaller than the sequence length L={seq_len} of u {tuple(u.shape)} "
            "(FlashFFTConv needs L <= n)"
        )
    for name, g in (("pregate", pregate), ("postgate", postgate)):
        if g is not None:
            try:
                ok = torch.broadcast_shapes(g.shape, u.shape) == u.shape
            except RuntimeError:
                ok = False
            if not ok:
                raise ValueError(
                    f"fft_conv: {name} of shape {tuple(g.shape)} does not broadcast to u (B, H, L)={tuple(u.shape)}"
                )
    if D is not None and D.numel() != h:
        raise ValueError(f"fft_conv: D must have H={h} elements (one per channel), got shape {tuple(D.shape)}")
    if spectrum is None and k is not None and freq_keep is None and backend in ("auto", "torch"):
        _check_kernel("fft_conv", k, h)
        taps = k.shape[-1] if n is not None else min(k.shape[-1], seq_len)
        grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (u, k, D, pregate, postgate))
        plan = partition_plan(seq_len, taps) if n is None else None
        if (
            grad
            and plan is not None
            and not _compiling()
            and u.device.type != "meta"
            and (backend == "torch" or choose_backend(seq_len, taps, n) == "torch")
        ):
            # Training at long lengths: partitioned forward and backward (ops/partitioned_conv.py).
            cdt = _compute_dtype(u, k)
            v = u.to(cdt)
            if pregate is not None:
                v = v * pregate.to(cdt)
            d = D.reshape(h).to(cdt) if D is not None else None
            rows = rows_per_block(h, seq_len)
            y = PartitionedConv.apply(v, k[:, :taps].to(cdt), d, plan, rows)
            if postgate is not None:
                y = y * postgate.to(cdt)
            return y.to(u.dtype)
        if (
            not grad
            and not _compiling()
            and u.device.type != "meta"
            and (n is None or n >= taps)
            and (backend == "torch" or choose_backend(seq_len, taps, n) == "torch")
        ):
            # Inference with a kernel that is not cached: its FFT runs inside the same cache-blocked pass, one block
            # of channels at a time (no full (H, n//2+1) kernel spectrum is materialised).
            if plan is not None:  # long sequences: many small FFTs (ops/partitioned_conv.py)
                return _partitioned_nograd(u, k[:, :taps], plan, D, pregate, postgate, _compute_dtype(u, k))
            nn = n if n is not None else fast_fft_size(seq_len + taps - 1)
            return _fused_uncached_nograd(u, k[:, :taps], nn, D, pregate, postgate, _compute_dtype(u, k))
    if spectrum is None:
        if k is None:
            raise ValueError("fft_conv: pass a kernel k (H, Lk) or a cached spectrum")
        _check_kernel("fft_conv", k, h)
        spectrum = kernel_spectrum(k, seq_len, n=n, backend=backend, freq_keep=freq_keep)
    else:
        if k is not None:
            raise ValueError("fft_conv: pass either k or spectrum, not both")
        if n is not None or freq_keep is not None or backend not in ("auto", spectrum.backend):
            raise ValueError(
                f"fft_conv: n, backend and freq_keep come from the cached spectrum (backend={spectrum.backend!r}, "
                f"n={spectrum.n}, freq_keep={spectrum.freq_keep}); got n={n}, backend={backend!r}, "
                f"freq_keep={freq_keep}"
            )
        if spectrum.k_f.shape[0] != h:
            raise ValueError(f"fft_conv: cached spectrum has {spectrum.k_f.shape[0]} channels but u has H={h}")
        if spectrum.seq_len is not None and spectrum.seq_len != seq_len:
            raise ValueError(
                f"fft_conv: cached spectrum was prepared for L={spectrum.seq_len}, got u of shape {tuple(u.shape)}"
            )

    out_dtype = u.dtype
    wide = u.dtype == torch.float64 or spectrum.k_f.dtype in (torch.float64, torch.complex128)
    cdt = torch.float64 if wide else torch.float32
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, k, D, pregate, postgate, spectrum.k_f)
    )
    if spectrum.partition is not None:
        if not needs_grad and not _compiling() and u.device.type != "meta":
            return _partitioned_nograd(u, spectrum.k_f, spectrum.partition, D, pregate, postgate, cdt)
        # a learnable cached spectrum, or torch.compile / export tracing: one vectorised autograd graph
        v = u.to(cdt)
        if pregate is not None:
            v = v * pregate.to(cdt)
        y = partitioned_conv(v, spectrum.k_f, spectrum.partition)
        if D is not None:
            y = y + v * D.reshape(h, 1).to(cdt)
        if postgate is not None:
            y = y * postgate.to(cdt)
        return y.to(out_dtype)
    if spectrum.backend == "torch" and not needs_grad and not _compiling() and u.device.type != "meta":
        # Inference: one fused pass per block (cast, pre-gate, rfft, product, irfft, skip, post-gate, cast back);
        # no full-size intermediate besides the output.
        return _fused_rfft_conv_nograd(u, spectrum, D, pregate, postgate, cdt)
    v = u.to(cdt)
    if pregate is not None:
        v = v * pregate.to(cdt)

    if spectrum.backend == "direct":
        y = F.conv1d(F.pad(v, (spectrum.taps - 1, 0)), spectrum.k_f.to(cdt), groups=h)
    elif spectrum.backend == "blocked":
        y = _overlap_save(v, spectrum.k_f, spectrum.taps, spectrum.n)
    elif spectrum.backend == "torch" and (
        (spectrum.k_f.requires_grad and k is None and torch.is_grad_enabled()) or _compiling()
    ):
        # A learnable spectrum was passed in (plain autograd keeps its gradient), or torch.compile is tracing
        # (one vectorised graph instead of the Python block loop).
        vf = torch.fft.rfft(v, spectrum.n)
        if spectrum.freq_keep is not None:
            vf = vf[..., : spectrum.freq_keep]
        y = torch.fft.irfft(vf * spectrum.k_f, spectrum.n)[..., :seq_len]
    elif spectrum.backend == "torch":
        # Fused, cache-blocked FFT conv (+ skip term); kernel gradient only when the kernel was given as a tensor.
        kt = k if (k is not None and k.requires_grad and torch.is_grad_enabled()) else None
        if kt is not None and spectrum.n >= kt.shape[-1]:
            kt = kt[:, : spectrum.taps].to(cdt)
        else:
            kt = None
        d = D.reshape(h).to(cdt) if D is not None else None
        y = _BlockedRfftConv.apply(v, spectrum.k_f.detach(), kt, d, spectrum.n, spectrum.freq_keep)
        D = None  # already added
    elif spectrum.backend == "gemm":
        y = _gemm_conv(v, spectrum)
    else:
        y = _monarch_conv(v, spectrum)

    if D is not None:
        y = y + v * D.reshape(h, 1).to(cdt)
    if postgate is not None:
        y = y * postgate.to(cdt)
    return y.to(out_dtype)


# Rows (channels) per block of the fused FFT conv: keep rows * n ~ 2^19 samples (a few MiB of real + complex data)
# so the rfft -> product -> irfft -> skip chain of one block stays in L2/L3 cache (measured 4-7x faster than one
# whole-tensor pass per op on the 2-core development machine; benchmarks/long_conv.py).
_BLOCK_SAMPLES = 1 << 19

# Reused FFT workspaces (zero-padded input, spectrum, irfft output), one set per thread, CPU only. Large fresh
# buffers are mmapped by malloc and page-faulted in on every call (~13 ms per 32 MiB on the development CPU, as
# much as a whole FFT pass at L = 1M); reusing them also means the zero padding is written once, not per call.
# ``set_workspace_limit(0)`` disables the cache, ``clear_workspace()`` frees it.
_WORKSPACE_LIMIT = 1 << 28  # bytes kept per thread
# Blocks of at least this many samples use the workspaces (glibc always mmaps allocations >= 32 MiB, so such
# buffers are page-faulted in afresh on every call); smaller blocks run faster with plain out-of-place ops, whose
# buffers malloc reuses (measured both ways on the development CPU).
_WORKSPACE_MIN_SAMPLES = 1 << 23


class _WorkspaceCache(threading.local):
    def __init__(self) -> None:
        self.entry: tuple[tuple, list] | None = None


_WS = _WorkspaceCache()


def set_workspace_limit(nbytes: int) -> None:
    """Largest FFT workspace (bytes, per thread) :func:`fft_conv` keeps between calls on CPU; 0 disables it."""
    global _WORKSPACE_LIMIT
    if nbytes < 0:
        raise ValueError(f"set_workspace_limit: expected nbytes >= 0, got {nbytes}")
    _WORKSPACE_LIMIT = int(nbytes)
    if _WS.entry is not None and _ws_bytes(_WS.entry[0]) > _WORKSPACE_LIMIT:
        _WS.entry = None


def clear_workspace() -> None:
    """Free the FFT workspace cached by :func:`fft_conv` in this thread."""
    _WS.entry = None


def _ws_bytes(key: tuple) -> int:
    rows, n, dt = key[0], key[1], key[2]
    return rows * (2 * n + 4 * (n // 2 + 1)) * torch.empty((), dtype=dt).element_size()  # incl. kernel spectrum


def _workspace(rows: int, n: int, seq_len: int, dt: torch.dtype, device: torch.device) -> list:
    """``[xpad (rows, n) with zeros beyond seq_len, xf (rows, n//2+1) complex, yb (rows, n)]``."""
    key = (rows, n, dt, device)
    ent = _WS.entry
    if ent is not None and ent[0] == key:
        bufs = ent[1]
        if bufs[3] != seq_len:  # zero tail for this length
            bufs[0][:, seq_len:].zero_()
            bufs[3] = seq_len
        return bufs
    cdt = torch.complex128 if dt == torch.float64 else torch.complex64
    xpad = torch.empty(rows, n, dtype=dt, device=device)
    xpad[:, seq_len:].zero_()
    bufs = [xpad, torch.empty(rows, n // 2 + 1, dtype=cdt, device=device),
            torch.empty(rows, n, dtype=dt, device=device), seq_len]
    if device.type == "cpu" and _ws_bytes(key) <= _WORKSPACE_LIMIT:
        _WS.entry = (key, bufs)
    return bufs


# From n = 2^17 on, no block is L2-resident anyway (one row's spectrum is >= 512 KiB); blocks then hold 4-8 rows
# (~2^20 samples). MKL's FFT of a single row is 4-6x slower per point than a batch of 2-16 rows (measured with
# torch 2.13 at n = 2^17 ... 2^21: ~11-12 ns per point for one row, 2-5 ns for batches), so blocks never hold
# fewer than 4 rows where there are 4, and channel blocks are balanced (H = 9 -> 3 + 3 + 3, not 4 + 4 + 1).
# Measured at L = 64K (n = 2^17, H = 32) and 256K (n = 2^19, H = 8), contended, CPU time, cached / uncached
# kernel: 8 rows vs 16 at 2^17: 20.7 / 30.5 ms vs 26.1 / 34.2 ms; 4 rows vs 8 at 2^19: 29.9 / 41.8 ms vs 34.9 / 44.3.
_LARGE_FFT = 1 << 17
_BLOCK_SAMPLES_LARGE = 1 << 20


def _block_rows(n: int) -> int:
    if n >= _LARGE_FFT:
        return max(4, min(16, max(_BLOCK_SAMPLES, _BLOCK_SAMPLES_LARGE) // n))
    return max(4, min(256, _BLOCK_SAMPLES // max(n, 1)))


def _channel_step(h: int, rows: int) -> int:
    """Channels per block when ``h >= rows``: at most ``rows``, the blocks balanced."""
    nblk = -(-h // rows)
    return -(-h // nblk)


def _blocks(bsz: int, h: int, n: int):
    """Yield (b0, b1, h0, h1) blocks of about ``_block_rows(n)`` rows of a (B, H, .) tensor."""
    rows = _block_rows(n)
    if h >= rows:
        step = _channel_step(h, rows)
        for b in range(bsz):
            for h0 in range(0, h, step):
                yield b, b + 1, h0, min(h, h0 + step)
    else:
        bb = max(1, rows // h)
        for b0 in range(0, bsz, bb):
            yield b0, min(bsz, b0 + bb), 0, h


def _max_block_rows(bsz: int, h: int, n: int) -> int:
    rows = _block_rows(n)
    return min(h, rows) if h >= rows else min(bsz, max(1, rows // h)) * h


def _block_conv(
    src: Tensor,
    k_f: Tensor,
    n: int,
    keep: int | None,
    out: Tensor,
    d: Tensor | None = None,
    g1: Tensor | None = None,
    g2: Tensor | None = None,
    cdt: torch.dtype = torch.float32,
    hook=None,
    ws_rows: int | None = None,
) -> None:
    """``out = (irfft(rfft(src·g1, n)[:keep] · k_f, n)[..., :L] + d·src·g1) · g2``, block by block (no grad).

    ``src``/``out``/gates ``(B, H, L)`` (gates already expanded), ``k_f`` ``(H, keep or n//2+1)``, ``d`` ``(H, 1)``.
    Each block: cast+gate into a zero-padded workspace, rfft into a workspace, multiply in place, irfft into a
    workspace, skip term written straight into ``out``; all of it while the block is in cache. ``hook(b0, b1, h0,
    h1, xf, x)``, if given, sees each block's input spectrum before the product (the backward's kernel gradient).
    """
    bsz, h, seq_len = src.shape
    rows = ws_rows if ws_rows is not None else _max_block_rows(bsz, h, n)
    ws = _workspace(rows, n, seq_len, cdt, src.device) if rows * n >= _WORKSPACE_MIN_SAMPLES else None
    direct_out = out.dtype == cdt and g2 is None
    for b0, b1, h0, h1 in _blocks(bsz, h, n):
        if ws is not None:
            shape = (b1 - b0, h1 - h0)
            r = shape[0] * shape[1]
            xpad = ws[0][:r].view(*shape, n)
            xf = ws[1][:r].view(*shape, n // 2 + 1)
            yb = ws[2][:r].view(*shape, n)
            x = xpad[..., :seq_len]
            if g1 is not None:
                torch.mul(src[b0:b1, h0:h1], g1[b0:b1, h0:h1], out=x)
            else:
                x.copy_(src[b0:b1, h0:h1])
            torch.fft.rfft(xpad, out=xf)
        else:  # small blocks: plain ops are faster (malloc reuses the freed blocks; rfft pads internally)
            x = src[b0:b1, h0:h1].to(cdt)
            if g1 is not None:
                x = x * g1[b0:b1, h0:h1]
            xf = torch.fft.rfft(x, n)
        if hook is not None:
            hook(b0, b1, h0, h1, xf, x)
        if keep is not None:
            if ws is not None:
                xf[..., keep:].zero_()
            else:
                xf = xf[..., :keep]
            xf[..., :keep].mul_(k_f[h0:h1])
        else:
            xf.mul_(k_f[h0:h1])
        if ws is not None:
            torch.fft.irfft(xf, n, out=yb)
        else:
            yb = torch.fft.irfft(xf, n)
        y = yb[..., :seq_len]
        o = out[b0:b1, h0:h1]
        if direct_out:
            if d is not None:
                torch.addcmul(y, x, d[h0:h1], out=o)
            else:
                o.copy_(y)
            continue
        if d is not None:
            y.addcmul_(x, d[h0:h1])
        if g2 is not None:
            y.mul_(g2[b0:b1, h0:h1])
        o.copy_(y)


def _fused_rfft_conv_nograd(
    u: Tensor, s: KernelSpectrum, d: Tensor | None, g1: Tensor | None, g2: Tensor | None, cdt: torch.dtype
) -> Tensor:
    bsz, h, seq_len = u.shape
    out = torch.empty_like(u)
    g1 = g1.expand(u.shape) if g1 is not None else None
    g2 = g2.expand(u.shape) if g2 is not None else None
    dd = d.reshape(h, 1).to(cdt) if d is not None else None
    with torch.no_grad():
        _block_conv(u, s.k_f, s.n, s.freq_keep, out, dd, g1, g2, cdt)
    return out


def _fused_uncached_nograd(
    u: Tensor, k: Tensor, n: int, d: Tensor | None, g1: Tensor | None, g2: Tensor | None, cdt: torch.dtype
) -> Tensor:
    """:func:`_fused_rfft_conv_nograd` with the kernel's FFT done in the blocked pass: per block of channels,
    ``rfft(k[h0:h1], n)`` (into a reused workspace for large blocks), then the blocked conv of those channels."""
    bsz, h, seq_len = u.shape
    taps = k.shape[-1]
    out = torch.empty_like(u)
    g1 = g1.expand(u.shape) if g1 is not None else None
    g2 = g2.expand(u.shape) if g2 is not None else None
    dd = d.reshape(h, 1).to(cdt) if d is not None else None
    rows_n = _block_rows(n)  # channels per kernel block (= the rows of one conv block when H is large)
    hb = _channel_step(h, rows_n) if h >= rows_n else h
    rows = _max_block_rows(bsz, h, n)
    use_ws = rows * n >= _WORKSPACE_MIN_SAMPLES and taps <= seq_len
    with torch.no_grad():
        for h0 in range(0, h, hb):
            h1 = min(h, h0 + hb)
            if use_ws:
                ws = _workspace(rows, n, seq_len, cdt, u.device)
                if len(ws) == 4:
                    ws.append(torch.empty_like(ws[1]))
                kpad = ws[0][: h1 - h0]  # the input's padded buffer: _block_conv overwrites [:, :L] afterwards
                kpad[:, :taps].copy_(k[h0:h1])
                if taps < seq_len:
                    kpad[:, taps:seq_len].zero_()
                k_f = ws[4][: h1 - h0]
                torch.fft.rfft(kpad, out=k_f)
            else:
                k_f = torch.fft.rfft(k[h0:h1].to(cdt), n)
            _block_conv(
                u[:, h0:h1], k_f, n, None, out[:, h0:h1], dd[h0:h1] if dd is not None else None,
                g1[:, h0:h1] if g1 is not None else None, g2[:, h0:h1] if g2 is not None else None, cdt,
                ws_rows=rows,
            )
    return out


def _partitioned_nograd(
    u: Tensor, k: Tensor, plan: tuple[int, int, int], d: Tensor | None, g1: Tensor | None, g2: Tensor | None,
    cdt: torch.dtype,
) -> Tensor:
    """Inference by the uniformly partitioned convolution (:mod:`convatlas.ops.partitioned_conv`), a few rows at a
    time: cast + pre-gate, block FFTs, block products, overlap-add, skip term, post-gate, cast back."""
    bsz, h, seq_len = u.shape
    nb, p, pk = plan
    rows = rows_per_block(h, seq_len)
    out = torch.empty_like(u)
    g1 = g1.expand(u.shape) if g1 is not None else None
    g2 = g2.expand(u.shape) if g2 is not None else None
    dd = d.reshape(h, 1).to(cdt) if d is not None else None
    direct_out = out.dtype == cdt and g2 is None and dd is None

    with torch.no_grad():
        kf, kf_rows = None, None
        for b, h0, h1 in row_blocks(bsz, h, rows):
            if kf_rows != h0:  # the kernel's block spectrum once per channel block (cached spectra: a slice)
                kf = k[h0:h1] if k.is_complex() else kernel_block_spectrum(k[h0:h1].to(cdt), nb, pk)
                kf_rows = h0
            x = u[b, h0:h1].to(cdt)
            if g1 is not None:
                x = x * g1[b, h0:h1]
            if direct_out:
                partitioned_conv_rows(x, kf, nb, p, pk, out[b, h0:h1])
                continue
            y = torch.empty_like(x)
            partitioned_conv_rows(x, kf, nb, p, pk, y)
            if dd is not None:
                y.addcmul_(x, dd[h0:h1])
            if g2 is not None:
                y.mul_(g2[b, h0:h1])
            out[b, h0:h1] = y
    return out


def _spectrum_saver(xf_all: Tensor):
    """A :func:`_block_conv` hook that copies each block's input spectrum into ``xf_all`` ``(B, H, bins)``."""
    bins = xf_all.shape[-1]

    def save(b0: int, b1: int, h0: int, h1: int, xf: Tensor, x: Tensor) -> None:
        xf_all[b0:b1, h0:h1] = xf[..., :bins]

    return save


class _BlockedRfftConv(torch.autograd.Function):
    """y = irfft(rfft(v, n)[:keep] · k_f, n)[..., :L] (+ D·v), computed block by block, with a blocked backward.

    ``k`` (time-domain kernel, optional) is only passed to receive a gradient; ``k_f`` is its (cached) spectrum.
    """

    @staticmethod
    def forward(ctx, v: Tensor, k_f: Tensor, k: Tensor | None, d: Tensor | None, n: int, keep: int | None):
        out = torch.empty_like(v)
        xf_all = hook = None
        if ctx.needs_input_grad[2]:
            # keep the input spectrum for the kernel gradient (saves one FFT per row in backward; naive autograd
            # keeps it too)
            xf_all = torch.empty(*v.shape[:2], keep or n // 2 + 1, dtype=k_f.dtype, device=v.device)
            hook = _spectrum_saver(xf_all)
        _block_conv(v, k_f, n, keep, out, d[:, None] if d is not None else None, cdt=v.dtype, hook=hook)
        ctx.save_for_backward(v, k_f, d, xf_all)
        ctx.n, ctx.keep, ctx.taps = n, keep, (k.shape[-1] if k is not None else 0)
        return out

    @staticmethod
    def backward(ctx, gy: Tensor):
        v, k_f, d, xf_all = ctx.saved_tensors
        n, keep, taps = ctx.n, ctx.keep, ctx.taps
        bsz, h, seq_len = v.shape
        need_v, need_k, need_d = ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        gy = gy.to(v.dtype).contiguous()
        gkf = torch.zeros_like(k_f) if need_k else None
        gd = torch.zeros(h, dtype=v.dtype, device=v.device) if (need_d and d is not None) else None

        def grads_of_kernel_and_skip(b0: int, b1: int, h0: int, h1: int, gf: Tensor, g: Tensor) -> None:
            x = v[b0:b1, h0:h1]
            if need_k:  # correlation of the gradient with the input, in frequency: sum_b G · conj(V)
                xf = xf_all[b0:b1, h0:h1]
                gkf[h0:h1] += (gf[..., : xf.shape[-1]] * xf.conj()).sum(0).to(k_f.dtype)
            if gd is not None:
                gd[h0:h1] += (g * x).sum((0, 2))

        hook = grads_of_kernel_and_skip if (need_k or gd is not None) else None
        gv = None
        if need_v or hook is not None:
            # grad wrt v: correlation with the kernel = the same blocked pass with the conjugate spectrum.
            buf = torch.empty_like(v)
            _block_conv(gy, k_f.conj(), n, keep, buf, d[:, None] if d is not None else None, cdt=v.dtype, hook=hook)
            gv = buf if need_v else None
        gk = None
        if need_k:
            # correlation of grad with input: first Lk taps of irfft(sum_b G · conj(V))
            gk = torch.fft.irfft(gkf, n)[..., :taps]
        return gv, None, gk, gd, None, None


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def _overlap_save(v: Tensor, k_f: Tensor, taps: int, nb: int) -> Tensor:
    """Linear convolution with a short kernel by overlap-save blocks of FFT size ``nb`` (``(B, H, L)``)."""
    seq_len = v.shape[-1]
    step = nb - taps + 1
    nblk = -(-seq_len // step)
    total = (nblk - 1) * step + nb
    x = F.pad(v, (taps - 1, total - seq_len - (taps - 1)))
    frames = x.unfold(-1, nb, step)  # (B, H, nblk, nb)
    y = torch.fft.irfft(torch.fft.rfft(frames, nb) * k_f[:, None, :], nb)[..., taps - 1 :]
    return y.reshape(*v.shape[:-1], nblk * step)[..., :seq_len]


def _monarch_conv(v: Tensor, s: KernelSpectrum) -> Tensor:
    """Monarch FFT conv of real ``v`` ``(B, H, L)``: pack two batch rows as real/imag of one complex signal."""
    bsz, h, seq_len = v.shape
    half = (bsz + 1) // 2
    if bsz % 2:
        v = torch.cat([v, v.new_zeros(1, h, seq_len)], 0)
    z = torch.complex(v[:half], v[half:])
    valid = min(seq_len, s.n)
    if seq_len > s.n:
        raise ValueError(f"fft_conv: sequence length L={seq_len} exceeds the FFT size n={s.n}")
    zf = monarch_dft(z, s.factors, permuted=True, valid_in=valid, freq_blocks=s.freq_blocks)
    yz = monarch_idft(zf * s.k_f, s.factors, permuted=True, valid_out=valid, freq_blocks=s.freq_blocks)
    return torch.cat([yz.real, yz.imag], 0)[:bsz]


def _gemm_conv(v: Tensor, s: KernelSpectrum) -> Tensor:
    """Real-GEMM Monarch conv of ``v`` ``(B, H, L)``; cache-blocked over rows when no gradient is needed."""
    bsz, h, seq_len = v.shape
    if seq_len > s.n:
        raise ValueError(f"fft_conv: sequence length L={seq_len} exceeds the FFT size n={s.n}")
    n1 = s.factors[0]
    k_f = s.k_f.to(torch.complex128 if v.dtype == torch.float64 else torch.complex64)
    if (torch.is_grad_enabled() and (v.requires_grad or k_f.requires_grad)) or v.device.type == "meta":
        return real_monarch_conv(v, k_f, s.n, n1)
    out = torch.empty_like(v)
    for b0, b1, h0, h1 in _blocks(bsz, h, s.n):
        out[b0:b1, h0:h1] = real_monarch_conv(v[b0:b1, h0:h1], k_f[h0:h1], s.n, n1)
    return out


def monarch_fft_conv(u: Tensor, k: Tensor, fft_size: int, **kwargs) -> Tensor:
    """The card's ``monarch_fft_conv(u, k, fft_size)``: FFT conv of size ``fft_size`` on the Monarch backend
    (matmul FFT, kernel spectrum pre-permuted into digit-transposed order, no data permutation)."""
    return fft_conv(u, k, n=fft_size, backend="monarch", **kwargs)


def direct_conv(u: Tensor, k: Tensor, D: Tensor | None = None) -> Tensor:
    """Reference causal linear convolution by ``conv1d`` with the flipped kernel: ``(B, H, L)`` in and out."""
    _check_kernel("direct_conv", k, u.shape[1])
    seq_len = u.shape[-1]
    k = k[:, :seq_len]
    y = F.conv1d(F.pad(u, (k.shape[-1] - 1, 0)), k.flip(-1)[:, None, :].to(u.dtype), groups=u.shape[1])
    if D is not None:
        y = y + u * D.reshape(-1, 1).to(u.dtype)
    return y


def naive_fft_conv(u: Tensor, k: Tensor, D: Tensor | None = None) -> Tensor:
    """The plain PyTorch FFT convolution most long-conv codebases use (benchmark baseline, FFT size 2L)."""
    seq_len = u.shape[-1]
    n = 2 * seq_len
    y = torch.fft.irfft(torch.fft.rfft(u.float(), n=n) * torch.fft.rfft(k.float(), n=n), n=n)[..., :seq_len]
    if D is not None:
        y = y + u * D.reshape(-1, 1)
    return y.to(u.dtype)


def partial_fft_conv(u: Tensor, k: Tensor, n_partial: int, D: Tensor | None = None, **kwargs) -> Tensor:
    """Partial convolution (card: ``PartialFFTConv(N_partial)``): the kernel truncated to ``n_partial`` taps.

    Equal to the full convolution when ``n_partial >= L``. With ``backend="auto"`` a kernel much shorter than
    the sequence runs blockwise (overlap-save), so time and memory scale with ``n_partial`` instead of ``L``.
    """
    if n_partial < 1:
        raise ValueError(f"partial_fft_conv: n_partial must be >= 1, got {n_partial}")
    return fft_conv(u, k[:, :n_partial], D, **kwargs)


def frequency_sparse_fft_conv(u: Tensor, k: Tensor, n_partial: int, D: Tensor | None = None, **kwargs) -> Tensor:
    """Frequency-sparse convolution (card: ``FrequencySparseFFTConv(N_partial)``, FFT size ``2L``): the kernel's
    ``rfft(k, 2L)[..., n_partial // 2:]`` is zeroed. Only the kept bins are multiplied/stored; the Monarch
    backend also skips the zero blocks of its innermost stage. Equal to the full conv when ``n_partial >= 2L+2``.
    """
    seq_len = u.shape[-1]
    n = 2 * seq_len
    keep = min(n_partial // 2, n // 2 + 1)
    if keep < 1:
        raise ValueError(f"frequency_sparse_fft_conv: n_partial must be >= 2, got {n_partial}")
    kwargs.setdefault("backend", "torch")
    return fft_conv(u, k, D, n=n, freq_keep=keep, **kwargs)


def measure_dispatch(sizes: tuple[int, ...] = (256, 1024, 4096, 16384, 65536), batch: int = 4, channels: int = 64,
                     repeats: int = 5) -> dict[str, object]:
    """Re-measure which FFT backend (torch.fft, complex Monarch, real-GEMM Monarch) is fastest per FFT size on
    this machine (interleaved calls, median); updates and returns :data:`DISPATCH`."""
    import time

    wins: dict[str, set[int]] = {"monarch": set(), "gemm": set()}
    cands = ("torch", "monarch", "gemm")
    for n in sizes:
        seq_len = n // 2
        u = torch.randn(batch, channels, seq_len)
        k = torch.randn(channels, seq_len)
        specs = {b: kernel_spectrum(k, seq_len, n=n, backend=b) for b in cands}  # type: ignore[arg-type]
        ts: dict[str, list[float]] = {b: [] for b in cands}
        with torch.no_grad():
            for b in cands:
                fft_conv(u, spectrum=specs[b])
            for _ in range(repeats):
                for b in cands:
                    t0 = time.perf_counter()
                    fft_conv(u, spectrum=specs[b])
                    ts[b].append(time.perf_counter() - t0)
        best = min(cands, key=lambda b: sorted(ts[b])[len(ts[b]) // 2])
        if best != "torch":
            wins[best].add(n)
    DISPATCH["monarch_sizes"] = frozenset(wins["monarch"])
    DISPATCH["gemm_sizes"] = frozenset(wins["gemm"])
    return DISPATCH


register_component("flashfftconv", fft_conv, name="fft_conv")
register_component("flashfftconv", partial_fft_conv, name="partial_fft_conv")
register_component("flashfftconv", monarch_fft_conv, name="monarch_fft_conv")
register_component("flashfftconv", frequency_sparse_fft_conv, name="frequency_sparse_fft_conv")


@register_identity("flashfftconv", "fft_conv (torch, monarch, gemm, blocked, gated) == direct causal conv1d, float64")
def _identity_fft_equals_direct() -> str:
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for seq_len, taps in ((300, 300), (256, 100), (1000, 37)):
        u = torch.randn(3, 4, seq_len, dtype=torch.float64, generator=g)
        k = torch.randn(4, taps, dtype=torch.float64, generator=g)
        d = torch.randn(4, dtype=torch.float64, generator=g)
        g1 = torch.randn(3, 4, seq_len, dtype=torch.float64, generator=g)
        g2 = torch.randn(3, 4, seq_len, dtype=torch.float64, generator=g)
        ref = direct_conv(u * g1, k, d) * g2
        for b in ("torch", "monarch", "gemm", "blocked", "direct"):
            y = fft_conv(u, k, d, pregate=g1, postgate=g2, backend=b)
            err = (y - ref).abs().max().item()
            worst = max(worst, err)
            assert err < 1e-10, f"backend {b} L={seq_len} Lk={taps}: max abs error {err:.2e}"
    return f"max abs error {worst:.2e} over 5 backends, L in (300, 256, 1000), gated + skip term"


@register_identity("flashfftconv", "sparse forms: partial == conv with truncated kernel, freq-sparse == low-passed kernel")
def _identity_sparse_forms() -> str:
    g = torch.Generator().manual_seed(1)
    seq_len = 512
    u = torch.randn(2, 4, seq_len, dtype=torch.float64, generator=g)
    k = torch.randn(4, seq_len, dtype=torch.float64, generator=g)
    e1 = (partial_fft_conv(u, k, 40) - direct_conv(u, k[:, :40])).abs().max().item()
    n = 2 * seq_len
    kf = torch.fft.rfft(k, n)
    kf[..., 96 // 2 :] = 0
    k_low = torch.fft.irfft(kf, n)
    ref = torch.fft.irfft(torch.fft.rfft(u, n) * torch.fft.rfft(k_low, n), n)[..., :seq_len]
    e2 = max(
        (frequency_sparse_fft_conv(u, k, 96, backend=b) - ref).abs().max().item() for b in ("torch", "monarch", "gemm")
    )
    assert e1 < 1e-10 and e2 < 1e-10, f"partial {e1:.2e}, frequency-sparse {e2:.2e}"
    return f"partial max abs error {e1:.2e}; frequency-sparse (torch, monarch, gemm) {e2:.2e}"
