"""Classification task adapter: logits (B, K) vs integer labels (B,). Cross-entropy with label smoothing."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from convatlas.tasks.base import MetricAccumulator, TaskAdapter, register_task


class ClassificationMetrics(MetricAccumulator):
    """Top-1 / top-5 accuracy and mean cross-entropy over all samples seen."""

    def __init__(self) -> None:
        self._sums = torch.zeros(4, dtype=torch.float64)  # loss_sum, top1, top5, count

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        logits = outputs.detach().float()
        targets = targets.detach()
        k = min(5, logits.shape[-1])
        topk = logits.topk(k, dim=-1).indices
        hit = topk == targets[:, None]
        self._sums += torch.tensor(
            [
                F.cross_entropy(logits, targets, reduction="sum").item(),
                hit[:, 0].sum().item(),
                hit.any(dim=-1).sum().item(),
                targets.numel(),
            ],
            dtype=torch.float64,
        )

    def compute(self) -> dict[str, float]:
        loss, top1, top5, n = self._sums.tolist()
        n = max(n, 1.0)
        return {"loss": loss / n, "accuracy": top1 / n, "top5": top5 / n}

    def state(self) -> Tensor:
        return self._sums.clone()

    def load_state(self, state: Tensor) -> None:
        self._sums = state.to(torch.float64).clone()


@register_task("classification")
class ClassificationTask(TaskAdapter):
    """Image/sequence classification: model(x) -> logits (B, num_classes); targets are class indices (B,)."""

    primary_metric = "accuracy"
    higher_is_better = True

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs.float(), targets, label_smoothing=self.label_smoothing)

    def metrics(self) -> ClassificationMetrics:
        return ClassificationMetrics()

    def predict(self, outputs: Tensor, labels: list[str] | None = None) -> list[dict[str, Any]]:
        probs = outputs.detach().float().softmax(dim=-1)
        conf, idx = probs.max(dim=-1)
        records = []
        for c, i in zip(conf.tolist(), idx.tolist()):
            records.append({"class": i, "label": labels[i] if labels else str(i), "probability": c})
        return records

    def expected_output_shape(self, inputs: tuple, num_classes: int | None) -> tuple[int, ...] | None:
        return (inputs[0].shape[0], num_classes) if num_classes else None
