"""Inference fast path for conv -> BatchNorm (-> activation) stacks (DeepMAD, AFFNet, MobileNet-style blocks).

In eval mode BatchNorm is a per-channel affine map, so ``bn(conv(x)) == conv_{w * s}(x) + (b - mean * s)`` with
``s = gamma / sqrt(var + eps)`` (same numbers up to float rounding). :func:`conv_bn_act` folds the BN into the
convolution weight on every call (no cached copy that could go stale when parameters change; the fold costs one
pass over the weights) and applies the activation in place. Why it matters on CPU at batch 16: a BN or activation
writes a new tensor per call, and a tensor above glibc's largest mmap threshold (32 MiB, e.g. (16, 240, 112, 112)
fp32 = 193 MB) is mmapped fresh and page-faulted on every call. Measured on the 2-core EPYC, one thread,
DeepMAD-29M batch 16 (CPU time via ``time.thread_time``): BN + SiLU + SE multiply were 47% of the forward; with the
fold, in-place activations and channels-last maps the forward took 2.4 s instead of 8.3 s.

:class:`ConvBNAct` is an ``nn.Sequential`` (conv, BN[, act]) whose state-dict keys (``0.*``, ``1.*``) are those of
the plain Sequential, so existing checkpoints and converters are unaffected.

Used only when :func:`~convatlas.ops.residual_mlp.use_fast_inference` holds (grad and autocast off, plain CPU
tensor, not compiling/tracing) and the BN uses running statistics; otherwise the module-by-module forward runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.layers.reparam import bn_scale_shift, fuse_conv_bn
from convatlas.ops.residual_mlp import use_fast_inference

__all__ = ["ConvBNAct", "conv_bn_act", "act_inplace", "bn_foldable", "fast_conv_bn"]

_INPLACE_ACTS: dict[type, object] = {
    nn.SiLU: lambda x: F.silu(x, inplace=True),
    nn.ReLU: torch.relu_,
    nn.ReLU6: lambda x: F.hardtanh(x, 0.0, 6.0, inplace=True),
    nn.Hardswish: lambda x: F.hardswish(x, inplace=True),
    nn.Sigmoid: torch.sigmoid_,
    nn.Identity: lambda x: x,
}


def act_inplace(act: nn.Module | None, x: Tensor) -> Tensor:
    """``act(x)``, in place on ``x`` for the common activations (SiLU, ReLU, ReLU6, Hardswish, Sigmoid); other
    modules are called normally. Only for tensors no one else holds (e.g. a fresh conv output) and no autograd."""
    if act is None:
        return x
    fn = _INPLACE_ACTS.get(type(act))
    return fn(x) if fn is not None else act(x)  # type: ignore[operator]


def bn_foldable(bn: nn.Module) -> bool:
    """True for a BatchNorm in eval mode with running statistics (then it is an affine map)."""
    return (isinstance(bn, nn.modules.batchnorm._BatchNorm) and not bn.training
            and bn.running_mean is not None and bn.running_var is not None)


def fast_conv_bn(x: Tensor, bn: nn.Module) -> bool:
    """Whether :func:`conv_bn_act` applies to input ``x`` and norm ``bn`` (inference on CPU, eval BN)."""
    return bn_foldable(bn) and use_fast_inference(x)


def conv_bn_act(x: Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, act: nn.Module | None = None) -> Tensor:
    """``act(bn(conv(x)))`` with the eval BN folded into the conv weight and the activation in place:
    (B, C_in, H, W) -> (B, C_out, H', W'). Requires :func:`bn_foldable` (``bn`` in eval mode); no autograd.

    Folding costs a pass over the weight (C_out x C_in/g x k x k), the unfolded BN a pass over the output
    (B x C_out x H' x W'): when the output has fewer positions per channel than the weight has entries per output
    channel (late stages at batch 1, e.g. ResNet-50 layer4: 49 positions, 4608 weights), the BN is applied to the
    conv output in place instead (ResNet-50 batch 1: folding everywhere 0.57x timm, this rule 1.1x)."""
    sh, sw = conv.stride
    positions = x.shape[0] * (x.shape[-2] // sh) * (x.shape[-1] // sw)
    if positions >= conv.weight[0].numel():
        w, b = fuse_conv_bn(conv.weight, conv.bias, bn)
        return act_inplace(act, conv._conv_forward(x, w, b))
    scale, shift = bn_scale_shift(bn)
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    y = conv._conv_forward(x, conv.weight, None)
    return act_inplace(act, y.mul_(scale.view(-1, 1, 1)).add_(shift.view(-1, 1, 1)))


class ConvBNAct(nn.Sequential):
    """``nn.Sequential(conv, bn[, act])`` with the folded-BN inference path of :func:`conv_bn_act`:
    (B, C_in, H, W) -> (B, C_out, H', W'). Keys ``0.*`` (conv), ``1.*`` (BN) as the plain Sequential."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        if len(self) in (2, 3) and isinstance(self[0], nn.Conv2d) and fast_conv_bn(x, self[1]):
            return conv_bn_act(x, self[0], self[1], self[2] if len(self) == 3 else None)
        return super().forward(x)
