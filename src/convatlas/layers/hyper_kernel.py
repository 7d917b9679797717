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

__all__ = ["coordinate_grid", "MAGNetLayer", "MAGNet", "LocalHyperKernelBank", "hyperzzw_global", "hyperzzw_2e"]


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


@register_component("hyperzzw")
class LocalHyperKernelBank(nn.Module):
    """``n`` context-dependent local slow nets (MAGNet_L, kernel sizes ``sizes``) evaluated jointly.

    Same maths as ``n`` separate ``MAGNet(..., context=True)`` (built here with the same seeds, so with the same
    initial values; :meth:`magnet` returns the equivalent standalone net), but the parameters are stacked
    ``(n, ...)`` and every layer is one batched matmul over a grid padded to the largest kernel (padded points are
    masked out of the s-renormalisation's norm and dropped from the output). Why: ``n`` separate nets of different
    grid sizes give ``n`` sets of differently shaped small kernels; under ``torch.compile`` each is a separate
    generated C++ kernel, and these dominated the compile time of the Terminator (see ``hyperzzw.py``).
    The context is averaged over the batch before the (linear) 1x1 reduction, which commutes with it.

    Args:
        data_dim: 1 or 2.
        sizes: kernel side of every net (e.g. (3, 9, 5, 7)).
        hidden / out_channels / num_layers / omega_0 / alpha / beta: as :class:`MAGNet`.
        context_channels: channels of the conditioning inputs.
        seeds: Gamma-frequency seed of every net.

    Forward: ``contexts`` (n tensors (B, context_channels, *spatial)) -> n depthwise kernels (out, 1, *k_i).
    """

    def __init__(
        self,
        data_dim: int,
        sizes: Sequence[int],
        hidden: int,
        out_channels: int,
        num_layers: int,
        context_channels: int,
        omega_0: float = 0.5,
        alpha: float = 6.0,
        beta: float = 1.0,
        seeds: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        seeds = list(range(len(sizes))) if seeds is None else list(seeds)
        if len(seeds) != len(sizes) or not sizes:
            raise ValueError(f"LocalHyperKernelBank: need one seed per size, got sizes {sizes}, seeds {seeds}")
        nets = [
            MAGNet(data_dim, k, hidden, out_channels, num_layers, omega_0, alpha, beta, context=True,
                   context_channels=context_channels, seed=sd)
            for k, sd in zip(sizes, seeds)
        ]
        self.data_dim, self.sizes, self.hidden, self.out_channels = data_dim, tuple(sizes), hidden, out_channels
        self.num_layers, self.context_channels = num_layers, context_channels
        self._cfg = dict(omega_0=omega_0, alpha=alpha, beta=beta, seeds=tuple(seeds))
        npts = [math.prod(m.size) for m in nets]
        pmax = max(npts)
        self.num_points = tuple(npts)

        def stack(fn) -> nn.Parameter:
            return nn.Parameter(torch.stack([fn(m).detach() for m in nets]).clone())

        self.filter_weight = stack(lambda m: torch.stack([f.linear.weight for f in m.filters]))  # (n, L+1, hid, d)
        self.filter_bias = stack(lambda m: torch.stack([f.linear.bias for f in m.filters]))  # (n, L+1, hid)
        self.linear_weight = stack(lambda m: torch.stack([lin.weight for lin in m.linears]))  # (n, L, hid, hid)
        self.linear_bias = stack(lambda m: torch.stack([lin.bias for lin in m.linears]))  # (n, L, hid)
        self.output_weight = stack(lambda m: m.output_linear.weight)  # (n, out, hid)
        self.output_bias = stack(lambda m: m.output_linear.bias)  # (n, out)
        self.bias_p = nn.Parameter(torch.cat([m.bias_p.detach() for m in nets]).clone())  # (sum P_i, 1)
        self.fast_reduce_weight = stack(lambda m: m.fast_reduce.weight)  # (n, hid, C_ctx)
        self.fast_reduce_bias = stack(lambda m: m.fast_reduce.bias)
        self.fast_fc1_weight = stack(lambda m: m.fast_fc1.weight)  # (n, hid, hid)
        self.fast_fc1_bias = stack(lambda m: m.fast_fc1.bias)
        # fast_linears_x of every layer: (n, L, hid, hid)
        self.fast_context_weight = stack(lambda m: torch.stack([lin.weight for lin in m.fast_linears_x]))
        self.fast_context_bias = stack(lambda m: torch.stack([lin.bias for lin in m.fast_linears_x]))
        self.s_alpha = stack(lambda m: m.s_alpha)  # (n, L, hid)
        self.s_beta = stack(lambda m: m.s_beta)
        coords = torch.zeros(len(nets), pmax, data_dim, device=nets[0].coords.device)
        mask = torch.zeros(len(nets), pmax, 1, device=coords.device)
        index = torch.zeros(len(nets), pmax, dtype=torch.long, device=coords.device)
        offset = 0
        for i, (m, p) in enumerate(zip(nets, npts)):
            coords[i, :p] = m.coords
            mask[i, :p] = 1.0
            index[i, :p] = torch.arange(offset, offset + p, device=coords.device)
            offset += p
        self.register_buffer("coords", coords, persistent=False)
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("bias_index", index, persistent=False)

    def magnet(self, i: int) -> MAGNet:
        """The standalone :class:`MAGNet` (context=True) equal to net ``i`` of the bank (parameters copied)."""
        c = self._cfg
        m = MAGNet(self.data_dim, self.sizes[i], self.hidden, self.out_channels, self.num_layers, c["omega_0"],
                   c["alpha"], c["beta"], context=True, context_channels=self.context_channels, seed=c["seeds"][i])
        m = m.to(self.bias_p.device, self.bias_p.dtype)
        lo = sum(self.num_points[:i])
        with torch.no_grad():
            for j, f in enumerate(m.filters):
                f.linear.weight.copy_(self.filter_weight[i, j])
                f.linear.bias.copy_(self.filter_bias[i, j])
            for j, (lin, fx) in enumerate(zip(m.linears, m.fast_linears_x)):
                lin.weight.copy_(self.linear_weight[i, j])
                lin.bias.copy_(self.linear_bias[i, j])
                fx.weight.copy_(self.fast_context_weight[i, j])
                fx.bias.copy_(self.fast_context_bias[i, j])
            m.output_linear.weight.copy_(self.output_weight[i])
            m.output_linear.bias.copy_(self.output_bias[i])
            m.bias_p.copy_(self.bias_p[lo : lo + self.num_points[i]])
            m.fast_reduce.weight.copy_(self.fast_reduce_weight[i])
            m.fast_reduce.bias.copy_(self.fast_reduce_bias[i])
            m.fast_fc1.weight.copy_(self.fast_fc1_weight[i])
            m.fast_fc1.bias.copy_(self.fast_fc1_bias[i])
            m.s_alpha.copy_(self.s_alpha[i])
            m.s_beta.copy_(self.s_beta[i])
        return m

    def unstacked_parameters(self) -> list[tuple[str, Tensor]]:
        """``(name, tensor)`` of every net's own parameters, named as in the separate nets (``"{i}.{name}"``),
        as views of the stacked parameters (e.g. for per-net weight penalties such as the official LnLoss)."""
        per_layer = {"filter_weight", "filter_bias", "linear_weight", "linear_bias", "fast_context_weight",
                     "fast_context_bias", "s_alpha", "s_beta"}  # (n, layers, ...): one tensor per layer and net
        out = []
        for name, p in self.named_parameters(recurse=False):
            if name == "bias_p":
                out += [(f"{i}.{name}", t) for i, t in enumerate(p.split(list(self.num_points)))]
            elif name in per_layer:
                out += [(f"{i}.{name}.{j}", t) for i, net in enumerate(p.unbind(0))
                        for j, t in enumerate(net.unbind(0))]
            else:
                out += [(f"{i}.{name}", t) for i, t in enumerate(p.unbind(0))]
        return out

    def forward(self, contexts: Sequence[Tensor]) -> list[Tensor]:
        if len(contexts) != len(self.sizes):
            raise ValueError(f"LocalHyperKernelBank: expected {len(self.sizes)} context inputs, got {len(contexts)}")
        pmax = self.coords.shape[1]
        pooled = []
        for c, k, p in zip(contexts, self.sizes, self.num_points):
            m = c.mean(0, keepdim=True)  # batch-averaged context (official), before the linear reduction
            m = F.adaptive_avg_pool2d(m, (k, k)) if self.data_dim == 2 else F.adaptive_avg_pool1d(m, k)
            pooled.append(F.pad(m.flatten(2)[0], (0, pmax - p)))
        pooled = torch.stack(pooled).transpose(1, 2)  # (n, P, C_ctx)
        # baddbmm: bias fused into the batched matmul (one extern call, no extra generated kernel)
        ctx = torch.baddbmm(self.fast_reduce_bias[:, None], pooled, self.fast_reduce_weight.transpose(1, 2))
        ctx = F.gelu(torch.baddbmm(self.fast_fc1_bias[:, None], ctx, self.fast_fc1_weight.transpose(1, 2)))  # (n,P,h)
        c = self.coords.to(self.bias_p.dtype)
        filt = torch.sin(c[:, None] @ self.filter_weight.transpose(2, 3) + self.filter_bias[:, :, None])  # (n,L+1,P,h)
        bias_p = self.bias_p[self.bias_index] * self.mask  # (n, P, 1)
        h = filt[:, 0]
        for i in range(self.num_layers):
            lin = torch.baddbmm(self.linear_bias[:, i, None], h, self.linear_weight[:, i].transpose(1, 2))
            h = filt[:, i + 1] * lin
            h = (h + bias_p) * self.mask  # padded points leave the norm below
            h = self.s_alpha[:, i, None] * h.detach() + self.s_beta[:, i, None] * F.normalize(h, dim=1)
            h = h * torch.baddbmm(self.fast_context_bias[:, i, None], ctx,
                                  self.fast_context_weight[:, i].transpose(1, 2))
        out = torch.baddbmm(self.output_bias[:, :, None], self.output_weight, h.transpose(1, 2))  # (n, out, P)
        return [
            out[i, :, :p].reshape(self.out_channels, 1, *((k,) * self.data_dim))
            for i, (k, p) in enumerate(zip(self.sizes, self.num_points))
        ]


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
