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

Metrics (official src/testing.py, checked): frames of all test videos are pooled into one confusion matrix, from
which come frame accuracy, per-class precision/recall/F1 with their support-weighted and macro averages
(sklearn ``classification_report``: macro over the classes present in the ground truth or the predictions),
per-class Jaccard (IoU), frequency-weighted Jaccard and the official "mean" Jaccard that divides by
``num_classes`` (absent classes count as 0); the withdrawal-time error (absolute percentage difference between
predicted and true numbers of frames in the withdrawal classes 2..8; 0 for a video without true withdrawal
frames, as official) is computed per video and averaged over videos. Worked example (card): gt [0,0,1,1],
pred [0,1,1,1] -> J = (1/2, 2/3), weighted 0.583, official mean over 9 classes 0.130.
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
    """Frame-level scores from a confusion matrix (rows = truth): accuracy, precision/recall/F1 and Jaccard per
    class, F1/Jaccard weighted by ground-truth frequency, macro F1 over the classes present in truth or prediction
    (sklearn's label set), and the official Jaccard mean over all ``K`` classes."""
    cm = cm.double()
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    zero = torch.zeros_like(tp)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1e-12), zero)
    recall = torch.where(support > 0, tp / support.clamp(min=1e-12), zero)
    f1 = torch.where(support + predicted > 0, 2 * tp / (support + predicted).clamp(min=1e-12), zero)
    present = (support + predicted) > 0
    union = support + predicted - tp
    jac = torch.where(union > 0, tp / union.clamp(min=1e-12), torch.zeros_like(tp))
    total = support.sum().clamp(min=1)
    return {
        "accuracy": float(tp.sum() / total),
        "precision_per_class": precision.tolist(),
        "recall_per_class": recall.tolist(),
        "f1_per_class": f1.tolist(),
        "f1_weighted": float((f1 * support).sum() / total),
        "f1_macro": float(f1[present].mean()) if bool(present.any()) else 0.0,
        "jaccard_per_class": jac.tolist(),
        "jaccard_weighted": float((jac * support).sum() / total),
        "jaccard_mean_official": float(jac.sum() / cm.shape[0]),
    }


def withdrawal_time_error(pred: Tensor, target: Tensor, withdrawal_classes: Sequence[int] = range(2, 9)) -> float:
    """Absolute percentage difference (in %) between predicted and true numbers of withdrawal-phase frames of one
    video (labels (T,), ``IGNORE_INDEX`` frames skipped); official ColonTCN metric (``abs_perc_difference``) with
    classes 2..8 as the withdrawal phase. A video without true withdrawal frames scores 0, as official."""
    wc = torch.as_tensor(list(withdrawal_classes), device=target.device)
    keep = target != IGNORE_INDEX
    n_true = torch.isin(target[keep], wc).sum().item()
    n_pred = torch.isin(pred[keep], wc).sum().item()
    return abs(n_pred - n_true) / n_true * 100.0 if n_true else 0.0


def count_segments(labels: Tensor) -> int:
    """Number of constant runs in a 1-D label sequence (fragmentation: lower is smoother)."""
    if labels.numel() == 0:
        return 0
    return int((labels[1:] != labels[:-1]).sum().item()) + 1


class SequenceLabellingMetrics(MetricAccumulator):
    """Accumulates the pooled confusion matrix, the loss and (with ``withdrawal_classes``) the per-video
    withdrawal-time error; ``compute`` -> accuracy, f1_weighted, f1_macro, jaccard_*, loss
    [, withdrawal_error (mean % over videos: every row of a batch is one video)]."""

    def __init__(self, num_classes: int, withdrawal_classes: Sequence[int] | None = None) -> None:
        self.num_classes = num_classes
        self.withdrawal_classes = None if withdrawal_classes is None else tuple(withdrawal_classes)
        # [confusion matrix (K*K), loss sum, labelled frames, withdrawal-error sum, videos]
        self._sums = torch.zeros(num_classes * num_classes + 4, dtype=torch.float64)

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        logits = outputs.detach().float()
        targets = targets.detach()
        k = self.num_classes
        pred = logits.argmax(-1)
        cm = confusion_matrix(pred, targets, k)
        loss = F.cross_entropy(logits.reshape(-1, k), targets.reshape(-1), ignore_index=IGNORE_INDEX,
                               reduction="sum")
        n = (targets != IGNORE_INDEX).sum()
        wsum, videos = 0.0, 0
        if self.withdrawal_classes is not None:
            for p, t in zip(pred.reshape(-1, pred.shape[-1]), targets.reshape(-1, targets.shape[-1])):
                wsum += withdrawal_time_error(p, t, self.withdrawal_classes)
                videos += 1
        extra = torch.tensor([float(loss), float(n), wsum, float(videos)], dtype=torch.float64)
        self._sums += torch.cat([cm.flatten().double().cpu(), extra])

    def compute(self) -> dict[str, float]:
        k = self.num_classes
        cm = self._sums[: k * k].reshape(k, k)
        scores = segmentation_scores(cm)
        out = {key: v for key, v in scores.items() if not isinstance(v, list)}
        out["loss"] = float(self._sums[k * k] / self._sums[k * k + 1].clamp(min=1))
        if self.withdrawal_classes is not None:
            out["withdrawal_error"] = float(self._sums[k * k + 2] / self._sums[k * k + 3].clamp(min=1))
        return out

    def state(self) -> Tensor:
        return self._sums.clone()

    def load_state(self, state: Tensor) -> None:
        state = state.to(torch.float64).flatten()
        if state.numel() == self._sums.numel() - 2:  # saved before the withdrawal-error entries existed
            state = torch.cat([state, state.new_zeros(2)])
        if state.numel() != self._sums.numel():
            raise ValueError(f"SequenceLabellingMetrics: expected a state of {self._sums.numel()} values for "
                             f"K={self.num_classes}, got {state.numel()}")
        self._sums = state.clone()


@register_task("sequence_labelling")
class SequenceLabellingTask(TaskAdapter):
    """Per-frame labels of long sequences: ``model(x (B, C, T)[, mask]) -> (B, T, K)`` vs labels (B, T).

    Args:
        num_classes: K (9 for REAL-Colon).
        class_weights: optional (K,) CE weights (see :func:`class_weights_from_labels`).
        tmse_weight: weight of the truncated temporal MSE smoothing loss (0 disables it).
        threshold: TMSE truncation (4 -> clamp at 16).
        withdrawal_classes: classes of the withdrawal phase for the per-video withdrawal-time error metric
            (ColonTCN / REAL-Colon: 2..8, set by :meth:`official_colontcn`); ``None`` leaves the metric out.
    """

    primary_metric = "jaccard_weighted"
    higher_is_better = True

    def __init__(
        self,
        num_classes: int = 9,
        class_weights: Tensor | None = None,
        tmse_weight: float = 0.15,
        threshold: float = 4.0,
        withdrawal_classes: Sequence[int] | None = None,
    ) -> None:
        if tmse_weight < 0:
            raise ValueError(f"tmse_weight must be >= 0, got {tmse_weight}")
        if withdrawal_classes is not None and not all(0 <= int(c) < num_classes for c in withdrawal_classes):
            raise ValueError(f"withdrawal_classes must lie in [0, {num_classes}), got {list(withdrawal_classes)}")
        self.withdrawal_classes = None if withdrawal_classes is None else tuple(int(c) for c in withdrawal_classes)
        self.num_classes = num_classes
        self.class_weights = class_weights
        self.tmse_weight = tmse_weight
        self.threshold = threshold

    @classmethod
    def official_colontcn(cls, class_weights: Tensor | None = None, num_classes: int = 9) -> "SequenceLabellingTask":
        """The loss the official ColonTCN training script actually optimises: class-weighted CE only (module
        notes); metrics include the withdrawal-time error over classes 2..8."""
        return cls(num_classes=num_classes, class_weights=class_weights, tmse_weight=0.0,
                   withdrawal_classes=range(2, min(9, num_classes)))

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
        return SequenceLabellingMetrics(self.num_classes, self.withdrawal_classes)

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
