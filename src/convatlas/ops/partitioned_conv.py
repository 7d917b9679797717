"""Uniformly partitioned FFT convolution (overlap-add with a frequency-domain delay line) for long sequences.

Part of the flashfftconv operator (:func:`convatlas.ops.fft_conv.fft_conv`): the CPU form of its "smaller FFTs that
stay close to the compute units" idea. A causal convolution of ``L`` samples with a ``Lk``-tap kernel is split into
blocks of ``nb`` samples: input blocks ``u_j`` and kernel blocks ``k_i`` are each zero-padded to ``2·nb`` and
transformed once, the output block spectra are ``Y_j = sum_i U_{j-i} · K_i`` (a causal convolution over the block
index, per frequency), and ``irfft(Y_j)`` overlaps-and-adds into output blocks ``j`` and ``j+1``. Every FFT has size
``2·nb`` instead of ``~2L``; the FFT work per sample is the same (three transforms of total length ``2L`` per row,
one fewer ``log2`` level), the products grow to ``(P+1)/2`` per bin, and MKL runs the small transforms much faster:
on the development CPU (AMD EPYC, AVX-512, 1 thread) a batched real FFT costs ~1.6-2.1 ns per point at 2^14-2^16
against 3-4 ns at 2^19-2^21. Measured against the single-FFT blocked path in benchmarks/long_conv.py.

Shapes: rows ``(R, L)``; kernel rows ``(R, Lk)``; output ``(R, L)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from convatlas.identities import register_identity

__all__ = [
    "partition_plan", "partitioned_conv_rows", "partitioned_conv", "kernel_block_spectrum", "PartitionedConv",
    "rows_per_block", "row_blocks",
]

# Target block length: FFTs of 2^16 points (rows of two blocks stay well inside L2+L3 on the development CPU).
# Measured at L = 64K / 256K / 1M (1 thread, contended, CPU time): block lengths 2^13-2^17 were within ~10% of each
# other, 2^15-2^16 best; more than 16 blocks costs more in products than it saves in FFTs.
_TARGET_BLOCK = 1 << 14
_MAX_BLOCKS = 16
# Below this length the whole-sequence FFT of one block of rows is already cache-friendly (fft_conv's blocked path).
MIN_LENGTH = 1 << 16


def partition_plan(seq_len: int, taps: int) -> tuple[int, int, int] | None:
    """``(nb, P, Pk)``: block length, number of input blocks, number of kernel blocks; ``None`` below
    :data:`MIN_LENGTH` (one FFT of the whole row is then as fast)."""
    from convatlas.ops.fft_conv import fast_fft_size

    if seq_len < MIN_LENGTH or taps < 1:
        return None
    p = max(2, min(_MAX_BLOCKS, round(seq_len / _TARGET_BLOCK)))
    nb = fast_fft_size(-(-seq_len // p))
    p = -(-seq_len // nb)
    pk = -(-min(taps, seq_len) // nb)
    return nb, p, pk


def _input_block_spectra(u: Tensor, nb: int, p: int) -> Tensor:
    """``(R, L)`` -> ``(R, P, nb + 1)``: rfft of each block of ``nb`` samples zero-padded to ``2·nb``."""
    rows, seq_len = u.shape
    total = p * nb
    if total == seq_len:
        ub = u.reshape(rows, p, nb)
    else:
        ub = u.new_zeros(rows, total)
        ub[:, :seq_len] = u
        ub = ub.view(rows, p, nb)
    return torch.fft.rfft(ub, 2 * nb)


def _frame_spectra(g: Tensor, nb: int, p: int) -> Tensor:
    """``(R, L)`` -> ``(R, P, nb + 1)``: rfft of the overlapping frames ``g[j·nb : j·nb + 2·nb]`` (zeros past L)."""
    rows, seq_len = g.shape
    gp = g.new_empty(rows, (p + 1) * nb)
    gp[:, :seq_len] = g
    gp[:, seq_len:] = 0
    return torch.fft.rfft(gp.unfold(-1, 2 * nb, nb), 2 * nb)


def _overlap_add(z: Tensor, nb: int, out: Tensor) -> None:
    """``z`` ``(R, P, 2·nb)`` block results -> ``out`` ``(R, L)``: block j's first half plus block j-1's second."""
    rows, p, _ = z.shape
    seq_len = out.shape[-1]
    if p * nb == seq_len:
        o = out.view(rows, p, nb)
        o[:, 0] = z[:, 0, :nb]
        torch.add(z[:, 1:, :nb], z[:, :-1, nb:], out=o[:, 1:])
    else:
        y = z[..., :nb].clone()
        y[:, 1:] += z[:, :-1, nb:]
        out.copy_(y.view(rows, p * nb)[:, :seq_len])


def _block_products(uf: Tensor, kf: Tensor) -> Tensor:
    """``Y_j = sum_{i <= j} U_{j-i} · K_i`` over the block axis: ``(R, P, F)`` x ``(R, Pk, F)`` -> ``(R, P, F)``."""
    p, pk = uf.shape[1], kf.shape[1]
    yf = uf * kf[:, :1]
    for i in range(1, min(pk, p)):
        yf[:, i:].addcmul_(uf[:, : p - i], kf[:, i : i + 1])
    return yf


def partitioned_conv_rows(u: Tensor, k: Tensor, nb: int, p: int, pk: int, out: Tensor) -> None:
    """``out = (u * k)[:, :L]`` (causal linear convolution per row) by ``p`` input blocks of ``nb`` samples.

    Args:
        u: input rows ``(R, L)`` (real, contiguous last dim; compute dtype).
        k: kernel rows ``(R, Lk)`` with ``Lk <= L``, or their :func:`kernel_block_spectrum` ``(R, pk, nb + 1)``.
        nb / p / pk: from :func:`partition_plan`.
        out: ``(R, L)`` output rows (written).
    """
    kf = k if k.is_complex() else kernel_block_spectrum(k, nb, pk)
    yf = _block_products(_input_block_spectra(u, nb, p), kf)
    _overlap_add(torch.fft.irfft(yf, 2 * nb), nb, out)


def partitioned_conv(v: Tensor, kf: Tensor, plan: tuple[int, int, int]) -> Tensor:
    """Differentiable, traceable form: ``(B, H, L)`` input and a block spectrum ``(H, Pk, nb + 1)`` -> ``(B, H, L)``
    (no row blocking, no ``out=`` writes; used with a learnable cached spectrum and under torch.compile)."""
    nb, p, pk = plan
    bsz, h, seq_len = v.shape
    total = p * nb
    vb = v if total == seq_len else torch.nn.functional.pad(v, (0, total - seq_len))
    uf = torch.fft.rfft(vb.reshape(bsz, h, p, nb), 2 * nb)
    terms = [uf * kf[:, :1]]
    for i in range(1, min(pk, p)):
        shifted = torch.nn.functional.pad(uf[:, :, : p - i] * kf[:, i : i + 1], (0, 0, i, 0))
        terms.append(shifted)
    z = torch.fft.irfft(torch.stack(terms).sum(0), 2 * nb)  # (B, H, P, 2·nb)
    tail = torch.nn.functional.pad(z[:, :, :-1, nb:], (0, 0, 1, 0))
    return (z[..., :nb] + tail).reshape(bsz, h, total)[..., :seq_len]


def kernel_block_spectrum(k: Tensor, nb: int, pk: int) -> Tensor:
    """Cached form of the kernel for :func:`partitioned_conv_rows`: ``(H, Lk)`` -> ``(H, pk, nb + 1)`` complex."""
    h, taps = k.shape
    if taps == pk * nb:
        kb = k.reshape(h, pk, nb)
    else:
        kb = k.new_zeros(h, pk * nb)
        kb[:, : min(taps, pk * nb)] = k[:, : pk * nb]
        kb = kb.view(h, pk, nb)
    return torch.fft.rfft(kb, 2 * nb)


# Rows per block: rows * L ~ 2^18 samples (measured best 1-4 rows at L = 64K-1M).
_BLOCK_SAMPLES = 1 << 18


def rows_per_block(h: int, seq_len: int) -> int:
    """Channels processed together at sequence length ``seq_len`` (at most ``h``)."""
    return max(1, min(h, _BLOCK_SAMPLES // seq_len))


def row_blocks(bsz: int, h: int, rows: int):
    """``(b, h0, h1)`` blocks of a ``(B, H, L)`` tensor, channel blocks outermost (a channel block's kernel
    spectrum serves every batch element before the next block)."""
    for h0 in range(0, h, rows):
        for b in range(bsz):
            yield b, h0, min(h, h0 + rows)


class PartitionedConv(torch.autograd.Function):
    """``y = (v * k)[..., :L] (+ d·v)`` for ``v`` ``(B, H, L)``, ``k`` ``(H, Lk)``, ``d`` ``(H,)`` or None, by
    partitioned FFTs, a few rows at a time, with a partitioned backward (training at long lengths).

    Backward, with ``F_q`` the spectrum of the gradient frame ``gy[q·nb : q·nb + 2·nb]``: the input gradient
    (a correlation with the kernel) is ``irfft(sum_i F_{j+i} · conj(K_i))[:nb]`` per block j, the kernel gradient
    ``irfft(sum_{b, j} F_{j+i} · conj(V_j))[:nb]`` per kernel block i (the forward's input spectra are kept, as
    autograd keeps ``rfft(v)`` in the naive form); both are exact, no wrap-around (frame + block < 2·nb).
    """

    @staticmethod
    def forward(ctx, v: Tensor, k: Tensor, d: Tensor | None, plan: tuple[int, int, int], rows: int) -> Tensor:
        nb, p, pk = plan
        bsz, h, seq_len = v.shape
        kf = kernel_block_spectrum(k, nb, pk)
        keep_vf = ctx.needs_input_grad[1]
        vf_all = None
        if keep_vf:
            vf_all = torch.empty(bsz, h, p, nb + 1, dtype=kf.dtype, device=v.device)
        out = torch.empty_like(v)
        for b, h0, h1 in row_blocks(bsz, h, rows):
            uf = _input_block_spectra(v[b, h0:h1], nb, p)
            if vf_all is not None:  # kept conjugated: the kernel gradient multiplies by conj(V_j)
                torch.conj_physical(uf, out=vf_all[b, h0:h1])
            o = out[b, h0:h1]
            _overlap_add(torch.fft.irfft(_block_products(uf, kf[h0:h1]), 2 * nb), nb, o)
            if d is not None:
                o.addcmul_(v[b, h0:h1], d[h0:h1, None])
        ctx.save_for_backward(v, kf, d, vf_all)
        ctx.plan, ctx.rows, ctx.taps = plan, rows, k.shape[-1]
        return out

    @staticmethod
    def backward(ctx, gy: Tensor):
        v, kf, d, vf_all = ctx.saved_tensors
        (nb, p, pk), rows, taps = ctx.plan, ctx.rows, ctx.taps
        bsz, h, seq_len = v.shape
        need_v, need_k, need_d = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        gy = gy.to(v.dtype).contiguous()
        gv = torch.empty_like(v) if need_v else None
        gkf = torch.zeros_like(kf) if need_k else None
        gd = torch.zeros(h, dtype=v.dtype, device=v.device) if (need_d and d is not None) else None
        kfc = kf.conj().resolve_conj() if need_v else None
        for b, h0, h1 in row_blocks(bsz, h, rows):
            g = gy[b, h0:h1]
            fr = _frame_spectra(g, nb, p)
            if need_v:
                acc = fr * kfc[h0:h1, :1]
                for i in range(1, min(pk, p)):
                    acc[:, : p - i].addcmul_(fr[:, i:], kfc[h0:h1, i : i + 1])
                z = torch.fft.irfft(acc, 2 * nb)[..., :nb]
                o = gv[b, h0:h1]
                o.copy_(z.reshape(h1 - h0, p * nb)[:, :seq_len])
                if d is not None:
                    o.addcmul_(g, d[h0:h1, None])
            if need_k:  # GK_i += F_{j+i} · conj(V_j): for each input block j, all kernel blocks i at once
                ufc, gk_rows = vf_all[b, h0:h1], gkf[h0:h1]
                for j in range(p):
                    m = min(pk, p - j)
                    gk_rows[:, :m].addcmul_(fr[:, j : j + m], ufc[:, j : j + 1])
            if gd is not None:
                gd[h0:h1] += (g * v[b, h0:h1]).sum(-1)
        gk = None
        if need_k:
            gk = torch.fft.irfft(gkf, 2 * nb)[..., :nb].reshape(h, pk * nb)[:, :taps]
        return gv, gk, gd, None, None


@register_identity(
    "flashfftconv", "partitioned FFT conv (overlap-add over blocks, forward and backward) == direct causal conv"
)
def _partitioned_equals_direct() -> str:
    from convatlas.ops.fft_conv import direct_conv

    torch.manual_seed(0)
    errs = []
    for seq_len, taps, nb in ((1000, 1000, 128), (777, 300, 64)):
        p, pk = -(-seq_len // nb), -(-taps // nb)
        v = torch.randn(2, 3, seq_len, dtype=torch.float64, requires_grad=True)
        k = torch.randn(3, taps, dtype=torch.float64, requires_grad=True)
        y = PartitionedConv.apply(v, k, None, (nb, p, pk), 2)
        ref = direct_conv(v, k)
        g = torch.randn_like(ref)
        grads = torch.autograd.grad(y, (v, k), g)
        want = torch.autograd.grad(ref, (v, k), g)
        errs.append(max([(y - ref).abs().max().item()] + [(a - b).abs().max().item() for a, b in zip(grads, want)]))
    err = max(errs)
    assert err < 1e-9, f"max abs error {err:.2e}"
    return f"max abs error (output, input and kernel gradients) {err:.1e} (L=1000 / 8 blocks, L=777 / 13 blocks)"
