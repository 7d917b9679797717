"""Base class for optimizers whose update is elementwise per parameter (Lion, Kar3, Kar2): the closure call, the
group/parameter loop and lazily created state live here once; a subclass writes :meth:`update`."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["ElementwiseOptimizer"]


class ElementwiseOptimizer(Optimizer):
    """Calls ``update(p, grad, state, group)`` for every parameter with a gradient, under ``no_grad``.

    ``state_names`` lists the per-parameter buffers; they start as zeros like the parameter on its first update.
    """

    state_names: tuple[str, ...] = ()

    def update(self, p: Tensor, grad: Tensor, state: dict[str, Tensor], group: dict[str, Any]) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    for name in self.state_names:
                        state[name] = torch.zeros_like(p)
                self.update(p, p.grad, state, group)
        return loss
