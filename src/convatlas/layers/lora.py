"""Low-rank adaptation (LoRA) of linear layers, as used by LoCoCo's post-training tuning mode (card: lococo).

LoCoCo's ``train.py --lora_finetuning`` wraps ``q_proj, k_proj, v_proj, o_proj`` of every attention layer with
peft's LoRA (r 8, alpha 16, dropout 0, no bias): ``y = x W^T + b + (alpha / r) · x A^T B^T`` with ``A`` (r, in)
kaiming-uniform and ``B`` (out, r) zeros, so training starts from the frozen base model. :class:`LoRALinear` keeps
the base ``weight``/``bias`` under their original names (a base-model state dict loads with ``strict=False``)
and adds ``lora_A``/``lora_B``. ``n_splits > 1`` gives each equal slice of the output its own adapter, so a fused
``qkv`` projection gets three independent adapters exactly like separate q/k/v projections would.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor, nn

__all__ = ["LoRALinear", "apply_lora", "merge_lora"]


class LoRALinear(nn.Linear):
    """``nn.Linear`` plus a low-rank update: ``(B, *, in) -> (B, *, out)``.

    Args:
        in_features / out_features / bias: as ``nn.Linear``.
        r: adapter rank; alpha: scale numerator (scaling = alpha / r).
        n_splits: independent adapters over ``n_splits`` equal output slices (3 for a fused qkv projection).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, r: int = 8, alpha: float = 16.0,
                 n_splits: int = 1) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if r < 1 or n_splits < 1 or out_features % n_splits:
            raise ValueError(f"LoRALinear: need r >= 1 and out_features % n_splits == 0, got r={r}, "
                             f"out={out_features}, n_splits={n_splits}")
        self.r, self.alpha, self.n_splits = r, float(alpha), n_splits
        self.scaling = self.alpha / r
        self.lora_A = nn.Parameter(torch.empty(n_splits, r, in_features))
        self.lora_B = nn.Parameter(torch.zeros(n_splits, out_features // n_splits, r))
        for i in range(n_splits):
            nn.init.kaiming_uniform_(self.lora_A.data[i], a=math.sqrt(5))

    @classmethod
    def from_linear(cls, lin: nn.Linear, r: int = 8, alpha: float = 16.0, n_splits: int = 1) -> "LoRALinear":
        """Wrap an existing linear layer (its weights are copied; the result is on the same device/dtype)."""
        new = cls(lin.in_features, lin.out_features, lin.bias is not None, r=r, alpha=alpha, n_splits=n_splits)
        new = new.to(device=lin.weight.device, dtype=lin.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(lin.weight)
            if lin.bias is not None:
                new.bias.copy_(lin.bias)
        new.weight.requires_grad_(lin.weight.requires_grad)
        return new

    def delta_weight(self) -> Tensor:
        """The low-rank update ``(alpha / r) · B A`` as an (out, in) matrix."""
        return (self.lora_B @ self.lora_A).reshape(self.out_features, self.in_features) * self.scaling

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        low = torch.einsum("...i,sri->...sr", x, self.lora_A.to(x.dtype))
        up = torch.einsum("...sr,sor->...so", low, self.lora_B.to(x.dtype))
        return y + self.scaling * up.reshape(*y.shape)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", r={self.r}, alpha={self.alpha:g}, n_splits={self.n_splits}"


def apply_lora(model: nn.Module, targets: Iterable[str], r: int = 8, alpha: float = 16.0,
               splits: dict[str, int] | None = None) -> list[str]:
    """Replace every ``nn.Linear`` whose attribute name is in ``targets`` by a :class:`LoRALinear` (in place).

    ``splits`` maps a target name to its number of independent output slices (e.g. ``{"qkv": 3}``). Returns the
    qualified names of the wrapped layers."""
    targets, splits, done = set(targets), dict(splits or {}), []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if name in targets and type(child) is nn.Linear:
                setattr(parent, name, LoRALinear.from_linear(child, r, alpha, splits.get(name, 1)))
                done.append(f"{parent_name}.{name}" if parent_name else name)
    if not done:
        raise ValueError(f"apply_lora: no nn.Linear named {sorted(targets)} in {type(model).__name__}")
    return done


def merge_lora(model: nn.Module) -> int:
    """Fold every :class:`LoRALinear` back into a plain ``nn.Linear`` (peft's ``merge_and_unload``); returns the
    number of merged layers. The merged model computes the same function."""
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                lin = nn.Linear(child.in_features, child.out_features, child.bias is not None)
                lin = lin.to(device=child.weight.device, dtype=child.weight.dtype)
                with torch.no_grad():
                    lin.weight.copy_(child.weight + child.delta_weight().to(child.weight.dtype))
                    if child.bias is not None:
                        lin.bias.copy_(child.bias)
                setattr(parent, name, lin)
                n += 1
    return n
