"""Sound event detection: multi-label, frame-wise event activity (card: phnn, SEDnet on L3DAS21 Task 2).

Model contract: ``model(spectrogram (B, C, F, T)) -> logits (B, T / time_reduction, K)``; targets are multi-hot
activity (B, T', K) in {0, 1} (several events may be active in one frame). Batches are ``(x, targets)``.

Loss: binary cross-entropy on the logits (the official SEDnet applies a sigmoid in the model and ``nn.BCELoss``;
``BCEWithLogits`` is the same loss, numerically stable).

Metrics (frame-based, i.e. DCASE segment-based metrics with one-frame segments, Mesaros et al. 2016), with
activity = ``sigmoid(logit) > threshold``: micro precision, recall and F1 over all (frame, class) pairs, and the
error rate ``ER = (S + D + I) / N`` where per frame S = min(FN, FP), D = max(0, FN - FP), I = max(0, FP - FN) and
N is the number of active reference events. Primary metric: F1. (The L3DAS21 challenge's SELD F-score also needs
the location branch and is not computed here.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from convatlas.tasks.base import MetricAccumulator, TaskAdapter, register_task

__all__ = ["SoundEventDetectionTask", "SEDMetrics", "frame_scores"]


def frame_scores(tp: float, fp: float, fn: float, subs: float, dels: float, ins: float,
                 n_ref: float) -> dict[str, float]:
    """Precision / recall / F1 / error rate from accumulated frame counts."""
    precision = tp / max(tp + fp, 1e-12)
    recall = tp / max(tp + fn, 1e-12)
    f1 = 2 * tp / max(2 * tp + fp + fn, 1e-12)
    er = (subs + dels + ins) / max(n_ref, 1e-12)
    return {"precision": precision, "recall": recall, "f1": f1, "error_rate": er}


class SEDMetrics(MetricAccumulator):
    """Accumulates TP/FP/FN, the per-frame S/D/I counts, reference events and the BCE loss."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self._sums = torch.zeros(9, dtype=torch.float64)  # tp fp fn S D I N loss_sum count

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        logits = outputs.detach().float()
        ref = targets.detach().float() > 0.5
        est = torch.sigmoid(logits) > self.threshold
        tp_f = (est & ref).sum(-1).double()  # per frame
        fp_f = (est & ~ref).sum(-1).double()
        fn_f = (~est & ref).sum(-1).double()
        loss = F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="sum").double()
        self._sums += torch.stack([
            tp_f.sum(), fp_f.sum(), fn_f.sum(), torch.minimum(fn_f, fp_f).sum(), (fn_f - fp_f).clamp(min=0).sum(),
            (fp_f - fn_f).clamp(min=0).sum(), ref.sum().double(), loss, torch.tensor(float(targets.numel()),
                                                                                     dtype=torch.float64),
        ])

    def compute(self) -> dict[str, float]:
        tp, fp, fn, s, d, i, n, loss, count = self._sums.tolist()
        out = frame_scores(tp, fp, fn, s, d, i, n)
        out["loss"] = loss / max(count, 1.0)
        return out

    def state(self) -> Tensor:
        return self._sums.clone()

    def load_state(self, state: Tensor) -> None:
        self._sums = state.to(torch.float64).clone()


@register_task("sound_event_detection")
class SoundEventDetectionTask(TaskAdapter):
    """Multi-label frame-wise event detection: ``model(x (B, C, F, T)) -> (B, T / time_reduction, K)`` logits.

    Args:
        threshold: probability above which an event counts as active (metrics, ``predict``).
        time_reduction: input spectrogram frames per output label frame (8 for the official SEDnet: 100 ms label
            frames); used only for the expected output shape.
        pos_weight: optional (K,) BCE weights of the positive class (rare events).
    """

    primary_metric = "f1"
    higher_is_better = True

    def __init__(self, threshold: float = 0.5, time_reduction: int = 8, pos_weight: Tensor | None = None) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if time_reduction < 1:
            raise ValueError(f"time_reduction must be >= 1, got {time_reduction}")
        self.threshold, self.time_reduction, self.pos_weight = threshold, time_reduction, pos_weight

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if outputs.shape != targets.shape:
            raise ValueError(f"sound_event_detection: outputs {tuple(outputs.shape)} and targets "
                             f"{tuple(targets.shape)} must both be (B, T', K)")
        pw = None if self.pos_weight is None else self.pos_weight.to(outputs.device, torch.float32)
        return F.binary_cross_entropy_with_logits(outputs.float(), targets.float(), pos_weight=pw)

    def metrics(self) -> SEDMetrics:
        return SEDMetrics(self.threshold)

    def predict(self, outputs: Tensor, labels: list[str] | None = None) -> list[dict[str, Any]]:
        active = torch.sigmoid(outputs.detach().float()) > self.threshold
        records = []
        for seq in active:  # (T', K)
            events = []
            for k in range(seq.shape[-1]):
                col = seq[:, k].tolist() + [False]
                start = None
                for t, on in enumerate(col):
                    if on and start is None:
                        start = t
                    elif not on and start is not None:
                        events.append({"class": labels[k] if labels else k, "onset_frame": start, "offset_frame": t})
                        start = None
            records.append({"frames": int(seq.shape[0]), "events": events})
        return records

    def expected_output_shape(self, inputs: tuple, num_classes: int | None) -> tuple[int, ...] | None:
        x = inputs[0]
        return (x.shape[0], x.shape[-1] // self.time_reduction, num_classes) if num_classes else None
