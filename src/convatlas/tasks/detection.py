"""Object detection task adapter (``detection``): SSD-style single-shot detectors (card: aff, AFFNet + SSDLite).

Model contract: ``model(images (B, C, H, W)) -> SSDOutput(cls_logits (B, P, K + 1), box_deltas (B, P, 4),
priors (P, 4), image_size (2,))``: index 0 of ``cls_logits`` is the background and ``cls_logits[..., k + 1]``
foreground class ``k``; ``box_deltas`` are SSD-encoded offsets (variances (0.1, 0.2)) relative to the ``priors``
(xyxy pixels); ``image_size`` is the input (H, W) as an int64 tensor (detections are clipped to it).
Targets: a list of B dicts ``{"boxes": (N, 4) xyxy pixels, "labels": (N,) int64 in [0, K)}``
(N may be 0). Batches are ``(images, targets)``; use :func:`detection_collate` as the ``DataLoader`` collate.

Pieces (small functions, reusable by any anchor-based detector):
- :func:`match_priors` / :func:`encode_targets`: SSD matching (each ground truth forces its best prior, then
  every prior with IoU >= 0.5 to its best ground truth; others are background), as cvnets ``assign_priors``.
- :func:`hard_negative_mask`, :func:`multibox_loss`: smooth-L1 on positives + cross-entropy on positives and the
  3x as many hardest negatives per image, both summed and divided by the number of positives (cvnets
  ``SSDLoss`` with its defaults: no label smoothing, localisation weight 1).
- :func:`postprocess_detections`: softmax -> per class: score > threshold, top-k -> class-wise NMS -> keep the
  ``max_detections`` best (cvnets ``postprocess_detections``); boxes clipped to the image.
- :func:`average_precision`, :func:`match_detections`, :func:`mean_average_precision`: VOC-style AP@0.5 with
  all-point interpolation (VOC2010+ devkit matching: a detection is checked against its highest-IoU ground
  truth; a second detection of the same object is a false positive) and COCO-style mAP@[.5:.95] (101-point
  interpolation, a detection takes the highest-IoU unmatched ground truth, at most 100 detections per image,
  no crowd / area ranges). Classes without ground truth are left out of the means.

Metrics accumulator: exact in one process (every detection kept); for DDP its ``state()`` is a score
histogram (``bins`` per class and IoU threshold), so the all-reduced AP is exact up to detections that share a
score bin (1/bins wide).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from convatlas.ops.boxes import SSD_VARIANCES, batched_nms, box_iou, decode_boxes, encode_boxes
from convatlas.tasks.base import MetricAccumulator, TaskAdapter, register_task

__all__ = [
    "SSDOutput",
    "DetectionTask",
    "DetectionMetrics",
    "detection_collate",
    "check_targets",
    "match_priors",
    "encode_targets",
    "hard_negative_mask",
    "multibox_loss",
    "postprocess_detections",
    "average_precision",
    "match_detections",
    "mean_average_precision",
    "COCO_IOU_THRESHOLDS",
]

COCO_IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


class SSDOutput(NamedTuple):
    """Raw single-shot detector output: class logits (B, P, K + 1) (index 0 = background), SSD box deltas
    (B, P, 4), the priors (P, 4) xyxy pixels they refer to and the input size (H, W) (int64 tensor (2,))."""

    cls_logits: Tensor
    box_deltas: Tensor
    priors: Tensor
    image_size: Tensor


def detection_collate(batch: Sequence[tuple[Tensor, dict[str, Tensor]]]) -> tuple[Tensor, list[dict[str, Tensor]]]:
    """``DataLoader`` collate: [(image (C, H, W), {"boxes", "labels"}), ...] -> (images (B, C, H, W), targets)."""
    images, targets = zip(*batch)
    return torch.stack(list(images)), list(targets)


def check_targets(targets: Any, batch_size: int, num_classes: int | None = None) -> None:
    """Raise ``ValueError`` unless ``targets`` is a list of ``batch_size`` dicts with boxes (N, 4) of positive
    size and integer labels (N,) in [0, num_classes)."""
    if not isinstance(targets, (list, tuple)) or len(targets) != batch_size:
        raise ValueError(f"detection: expected targets as a list of {batch_size} dicts {{'boxes', 'labels'}}, "
                         f"got {type(targets).__name__} of length {len(targets) if hasattr(targets, '__len__') else '?'}")
    for i, t in enumerate(targets):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError(f"detection: target {i} must be a dict with 'boxes' (N, 4) and 'labels' (N,), got {t!r}")
        b, lab = t["boxes"], t["labels"]
        if b.dim() != 2 or b.shape[-1] != 4 or lab.dim() != 1 or lab.shape[0] != b.shape[0]:
            raise ValueError(f"detection: target {i}: expected boxes (N, 4) and labels (N,), got "
                             f"{tuple(b.shape)} and {tuple(lab.shape)}")
        if lab.is_floating_point():
            raise ValueError(f"detection: target {i}: labels must be integers, got dtype {lab.dtype}")
        if b.numel() and not bool(((b[:, 2:] > b[:, :2]).all() & torch.isfinite(b).all())):
            raise ValueError(f"detection: target {i}: boxes must be finite (x1, y1, x2, y2) with x2 > x1 and y2 > y1")
        if num_classes is not None and lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= num_classes):
            raise ValueError(f"detection: target {i}: labels must be in [0, {num_classes}), got "
                             f"[{int(lab.min())}, {int(lab.max())}]")


# ---- matching and loss ---------------------------------------------------------------------------------------
def match_priors(gt_boxes: Tensor, gt_labels: Tensor, priors: Tensor,
                 iou_threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """SSD matching of one image: (N, 4) xyxy ground truth, (N,) labels in [0, K), (P, 4) xyxy priors ->
    (matched boxes (P, 4), prior labels (P,) int64 with 0 = background and k + 1 = class k).

    Each prior takes its highest-IoU ground truth; each ground truth then claims its own best prior (IoU forced
    to 2, later ground truths win ties, as cvnets' loop); priors below ``iou_threshold`` become background.
    """
    if gt_boxes.numel() == 0:
        return torch.zeros_like(priors), torch.zeros(priors.shape[0], dtype=torch.long, device=priors.device)
    iou = box_iou(gt_boxes.to(priors.dtype), priors)  # (N, P)
    best_iou, best_gt = iou.max(0)
    best_prior = iou.argmax(1)
    for j in range(gt_boxes.shape[0]):
        best_gt[best_prior[j]] = j
    best_iou = best_iou.index_fill(0, best_prior, 2.0)
    labels = gt_labels.long()[best_gt] + 1
    labels = torch.where(best_iou < iou_threshold, torch.zeros_like(labels), labels)
    return gt_boxes.to(priors.dtype)[best_gt], labels


def encode_targets(targets: Sequence[dict[str, Tensor]], priors: Tensor, iou_threshold: float = 0.5,
                   variances: tuple[float, float] = SSD_VARIANCES) -> tuple[Tensor, Tensor]:
    """Batch of targets -> (SSD box deltas (B, P, 4), prior labels (B, P)) for :func:`multibox_loss`."""
    deltas, labels = [], []
    for t in targets:
        boxes, lab = match_priors(t["boxes"].to(priors.device), t["labels"].to(priors.device), priors, iou_threshold)
        fg = lab > 0  # background priors regress to themselves (zeros; excluded from the loss anyway)
        d = encode_boxes(torch.where(fg[:, None], boxes, priors), priors, variances)
        deltas.append(d)
        labels.append(lab)
    return torch.stack(deltas), torch.stack(labels)


def hard_negative_mask(background_loss: Tensor, labels: Tensor, neg_pos_ratio: int = 3) -> Tensor:
    """(B, P) background losses (-log p_background) and prior labels -> (B, P) mask of the positives plus the
    ``neg_pos_ratio`` x (positives of that image) negatives with the largest loss (cvnets ``hard_negative_mining``)."""
    pos = labels > 0
    num_neg = pos.sum(1, keepdim=True) * neg_pos_ratio
    loss = background_loss.masked_fill(pos, -float("inf"))
    rank = loss.argsort(dim=1, descending=True, stable=True).argsort(dim=1, stable=True)
    return pos | (rank < num_neg)


def multibox_loss(cls_logits: Tensor, box_deltas: Tensor, gt_deltas: Tensor, gt_labels: Tensor,
                  neg_pos_ratio: int = 3) -> dict[str, Tensor]:
    """SSD MultiBox loss: ``(smooth_l1(positives) + CE(positives + hard negatives)) / num_positives``.

    Args: cls_logits (B, P, K + 1), box_deltas (B, P, 4), gt_deltas (B, P, 4), gt_labels (B, P) (0 = background).
    Returns ``{"loss", "box_loss", "cls_loss"}`` (scalars; the two parts are each divided by the positives).
    """
    logits = cls_logits.float()
    pos = gt_labels > 0
    num_pos = pos.sum().clamp(min=1).to(logits.dtype)
    box = F.smooth_l1_loss(box_deltas.float()[pos], gt_deltas.float()[pos], reduction="sum")
    with torch.no_grad():
        mask = hard_negative_mask(-F.log_softmax(logits, dim=-1)[..., 0], gt_labels, neg_pos_ratio)
    cls = F.cross_entropy(logits[mask], gt_labels[mask], reduction="sum")
    return {"loss": (box + cls) / num_pos, "box_loss": box / num_pos, "cls_loss": cls / num_pos}


# ---- post-processing -----------------------------------------------------------------------------------------
@torch.no_grad()
def postprocess_detections(
    cls_logits: Tensor,
    box_deltas: Tensor,
    priors: Tensor,
    image_size: tuple[int, int] | None = None,
    score_threshold: float = 0.01,
    top_k: int = 400,
    nms_threshold: float = 0.5,
    max_detections: int = 200,
    variances: tuple[float, float] = SSD_VARIANCES,
) -> list[dict[str, Tensor]]:
    """Raw outputs -> per image ``{"boxes" (D, 4) xyxy pixels, "scores" (D,), "labels" (D,) in [0, K)}``,
    highest score first. Softmax over K + 1; per foreground class keep scores > ``score_threshold`` and the
    ``top_k`` best; class-wise NMS at ``nms_threshold``; keep ``max_detections``. ``image_size`` (H, W) clips
    the boxes (None: no clipping)."""
    scores = cls_logits.float().softmax(-1)
    boxes = decode_boxes(box_deltas.float(), priors.float(), variances)
    if image_size is not None:
        h, w = image_size
        boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h), boxes[..., 2].clamp(0, w),
                             boxes[..., 3].clamp(0, h)], -1)
    results = []
    k = min(top_k, scores.shape[1])
    for b in range(scores.shape[0]):
        fg = scores[b, :, 1:]  # (P, K)
        top_s, top_p = fg.masked_fill(fg <= score_threshold, -1.0).topk(k, dim=0)  # per class, (k, K)
        valid = top_s > score_threshold
        cls = torch.arange(fg.shape[1], device=fg.device).expand(k, -1)
        bx, sc, lb = boxes[b, top_p[valid]], top_s[valid], cls[valid]
        keep = batched_nms(bx, sc, lb, nms_threshold)[:max_detections]
        results.append({"boxes": bx[keep], "scores": sc[keep], "labels": lb[keep]})
    return results


# ---- mean average precision ----------------------------------------------------------------------------------
def average_precision(tp: Tensor, fp: Tensor, num_gt: int, method: str = "all_point") -> float:
    """AP from true/false-positive counts of detections (or score bins) sorted by decreasing score.

    Args:
        tp, fp: (D,) counts per point (0/1 per detection, or per score bin).
        num_gt: number of ground-truth objects of the class (> 0).
        method: ``"all_point"`` (VOC2010+: area under the precision envelope, every recall step) or
            ``"coco101"`` (mean of the envelope at recall 0, 0.01, ..., 1; 0 beyond the largest recall).
    """
    if num_gt <= 0:
        raise ValueError(f"average_precision: num_gt must be > 0, got {num_gt}")
    tp_c, fp_c = tp.double().cumsum(0), fp.double().cumsum(0)
    recall = tp_c / num_gt
    precision = tp_c / (tp_c + fp_c).clamp(min=1e-12)
    if method == "all_point":
        mrec = torch.cat([recall.new_zeros(1), recall, recall.new_ones(1)])
        mpre = torch.cat([precision.new_zeros(1), precision, precision.new_zeros(1)])
        mpre = mpre.flip(0).cummax(0).values.flip(0)
        step = mrec[1:] - mrec[:-1]
        return float((step * mpre[1:]).sum())
    if method == "coco101":
        if recall.numel() == 0:
            return 0.0
        env = precision.flip(0).cummax(0).values.flip(0)
        thresholds = torch.linspace(0, 1, 101, dtype=torch.float64)
        idx = torch.searchsorted(recall.contiguous(), thresholds, side="left")
        vals = torch.where(idx < len(env), env[idx.clamp(max=len(env) - 1)], torch.zeros_like(thresholds))
        return float(vals.mean())
    raise ValueError(f"average_precision: method must be 'all_point' or 'coco101', got {method!r}")


def match_detections(pred_boxes: Tensor, pred_scores: Tensor, gt_boxes: Tensor, iou_thresholds: Sequence[float],
                     rule: str = "voc") -> Tensor:
    """True-positive flags of one image and one class: (D, 4), (D,), (G, 4) -> (T, D) bool, detections in the
    given order (sort by score first). ``rule="voc"``: each detection is compared with its highest-IoU ground
    truth only; ``"coco"``: it takes the highest-IoU ground truth not matched yet (ties: the first)."""
    d, g = pred_boxes.shape[0], gt_boxes.shape[0]
    out = torch.zeros(len(iou_thresholds), d, dtype=torch.bool)
    if d == 0 or g == 0:
        return out
    iou = box_iou(pred_boxes.double().cpu(), gt_boxes.double().cpu())  # (D, G)
    for t, thr in enumerate(iou_thresholds):
        taken = torch.zeros(g, dtype=torch.bool)
        for i in range(d):
            if rule == "voc":
                j = int(iou[i].argmax())
                if iou[i, j] >= thr and not taken[j]:
                    taken[j] = out[t, i] = True
            elif rule == "coco":
                cand = iou[i].masked_fill(taken, -1.0)
                j = int(cand.argmax())
                if cand[j] >= thr:
                    taken[j] = out[t, i] = True
            else:
                raise ValueError(f"match_detections: rule must be 'voc' or 'coco', got {rule!r}")
    return out


class _Records:
    """Per-class detection records: scores and TP flags per IoU threshold, plus ground-truth counts."""

    def __init__(self, num_classes: int, n_thr: int) -> None:
        self.scores: list[list[Tensor]] = [[] for _ in range(num_classes)]
        self.tp: list[list[Tensor]] = [[] for _ in range(num_classes)]
        self.num_gt = torch.zeros(num_classes, dtype=torch.float64)
        self.n_thr = n_thr

    def add(self, c: int, scores: Tensor, tp: Tensor) -> None:
        self.scores[c].append(scores.double().cpu())
        self.tp[c].append(tp)

    def sorted(self, c: int) -> tuple[Tensor, Tensor]:
        if not self.scores[c]:
            return torch.zeros(0, dtype=torch.float64), torch.zeros(self.n_thr, 0, dtype=torch.bool)
        s, tp = torch.cat(self.scores[c]), torch.cat(self.tp[c], 1)
        order = torch.sort(s, descending=True, stable=True).indices
        return s[order], tp[:, order]


def _update_records(voc: _Records, coco: _Records, preds: Sequence[dict[str, Tensor]],
                    targets: Sequence[dict[str, Tensor]], num_classes: int, coco_max_dets: int) -> None:
    for p, t in zip(preds, targets):
        gl = t["labels"].cpu()
        voc.num_gt += torch.bincount(gl, minlength=num_classes)[:num_classes].double()
        coco.num_gt += torch.bincount(gl, minlength=num_classes)[:num_classes].double()
        order = torch.sort(p["scores"], descending=True, stable=True).indices
        pb, ps, pl = p["boxes"][order].cpu(), p["scores"][order].cpu(), p["labels"][order].cpu()
        top = torch.zeros(len(ps), dtype=torch.bool)
        top[:coco_max_dets] = True
        for c in torch.unique(torch.cat([pl, gl])).tolist():
            if not 0 <= c < num_classes:
                raise ValueError(f"detection metrics: class {c} outside [0, {num_classes})")
            m = pl == c
            g = t["boxes"].cpu()[gl == c]
            voc.add(c, ps[m], match_detections(pb[m], ps[m], g, (0.5,), "voc"))
            mc = m & top
            coco.add(c, ps[mc], match_detections(pb[mc], ps[mc], g, COCO_IOU_THRESHOLDS, "coco"))


def mean_average_precision(preds: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Tensor]],
                           num_classes: int, coco_max_dets: int = 100) -> dict[str, float]:
    """VOC and COCO-style mAP of a data set: per-image predictions ``{"boxes", "scores", "labels"}`` and targets
    ``{"boxes", "labels"}`` (xyxy, labels in [0, num_classes)) ->
    ``{"map50_voc", "map_coco", "map50_coco", "map75_coco"}`` (fractions in [0, 1])."""
    voc, coco = _Records(num_classes, 1), _Records(num_classes, len(COCO_IOU_THRESHOLDS))
    _update_records(voc, coco, preds, targets, num_classes, coco_max_dets)
    return _summarise(voc, coco)


def _summarise(voc: _Records, coco: _Records) -> dict[str, float]:
    classes = [c for c in range(len(voc.scores)) if voc.num_gt[c] > 0]
    if not classes:
        return {"map50_voc": 0.0, "map_coco": 0.0, "map50_coco": 0.0, "map75_coco": 0.0}
    ap_voc, ap_coco = [], []
    for c in classes:
        _, tp = voc.sorted(c)
        ap_voc.append(average_precision(tp[0], ~tp[0], int(voc.num_gt[c]), "all_point"))
        _, tpc = coco.sorted(c)
        ap_coco.append([average_precision(tpc[t], ~tpc[t], int(coco.num_gt[c]), "coco101")
                        for t in range(len(COCO_IOU_THRESHOLDS))])
    coco_t = torch.tensor(ap_coco, dtype=torch.float64)  # (classes, T)
    return {"map50_voc": sum(ap_voc) / len(ap_voc), "map_coco": float(coco_t.mean()),
            "map50_coco": float(coco_t[:, 0].mean()), "map75_coco": float(coco_t[:, 5].mean())}


def _ap_from_hist(tp: Tensor, fp: Tensor, num_gt: Tensor, method: str) -> list[float]:
    """tp, fp: (C, bins) counts per score bin (bin 0 = lowest scores) -> AP per class with ground truth."""
    return [average_precision(tp[c].flip(0), fp[c].flip(0), int(num_gt[c]), method)
            for c in range(tp.shape[0]) if num_gt[c] > 0]


class DetectionMetrics(MetricAccumulator):
    """VOC mAP@0.5 (all-point), COCO mAP@[.5:.95] / @.5 / @.75 and the mean MultiBox loss over batches.

    ``update(outputs, targets)`` takes the raw :class:`SSDOutput` (post-processed here with the task's settings)
    or already post-processed per-image dicts. Exact in one process; ``state()`` is a score histogram with
    ``bins`` bins (see the module docstring).
    """

    def __init__(self, num_classes: int | None = None, task: "DetectionTask | None" = None, bins: int = 1000) -> None:
        self.task = task if task is not None else DetectionTask()
        self.num_classes = num_classes
        self.bins = bins
        self._loss = torch.zeros(2, dtype=torch.float64)  # loss sum, batches
        self._voc: _Records | None = None
        self._coco: _Records | None = None
        self._hist: Tensor | None = None  # set by load_state

    def _init(self, k: int) -> None:
        if self.num_classes is None:
            self.num_classes = k
        if self._voc is None:
            self._voc = _Records(self.num_classes, 1)
            self._coco = _Records(self.num_classes, len(COCO_IOU_THRESHOLDS))

    def update(self, outputs: SSDOutput | Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Tensor]]) -> None:
        if isinstance(outputs, SSDOutput):
            self._init(outputs.cls_logits.shape[-1] - 1)
            with torch.no_grad():
                loss = float(self.task.loss(outputs, targets).detach())
            self._loss += torch.tensor([loss, 1.0], dtype=torch.float64)
            preds = self.task.postprocess(outputs)
        else:
            if self.num_classes is None:
                raise ValueError("detection metrics: pass num_classes when updating with post-processed predictions")
            self._init(self.num_classes)
            preds = outputs
        _update_records(self._voc, self._coco, preds, targets, self.num_classes, 100)

    def compute(self) -> dict[str, float]:
        loss = float(self._loss[0]) / max(float(self._loss[1]), 1.0)
        if self._hist is not None:
            return {"loss": loss, **self._compute_hist(self._hist)}
        if self._voc is None:
            return {"loss": loss, "map50_voc": 0.0, "map_coco": 0.0, "map50_coco": 0.0, "map75_coco": 0.0}
        return {"loss": loss, **_summarise(self._voc, self._coco)}

    # DDP: fixed-size histogram state [loss sum, batches, C, num_gt (C), voc tp/fp (2, C, bins),
    # coco tp/fp (2, T, C, bins)]
    def state(self) -> Tensor:
        c, nb, nt = self.num_classes or 0, self.bins, len(COCO_IOU_THRESHOLDS)
        voc = torch.zeros(2, c, nb, dtype=torch.float64)
        coco = torch.zeros(2, nt, c, nb, dtype=torch.float64)
        num_gt = torch.zeros(c, dtype=torch.float64)
        if self._voc is not None:
            num_gt = self._voc.num_gt.clone()
            for k in range(c):
                s, tp = self._voc.sorted(k)
                b = (s * nb).long().clamp(0, nb - 1)
                voc[0, k].index_add_(0, b, tp[0].double())
                voc[1, k].index_add_(0, b, (~tp[0]).double())
                s, tp = self._coco.sorted(k)
                b = (s * nb).long().clamp(0, nb - 1)
                for t in range(nt):
                    coco[0, t, k].index_add_(0, b, tp[t].double())
                    coco[1, t, k].index_add_(0, b, (~tp[t]).double())
        elif self._hist is not None:
            return self._hist.clone()
        head = torch.tensor([float(self._loss[0]), float(self._loss[1]), float(c)], dtype=torch.float64)
        return torch.cat([head, num_gt, voc.flatten(), coco.flatten()])

    def load_state(self, state: Tensor) -> None:
        self._hist = state.to(torch.float64).clone()
        self._loss = self._hist[:2].clone()
        nt = len(COCO_IOU_THRESHOLDS)
        c = (self._hist.numel() - 3) // (1 + 2 * self.bins + 2 * nt * self.bins)
        self.num_classes = c
        self._voc = self._coco = None

    def _compute_hist(self, st: Tensor) -> dict[str, float]:
        c, nb, nt = self.num_classes or 0, self.bins, len(COCO_IOU_THRESHOLDS)
        num_gt = st[3:3 + c]
        voc = st[3 + c:3 + c + 2 * c * nb].view(2, c, nb)
        coco = st[3 + c + 2 * c * nb:].view(2, nt, c, nb)
        if not bool((num_gt > 0).any()):
            return {"map50_voc": 0.0, "map_coco": 0.0, "map50_coco": 0.0, "map75_coco": 0.0}
        ap_voc = _ap_from_hist(voc[0], voc[1], num_gt, "all_point")
        ap_coco = torch.tensor([_ap_from_hist(coco[0, t], coco[1, t], num_gt, "coco101") for t in range(nt)])
        return {"map50_voc": sum(ap_voc) / len(ap_voc), "map_coco": float(ap_coco.mean()),
                "map50_coco": float(ap_coco[0].mean()), "map75_coco": float(ap_coco[5].mean())}


@register_task("detection")
class DetectionTask(TaskAdapter):
    """Single-shot object detection (SSD / SSDLite): ``model(x) -> SSDOutput``; targets: list of
    ``{"boxes" (N, 4) xyxy pixels, "labels" (N,) in [0, K)}``.

    Args:
        iou_threshold: prior matching threshold (0.5, cvnets SSD configs).
        neg_pos_ratio: hard negatives per positive (3).
        variances: SSD (centre, size) variances (0.1, 0.2).
        score_threshold, top_k, nms_threshold, max_detections: post-processing (cvnets defaults 0.01, 400, 0.5,
            200).
    """

    primary_metric = "map50_voc"
    higher_is_better = True

    def __init__(self, iou_threshold: float = 0.5, neg_pos_ratio: int = 3,
                 variances: tuple[float, float] = SSD_VARIANCES, score_threshold: float = 0.01, top_k: int = 400,
                 nms_threshold: float = 0.5, max_detections: int = 200, num_classes: int | None = None) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"detection: iou_threshold must be in (0, 1], got {iou_threshold}")
        self.iou_threshold, self.neg_pos_ratio, self.variances = iou_threshold, neg_pos_ratio, tuple(variances)
        self.score_threshold, self.top_k = score_threshold, top_k
        self.nms_threshold, self.max_detections = nms_threshold, max_detections
        self.num_classes = num_classes

    def split_batch(self, batch: Any) -> tuple[tuple, Any]:
        images, targets = batch
        if isinstance(images, (list, tuple)):
            images = torch.stack(list(images))
        return (images,), list(targets)

    @staticmethod
    def _unpack(outputs: Any) -> SSDOutput:
        if isinstance(outputs, SSDOutput):
            return outputs
        if isinstance(outputs, (tuple, list)) and len(outputs) == 4:
            return SSDOutput(*outputs)
        raise ValueError("detection: expected model output SSDOutput(cls_logits, box_deltas, priors, image_size), "
                         f"got {type(outputs).__name__}")

    def loss_terms(self, outputs: Any, targets: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        """``{"loss", "box_loss", "cls_loss"}`` of :func:`multibox_loss` after matching ``targets`` to the priors."""
        out = self._unpack(outputs)
        b, _, k1 = out.cls_logits.shape
        check_targets(targets, b, k1 - 1)
        gt_deltas, gt_labels = encode_targets(targets, out.priors, self.iou_threshold, self.variances)
        return multibox_loss(out.cls_logits, out.box_deltas, gt_deltas, gt_labels, self.neg_pos_ratio)

    def loss(self, outputs: Any, targets: Sequence[dict[str, Tensor]]) -> Tensor:
        return self.loss_terms(outputs, targets)["loss"]

    def postprocess(self, outputs: Any, image_size: tuple[int, int] | None = None) -> list[dict[str, Tensor]]:
        """Raw outputs -> per-image detections (see :func:`postprocess_detections`); boxes are clipped to
        ``image_size`` (default: the model's input size carried by the output)."""
        out = self._unpack(outputs)
        if image_size is None:
            h, w = out.image_size.tolist()
            image_size = (int(h), int(w))
        return postprocess_detections(out.cls_logits, out.box_deltas, out.priors, image_size, self.score_threshold,
                                      self.top_k, self.nms_threshold, self.max_detections, self.variances)

    def metrics(self) -> DetectionMetrics:
        return DetectionMetrics(self.num_classes, task=self)

    def predict(self, outputs: Any, labels: list[str] | None = None) -> list[dict[str, Any]]:
        records = []
        for det in self.postprocess(outputs):
            ids = det["labels"].tolist()
            records.append({"boxes": det["boxes"].tolist(), "scores": det["scores"].tolist(), "labels": ids,
                            "names": [labels[i] if labels else str(i) for i in ids]})
        return records

    def expected_output_shape(self, inputs: tuple, num_classes: int | None) -> tuple[int, ...] | None:
        return None  # the output is an SSDOutput tuple; the detection tests check its parts
