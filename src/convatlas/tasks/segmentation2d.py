"""Semantic segmentation task adapter (``segmentation2d``): logits (B, K, H, W) vs label maps (B, H, W).

Loss: pixel-wise cross-entropy (``ignore_index`` pixels, 255 by default as in mmseg/ADE20K, are skipped); a model
returning ``(logits, aux_logits)`` in training (UPerNet's auxiliary FCN head) adds ``aux_weight`` (0.4) x the
auxiliary cross-entropy, as mmseg.
Metrics: mean IoU over the classes present in predictions or targets (mmseg's ``mIoU``: classes with an empty union
are left out of the mean), pixel accuracy and mean loss, accumulated as a confusion matrix so they all-reduce
exactly across DDP ranks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from convatlas.tasks.base import MetricAccumulator, TaskAdapter, register_task

__all__ = ["SegmentationMetrics", "Segmentation2dTask", "confusion_matrix", "mean_iou"]


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """(N,) predicted and target class ids -> (K, K) int64 counts, rows = target, cols = prediction."""
    keep = target != ignore_index
    t, p = target[keep].long(), pred[keep].long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"segmentation targets must be in [0, {num_classes}) or {ignore_index}, got "
                         f"[{int(t.min())}, {int(t.max())}]")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).view(num_classes, num_classes)


def mean_iou(conf: Tensor) -> tuple[float, Tensor]:
    """(K, K) confusion matrix -> (mIoU over classes with a non-empty union, per-class IoU with NaN for empty)."""
    conf = conf.double()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))
    valid = union > 0
    return (float(iou[valid].mean()) if valid.any() else 0.0), iou


class SegmentationMetrics(MetricAccumulator):
    """mIoU, pixel accuracy and mean cross-entropy; the confusion matrix is sized from the first batch's K."""

    def __init__(self, num_classes: int | None = None, ignore_index: int = 255) -> None:
        self.ignore_index = ignore_index
        self.num_classes = num_classes
        self._conf = torch.zeros(0, dtype=torch.float64)
        self._loss = torch.zeros(2, dtype=torch.float64)  # loss sum, pixel count
        if num_classes:
            self._conf = torch.zeros(num_classes * num_classes, dtype=torch.float64)

    def update(self, outputs: Tensor | tuple[Tensor, ...], targets: Tensor) -> None:
        if isinstance(outputs, (tuple, list)):  # (logits, aux_logits): score the main logits
            outputs = outputs[0]
        logits = outputs.detach().float()
        k = logits.shape[1]
        if self.num_classes is None:
            self.num_classes = k
            self._conf = torch.zeros(k * k, dtype=torch.float64)
        elif k != self.num_classes:
            raise ValueError(f"segmentation metrics: expected {self.num_classes} classes, got logits with {k}")
        targets = targets.detach().to(logits.device)
        pred = logits.argmax(1)
        self._conf += confusion_matrix(pred.flatten(), targets.flatten(), k, self.ignore_index).flatten().double().cpu()
        n = int((targets != self.ignore_index).sum())
        if n:
            loss = F.cross_entropy(logits, targets.long(), ignore_index=self.ignore_index, reduction="sum")
            self._loss += torch.tensor([float(loss), n], dtype=torch.float64)

    def compute(self) -> dict[str, float]:
        if not self.num_classes:
            return {"loss": 0.0, "miou": 0.0, "pixel_accuracy": 0.0}
        conf = self._conf.view(self.num_classes, self.num_classes)
        miou, _ = mean_iou(conf)
        total = float(conf.sum())
        return {"loss": float(self._loss[0]) / max(float(self._loss[1]), 1.0), "miou": miou,
                "pixel_accuracy": float(conf.diag().sum()) / max(total, 1.0)}

    def state(self) -> Tensor:
        return torch.cat([self._loss, self._conf]).clone()

    def load_state(self, state: Tensor) -> None:
        state = state.to(torch.float64)
        self._loss, self._conf = state[:2].clone(), state[2:].clone()
        if self._conf.numel():
            self.num_classes = int(round(self._conf.numel() ** 0.5))


@register_task("segmentation2d")
class Segmentation2dTask(TaskAdapter):
    """2D semantic segmentation: model(x) -> logits (B, K, H, W) at input resolution; targets (B, H, W) class ids."""

    primary_metric = "miou"
    higher_is_better = True

    def __init__(self, ignore_index: int = 255, num_classes: int | None = None, aux_weight: float = 0.4) -> None:
        self.ignore_index = ignore_index
        self.aux_weight = aux_weight
        self.num_classes = num_classes

    def loss(self, outputs: Tensor | tuple[Tensor, Tensor], targets: Tensor) -> Tensor:
        """Cross-entropy; ``outputs`` may be ``(logits, aux_logits)`` (auxiliary term weighted ``aux_weight``)."""
        if isinstance(outputs, (tuple, list)):
            main, *aux = outputs
            return self.loss(main, targets) + sum(self.aux_weight * self.loss(a, targets) for a in aux)
        if outputs.dim() != 4 or targets.dim() != 3 or outputs.shape[2:] != targets.shape[1:]:
            raise ValueError(f"segmentation2d: expected logits (B, K, H, W) and targets (B, H, W) of the same size, "
                             f"got {tuple(outputs.shape)} and {tuple(targets.shape)}")
        return F.cross_entropy(outputs.float(), targets.long(), ignore_index=self.ignore_index)

    def metrics(self) -> SegmentationMetrics:
        return SegmentationMetrics(self.num_classes, self.ignore_index)

    def predict(self, outputs: Tensor, labels: list[str] | None = None) -> list[dict[str, Any]]:
        if isinstance(outputs, (tuple, list)):
            outputs = outputs[0]
        pred = outputs.detach().float().argmax(1)
        records = []
        for p in pred:
            ids, counts = torch.unique(p, return_counts=True)
            frac = {(labels[i] if labels else str(i)): c / p.numel() for i, c in zip(ids.tolist(), counts.tolist())}
            records.append({"shape": list(p.shape), "class_fractions": frac, "mask": p.tolist()})
        return records

    def expected_output_shape(self, inputs: tuple, num_classes: int | None) -> tuple[int, ...] | None:
        x = inputs[0]
        return (x.shape[0], num_classes, *x.shape[2:]) if num_classes else None
