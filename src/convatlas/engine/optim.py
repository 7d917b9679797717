"""Optimizers the engine can build by name (``TrainConfig.optimizer``), so papers' own recipes run unchanged.

- ``adamw``: ``torch.optim.AdamW`` (decoupled weight decay; the default, ConvNeXt/DeiT recipes).
- ``sgd``: ``torch.optim.SGD`` with ``momentum`` (and ``nesterov``); weight decay is L2 added to the gradient.
- ``lion``: :class:`Lion` (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), used by the
  WaveMix recipes (card: wavemix; Lion, then SGD).
- ``kar3`` / ``kar2``: the Terminator paper's sign optimisers (card: hyperzzw, :mod:`convatlas.engine.kar`); they
  take no weight decay (a group's ``weight_decay`` is ignored, as in the official code).

Every optimizer receives parameter groups (the engine's decay / no-decay split, or the caller's own groups, e.g.
per-group learning-rate scales); a group's ``lr`` overrides the default.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch.optim import Optimizer

from convatlas.engine.elementwise_optimizer import ElementwiseOptimizer
from convatlas.engine.kar import Kar2, Kar3

__all__ = ["Lion", "OPTIMIZERS", "build_optimizer"]

OPTIMIZERS = ("adamw", "sgd", "lion", "kar3", "kar2")


class Lion(ElementwiseOptimizer):
    """Lion: ``p <- p * (1 - lr * wd) - lr * sign(beta1 * m + (1 - beta1) * g)``, then
    ``m <- beta2 * m + (1 - beta2) * g``. One state tensor per parameter (half AdamW's memory). Typical lr is
    3-10x smaller than AdamW's, weight decay 3-10x larger."""

    def __init__(self, params: Iterable, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        if not lr >= 0:
            raise ValueError(f"Lion: invalid learning rate {lr}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Lion: betas must be two values in [0, 1), got {betas}")
        if weight_decay < 0:
            raise ValueError(f"Lion: weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    state_names = ("exp_avg",)

    def update(self, p: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        b1, b2 = group["betas"]
        lr, wd, m = group["lr"], group["weight_decay"], state["exp_avg"]
        if wd:
            p.mul_(1 - lr * wd)
        p.add_(torch.sign(m.lerp(grad, 1 - b1)), alpha=-lr)
        m.lerp_(grad, 1 - b2)


def build_optimizer(name: str, groups: list[dict[str, Any]], *, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                    eps: float = 1e-8, momentum: float = 0.9, nesterov: bool = False) -> Optimizer:
    """The optimizer ``name`` (one of :data:`OPTIMIZERS`) over ``groups`` with default ``lr``.

    ``betas`` feed AdamW/Lion/Kar3 (Kar2 uses ``betas[1]``), ``eps`` AdamW, ``momentum``/``nesterov`` SGD.
    """
    key = name.lower()
    if key == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
    if key == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if key == "lion":
        return Lion(groups, lr=lr, betas=tuple(betas))
    if key == "kar3":
        return Kar3(groups, lr=lr, betas=tuple(betas))
    if key == "kar2":
        return Kar2(groups, lr=lr, beta=betas[1])
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
