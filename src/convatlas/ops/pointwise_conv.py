"""1x1 convolution routed to oneDNN on CPU (inference fast paths of the ConvNeXt / MetaFormer / InceptionNeXt /
HorNet families).

CPU PyTorch sends a float32 1x1 convolution with batch < 16 to its THNN im2col+GEMM kernel when it runs on one
thread (``ConvParams::use_mkldnn``: "for 1x1 filters, THNN is faster when single-threaded"). On the 2-core AVX-512
EPYC development machine the opposite holds: THNN reached 33-107 GFLOP/s on the InceptionNeXt-T MLP shapes at
batch 1, oneDNN 122-212 GFLOP/s on the same channels-last tensors (``/work`` measurement, torch 2.13, 1 thread;
benchmarks/backbones_timm.py shows the whole-model effect). A dilation on a 1x1 kernel changes nothing in the
result (there is a single tap) but makes PyTorch pick oneDNN; that is all :func:`conv1x1` does, for float32
channels-last inputs on CPU and NCHW inputs of at most 32x32 pixels (oneDNN was 2.4x slower on NCHW for 96
channels at 56x56).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["conv1x1", "nchw_is_faster"]


# NCHW maps up to this many pixels also go to oneDNN (measured 1 thread, batch 1: 1.9-2.1x faster at 7x7-28x28,
# 2.4x slower at 56x56 with 96 channels)
_NCHW_ONEDNN_MAX_PIXELS = 1024


def _onednn_preferred(x: Tensor) -> bool:
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4:
        return False
    # PyTorch's other oneDNN condition (ConvParams::use_mkldnn): batch > 1 or more than 20480 elements; otherwise
    # the dilation would send the conv to the slow dilated kernel instead
    if x.shape[0] == 1 and x.numel() <= 20480:
        return False
    if x.is_contiguous(memory_format=torch.channels_last):
        return True
    return x.is_contiguous() and x.shape[-2] * x.shape[-1] <= _NCHW_ONEDNN_MAX_PIXELS


def conv1x1(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Pointwise convolution ``(B, C_in, H, W) -> (B, C_out, H, W)``; ``weight`` ``(C_out, C_in)`` or
    ``(C_out, C_in, 1, 1)``. Same numbers as ``F.conv2d(x, weight, bias)`` (up to float summation order)."""
    w = weight if weight.dim() == 4 else weight.reshape(*weight.shape, 1, 1)
    if w.shape[-2:] != (1, 1):
        raise ValueError(f"conv1x1: expected a 1x1 kernel (C_out, C_in, 1, 1), got weight of shape {tuple(w.shape)}")
    return F.conv2d(x, w, bias, dilation=2 if _onednn_preferred(x) else 1)


def nchw_is_faster(tokens: int, channels: int) -> bool:
    """Layout rule for CPU inference: with fewer tokens (batch x pixels) than channels, oneDNN's NCHW 1x1
    convolutions beat its channels-last ones (2 threads, batch 1: 768 -> 3072 channels at 7x7 1.6 vs 2.4 ms,
    320 -> 1280 at 7x7 0.47 vs 0.60 ms); with more tokens channels-last wins. Used by the InceptionNeXt stages and
    the ConvNeXt residual MLP to switch layout."""
    return tokens < channels
