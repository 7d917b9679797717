"""Structural re-parameterisation helpers: fold BatchNorm into convolutions/linears, merge parallel branches.

Training-time multi-branch blocks (RepVGG, UniRepLKNet's Dilated Reparam Block, LSNet's RepVGGDW, MobileOne, ...)
collapse into one convolution for inference. The pieces here are reused by every such family:

- :func:`fuse_conv_bn` / :func:`fuse_linear_bn` / :func:`fuse_bn_linear`: the folded ``(weight, bias)``;
- :func:`dilate_kernel`: a dilated ``k x k`` kernel as its equivalent dense kernel of size ``r(k-1)+1``;
- :func:`pad_kernel` / :func:`merge_kernels`: centre-pad kernels to a common size and sum them;
- :class:`ConvBN`: conv (no bias) + BatchNorm with ``fuse()`` (LSNet's / EfficientViT's ``Conv2d_BN``);
- :class:`BNLinear`: BatchNorm1d + Linear with ``fuse()`` (LSNet's / LeViT's classifier);
- :func:`reparameterize_model`: call ``reparameterize()`` on every sub-module, in place (deepest first);
- :func:`fuse_submodules`: replace every child that has ``fuse() -> nn.Module`` by its fused module (LeViT/
  EfficientViT/LSNet pattern), in place.

All fusions are exact in eval mode (BatchNorm uses running statistics) up to floating-point rounding.
Cards: unireplknet, scaling-up-kernels, lsnet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "fuse_conv_bn",
    "fuse_linear_bn",
    "fuse_bn_linear",
    "bn_scale_shift",
    "dilate_kernel",
    "pad_kernel",
    "merge_kernels",
    "identity_kernel",
    "ConvBN",
    "BNLinear",
    "reparameterize_model",
    "fuse_submodules",
]


def bn_scale_shift(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Per-channel ``(scale, shift)`` with ``bn(x) == x * scale + shift`` in eval mode."""
    std = (bn.running_var + bn.eps).sqrt()
    weight = bn.weight if bn.weight is not None else torch.ones_like(std)
    bias = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = weight / std
    return scale, bias - bn.running_mean * scale


def fuse_conv_bn(weight: Tensor, bias: Tensor | None, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Fold ``bn(conv(x))`` into one conv: returns ``(weight', bias')`` (weight (O, I/g, *k), bias (O,))."""
    scale, shift = bn_scale_shift(bn)
    w = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    b = shift if bias is None else shift + bias * scale
    return w, b


def fuse_linear_bn(weight: Tensor, bias: Tensor | None, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Fold ``bn(linear(x))`` (BN over the output features) into one Linear: ``(weight (O, I), bias (O,))``."""
    return fuse_conv_bn(weight, bias, bn)


def fuse_bn_linear(bn: nn.BatchNorm1d, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """Fold ``linear(bn(x))`` (BN over the input features) into one Linear: ``(weight (O, I), bias (O,))``."""
    scale, shift = bn_scale_shift(bn)
    w = weight * scale[None, :]
    b = weight @ shift
    if bias is not None:
        b = b + bias
    return w, b


def dilate_kernel(kernel: Tensor, dilation: int) -> Tensor:
    """Equivalent dense kernel of a dilated conv: (O, I, k, k) -> (O, I, r(k-1)+1, r(k-1)+1), zeros between taps.

    (The official UniRepLKNet code computes the same with a stride-r transposed conv by a 1x1 one.)
    """
    if dilation == 1:
        return kernel
    k_h, k_w = kernel.shape[-2:]
    out = kernel.new_zeros(*kernel.shape[:-2], dilation * (k_h - 1) + 1, dilation * (k_w - 1) + 1)
    out[..., ::dilation, ::dilation] = kernel
    return out


def pad_kernel(kernel: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Zero-pad an odd (.., k, k) kernel symmetrically to ``size`` (centres stay aligned)."""
    sh, sw = (size, size) if isinstance(size, int) else size
    kh, kw = kernel.shape[-2:]
    if (sh - kh) % 2 or (sw - kw) % 2 or sh < kh or sw < kw:
        raise ValueError(f"cannot centre-pad a {kh}x{kw} kernel to {sh}x{sw}")
    ph, pw = (sh - kh) // 2, (sw - kw) // 2
    return F.pad(kernel, [pw, pw, ph, ph])


def merge_kernels(kernels: list[tuple[Tensor, int]], size: int) -> Tensor:
    """Sum of ``(kernel, dilation)`` pairs as one dense ``size x size`` kernel (each dilated then centre-padded)."""
    return sum(pad_kernel(dilate_kernel(k, r), size) for k, r in kernels)


def identity_kernel(channels: int, size: int, groups: int = 1, *, like: Tensor | None = None) -> Tensor:
    """Kernel (C, C/groups, size, size) of the identity map (1 at the centre of each channel's own tap)."""
    kw = {"device": like.device, "dtype": like.dtype} if like is not None else {}
    k = torch.zeros(channels, channels // groups, size, size, **kw)
    idx = torch.arange(channels, device=k.device)
    k[idx, idx % (channels // groups), size // 2, size // 2] = 1.0
    return k


class ConvBN(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d, fusable into one biased conv: (B, C_in, H, W) -> (B, C_out, H', W').

    Keys ``c`` (conv) and ``bn`` as in LSNet/EfficientViT's ``Conv2d_BN``.

    Args:
        in_chs / out_chs: channels.
        kernel_size / stride / padding / dilation / groups: conv geometry (padding defaults to "same" for odd k).
        bn_weight_init: initial BN scale (0 makes a residual branch start as zero).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        self.add_module("c", nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation, groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_chs))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """The equivalent eval-mode conv with bias (a new module; ``self`` is unchanged)."""
        c = self.c
        w, b = fuse_conv_bn(c.weight, c.bias, self.bn)
        conv = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation, c.groups,
                         bias=True, device=w.device, dtype=w.dtype)
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        return conv


class BNLinear(nn.Sequential):
    """BatchNorm1d + (dropout) + Linear, fusable into one Linear: (B, C) -> (B, num_classes). Keys ``bn``, ``l``.

    Args:
        in_features / out_features: sizes.
        bias: Linear bias.
        std: trunc-normal init std of the Linear weight (bias 0).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, std: float = 0.02) -> None:
        super().__init__()
        self.add_module("bn", nn.BatchNorm1d(in_features))
        self.add_module("l", nn.Linear(in_features, out_features, bias=bias))
        nn.init.trunc_normal_(self.l.weight, std=std)
        if bias:
            nn.init.zeros_(self.l.bias)

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        """The equivalent eval-mode Linear (a new module)."""
        w, b = fuse_bn_linear(self.bn, self.l.weight, self.l.bias)
        lin = nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=w.dtype)
        lin.weight.copy_(w)
        lin.bias.copy_(b)
        return lin


def reparameterize_model(model: nn.Module) -> nn.Module:
    """Switch every re-parameterisable sub-module to its fused inference form, in place; returns ``model``.

    Calls ``reparameterize()`` on each sub-module that defines it (children before parents, each once), then
    puts the model in eval mode (fused forms assume BatchNorm running statistics).
    """
    done: set[int] = set()

    def visit(m: nn.Module) -> None:
        for child in list(m.children()):
            visit(child)
        if m is not model and id(m) not in done and callable(getattr(m, "reparameterize", None)):
            done.add(id(m))
            m.reparameterize()

    model.eval()
    visit(model)
    return model.eval()


def fuse_submodules(model: nn.Module) -> nn.Module:
    """Replace, in place, every sub-module defining ``fuse() -> nn.Module`` by the module it returns; eval mode.

    Parents are tried before their children, so a block whose ``fuse()`` covers its own children (e.g. RepVGGDW,
    which merges two ConvBNs and the identity) is fused as a whole.
    """
    model.eval()

    def visit(m: nn.Module) -> None:
        for name, child in list(m.named_children()):
            fuse = getattr(child, "fuse", None)
            if callable(fuse):
                fused = fuse()
                if isinstance(fused, nn.Module):
                    setattr(m, name, fused)
                    continue
            visit(child)

    visit(model)
    return model
