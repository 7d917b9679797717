"""Recursive gated convolution g^nConv (card: hornet, arXiv 2207.14284; official code raoyongming/HorNet, MIT).

(B, C, H, W) -> (B, C, H, W). With widths d_k = C / 2^(n-1-k), k = 0..n-1 (ascending, d_{n-1} = C):
``proj_in`` (1x1, C -> 2C) gives p (d_0 channels) and q (sum d_k); q goes through one spatial op (7x7 depthwise
conv, or :class:`~convatlas.layers.global_filter.GlobalLocalFilter`), is scaled by ``s`` (1/3 in HorNet) and split
into q_0..q_{n-1}; then ``y = p * q_0`` and ``y = pws[k-1](y) * q_k`` for k = 1..n-1 (1x1 convs d_{k-1} -> d_k);
finally ``proj_out`` (1x1, C -> C). Order 1 is a single gated convolution ``proj_out(p * s * DW(q))``.
Keys match the official code (``proj_in``, ``dwconv``, ``pws.k``, ``proj_out``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.identities import register_component, register_identity

__all__ = ["GnConv", "gnconv_dims"]


def gnconv_dims(dim: int, order: int) -> list[int]:
    """Ascending widths [C / 2^(n-1), ..., C / 2, C] of an order-n gnConv; raises if C is not divisible."""
    if order < 1:
        raise ValueError(f"gnConv: order must be >= 1, got {order}")
    if dim % 2 ** (order - 1):
        raise ValueError(f"gnConv: dim {dim} must be divisible by 2^(order-1) = {2 ** (order - 1)} for order {order}")
    return [dim // 2**i for i in range(order)][::-1]


@register_component("hornet")
class GnConv(nn.Module):
    """g^nConv: (B, C, H, W) -> (B, C, H, W) (card: hornet).

    Args:
        dim: C (divisible by 2^(order-1)).
        order: interaction order n (HorNet: 2, 3, 4, 5 in stages 1-4).
        spatial_layer: ``fn(D) -> module`` for the spatial op on the D = sum(d_k) channels of q; default a
            depthwise ``kernel_size`` conv with bias (HorNet 7x7); GF variants pass a GlobalLocalFilter factory.
        kernel_size: depthwise kernel of the default spatial op.
        scale: s multiplying the spatial op's output (1/3 in HorNet; the official default is 1.0).
        in_dim: input channels of ``proj_in`` (default C); HorFPN's decoder convs map in_dim -> C.
        proj_out: keep the final 1x1 ``proj_out`` (C -> C); False replaces it by identity (official
            ``GNConvModule(proj_out=False)``).
    """

    def __init__(
        self,
        dim: int,
        order: int = 5,
        spatial_layer: Callable[[int], nn.Module] | None = None,
        kernel_size: int = 7,
        scale: float = 1.0,
        in_dim: int | None = None,
        proj_out: bool = True,
    ) -> None:
        super().__init__()
        self.order = order
        self.dims = gnconv_dims(dim, order)
        self.scale = scale
        d = sum(self.dims)
        self.proj_in = nn.Conv2d(in_dim or dim, 2 * dim, 1)
        if spatial_layer is None:
            self.dwconv = nn.Conv2d(d, d, kernel_size, padding=(kernel_size - 1) // 2, groups=d)
        else:
            self.dwconv = spatial_layer(d)
        self.proj_out = nn.Conv2d(dim, dim, 1) if proj_out else nn.Identity()
        self.pws = nn.ModuleList([nn.Conv2d(self.dims[i], self.dims[i + 1], 1) for i in range(order - 1)])

    def forward(self, x: Tensor) -> Tensor:
        p, q = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        if not torch.is_grad_enabled():  # inference: the gates are applied in place (fewer large allocations)
            qs = torch.split(self.dwconv(q).mul_(self.scale), self.dims, dim=1)
            y = p * qs[0]
            for pw, qk in zip(self.pws, qs[1:]):
                y = pw(y).mul_(qk)
            return self.proj_out(y)
        if q.device.type == "cpu" and type(self.dwconv) is nn.Conv2d:
            # CPU training: the depthwise conv's backward on a non-contiguous channel slice of proj_in's output
            # takes a very slow path (measured, torch 2.13, 2 threads: order-2 gnConv C=64, 8x56x56, fwd+bwd
            # 8.5 s); on a channels_last copy it takes 0.18 s. Same numbers (max difference 6e-8).
            dq = self.dwconv(q.contiguous(memory_format=torch.channels_last)).contiguous()
        else:
            dq = self.dwconv(q)
        qs = torch.split(dq * self.scale, self.dims, dim=1)
        y = p * qs[0]
        for pw, qk in zip(self.pws, qs[1:]):
            y = pw(y) * qk
        return self.proj_out(y)

    def extra_repr(self) -> str:
        return f"order={self.order}, dims={self.dims}, scale={self.scale:.4f}"


def _gnconv_reference(m: GnConv, x: Tensor) -> Tensor:
    """Hand-written recursion with explicit channel slicing (no torch.split), for the identities."""
    f = F.conv2d(x, m.proj_in.weight, m.proj_in.bias)
    d0 = m.dims[0]
    p, q = f[:, :d0], f[:, d0:]
    q = m.dwconv(q) * m.scale
    y, start = p, 0
    for k, dk in enumerate(m.dims):
        qk = q[:, start : start + dk]
        start += dk
        if k > 0:
            pw = m.pws[k - 1]
            y = F.conv2d(y, pw.weight, pw.bias)
        y = y * qk
    return F.conv2d(y, m.proj_out.weight, m.proj_out.bias)


@register_identity("hornet", "order-1 gnConv == gated conv proj_out(p * s*DW(q)); orders 2-5 == hand-written recursion")
def _gnconv_identity() -> str:
    torch.manual_seed(0)
    c = 16
    m1 = GnConv(c, order=1, scale=1 / 3).double()
    x = torch.randn(2, c, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        f = m1.proj_in(x)
        gated = m1.proj_out(f[:, :c] * (m1.dwconv(f[:, c:]) / 3))
        err1 = (m1(x) - gated).abs().max().item()
        errs = []
        for order in (2, 3, 4, 5):
            m = GnConv(c, order=order, scale=1 / 3).double()
            assert m.dims[0] + sum(m.dims) == 2 * c, "channel bookkeeping d_0 + sum d_k != 2C"
            errs.append((m(x) - _gnconv_reference(m, x)).abs().max().item())
    err = max(errs)
    assert err1 < 1e-12 and err < 1e-12, f"order-1 error {err1:.2e}, orders 2-5 error {err:.2e}"
    return f"order-1 vs gated conv {err1:.1e}; orders 2-5 vs reference recursion {err:.1e} (float64)"
