"""Box math for detection (card: aff, AFFNet + SSDLite): IoU, SSD encoding, NMS, SSD priors.

The torchvision parity tests skip where torchvision is not installed (the project venv); run them with
``/work/refvenv/bin/python -m pytest tests/ops/test_boxes.py``.
"""

from __future__ import annotations

import math
from itertools import product

import pytest
import torch

from convatlas.ops.boxes import (
    batched_nms,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    decode_boxes,
    encode_boxes,
    nms,
    ssd_priors,
)


def _random_boxes(n: int, g: torch.Generator, size: float = 100.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 3 + 1
    return torch.cat([xy, xy + wh], 1)


def test_iou_hand_cases() -> None:
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 5]])
    iou = box_iou(a[:1], b)
    torch.testing.assert_close(iou, torch.tensor([[1.0, 50 / 150, 0.0, 0.5]]))
    assert box_iou(a, b).shape == (3, 4)
    zero = torch.tensor([[3.0, 3, 3, 3]])  # empty box: IoU 0, not NaN
    assert box_iou(zero, zero).item() == 0.0


def test_cxcywh_round_trip_and_encoding_values() -> None:
    g = torch.Generator().manual_seed(0)
    b = _random_boxes(20, g)
    torch.testing.assert_close(box_cxcywh_to_xyxy(box_xyxy_to_cxcywh(b)), b)
    prior = torch.tensor([[0.0, 0, 10, 20]])  # centre (5, 10), size (10, 20)
    box = torch.tensor([[1.0, 2, 11, 22]])  # shifted by (1, 2): 0.1 w and 0.1 h
    torch.testing.assert_close(encode_boxes(box, prior), torch.tensor([[1.0, 1.0, 0.0, 0.0]]))  # 0.1 / 0.1
    big = torch.tensor([[-5.0, -10, 15, 30]])  # same centre, twice the size: log 2 / 0.2
    torch.testing.assert_close(encode_boxes(big, prior), torch.tensor([[0.0, 0.0, math.log(2) / 0.2,
                                                                        math.log(2) / 0.2]]))
    priors = _random_boxes(20, g)
    torch.testing.assert_close(decode_boxes(encode_boxes(b, priors), priors), b, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(decode_boxes(torch.zeros(20, 4), priors), priors, rtol=1e-6, atol=1e-5)


def _greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> list[int]:
    """Textbook greedy NMS, one box at a time (the obviously-correct reference)."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep: list[int] = []
    for i in order:
        if all(box_iou(boxes[i:i + 1], boxes[j:j + 1]).item() <= thr for j in keep):
            keep.append(i)
    return keep


def test_nms_hand_case_and_reference() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 9]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]  # 3 suppresses 0 (IoU 0.9) and 1 (IoU 0.74)
    assert nms(boxes, scores, 0.95).tolist() == [3, 0, 1, 2]
    assert nms(boxes[:0], scores[:0], 0.5).numel() == 0
    g = torch.Generator().manual_seed(1)
    for n, thr in [(60, 0.3), (60, 0.5), (120, 0.7)]:
        b, s = _random_boxes(n, g), torch.rand(n, generator=g)
        assert nms(b, s, thr).tolist() == _greedy_nms(b, s, thr)
        assert nms(b, s, thr, block=16).tolist() == _greedy_nms(b, s, thr)  # several blocks
    # a suppression chain (a kills b, so b cannot kill c): needs more than one fixed-point step
    chain = torch.tensor([[0.0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]])
    assert nms(chain, torch.tensor([0.9, 0.8, 0.7]), 0.4).tolist() == [0, 2]


def test_batched_nms_keeps_classes_apart() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]
    g = torch.Generator().manual_seed(3)
    b, s, idx = _random_boxes(150, g), torch.rand(150, generator=g), torch.randint(0, 5, (150,), generator=g)
    ref = torch.cat([torch.nonzero(idx == c).flatten()[_greedy_nms(b[idx == c], s[idx == c], 0.4)]
                     for c in range(5)])
    ref = ref[s[ref].argsort(descending=True)]
    assert torch.equal(batched_nms(b, s, idx, 0.4), ref)  # padded all-categories path
    assert torch.equal(batched_nms(b, s, idx, 0.4, max_elements=1), ref)  # one nms per category


def test_nms_and_iou_match_torchvision() -> None:
    tv = pytest.importorskip("torchvision", reason="torchvision not installed (reference only)")
    g = torch.Generator().manual_seed(2)
    for n, thr in [(200, 0.5), (300, 0.3), (50, 0.8)]:
        b, s = _random_boxes(n, g), torch.rand(n, generator=g)
        idx = torch.randint(0, 4, (n,), generator=g)
        torch.testing.assert_close(box_iou(b, b[:17]), tv.ops.box_iou(b, b[:17]))
        assert torch.equal(nms(b, s, thr), tv.ops.nms(b, s, thr))
        assert torch.equal(nms(b, s, thr, block=37), tv.ops.nms(b, s, thr))
        assert torch.equal(batched_nms(b, s, idx, thr), tv.ops.batched_nms(b, s, idx, thr))
        assert torch.equal(batched_nms(b, s, idx, thr, max_elements=1), tv.ops.batched_nms(b, s, idx, thr))


def _cvnets_priors(fm: list[tuple[int, int]], ratios: list[list[int]], lo: float, hi: float) -> torch.Tensor:
    """cvnets SSDAnchorGenerator._generate_anchors, written out as its loops (normalised cxcywh, clipped)."""
    scales = [lo + (hi - lo) * i / len(fm) for i in range(len(fm) + 1)]
    rows = []
    for k, (h, w) in enumerate(fm):
        smin, smax = scales[k], (scales[k] * scales[k + 1]) ** 0.5
        for y, x in product(range(h), range(w)):
            cx, cy = (x + 0.5) / w, (y + 0.5) / h
            rows += [[cx, cy, smin, smin], [cx, cy, smax, smax]]
            for r in ratios[k]:
                q = r ** 0.5
                rows += [[cx, cy, smin * q, smin / q], [cx, cy, smin / q, smin * q]]
    return torch.tensor(rows).clamp(0, 1)


def test_ssd_priors_match_cvnets_anchor_generator() -> None:
    """cvnets SSDLite at 320: maps 20, 10, 5, 3, 2, 1 -> 6 x (400 + 100 + 25 + 9 + 4) + 4 = 3,232 priors."""
    fm = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    ratios = [[2, 3]] * 5 + [[2]]
    p = ssd_priors(fm, (320, 320), ratios)
    assert p.shape == (3232, 4)
    ref = _cvnets_priors(fm, ratios, 0.1, 1.05)
    torch.testing.assert_close(box_xyxy_to_cxcywh(p) / 320, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p[0], torch.tensor([-8.0, -8.0, 24.0, 24.0]))  # centre 8, side 0.1 * 320
    # non-square image: widths scale with W, heights with H
    q = ssd_priors([(2, 3)], (20, 30), [[2]], 0.2, 0.6)
    torch.testing.assert_close(box_xyxy_to_cxcywh(q)[0], torch.tensor([5.0, 5.0, 6.0, 4.0]))
    with torch.device("meta"):
        assert ssd_priors(fm, (320, 320), ratios, device="meta").shape == (3232, 4)
    with pytest.raises(ValueError, match="aspect-ratio"):
        ssd_priors(fm, (320, 320), ratios[:2])
