"""Asymmetric large-kernel convolution for multimodal fusion (card: scaling-up-kernels, Sec. 3.4 of the journal).

One modality's features ``y`` (B, L2, D) serve as a *dynamic large kernel* slid over the other modality's features
``x`` (B, L1, D), a cheaper alternative to cross-attention:

    z[b, i, j] = sum_{k=0}^{L2-1} x[b, i + k - pad, j] * y[b, k, j]

i.e. a per-sample, per-channel (depthwise) 1-D correlation of ``x`` with filters built from ``y``. Interpretation
(the card's extracted formula ``Z_ij = sum_k X_{i+k-1} Y_kj`` is garbled): channel j of the output uses channel j of
both inputs (depthwise), zero padding; ``padding="same"`` keeps length L1 (odd or even L2: left pad (L2-1)//2),
``"valid"`` gives L1-L2+1. 2-D maps are flattened to sequences (H*W, C) by the caller. Cost O(B L1 L2 D) as one
grouped ``F.conv1d`` call, versus O(B L1 L2 D) *plus* softmax and two matmuls for cross-attention.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

import torch

from convatlas.identities import register_component, register_identity

__all__ = ["asymmetric_lk_conv", "asymmetric_lk_conv_reference"]


def asymmetric_lk_conv(x: Tensor, y: Tensor, padding: str = "same") -> Tensor:
    """x (B, L1, D) correlated with per-sample depthwise kernels y (B, L2, D) -> (B, L1 or L1-L2+1, D)."""
    if x.ndim != 3 or y.ndim != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"asymmetric_lk_conv: expected x (B, L1, D) and y (B, L2, D), got {tuple(x.shape)}, {tuple(y.shape)}")
    if padding not in ("same", "valid"):
        raise ValueError(f"asymmetric_lk_conv: padding must be 'same' or 'valid', got {padding!r}")
    b, l1, d = x.shape
    l2 = y.shape[1]
    if padding == "valid" and l2 > l1:
        raise ValueError(f"asymmetric_lk_conv: 'valid' needs L2 <= L1, got L1={l1}, L2={l2}")
    xs = x.transpose(1, 2).reshape(1, b * d, l1)                      # batch folded into groups
    if padding == "same":
        xs = F.pad(xs, ((l2 - 1) // 2, l2 // 2))
    w = y.permute(0, 2, 1).reshape(b * d, 1, l2)
    z = F.conv1d(xs, w, groups=b * d)                                 # (1, B*D, L_out)
    return z.view(b, d, -1).transpose(1, 2)


def asymmetric_lk_conv_reference(x: Tensor, y: Tensor, padding: str = "same") -> Tensor:
    """Loop form of :func:`asymmetric_lk_conv` (for tests)."""
    l1, l2 = x.shape[1], y.shape[1]
    xp = F.pad(x, (0, 0, (l2 - 1) // 2, l2 // 2)) if padding == "same" else x
    n_out = l1 if padding == "same" else l1 - l2 + 1
    return sum(xp[:, k : k + n_out] * y[:, k : k + 1] for k in range(l2))


register_component("scaling-up-kernels", asymmetric_lk_conv)


@register_identity("scaling-up-kernels", "asymmetric large-kernel conv == loop correlation; L2 = 1 is per-channel scaling")
def _identity_asymmetric() -> str:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 30, 8, generator=g, dtype=torch.float64)
    y = torch.randn(2, 9, 8, generator=g, dtype=torch.float64)
    err = (asymmetric_lk_conv(x, y) - asymmetric_lk_conv_reference(x, y)).abs().max().item()
    y1 = y[:, :1]
    err1 = (asymmetric_lk_conv(x, y1) - x * y1).abs().max().item()
    assert err < 1e-12 and err1 < 1e-12, f"errors {err:.2e}, {err1:.2e}"
    return f"max abs error {max(err, err1):.2e}"
