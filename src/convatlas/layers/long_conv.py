"""Module wrappers of the long-convolution operator (paper slug: ``flashfftconv``).

- :class:`LongConv`: per-channel causal long convolution ``(B, H, L) -> (B, H, L)`` with its own kernel
  ``(H, kernel_size)`` (a free parameter, or fixed) and skip term ``D``; caches the kernel's FFT whenever the kernel
  cannot change (inference / ``requires_grad=False``), keyed by length, device and the kernel's version counter.
- :class:`FlashFFTConv`: the official library's interface, ``FlashFFTConv(fft_size)(u, k, pregate, postgate)``,
  with FlashFFTConv's semantics ``irfft(rfft(u·pregate, N)·rfft(k, N), N)[..., :L]·postgate`` (circular for
  ``L + Lk - 1 > N``). Shares nothing per layer (0 parameters); keep one per model as the README recommends.
- :class:`PartialFFTConv`, :class:`FrequencySparseFFTConv`: the sparse forms of ``flashfftconv/sparse_conv.py``.
- :class:`FlashDepthWiseConv1d`: short depthwise conv with the official signature, ``(B, D, L)`` ('bhl') or
  ``(B, L, D)`` ('blh') layouts; same maths as ``nn.Conv1d(d, d, k, groups=d, padding=p)``.
"""

from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.identities import register_component
from convatlas.ops.fft_conv import (
    KernelSpectrum,
    fft_conv,
    frequency_sparse_fft_conv,
    kernel_spectrum,
    partial_fft_conv,
)

__all__ = ["LongConv", "FlashFFTConv", "PartialFFTConv", "FrequencySparseFFTConv", "FlashDepthWiseConv1d"]


class LongConv(nn.Module):
    """Causal per-channel long convolution with a cached kernel FFT (flashfftconv).

    ``y = (u·pregate) * k + D·(u·pregate)``, then ``·postgate``; input/output ``(B, H, L)``.

    Args:
        channels: ``H``.
        kernel_size: kernel taps ``Lk`` (usually the maximum sequence length).
        skip: learn the per-channel skip term ``D`` (Hyena/S4 "bias").
        learnable: the kernel is an ``nn.Parameter`` (else a buffer).
        init_scale: kernel initialised as ``randn · init_scale / sqrt(Lk)`` (``None``: that default).
        backend: ``fft_conv`` backend (``"auto"`` picks per size).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        *,
        skip: bool = True,
        learnable: bool = True,
        init_scale: float | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if channels < 1 or kernel_size < 1:
            raise ValueError(f"LongConv: channels and kernel_size must be >= 1, got {channels}, {kernel_size}")
        self.channels, self.kernel_size, self.backend = channels, kernel_size, backend
        scale = 1.0 if init_scale is None else init_scale
        k = torch.randn(channels, kernel_size) * (scale / math.sqrt(kernel_size))
        if learnable:
            self.kernel = nn.Parameter(k)
        else:
            self.register_buffer("kernel", k)
        self.D = nn.Parameter(torch.randn(channels)) if skip else None
        self._cache: tuple[tuple, KernelSpectrum] | None = None

    def clear_cache(self) -> None:
        """Drop the cached kernel spectrum (done automatically when the kernel changes)."""
        self._cache = None

    def _spectrum(self, seq_len: int) -> KernelSpectrum | None:
        k = self.kernel
        if torch.is_grad_enabled() and k.requires_grad:
            return None  # training: the spectrum must stay on the autograd graph
        key = (seq_len, k.device, k.dtype, k.data_ptr(), k._version, self.backend)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        with torch.no_grad():
            s = kernel_spectrum(k.detach(), seq_len, backend=self.backend)  # type: ignore[arg-type]
        self._cache = (key, s)
        return s

    def forward(self, u: Tensor, pregate: Tensor | None = None, postgate: Tensor | None = None) -> Tensor:
        if not isinstance(u, Tensor) or u.ndim != 3 or u.shape[1] != self.channels:
            got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
            raise ValueError(f"LongConv: expected input (B, H={self.channels}, L), got {got}")
        s = None if u.device.type == "meta" else self._spectrum(u.shape[-1])
        if s is not None:
            return fft_conv(u, None, self.D, spectrum=s, pregate=pregate, postgate=postgate)
        return fft_conv(
            u, self.kernel, self.D, pregate=pregate, postgate=postgate, backend=self.backend  # type: ignore[arg-type]
        )

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, backend={self.backend!r}"


class FlashFFTConv(nn.Module):
    """Official FlashFFTConv interface (0 parameters): ``forward(u, k, pregate=None, postgate=None)``.

    Args:
        fft_size: FFT size ``N`` (a power of two in [256, 4,194,304] officially; any size >= 2 here). Inputs have
            ``L <= N``; with ``N >= L + Lk - 1`` (e.g. ``N = 2L``) the result is the causal linear convolution.
        dtype: activation dtype the module is built for. The official module takes ``torch.float16`` or
            ``torch.bfloat16`` and its kernels require ``u`` (and the gates) in that dtype; here any float dtype
            may be given, and inputs of another dtype raise a ``ValueError`` (``None``: any float dtype).
            Computation is always fp32 (fp64 for fp64 inputs) with one rounding to ``u.dtype`` at the output.
        backend: ``"auto"``, ``"torch"``, ``"monarch"`` or ``"gemm"`` (real-GEMM Monarch).

    ``u`` ``(B, H, L)``, ``k`` ``(H, Lk)`` fp32; returns ``(B, H, L)`` of ``u.dtype``. Kernel-spectrum cache
    (inference, kernels that need no gradient): when the *same* kernel tensor object, unchanged (same storage and
    version counter), is passed again, its spectrum is computed once and reused from then on. The cache holds a
    weak reference to the kernel: a kernel generated afresh on every call (e.g. by an implicit filter network, or
    one per layer when the module is shared as the README recommends) never hits a stale spectrum, even when the
    allocator reuses the freed kernel's memory, and runs the uncached fused path instead.
    """

    def __init__(self, fft_size: int, dtype: torch.dtype | None = None, backend: str = "auto") -> None:
        super().__init__()
        if fft_size < 2:
            raise ValueError(f"FlashFFTConv: fft_size must be >= 2, got {fft_size}")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"FlashFFTConv: dtype must be a floating-point torch.dtype or None, got {dtype!r}")
        if backend not in ("auto", "torch", "monarch", "gemm"):
            raise ValueError(f"FlashFFTConv: backend must be 'auto', 'torch', 'monarch' or 'gemm', got {backend!r}")
        self.fft_size, self.dtype, self.backend = int(fft_size), dtype, backend
        # (key, weak reference to the kernel tensor, its spectrum once the kernel has been seen twice)
        self._cache: tuple[tuple, weakref.ref, KernelSpectrum | None] | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = None  # weak references do not pickle; the cache is rebuilt on use
        return state

    def forward(
        self, u: Tensor, k: Tensor, pregate: Tensor | None = None, postgate: Tensor | None = None
    ) -> Tensor:
        if isinstance(u, Tensor) and u.ndim == 3 and u.shape[-1] > self.fft_size:
            raise ValueError(f"FlashFFTConv: sequence length {u.shape[-1]} exceeds fft_size {self.fft_size}")
        if self.dtype is not None:
            for name, t in (("u", u), ("pregate", pregate), ("postgate", postgate)):
                if isinstance(t, Tensor) and t.dtype != self.dtype:
                    raise ValueError(
                        f"FlashFFTConv: built for dtype={self.dtype} (official kernels need u and the gates in "
                        f"that dtype), got {name} of shape {tuple(t.shape)} and dtype {t.dtype}"
                    )
        if (
            isinstance(k, Tensor)
            and isinstance(u, Tensor)
            and u.ndim == 3
            and k.ndim == 2
            and not (k.requires_grad and torch.is_grad_enabled())
            and k.device.type != "meta"
            and not torch.compiler.is_compiling()
        ):
            key = (u.shape[-1], tuple(k.shape), k.device, k.dtype, k.data_ptr(), k._version)
            c = self._cache
            if c is not None and c[0] == key and c[1]() is k:
                spec = c[2]
                if spec is None:  # second call with this kernel: cache its spectrum from now on
                    spec = kernel_spectrum(
                        k, u.shape[-1], n=self.fft_size, backend=self.backend  # type: ignore[arg-type]
                    )
                    self._cache = (key, c[1], spec)
                if spec.k_f.shape[0] == u.shape[1]:
                    return fft_conv(u, spectrum=spec, pregate=pregate, postgate=postgate)
            else:
                self._cache = (key, weakref.ref(k), None)
        return fft_conv(
            u, k, n=self.fft_size, pregate=pregate, postgate=postgate, backend=self.backend  # type: ignore[arg-type]
        )

    def extra_repr(self) -> str:
        return f"fft_size={self.fft_size}, backend={self.backend!r}"


class PartialFFTConv(nn.Module):
    """Partial convolution: only the first ``n_partial`` kernel taps are used (``(B, H, L)`` in and out)."""

    def __init__(self, n_partial: int) -> None:
        super().__init__()
        if n_partial < 1:
            raise ValueError(f"PartialFFTConv: n_partial must be >= 1, got {n_partial}")
        self.n_partial = n_partial

    def forward(self, u: Tensor, k: Tensor, pregate: Tensor | None = None, postgate: Tensor | None = None) -> Tensor:
        return partial_fft_conv(u, k, self.n_partial, pregate=pregate, postgate=postgate)


class FrequencySparseFFTConv(nn.Module):
    """Frequency-sparse convolution: ``rfft(k, 2L)[..., n_partial // 2:]`` zeroed (``(B, H, L)`` in and out)."""

    def __init__(self, n_partial: int, backend: str = "torch") -> None:
        super().__init__()
        if n_partial < 2:
            raise ValueError(f"FrequencySparseFFTConv: n_partial must be >= 2, got {n_partial}")
        self.n_partial, self.backend = n_partial, backend

    def forward(self, u: Tensor, k: Tensor, pregate: Tensor | None = None, postgate: Tensor | None = None) -> Tensor:
        return frequency_sparse_fft_conv(
            u, k, self.n_partial, pregate=pregate, postgate=postgate, backend=self.backend
        )


class FlashDepthWiseConv1d(nn.Module):
    """Short depthwise conv with the official signature (flashfftconv ``FlashDepthWiseConv1d``).

    Args:
        channels: ``D``.
        kernel_size: taps (odd in the official kernels; any size here).
        padding: zero padding on both sides (output length ``L + 2·padding - kernel_size + 1``).
        weights: ``(D, kernel_size)`` initial weights (else Conv1d's default init).
        bias: ``(D,)`` initial bias, or ``None`` for a zero-initialised learnable bias.
        is_bhl: input ``(B, D, L)`` if True, ``(B, L, D)`` otherwise.
        device / dtype: of the parameters (official factory kwargs; default: the device of ``weights`` (CPU
            without), float32). Inputs of any float dtype are convolved in their own dtype.

    Parameters: ``weights`` ``(D, kernel_size)`` (the ``nn.Conv1d`` weight without its singleton dim, whatever the
    layout; the official 'blh' module stores the transpose) and ``bias`` ``(D,)``.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        padding: int,
        weights: Tensor | None = None,
        bias: Tensor | None = None,
        is_bhl: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"FlashDepthWiseConv1d: dtype must be a floating-point torch.dtype, got {dtype!r}")
        if weights is not None and weights.numel() != channels * kernel_size:
            raise ValueError(f"FlashDepthWiseConv1d: expected weights with D*k = {channels}*{kernel_size} elements "
                             f"((D, 1, k) or (D, k)), got shape {tuple(weights.shape)}")
        if bias is not None and bias.numel() != channels:
            raise ValueError(f"FlashDepthWiseConv1d: expected bias (D,) = ({channels},), got {tuple(bias.shape)}")
        ref = nn.Conv1d(channels, channels, kernel_size, groups=channels, padding=padding)
        w = ref.weight.detach()[:, 0] if weights is None else weights.detach().reshape(channels, kernel_size)
        b = torch.zeros(channels) if bias is None else bias.detach().reshape(channels)
        dev = device if device is not None else (weights.device if weights is not None else None)
        pdt = dtype if dtype is not None else torch.float32
        self.weights = nn.Parameter(w.clone().to(device=dev, dtype=pdt))
        self.bias = nn.Parameter(b.clone().to(device=dev, dtype=pdt))
        self.channels, self.kernel_size, self.padding, self.is_bhl = channels, kernel_size, padding, is_bhl

    def forward(self, x: Tensor) -> Tensor:
        layout = "(B, D, L)" if self.is_bhl else "(B, L, D)"
        cdim = 1 if self.is_bhl else 2
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[cdim] != self.channels:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"FlashDepthWiseConv1d: expected {layout} with D={self.channels}, got {got}")
        xb = x if self.is_bhl else x.transpose(1, 2)
        y = F.conv1d(xb, self.weights[:, None, :].to(x.dtype), self.bias.to(x.dtype), padding=self.padding,
                     groups=self.channels)
        return y if self.is_bhl else y.transpose(1, 2)


for _cls in (LongConv, FlashFFTConv, PartialFFTConv, FrequencySparseFFTConv, FlashDepthWiseConv1d):
    register_component("flashfftconv", _cls)
