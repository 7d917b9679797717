"""Causal language modelling: ``model(ids (B, T)) -> logits (B, T, V)`` vs next-token targets (B, T) (-100 = ignore).

Batches are ``(ids, targets)``; with targets = ids shifted by one for ordinary LM training, or -100 everywhere
except the answer positions for synthetic retrieval (card lococo). Metrics: loss, perplexity, token accuracy.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from convatlas.tasks.base import MetricAccumulator, TaskAdapter, register_task

__all__ = ["LanguageModelTask", "LanguageModelMetrics"]


class LanguageModelMetrics(MetricAccumulator):
    """Sums of token NLL, correct predictions and counted tokens."""

    def __init__(self) -> None:
        self._sums = torch.zeros(3, dtype=torch.float64)

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        logits = outputs.detach().float().reshape(-1, outputs.shape[-1])
        t = targets.detach().reshape(-1)
        keep = t != -100
        nll = F.cross_entropy(logits, t, ignore_index=-100, reduction="sum")
        correct = ((logits.argmax(-1) == t) & keep).sum()
        self._sums += torch.stack([nll.double(), correct.double(), keep.sum().double()])

    def compute(self) -> dict[str, float]:
        nll, correct, n = self._sums.tolist()
        n = max(n, 1.0)
        return {"loss": nll / n, "perplexity": math.exp(min(nll / n, 50.0)), "accuracy": correct / n}

    def state(self) -> Tensor:
        return self._sums.clone()

    def load_state(self, state: Tensor) -> None:
        self._sums = state.to(torch.float64).clone()


@register_task("language_model")
class LanguageModelTask(TaskAdapter):
    """Next-token prediction with cross-entropy over the non-ignored positions."""

    primary_metric = "loss"
    higher_is_better = False

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs.float().reshape(-1, outputs.shape[-1]), targets.reshape(-1), ignore_index=-100)

    def metrics(self) -> LanguageModelMetrics:
        return LanguageModelMetrics()

    def predict(self, outputs: Tensor, labels: list[str] | None = None) -> list[dict[str, Any]]:
        nxt = outputs.detach().float()[:, -1].softmax(-1)
        p, i = nxt.max(-1)
        return [{"next_token": int(a), "probability": float(b)} for a, b in zip(i.tolist(), p.tolist())]

    def expected_output_shape(self, inputs: tuple, num_classes: int | None) -> tuple[int, ...] | None:
        ids = inputs[0]
        return (ids.shape[0], ids.shape[1], num_classes) if num_classes else None
