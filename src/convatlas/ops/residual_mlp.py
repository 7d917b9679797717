"""Fused inference kernel for the channels-last residual MLP of ConvNeXt-style blocks.

``out = shortcut + gamma * fc2(act(fc1(LayerNorm(x))))`` on token rows ``(N, C)`` with no permute copies, GELU in
place, the layer scale fused with the residual add (addcmul), and, for large maps, in row chunks so the
4C-wide hidden activation is never materialised whole (see the notes on ``_CHUNK_ABOVE``). Numbers equal the
layer-by-layer form up to float rounding.

fc1/fc2 run as 1x1 convolutions on a channels-last ``(1, C, rows, 1)`` view of the token rows, which CPU PyTorch
sends to oneDNN; ``addmm`` goes to MKL's generic GEMM. On the 2-core AVX-512 EPYC this was measured 1.1-2.5x
faster per block in float32 (ConvNeXt-atto..tiny stage shapes, batch 1 and 16, same numbers to 1e-6 relative),
but 0.5-0.9x in bfloat16 at batch 1, so reduced precision keeps ``addmm`` (MKL's bf16 GEMM) unless the map has
many tokens.

Used only for inference on plain CPU tensors (no autograd, no compile/export tracing); models fall back to
their module-by-module forward otherwise (card: convnext).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from convatlas.ops.pointwise_conv import conv1x1, nchw_is_faster

__all__ = ["residual_norm_mlp", "use_fast_inference"]

# Chunking applies when the whole (N, 4C) hidden activation exceeds _CHUNK_ABOVE elements (32 MiB fp32, glibc's
# largest mmap threshold: bigger buffers are mmapped fresh and page-faulted on every call); chunks then hold at
# most _CHUNK_ELEMS hidden elements, one buffer reused across chunks (this also bounds peak memory). Measured
# whole-model ConvNeXt-T b16 fp32, 2 threads, ours/timm, on a lightly loaded 2-core EPYC (load ~2.3):
# 4 MiB chunks 1.31, 16 MiB 1.26, 32 MiB 1.22, unchunked 1.09. Every op is an OpenMP parallel region, and on an
# oversubscribed machine each region waits for descheduled threads, so small chunks lose there (load 5-9:
# 4 MiB 0.50, 16 MiB 0.88, 32 MiB 0.85-1.11, unchunked 1.08-1.27). 32 MiB chunks keep most of the idle gain.
_CHUNK_ABOVE = 1 << 23
_CHUNK_ELEMS = 1 << 23
_CONV_MIN_ROWS_LOWP = 8192


def use_fast_inference(x: Tensor) -> bool:
    """True when the chunked kernel applies: grad and autocast off, plain CPU tensor, not compiling/tracing."""
    if torch.is_grad_enabled() or type(x) is not Tensor or x.device.type != "cpu":
        return False
    if torch.is_autocast_enabled("cpu") or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    return True


def residual_norm_mlp(
    x: Tensor,
    shortcut: Tensor,
    norm_weight: Tensor | None,
    norm_bias: Tensor | None,
    eps: float,
    fc1_weight: Tensor,
    fc1_bias: Tensor | None,
    fc2_weight: Tensor,
    fc2_bias: Tensor | None,
    gamma: Tensor | None = None,
    act: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """``shortcut + gamma * fc2(act(fc1(LN(x))))`` over the last dim, chunked over rows. Inference only.

    Args:
        x: (..., C) channels-last tokens (e.g. a (B, H, W, C) view of a channels_last map).
        shortcut: tensor of the same shape as ``x`` (the residual).
        norm_weight / norm_bias / eps: LayerNorm over C.
        fc1_weight: (hidden, C) or a (hidden, C, 1, 1) 1x1-conv kernel; fc1_bias (hidden,).
        fc2_weight: (C, hidden) or (C, hidden, 1, 1); fc2_bias (C,).
        gamma: per-channel layer scale (C,), or None.
        act: in-place activation applied to the hidden chunk (default exact-erf GELU).

    Returns:
        (..., C) contiguous tensor, same shape as ``x``.
    """
    shape = x.shape
    c = shape[-1]
    k1 = fc1_weight.reshape(fc1_weight.shape[0], c, 1, 1)
    k2 = fc2_weight.reshape(c, -1, 1, 1)
    rows = x.reshape(-1, c)
    res = shortcut.reshape(-1, c)
    n, hidden = rows.shape[0], k1.shape[0]
    chunk = n if n * hidden <= _CHUNK_ABOVE else max(64, _CHUNK_ELEMS // hidden)
    dtype = torch.promote_types(torch.promote_types(x.dtype, k1.dtype), res.dtype)
    out = torch.empty((n, c), dtype=dtype, device=x.device)
    # oneDNN 1x1 convs: always in float32; in reduced precision only for many tokens (bf16 ConvNeXt-T stage 1 at
    # batch 16: 1.2x faster than addmm; at batch 1 or late stages 0.5-0.9x)
    use_conv = x.dtype == k1.dtype and (x.dtype == torch.float32 or n >= _CONV_MIN_ROWS_LOWP)
    w1, w2 = k1.flatten(1), k2.flatten(1)
    h_buf = y_buf = None
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        m = stop - start
        t = F.layer_norm(rows[start:stop], (c,), norm_weight, norm_bias, eps)
        if use_conv and nchw_is_faster(m, c):
            # late stages at batch 1: the two transposes of an (m, C) slab cost little
            h = conv1x1(t.t().contiguous().view(1, c, m, 1), k1, fc1_bias)  # (1, hidden, m, 1) NCHW
            h = torch.ops.aten.gelu_(h) if act is None else act(h)
            y = conv1x1(h, k2, fc2_bias).view(c, m).t()  # (m, C) view of the NCHW output
        elif use_conv:
            h = conv1x1(t.view(1, m, 1, c).permute(0, 3, 1, 2), k1, fc1_bias)  # (1, hidden, m, 1) channels-last
            h = torch.ops.aten.gelu_(h) if act is None else act(h)
            y = conv1x1(h, k2, fc2_bias).permute(0, 2, 3, 1).reshape(m, c)  # a view: channels-last output
        else:
            if h_buf is None:  # reused by every chunk: no per-chunk allocation
                h_buf = torch.empty((min(chunk, n), hidden), dtype=t.dtype, device=x.device)
                y_buf = torch.empty((min(chunk, n), c), dtype=t.dtype, device=x.device)
            h, y = h_buf[:m], y_buf[:m]
            if fc1_bias is not None:
                torch.addmm(fc1_bias, t, w1.t(), out=h)
            else:
                torch.mm(t, w1.t(), out=h)
            h = torch.ops.aten.gelu_(h) if act is None else act(h)
            if fc2_bias is not None:
                torch.addmm(fc2_bias, h, w2.t(), out=y)
            else:
                torch.mm(h, w2.t(), out=y)
        if gamma is not None:  # out = shortcut + gamma * y in one pass
            torch.addcmul(res[start:stop], y, gamma, out=out[start:stop])
        else:
            torch.add(res[start:stop], y, out=out[start:stop])
    return out.view(shape)
