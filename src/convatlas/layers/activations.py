"""Activations with learnable or squared forms (card: metaformer, arXiv 2210.13452).

- :class:`StarReLU`: ``s * relu(x)**2 + b`` with learnable scalars ``s`` and ``b`` (shape (1,), shared by all
  channels). Keys ``scale``/``bias`` match timm and the official MetaFormer code. The paper derives
  ``s = 1/sqrt(1.25) = 0.8944``, ``b = -0.4472`` (zero mean, unit variance for x ~ N(0, 1)); the released
  models are initialised with ``s = 1``, ``b = 0`` and learn both, which is this class's default.
- :class:`SquaredReLU`: ``relu(x)**2`` (MetaFormer's MLP classifier head).

Both work on tensors of any shape.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convatlas.identities import register_component, register_identity

__all__ = ["StarReLU", "SquaredReLU", "STAR_RELU_NORMALISED"]

#: (scale, bias) making StarReLU output zero-mean, unit-variance for standard-normal input (paper, Sec. StarReLU).
STAR_RELU_NORMALISED = (1.0 / math.sqrt(1.25), -0.5 / math.sqrt(1.25))


class SquaredReLU(nn.Module):
    """``relu(x) ** 2`` elementwise, any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.square(F.relu(x))


@register_component("metaformer")
class StarReLU(nn.Module):
    """``s * relu(x) ** 2 + b`` with learnable scalars, any shape (card: metaformer).

    Args:
        scale_value / bias_value: initial ``s`` / ``b`` (released models: 1.0 / 0.0; normalised:
            :data:`STAR_RELU_NORMALISED`).
        scale_learnable / bias_learnable: whether ``s`` / ``b`` are trained.
    """

    def __init__(
        self,
        scale_value: float = 1.0,
        bias_value: float = 0.0,
        scale_learnable: bool = True,
        bias_learnable: bool = True,
    ) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), float(scale_value)), requires_grad=scale_learnable)
        self.bias = nn.Parameter(torch.full((1,), float(bias_value)), requires_grad=bias_learnable)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled() and x.dtype == self.scale.dtype:
            return self._affine_square_(F.relu(x))  # inference: one allocation instead of four
        return self.scale * torch.square(F.relu(x)) + self.bias

    def inplace_(self, x: Tensor) -> Tensor:
        """Apply in place to ``x`` (inference only: it overwrites its input) and return it."""
        return self._affine_square_(x.relu_())

    def _affine_square_(self, r: Tensor) -> Tensor:
        """``r = s * r**2 + b`` in place on a non-negative ``r``."""
        s = self.scale
        if r.device.type == "cpu" and s.device.type == "cpu" and s.numel() == 1 and not torch.compiler.is_compiling():
            # one pass (b + s * r * r) instead of three; s is a CPU scalar, so reading it costs no device sync
            return torch.addcmul(self.bias.to(r.dtype), r, r, value=float(s), out=r)
        return r.mul_(r).mul_(s).add_(self.bias)


@register_identity("metaformer", "StarReLU with s=1/sqrt(1.25), b=-0.5/sqrt(1.25) is zero-mean unit-variance on N(0,1)")
def _star_relu_normalised() -> str:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2_000_000, generator=g, dtype=torch.float64)
    act = StarReLU(*STAR_RELU_NORMALISED).double()
    with torch.no_grad():
        y = act(x)
    mean, std = y.mean().item(), y.std().item()
    assert abs(mean) < 5e-3 and abs(std - 1.0) < 5e-3, f"mean {mean:.4f}, std {std:.4f}"
    return f"mean {mean:+.1e}, std {std:.4f} on 2e6 N(0,1) samples"
