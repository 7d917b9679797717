"""Single-image super-resolution task (card: wavemix SISR head): ``model(lr (B, C, H, W)) -> (B, C, sH, sW)`` vs
high-resolution targets (B, C, sH, sW) in [0, 1] (``data_range``).

Loss: L1 (default) or MSE. Metrics: mean per-image PSNR in dB (``10 log10(data_range^2 / MSE)``), mean L1 and MSE.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from convatlas.tasks.base import MetricAccumulator, TaskAdapter, register_task

__all__ = ["SuperResolutionTask", "SRMetrics", "psnr"]


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image PSNR in dB, (B,)."""
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp(min=1e-12))


class SRMetrics(MetricAccumulator):
    """Sums of per-image PSNR, L1, MSE and the image count."""

    def __init__(self, data_range: float = 1.0) -> None:
        self.data_range = data_range
        self._sums = torch.zeros(4, dtype=torch.float64)

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        o, t = outputs.detach().float(), targets.detach().float()
        self._sums += torch.stack([
            psnr(o, t, self.data_range).double().sum(), (o - t).abs().flatten(1).mean(1).double().sum(),
            (o - t).pow(2).flatten(1).mean(1).double().sum(), torch.tensor(float(o.shape[0]), dtype=torch.float64)])

    def compute(self) -> dict[str, float]:
        p, l1, mse, n = self._sums.tolist()
        n = max(n, 1.0)
        return {"psnr": p / n, "l1": l1 / n, "mse": mse / n, "loss": l1 / n}

    def state(self) -> Tensor:
        return self._sums.clone()

    def load_state(self, state: Tensor) -> None:
        self._sums = state.to(torch.float64).clone()


@register_task("super_resolution")
class SuperResolutionTask(TaskAdapter):
    """x``scale`` super-resolution with an L1 or MSE loss; primary metric PSNR.

    Args:
        scale: upscaling factor (expected output shape only).
        loss: ``"l1"`` or ``"mse"``.
        data_range: target value range for PSNR.
    """

    primary_metric = "psnr"
    higher_is_better = True

    def __init__(self, scale: int = 2, loss: str = "l1", data_range: float = 1.0) -> None:
        if loss not in ("l1", "mse"):
            raise ValueError(f"super_resolution: loss must be 'l1' or 'mse', got {loss!r}")
        self.scale, self.loss_name, self.data_range = scale, loss, data_range

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if outputs.shape != targets.shape:
            raise ValueError(f"super_resolution: outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} "
                             "must have the same (B, C, sH, sW) shape")
        fn = F.l1_loss if self.loss_name == "l1" else F.mse_loss
        return fn(outputs.float(), targets.float())

    def metrics(self) -> SRMetrics:
        return SRMetrics(self.data_range)

    def predict(self, outputs: Tensor, labels: list[str] | None = None) -> list[dict[str, Any]]:
        return [{"shape": list(o.shape), "min": float(o.min()), "max": float(o.max())} for o in outputs.detach()]

    def expected_output_shape(self, inputs: tuple, num_classes: int | None) -> tuple[int, ...] | None:
        x = inputs[0]
        return (x.shape[0], x.shape[1], x.shape[2] * self.scale, x.shape[3] * self.scale)
