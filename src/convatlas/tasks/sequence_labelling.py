"""Sequence labelling (per-frame classification of long sequences / videos), card: colontcn.

Model contract: ``model(features (B, C, T)[, mask (B, T)]) -> logits (B, T, K)``; targets are labels (B, T) with
``ignore_index`` (-100) on padded frames. Batches are ``(features, labels)`` or ``(features, labels, mask)``.

Loss (official ColonTCN config ``["CE", "TMSE"]``): class-weighted cross-entropy + ``tmse_weight`` x truncated
temporal MSE (MS-TCN smoothing loss: squared difference of consecutive frames' log-probabilities, clamped at
``threshold**2`` = 16, gradient blocked through the previous frame) with MS-TCN's weight 0.15 by default. Official
training (cosmoimd/temporal_segmentation src/training.py, checked): although the ymls list ``["CE", "TMSE"]`` (and
``ce_weight`` / ``focal_weight`` / ``alpha``), the script builds only the class-weighted CE (``losses.CE`` with
``weight=None``), averaged over all frames of the padded batch (ignored frames count in the denominator), and calls
``clip_grad_norm_(1.0)`` before ``backward()`` (so it clips nothing): :meth:`SequenceLabellingTask.official_colontcn`
gives that loss (CE only, ``tmse_weight=0``, mean over labelled frames).

Metrics (official src/testing.py): frame accuracy, per-class and support-weighted F1, per-class Jaccard (IoU),
frequency-weighted Jaccard and the official "mean" Jaccard that divides by ``num_classes`` (absent classes count
as 0), and the withdrawal-time error (absolute percentage difference between predicted and true numbers of frames
in the withdrawal classes 2..8) per video. Worked example (card): gt [0,0,1,1], pred [0,1,1,1] ->
J = (1/2, 2/3), weighted 0.583, official mean over 9 classes 0.130.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from convatlas.tasks.base import MetricAccumulator, TaskAdapter, register_task

__all__ = [
    "SequenceLabellingTask",
    "SequenceLabellingMetrics",
    "tmse_loss",
    "confusion_matrix",
    "segmentation_scores",
    "withdrawal_time_error",
    "count_segments",
    "class_weights_from_labels",
]

IGNORE_INDEX = -100


def tmse_loss(logits: Tensor, mask: Tensor | None = None, threshold: float = 4.0) -> Tensor:
    """Truncated temporal MSE (MS-TCN): logits (B, T, K), mask (B, T) of valid frames -> scalar."""
    logp = F.log_softmax(logits.float(), dim=-1)
    d = (logp[:, 1:] - logp[:, :-1].detach()) ** 2
    d = d.clamp(max=threshold**2)
    if mask is None:
        return d.mean()
    m = (mask[:, 1:] * mask[:, :-1]).to(d.dtype)[..., None]
    return (d * m).sum() / (m.sum() * d.shape[-1]).clamp(min=1.0)


def class_weights_from_labels(labels: Sequence[Tensor] | Tensor, num_classes: int) -> Tensor:
    """Inverse-frequency class weights normalised to mean 1 (``class_weights: compute`` in the official config);
    classes absent from the training labels get weight 0."""
    if isinstance(labels, Tensor):
        labels = [labels]
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for y in labels:
        y = y.flatten()
        y = y[y != IGNORE_INDEX]
        counts += torch.bincount(y, minlength=num_classes).double()
    w = torch.where(counts > 0, counts.sum() / counts.clamp(min=1) / num_classes, torch.zeros_like(counts))
    present = (counts > 0).sum().clamp(min=1)
    return (w * present / w.sum().clamp(min=1e-12)).float()


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """(K, K) int64 counts, rows = ground truth, columns = prediction; ``IGNORE_INDEX`` targets skipped."""
    pred, target = pred.flatten(), target.flatten()
    keep = target != IGNORE_INDEX
    idx = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_scores(cm: Tensor) -> dict[str, Any]:
    """Frame-level scores from a confusion matrix (rows = truth): accuracy, F1 and Jaccard per class, F1/Jaccard
    weighted by ground-truth frequency, and the official Jaccard mean over all ``K`` classes."""
    cm = cm.double()
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    f1 = torch.where(support + predicted > 0, 2 * tp / (support + predicted).clamp(min=1e-12), torch.zeros_like(tp))
    union = support + predicted - tp
    jac = torch.where(union > 0, tp / union.clamp(min=1e-12), torch.zeros_like(tp))
    total = support.sum().clamp(min=1)
    return {
        "accuracy": float(tp.sum() / total),
        "f1_per_class": f1.tolist(),
        "f1_weighted": float((f1 * support).sum() / total),
        "jaccard_per_class": jac.tolist(),
        "jaccard_weighted": float((jac * support).sum() / total),
        "jaccard_mean_official": float(jac.sum() / cm.shape[0]),
    }


def withdrawal_time_error(pred: Tensor, target: Tensor, withdrawal_classes: Sequence[int] = range(2, 9)) -> float:
    """Absolute percentage difference (in %) between predicted and true numbers of withdrawal-phase frames of one
    video (labels (T,)); official ColonTCN metric with classes 2..8 as the withdrawal phase."""
    wc = torch.as_tensor(list(withdrawal_classes))
    keep = target != IGNORE_INDEX
    n_true = torch.isin(target[keep], wc).sum().item()
    n_pred = torch.isin(pred[keep], wc).sum().item()
    return abs(n_pred - n_true) / max(n_true, 1) * 100.0


def count_segments(labels: Tensor) -> int:
    """Number of constant runs in a 1-D label sequence (fragmentation: lower is smoother)."""
    if labels.numel() == 0:
        return 0
    return int((labels[1:] != labels[:-1]).sum().item()) + 1


class SequenceLabellingMetrics(MetricAccumulator):
    """Accumulates the confusion matrix and the loss; ``compute`` -> accuracy, f1_weighted, jaccard_* ."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._sums = torch.zeros(num_classes * num_classes + 2, dtype=torch.float64)

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        logits = outputs.detach().float()
        k = self.num_classes
        cm = confusion_matrix(logits.argmax(-1), targets.detach(), k)
        loss = F.cross_entropy(logits.reshape(-1, k), targets.reshape(-1), ignore_index=IGNORE_INDEX,
                               reduction="sum")
        n = (targets != IGNORE_INDEX).sum()
        self._sums += torch.cat([cm.flatten().double(), torch.stack([loss.double(), n.double()])])

    def compute(self) -> dict[str, float]:
        k = self.num_classes
        cm = self._sums[: k * k].reshape(k, k)
        scores = segmentation_scores(cm)
        out = {key: v for key, v in scores.items() if not isinstance(v, list)}
        out["loss"] = float(self._sums[-2] / self._sums[-1].clamp(min=1))
        return out

    def state(self) -> Tensor:
        return self._sums.clone()

    def load_state(self, state: Tensor) -> None:
        self._sums = state.to(torch.float64).clone()


@register_task("sequence_labelling")
class SequenceLabellingTask(TaskAdapter):
    """Per-frame labels of long sequences: ``model(x (B, C, T)[, mask]) -> (B, T, K)`` vs labels (B, T).

    Args:
        num_classes: K (9 for REAL-Colon).
        class_weights: optional (K,) CE weights (see :func:`class_weights_from_labels`).
        tmse_weight: weight of the truncated temporal MSE smoothing loss (0 disables it).
        threshold: TMSE truncation (4 -> clamp at 16).
    """

    primary_metric = "jaccard_weighted"
    higher_is_better = True

    def __init__(
        self,
        num_classes: int = 9,
        class_weights: Tensor | None = None,
        tmse_weight: float = 0.15,
        threshold: float = 4.0,
    ) -> None:
        if tmse_weight < 0:
            raise ValueError(f"tmse_weight must be >= 0, got {tmse_weight}")
        self.num_classes = num_classes
        self.class_weights = class_weights
        self.tmse_weight = tmse_weight
        self.threshold = threshold

    @classmethod
    def official_colontcn(cls, class_weights: Tensor | None = None, num_classes: int = 9) -> "SequenceLabellingTask":
        """The loss the official ColonTCN training script actually optimises: class-weighted CE only (module
        notes)."""
        return cls(num_classes=num_classes, class_weights=class_weights, tmse_weight=0.0)

    def split_batch(self, batch: Any) -> tuple[tuple, Any]:
        if len(batch) == 3:
            x, y, mask = batch
            return (x, mask), y
        x, y = batch
        return (x,), y

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        k = outputs.shape[-1]
        w = None if self.class_weights is None else self.class_weights.to(outputs.device, torch.float32)
        ce = F.cross_entropy(outputs.float().reshape(-1, k), targets.reshape(-1), weight=w,
                             ignore_index=IGNORE_INDEX)
        if self.tmse_weight == 0:
            return ce
        mask = targets != IGNORE_INDEX
        return ce + self.tmse_weight * tmse_loss(outputs, mask, self.threshold)

    def metrics(self) -> SequenceLabellingMetrics:
        return SequenceLabellingMetrics(self.num_classes)

    def predict(self, outputs: Tensor, labels: list[str] | None = None) -> list[dict[str, Any]]:
        pred = outputs.detach().float().argmax(-1)
        records = []
        for seq in pred:
            ids = seq.tolist()
            records.append({"frames": len(ids), "labels": ids, "segments": count_segments(seq),
                            "names": [labels[i] for i in ids] if labels else None})
        return records

    def expected_output_shape(self, inputs: tuple, num_classes: int | None) -> tuple[int, ...] | None:
        x = inputs[0]
        return (x.shape[0], x.shape[-1], num_classes) if num_classes else None
