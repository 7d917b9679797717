"""KV-cache compression modules (card lococo): ``model(k, v, scores) -> cat(K', V', -1)`` of shape
(B, h, mem_size, 2·d). They are trained inside a language model (see :mod:`convatlas.models.sequence.tiny_lm`);
as a standalone task the loss is the reconstruction error of attention outputs for given queries (batches
``((k, v, scores, q), None)``): attention of q over the compressed cache vs over the full cache.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from convatlas.tasks.base import MetricAccumulator, TaskAdapter, register_task

__all__ = ["KVCompressionTask"]


def _attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v


class _MSE(MetricAccumulator):
    def __init__(self) -> None:
        self._sums = torch.zeros(2, dtype=torch.float64)

    def update(self, outputs: Tensor, targets: Any) -> None:
        q, k, v = targets
        d = k.shape[-1]
        diff = _attend(q, outputs[..., :d].float(), outputs[..., d:].float()) - _attend(q, k, v)
        self._sums += torch.tensor([float((diff**2).sum()), diff.numel()], dtype=torch.float64)

    def compute(self) -> dict[str, float]:
        return {"attention_mse": float(self._sums[0] / self._sums[1].clamp(min=1))}

    def state(self) -> Tensor:
        return self._sums.clone()

    def load_state(self, state: Tensor) -> None:
        self._sums = state.to(torch.float64).clone()


@register_task("kv_compression")
class KVCompressionTask(TaskAdapter):
    """Batches ``(k, v, scores, q)`` (B, h, S, d)/(B, h, S)/(B, h, Q, d): the model compresses (k, v, scores); the
    loss is the MSE between attention outputs of q over the compressed and the full cache."""

    primary_metric = "attention_mse"
    higher_is_better = False

    def split_batch(self, batch: Any) -> tuple[tuple, Any]:
        k, v, scores, q = batch
        return (k, v, scores), (q, k, v)

    def loss(self, outputs: Tensor, targets: Any) -> Tensor:
        q, k, v = targets
        d = k.shape[-1]
        return torch.mean((_attend(q, outputs[..., :d], outputs[..., d:]) - _attend(q, k, v)) ** 2)

    def metrics(self) -> MetricAccumulator:
        return _MSE()

    def predict(self, outputs: Tensor, labels: list[str] | None = None) -> list[dict[str, Any]]:
        return [{"slots": int(o.shape[-2]), "head_dim": int(o.shape[-1] // 2)} for o in outputs]

    def expected_output_shape(self, inputs: tuple, num_classes: int | None) -> tuple[int, ...] | None:
        return None  # depends on the model's mem_size
