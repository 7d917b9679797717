"""Multivariate time-series forecasting (card: unireplknet, Global Temp / Wind with Corrformer's protocol).

Model contract: ``model(x (B, L, D)[, x_mark (B, L, F)]) -> (B, horizon, D)``; targets are the future values
(B, horizon, D). Batches are ``(x, y)`` or ``(x, x_mark, y)``. Loss: MSE; metrics: MSE and MAE over all values
(the official Time-Series README notes that Global Temp/Wind values are stored x10, so its reported MSE/MAE must be
divided by 100 / 10). Registry entries put the horizon in ``num_classes`` so generic tests know the output shape.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from convatlas.tasks.base import MetricAccumulator, TaskAdapter, register_task

__all__ = ["ForecastingTask", "ForecastingMetrics"]


class ForecastingMetrics(MetricAccumulator):
    """Mean squared and mean absolute error over every forecast value seen."""

    def __init__(self) -> None:
        self._sums = torch.zeros(3, dtype=torch.float64)  # squared error, absolute error, count

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        d = outputs.detach().double() - targets.detach().double()
        self._sums += torch.stack([d.pow(2).sum(), d.abs().sum(), torch.tensor(float(d.numel()), dtype=d.dtype)])

    def compute(self) -> dict[str, float]:
        se, ae, n = self._sums.tolist()
        n = max(n, 1.0)
        return {"mse": se / n, "mae": ae / n}

    def state(self) -> Tensor:
        return self._sums.clone()

    def load_state(self, state: Tensor) -> None:
        self._sums = state.to(torch.float64).clone()


@register_task("forecasting")
class ForecastingTask(TaskAdapter):
    """Forecasting: ``model(x[, x_mark]) -> (B, horizon, D)``, MSE loss, lower MSE is better."""

    primary_metric = "mse"
    higher_is_better = False

    def split_batch(self, batch: Any) -> tuple[tuple, Any]:
        if len(batch) == 3:
            x, mark, y = batch
            return (x, mark), y
        x, y = batch
        return (x,), y

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.mse_loss(outputs.float(), targets.float())

    def metrics(self) -> ForecastingMetrics:
        return ForecastingMetrics()

    def predict(self, outputs: Tensor, labels: list[str] | None = None) -> list[dict[str, Any]]:
        return [{"forecast": o.tolist()} for o in outputs.detach().float()]

    def expected_output_shape(self, inputs: tuple, num_classes: int | None) -> tuple[int, ...] | None:
        x = inputs[0]
        return (x.shape[0], num_classes, x.shape[-1]) if num_classes else None
