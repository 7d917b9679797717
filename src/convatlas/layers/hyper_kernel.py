"""Slow networks that generate hyper-kernels from coordinates, and the HyperZ·Z·W operators (card: hyperzzw).

A *slow network* is a coordinate-based implicit MLP (MAGNet: multiplicative anisotropic Gabor network, from
david-knigge/ccnn as used by hyperevolnet/Terminator): ``h_0 = sin(L_0 c)``, ``h_i = sin(L_i c) ⊙ A_i h_{i-1} +
b_p``, output ``A_out h_n``; its sine layers have frequencies scaled by ``2π·omega_0·γ``, γ ~ Gamma(alpha/(i+1),
beta) sampled once at construction (seeded), bias 0; the ``A_i`` are kaiming-uniform ("linear") with bias 1.0,
``A_out`` kaiming-uniform, bias 0, scaled by sqrt(1/#coordinates) (Chang et al. initialisation, applied at
construction instead of on the first forward as in the official code).

- ``MAGNet(data_dim, size, ...)`` without context is the official ``MAGNet_G`` (2-D, global hyper-kernel over the
  image grid) and ``MAGNet_GC`` (1-D over the channel axis); its output does not depend on the input.
- ``MAGNet(..., context=True)`` is ``MAGNet_L``: the input is average-pooled to the kernel grid, reduced by two
  1x1 layers + GELU and averaged over the batch; each hidden layer is s-renormalised
  (``alpha·stopgrad(h) + beta·h/‖h‖``, alpha = 1, beta = 0.1 per hidden unit; *registered parameters* here,
  the official code keeps them in Python lists, so they were neither trained nor saved) and multiplied by a
  linear map of that context. Output: a depthwise kernel ``(C, 1, *k)``.

Operators (``Z`` the hidden activation, ``W`` the hyper-kernel):

- :func:`hyperzzw_global`: context-dependent weights ``Z ⊙ W`` applied to another activation ``z``; 2-D: matrix
  product over the two spatial axes (needs H = W, official ``HyperZZW_G``); 1-D (pixel-level sequences): a global
  causal convolution of ``z`` with the per-sample, per-channel kernel ``Z ⊙ W`` of length L, computed with
  :func:`convatlas.ops.fft_conv.fft_conv`.
- :func:`hyperzzw_2e`: ``(Z ⊙ W) ⊙ Z`` (official ``HyperZZW_2E``, used for channel/spatial scores).

``omega_0`` is not in the indexed official files (card: unconfirmed); the default 0.5 keeps the highest initial
frequency below the Nyquist rate of a 32-point grid on [-1, 1].
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.identities import register_component
from convatlas.ops.fft_conv import fft_conv

__all__ = ["coordinate_grid", "MAGNetLayer", "MAGNet", "hyperzzw_global", "hyperzzw_2e"]


def coordinate_grid(sizes: Sequence[int], device: torch.device | str | None = None) -> Tensor:
    """Flattened grid of coordinates in [-1, 1]: (prod(sizes), len(sizes)), first axis slowest."""
    axes = [torch.linspace(-1.0, 1.0, s, device=device) for s in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(sizes))


class MAGNetLayer(nn.Module):
    """Gabor-like layer ``sin(W c + b)``: coordinates (P, data_dim) -> (P, hidden).

    W is PyTorch-default initialised then scaled by ``2π·omega_0·γ`` with γ ~ Gamma(alpha, beta) of shape
    (hidden, data_dim), sampled on the CPU from ``generator``; b = 0.
    """

    def __init__(
        self, data_dim: int, hidden: int, omega_0: float, alpha: float, beta: float,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(data_dim, hidden)
        gamma = torch._standard_gamma(torch.full((hidden, data_dim), float(alpha), device="cpu"), generator) / beta
        with torch.no_grad():
            self.linear.weight.mul_((2 * math.pi * omega_0 * gamma).to(self.linear.weight.device))
            self.linear.bias.zero_()

    def forward(self, coords: Tensor) -> Tensor:
        return torch.sin(self.linear(coords))


@register_component("hyperzzw")
class MAGNet(nn.Module):
    """Slow network: hyper-kernel of shape (out_channels, *size) from the coordinates of a ``size`` grid.

    Args:
        data_dim: 1 or 2 (dimension of the coordinate grid).
        size: grid side (int, repeated ``data_dim`` times) or per-axis sizes.
        hidden: hidden units.
        out_channels: channels of the generated kernel.
        num_layers: multiplicative layers (``num_layers + 1`` sine filters).
        omega_0 / alpha / beta: frequency scale and Gamma(alpha/(i+1), beta) distribution of the sine filters.
        context: MAGNet_L: condition on the input (needs ``context_channels``); output (out, 1, *size).
        context_channels: channels of the conditioning input x (B, C, *spatial).
        seed: seed of the Gamma frequencies (reproducible parameter values).
    """

    def __init__(
        self,
        data_dim: int,
        size: int | Sequence[int],
        hidden: int,
        out_channels: int,
        num_layers: int,
        omega_0: float = 0.5,
        alpha: float = 6.0,
        beta: float = 1.0,
        context: bool = False,
        context_channels: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if data_dim not in (1, 2):
            raise ValueError(f"MAGNet: data_dim must be 1 or 2, got {data_dim}")
        if num_layers < 1:
            raise ValueError(f"MAGNet: num_layers must be >= 1, got {num_layers}")
        self.size = (size,) * data_dim if isinstance(size, int) else tuple(size)
        if len(self.size) != data_dim:
            raise ValueError(f"MAGNet: size {self.size} does not match data_dim {data_dim}")
        self.data_dim, self.hidden, self.out_channels = data_dim, hidden, out_channels
        self.context = context
        npoints = math.prod(self.size)
        self.register_buffer("coords", coordinate_grid(self.size), persistent=False)
        g = torch.Generator().manual_seed(seed)
        self.filters = nn.ModuleList(
            [MAGNetLayer(data_dim, hidden, omega_0, alpha / (i + 1), beta, g) for i in range(num_layers + 1)]
        )
        self.linears = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(num_layers)])
        for lin in self.linears:
            nn.init.kaiming_uniform_(lin.weight, nonlinearity="linear")
            nn.init.constant_(lin.bias, 1.0)
        self.output_linear = nn.Linear(hidden, out_channels)
        nn.init.kaiming_uniform_(self.output_linear.weight, nonlinearity="linear")
        nn.init.zeros_(self.output_linear.bias)
        with torch.no_grad():
            self.output_linear.weight.mul_(math.sqrt(1.0 / npoints))
        self.bias_p = nn.Parameter(torch.zeros(npoints, 1))
        if context:
            if context_channels is None:
                raise ValueError("MAGNet: context=True needs context_channels")
            self.fast_reduce = nn.Linear(context_channels, hidden)
            self.fast_fc1 = nn.Linear(hidden, hidden)
            self.fast_linears_x = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(num_layers)])
            for lin in self.fast_linears_x:
                nn.init.kaiming_uniform_(lin.weight, nonlinearity="linear")
                nn.init.constant_(lin.bias, 1.0)
            self.s_alpha = nn.Parameter(torch.ones(num_layers, hidden))
            self.s_beta = nn.Parameter(torch.full((num_layers, hidden), 0.1))

    def _context(self, x: Tensor) -> Tensor:
        pooled = F.adaptive_avg_pool2d(x, self.size) if self.data_dim == 2 else F.adaptive_avg_pool1d(x, self.size)
        ctx = self.fast_reduce(pooled.flatten(2).transpose(1, 2))  # (B, P, hidden)
        return F.gelu(self.fast_fc1(ctx.mean(0)))  # batch-averaged context (official), (P, hidden)

    def forward(self, x: Tensor | None = None) -> Tensor:
        """x: conditioning input (B, C, *spatial), only for ``context=True``. Returns (out, *size) or, with
        context, the depthwise kernel (out, 1, *size)."""
        c = self.coords.to(self.bias_p.dtype)
        ctx = None
        if self.context:
            if x is None:
                raise ValueError("MAGNet: context=True needs the input x (B, C, *spatial)")
            ctx = self._context(x)
        h = self.filters[0](c)
        for i, lin in enumerate(self.linears):
            h = self.filters[i + 1](c) * lin(h) + self.bias_p
            if ctx is not None:
                h = self.s_alpha[i] * h.detach() + self.s_beta[i] * F.normalize(h, dim=0)
                h = h * self.fast_linears_x[i](ctx)
        out = self.output_linear(h).transpose(0, 1).reshape(self.out_channels, *self.size)
        return out.unsqueeze(1) if self.context else out


def hyperzzw_global(hk: Tensor, x: Tensor, z: Tensor) -> Tensor:
    """Global HyperZ·Z·W: context weights ``x ⊙ hk`` applied to ``z``.

    2-D: ``(x ⊙ hk) @ z`` over the spatial axes, x/z (B, C, H, H), hk (C, H, H) or broadcastable.
    1-D: causal global convolution of z (B, C, L) with the per-sample kernels ``x ⊙ hk`` (B, C, L) via FFT.
    """
    ctx = x * hk
    if x.ndim == 4:
        return torch.matmul(ctx, z)
    if x.ndim == 3:
        b, c, l = z.shape
        k = ctx.reshape(b * c, l)
        k = k.to(torch.promote_types(k.dtype, torch.float32))  # kernels in fp32 (fp64 kept), as FlashFFTConv
        return fft_conv(z.reshape(1, b * c, l), k).reshape(b, c, l)
    raise ValueError(f"hyperzzw_global: expected (B, C, L) or (B, C, H, W) activations, got {tuple(x.shape)}")


def hyperzzw_2e(hk: Tensor, x: Tensor) -> Tensor:
    """``(x ⊙ hk) ⊙ x`` (official HyperZZW_2E)."""
    return x * hk * x
