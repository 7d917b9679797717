"""Detection task (card: aff, AFFNet + SSDLite): SSD matching, MultiBox loss with hard negatives, post-processing,
VOC / COCO mean average precision on hand-made cases with known answers, the DDP histogram state."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from convatlas.ops.boxes import encode_boxes
from convatlas.tasks import get_task
from convatlas.tasks.detection import (
    DetectionMetrics,
    DetectionTask,
    SSDOutput,
    average_precision,
    detection_collate,
    encode_targets,
    hard_negative_mask,
    match_detections,
    match_priors,
    mean_average_precision,
    multibox_loss,
    postprocess_detections,
)

PRIORS = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [10, 10, 20, 20], [0, 0, 20, 20]])


# ---- matching ------------------------------------------------------------------------------------------------
def test_match_priors_threshold_and_forced_best_prior() -> None:
    gt = torch.tensor([[0.0, 0, 10, 9], [12, 12, 16, 16]])  # IoU 0.9 with prior 0; 0.16 with prior 3
    boxes, labels = match_priors(gt, torch.tensor([1, 0]), PRIORS, 0.5)
    # prior 0: class 1 (+1 -> 2); prior 3 is forced to the small box although IoU < 0.5; others background
    assert labels.tolist() == [2, 0, 0, 1, 0]
    torch.testing.assert_close(boxes[3], gt[1])
    # no ground truth: all background
    b0, l0 = match_priors(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), PRIORS)
    assert l0.tolist() == [0] * 5 and b0.shape == (5, 4)
    # two ground truths preferring the same prior: the later one claims it (cvnets loop order)
    gt2 = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9.5]])
    _, l2 = match_priors(gt2, torch.tensor([0, 1]), PRIORS[:1])
    assert l2.tolist() == [2]


def test_encode_targets_regresses_matched_boxes() -> None:
    gt = torch.tensor([[1.0, 1, 11, 11]])
    deltas, labels = encode_targets([{"boxes": gt, "labels": torch.tensor([0])}], PRIORS)
    assert deltas.shape == (1, 5, 4) and labels.shape == (1, 5)
    torch.testing.assert_close(deltas[0, 0], encode_boxes(gt[0], PRIORS[0]))
    assert torch.equal(deltas[0, 1:][labels[0, 1:] == 0], torch.zeros(4, 4))  # background: zeros


# ---- loss ----------------------------------------------------------------------------------------------------
def test_hard_negative_mask_keeps_three_hardest_negatives_per_positive() -> None:
    bg_loss = torch.tensor([[0.1, 5.0, 0.3, 4.0, 0.2, 3.0, 9.0, 2.0]])
    labels = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 0]])
    mask = hard_negative_mask(bg_loss, labels, 3)
    assert mask.tolist() == [[False, True, False, True, False, True, True, False]]
    assert not hard_negative_mask(bg_loss, torch.zeros_like(labels), 3).any()  # no positives, no negatives


def test_multibox_loss_matches_naive_sum() -> None:
    g = torch.Generator().manual_seed(0)
    logits, deltas, gt = torch.randn(2, 30, 4, generator=g), torch.randn(2, 30, 4, generator=g), torch.randn(2, 30, 4,
                                                                                                             generator=g)
    labels = torch.zeros(2, 30, dtype=torch.long)
    labels[0, [3, 7]] = torch.tensor([1, 3])
    labels[1, 11] = 2
    out = multibox_loss(logits, deltas, gt, labels, 3)
    box, cls = 0.0, 0.0
    for b in range(2):
        pos = labels[b] > 0
        box += F.smooth_l1_loss(deltas[b][pos], gt[b][pos], reduction="sum")
        bg = -F.log_softmax(logits[b], -1)[:, 0]
        neg = [i for i in bg.argsort(descending=True).tolist() if not pos[i]][:3 * int(pos.sum())]
        idx = torch.cat([pos.nonzero().flatten(), torch.tensor(neg)])
        cls += F.cross_entropy(logits[b][idx], labels[b][idx], reduction="sum")
    torch.testing.assert_close(out["box_loss"], box / 3)
    torch.testing.assert_close(out["cls_loss"], cls / 3)
    torch.testing.assert_close(out["loss"], (box + cls) / 3)


# ---- post-processing -----------------------------------------------------------------------------------------
def _logits(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs).log()[None]


def test_postprocess_threshold_nms_topk_and_clipping() -> None:
    priors = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [30, 30, 40, 40], [0, 0, 10, 10]])
    probs = [[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.3, 0.0, 0.7], [0.995, 0.005, 0.0]]  # prior 3 below 0.01
    det = postprocess_detections(_logits(probs), torch.zeros(1, 4, 4), priors)[0]
    assert det["labels"].tolist() == [0, 1]  # prior 1 suppressed by prior 0 (IoU 0.82), class 1 kept
    torch.testing.assert_close(det["scores"], torch.tensor([0.9, 0.7]))
    torch.testing.assert_close(det["boxes"], priors[[0, 2]])
    det = postprocess_detections(_logits(probs), torch.zeros(1, 4, 4), priors, nms_threshold=0.9, top_k=1)[0]
    assert det["scores"].tolist() == pytest.approx([0.9, 0.7])  # top-1 per class before NMS
    det = postprocess_detections(_logits(probs), torch.zeros(1, 4, 4), priors, nms_threshold=0.9)[0]
    assert det["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7])
    det = postprocess_detections(_logits(probs), torch.zeros(1, 4, 4), priors, (35, 35), max_detections=1)[0]
    assert det["scores"].tolist() == pytest.approx([0.9])
    det = postprocess_detections(_logits(probs), torch.zeros(1, 4, 4), priors, (35, 35), nms_threshold=0.9)[0]
    torch.testing.assert_close(det["boxes"][-1], torch.tensor([30.0, 30, 35, 35]))  # clipped to the image
    empty = postprocess_detections(_logits([[1.0, 0, 0]]), torch.zeros(1, 1, 4), priors[:1])[0]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].numel() == 0


# ---- average precision: hand-made cases with known answers -------------------------------------------------
def test_average_precision_known_values() -> None:
    """3 objects; ranked detections TP, FP, TP: recall (1/3, 1/3, 2/3), precision (1, 1/2, 2/3).
    VOC all-point: 1/3 * 1 + 1/3 * 2/3 = 5/9. COCO 101-point: recall 0..0.33 -> 1 (34 points), 0.34..0.66 -> 2/3
    (33 points), above -> 0: (34 + 22) / 101."""
    tp = torch.tensor([1.0, 0, 1])
    assert average_precision(tp, 1 - tp, 3, "all_point") == pytest.approx(5 / 9)
    assert average_precision(tp, 1 - tp, 3, "coco101") == pytest.approx(56 / 101)
    assert average_precision(torch.ones(4), torch.zeros(4), 4) == pytest.approx(1.0)
    assert average_precision(torch.zeros(0), torch.zeros(0), 2) == 0.0
    assert average_precision(torch.zeros(0), torch.zeros(0), 2, "coco101") == 0.0
    # precision envelope: FP first, then TP -> precision 1/2 at recall 1
    assert average_precision(torch.tensor([0.0, 1]), torch.tensor([1.0, 0]), 1) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        average_precision(tp, 1 - tp, 0)
    with pytest.raises(ValueError, match="method"):
        average_precision(tp, 1 - tp, 3, "11point")


def test_match_detections_voc_and_coco_rules_differ() -> None:
    """Two overlapping objects A, B; detection 2 overlaps A most (already taken) and B with IoU 0.6: VOC counts
    it as a false positive, COCO matches it to B."""
    gt = torch.tensor([[0.0, 0, 10, 10], [4, 0, 14, 10]])
    det = torch.tensor([[0.0, 0, 10, 10], [2, 0, 12, 10]])  # IoU with (A, B): (1, 0.43), (0.67, 0.67 ...)
    det[1] = torch.tensor([1.5, 0, 11.5, 10])  # IoU A = 0.739, B = 0.6
    s = torch.tensor([0.9, 0.8])
    assert match_detections(det, s, gt, (0.5,), "voc").tolist() == [[True, False]]
    assert match_detections(det, s, gt, (0.5,), "coco").tolist() == [[True, True]]
    assert match_detections(det, s, gt, (0.5, 0.7), "coco").tolist() == [[True, True], [True, False]]


def _t(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels,
                                                                                                     dtype=torch.long)}


def _p(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict[str, torch.Tensor]:
    d = _t(boxes, labels)
    d["scores"] = torch.tensor(scores)
    return d


def test_mean_average_precision_hand_made_data_set() -> None:
    targets = [_t([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 1]), _t([[5, 5, 15, 15]], [0])]
    perfect = [_p([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [0, 1]), _p([[5, 5, 15, 15]], [0.7], [0])]
    assert mean_average_precision(perfect, targets, 2) == pytest.approx(
        {"map50_voc": 1.0, "map_coco": 1.0, "map50_coco": 1.0, "map75_coco": 1.0})
    # class 0: a duplicate (FP, ranked 2nd) -> TP, FP, TP over 2 objects: VOC 1/2 + 1/2 * 2/3 = 5/6
    dup = [_p([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.85, 0.8], [0, 0, 1]),
           _p([[5, 5, 15, 15]], [0.7], [0])]
    r = mean_average_precision(dup, targets, 2)
    assert r["map50_voc"] == pytest.approx((5 / 6 + 1) / 2)
    # class 1 box with IoU 0.62 (20 x 12.4 of 20 x 20): counts at IoU 0.5, 0.55, 0.6 of the 10 COCO thresholds
    loose = [_p([[0, 0, 10, 10], [20, 20, 40, 32.4]], [0.9, 0.8], [0, 1]), _p([[5, 5, 15, 15]], [0.7], [0])]
    r = mean_average_precision(loose, targets, 2)
    assert r["map50_voc"] == pytest.approx(1.0) and r["map75_coco"] == pytest.approx(0.5)
    assert r["map_coco"] == pytest.approx((1.0 + 0.3) / 2)
    # wrong class: class 1 never found (AP 0), class 0 also gets an FP at the top
    wrong = [_p([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.95], [0, 0]), _p([[5, 5, 15, 15]], [0.7], [0])]
    # class 0 ranks FP, TP, TP: precision (0, 1/2, 2/3); the envelope is 2/3 at both recall steps -> AP 2/3
    r = mean_average_precision(wrong, targets, 2)
    assert r["map50_voc"] == pytest.approx((2 / 3 + 0) / 2)
    # a class without ground truth is left out of the mean (its detections change nothing)
    extra = [dict(p) for p in perfect]
    extra[0] = _p([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [0.9, 0.8, 0.99], [0, 1, 2])
    assert mean_average_precision(extra, targets, 3)["map50_voc"] == pytest.approx(1.0)


def test_coco_keeps_100_detections_per_image() -> None:
    target = [_t([[0, 0, 10, 10]], [0])]
    boxes = [[50.0 + i, 50, 60 + i, 60] for i in range(100)] + [[0.0, 0, 10, 10]]
    pred = [_p(boxes, [0.9] * 100 + [0.5], [0] * 101)]
    r = mean_average_precision(pred, target, 1)
    assert r["map_coco"] == 0.0 and r["map50_voc"] == pytest.approx(1 / 101)


# ---- accumulator and task ------------------------------------------------------------------------------------
def test_metrics_accumulator_exact_and_ddp_histogram() -> None:
    g = torch.Generator().manual_seed(0)
    targets, preds = [], []
    for i in range(6):
        t = _t([[10.0 * i, 0, 10.0 * i + 20, 20], [0, 30, 15, 50]], [i % 2, 1])
        p = {"boxes": t["boxes"] + torch.randn(2, 4, generator=g) * 2, "labels": t["labels"].clone(),
             "scores": torch.tensor([0.913 - 0.071 * i, 0.457 - 0.033 * i])}  # distinct histogram bins
        targets.append(t)
        preds.append(p)
    ref = mean_average_precision(preds, targets, 2)
    acc = DetectionMetrics(num_classes=2)
    acc.update(preds[:3], targets[:3])
    acc.update(preds[3:], targets[3:])
    got = acc.compute()
    assert {k: got[k] for k in ref} == pytest.approx(ref)
    # simulated DDP: two ranks' histogram states summed equal the exact result (scores fall in distinct bins)
    a, b = DetectionMetrics(num_classes=2), DetectionMetrics(num_classes=2)
    a.update(preds[::2], targets[::2])
    b.update(preds[1::2], targets[1::2])
    merged = DetectionMetrics(num_classes=2)
    merged.load_state(a.state() + b.state())
    red = merged.compute()
    assert {k: red[k] for k in ref} == pytest.approx(ref)
    assert merged.state().shape == a.state().shape
    with pytest.raises(ValueError, match="num_classes"):
        DetectionMetrics().update(preds, targets)


def _ssd_output(num_classes: int = 2) -> SSDOutput:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, num_classes + 1, requires_grad=True)
    deltas = torch.randn(2, 5, 4, requires_grad=True)
    return SSDOutput(logits, deltas, PRIORS, torch.tensor([20, 20]))


def test_task_loss_metrics_predict_and_bad_targets() -> None:
    task = get_task("detection")
    assert isinstance(task, DetectionTask) and task.primary_metric == "map50_voc" and task.higher_is_better
    out = _ssd_output()
    targets = [_t([[0, 0, 10, 9]], [1]), _t([], [])]
    loss = task.loss(out, targets)
    loss.backward()
    assert torch.isfinite(loss) and out.cls_logits.grad is not None and out.box_deltas.grad.abs().sum() > 0
    terms = task.loss_terms(out, targets)
    torch.testing.assert_close(terms["loss"], terms["box_loss"] + terms["cls_loss"])
    acc = task.metrics()
    acc.update(out, targets)
    m = acc.compute()
    assert set(m) == {"loss", "map50_voc", "map_coco", "map50_coco", "map75_coco"} and m["loss"] > 0
    rec = task.predict(out, labels=["cat", "dog"])
    json.dumps(rec)
    assert len(rec) == 2 and all(max(r["boxes"][i][2] for i in range(len(r["boxes"]))) <= 20 for r in rec if r["boxes"])
    assert task.expected_output_shape((torch.zeros(2, 3, 8, 8),), 2) is None
    for bad, msg in [([targets[0]], "list of 2"), ([{"boxes": torch.zeros(1, 4)}, targets[1]], "dict"),
                     ([_t([[5, 5, 1, 9]], [0]), targets[1]], "x2 > x1"), ([_t([[0, 0, 5, 5]], [2]), targets[1]],
                                                                           r"\[0, 2\)"),
                     ([{"boxes": torch.zeros(1, 4), "labels": torch.zeros(1)}, targets[1]], "integers"),
                     ([{"boxes": torch.zeros(1, 5), "labels": torch.zeros(1, dtype=torch.long)}, targets[1]], "N, 4")]:
        with pytest.raises(ValueError, match=msg):
            task.loss(out, bad)
    with pytest.raises(ValueError, match="SSDOutput"):
        task.loss(torch.zeros(2, 5, 3), targets)
    with pytest.raises(ValueError, match="iou_threshold"):
        DetectionTask(iou_threshold=0.0)


def test_collate_and_split_batch() -> None:
    items = [(torch.zeros(3, 8, 8), _t([[0, 0, 4, 4]], [0])), (torch.ones(3, 8, 8), _t([], []))]
    images, targets = detection_collate(items)
    assert images.shape == (2, 3, 8, 8) and len(targets) == 2
    (x,), y = DetectionTask().split_batch(([i for i, _ in items], targets))
    assert torch.equal(x, images) and y == targets
    assert math.isfinite(DetectionTask().loss(_ssd_output(), targets).item())
