"""Per-step learning-rate schedule: linear warm-up then cosine decay (the ConvNeXt / DeiT recipe, stepped per
optimizer step instead of per epoch)."""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer

__all__ = ["WarmupCosineSchedule", "warmup_cosine_factor"]


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier at optimizer step ``step`` (0-based): ``(step+1)/warmup`` during warm-up, then cosine from
    1 to ``min_ratio`` over the remaining steps (reaching ``min_ratio`` at ``total_steps``)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay = max(total_steps - warmup_steps, 1)
    t = min(max(step - warmup_steps, 0) / decay, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


class WarmupCosineSchedule:
    """Sets ``lr = base_lr * warmup_cosine_factor(step)`` on every param group; call :meth:`step` after each
    optimizer step. The state is just the step counter (plus the base lrs), so resuming is exact.

    Args:
        optimizer: the optimizer; each group's current ``lr`` becomes its base lr (stored as ``initial_lr``).
        warmup_steps: linear warm-up length in optimizer steps (0 disables).
        total_steps: total optimizer steps of the run.
        min_lr_ratio: final lr as a fraction of the base lr.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
        self.optimizer = optimizer
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.last_step = 0
        self._apply()

    def factor(self, step: int | None = None) -> float:
        return warmup_cosine_factor(self.last_step if step is None else step, self.warmup_steps,
                                    self.total_steps, self.min_lr_ratio)

    def _apply(self) -> None:
        f = self.factor()
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "min_lr_ratio": self.min_lr_ratio}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = int(state["last_step"])
        self.warmup_steps = int(state["warmup_steps"])
        self.total_steps = int(state["total_steps"])
        self.min_lr_ratio = float(state["min_lr_ratio"])
        self._apply()
