"""Kar3 / Kar2: the sign-based optimisers of the Terminator paper (card: hyperzzw; official hyperevolnet/Terminator
models/kar.py, checked in the indexed repository).

Kar3 keeps two exponential moving averages of the gradient, ``m1`` (beta1) and ``m2`` (beta2), both starting at 0,
and per step moves every parameter by three signed steps, using the averages *before* they absorb the current
gradient::

    p <- p - lr * (sign(g) + sign(m1) + sign(m2))
    m1 <- beta1 * m1 + (1 - beta1) * g ;  m2 <- beta2 * m2 + (1 - beta2) * g

No weight decay (the official ``l2_reg`` is a separate loss term, :func:`convatlas.models.sequence.hyperzzw.
fast_weight_penalty`). Kar2 is the one-average variant (``p -= lr * (sign(g) + sign(m))``). Official settings:
CIFAR-10 lr 0.001215, betas (0.5, 0.95); CIFAR-100 lr 0.00120925, betas (0.75, 0.99).
"""

from __future__ import annotations

from typing import Iterable

import torch

from convatlas.engine.elementwise_optimizer import ElementwiseOptimizer

__all__ = ["Kar3", "Kar2"]


class Kar3(ElementwiseOptimizer):
    """Sign update with the current gradient and two gradient EMAs (see module docstring)."""

    def __init__(self, params: Iterable, lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.95)) -> None:
        if lr < 0:
            raise ValueError(f"Kar3: invalid learning rate {lr}")
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
            raise ValueError(f"Kar3: betas must be two values in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas)))

    state_names = ("m1", "m2")

    def update(self, p: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        b1, b2 = group["betas"]
        m1, m2 = state["m1"], state["m2"]
        p.sub_(torch.sign(grad) + torch.sign(m1) + torch.sign(m2), alpha=group["lr"])
        m1.lerp_(grad, 1 - b1)
        m2.lerp_(grad, 1 - b2)


class Kar2(ElementwiseOptimizer):
    """Sign update with the current gradient and one gradient EMA (see module docstring)."""

    def __init__(self, params: Iterable, lr: float = 1e-4, beta: float = 0.95) -> None:
        if lr < 0:
            raise ValueError(f"Kar2: invalid learning rate {lr}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Kar2: beta must be in [0, 1), got {beta}")
        super().__init__(params, dict(lr=lr, beta=beta))

    state_names = ("m",)

    def update(self, p: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        p.sub_(torch.sign(grad) + torch.sign(state["m"]), alpha=group["lr"])
        state["m"].lerp_(grad, 1 - group["beta"])
