"""AFFNet + SSDLite detection on CPU (card aff): detector forward, training step, post-processing and NMS.

    python -m benchmarks.aff_ssdlite [--quick] [--threads N]

Rows:
- ``nms``: our vectorised pure-PyTorch :func:`convatlas.ops.boxes.nms` vs the usual PyTorch greedy loop (pick the
  best box, drop its overlaps, repeat: one IoU row per kept box) as the reference, and ``torchvision.ops.nms``
  (C++) where torchvision is installed (not a dependency). Clustered random boxes (real suppression), IoU 0.5.
- ``postprocess``: :func:`convatlas.tasks.detection.postprocess_detections` for one 320x320 image (3,232 priors,
  81 classes) with untrained logits: every class passes the 0.01 threshold, i.e. the worst case of 80 x top-400
  boxes through class-wise NMS.
- ``forward``: eval forward (no_grad, batch 1, 320x320) of the detector vs its AFFNet encoder alone (the
  reference): ``ratio_ref_over_ours`` = encoder time / detector time (the share of time spent in the encoder);
  GFLOP/s = 2 x MACs / time (MACs of convs, linears and the filters' einsums; FFTs not counted) and the
  fraction of the fp32 matmul peak measured in the same run.
- ``train step``: forward + SSD matching + MultiBox loss + backward, batch 4 (quick: 2), 320x320.
"""

from __future__ import annotations

import torch

from benchmarks.common import (
    achieved_gflops,
    base_parser,
    fraction_of_peak,
    interleaved_timing,
    ratio,
    setup,
    time_fn,
    write_results,
)
from convatlas import create_model
from convatlas.analysis.complexity import measure_complexity
from convatlas.ops.boxes import box_iou, nms
from convatlas.tasks.detection import DetectionTask, postprocess_detections


def loop_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> torch.Tensor:
    """The common PyTorch greedy NMS loop (reference)."""
    order = scores.argsort(descending=True)
    keep = []
    while order.numel():
        i = order[0]
        keep.append(i)
        if order.numel() == 1:
            break
        iou = box_iou(boxes[i][None], boxes[order[1:]])[0]
        order = order[1:][iou <= thr]
    return torch.stack(keep)


def clustered_boxes(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.rand(max(n // 20, 1), 2, generator=g) * 300
    c = centres[torch.randint(0, len(centres), (n,), generator=g)] + torch.randn(n, 2, generator=g) * 6
    wh = 20 + torch.rand(n, 2, generator=g) * 40
    return torch.cat([c - wh / 2, c + wh / 2], 1), torch.rand(n, generator=g)


def main(argv: list[str] | None = None) -> None:
    args = base_parser(__doc__).parse_args(argv)
    meta = setup(args)
    peak = meta["peak_gflops"]["fp32"]
    rows: list[dict] = []
    g = torch.Generator().manual_seed(0)
    try:
        import torchvision
    except ImportError:
        torchvision = None

    for n in ((400,) if args.quick else (400, 2000)):
        b, s = clustered_boxes(n, g)
        assert torch.equal(nms(b, s, 0.5), loop_nms(b, s, 0.5))
        fns = {"ours": lambda: nms(b, s, 0.5), "ref": lambda: loop_nms(b, s, 0.5)}
        if torchvision is not None:
            fns["torchvision"] = lambda: torchvision.ops.nms(b, s, 0.5)
        t = interleaved_timing(fns, args.warmup, args.reps)
        rows.append({"case": "nms", "what": f"{n} boxes, {len(nms(b, s, 0.5))} kept", "ms": t["ours"].median * 1e3,
                     "ref_ms": t["ref"].median * 1e3, "ratio_ref_over_ours": ratio(t["ref"].median, t["ours"].median),
                     "torchvision_ms": t["torchvision"].median * 1e3 if "torchvision" in t else float("nan")})

    torch.manual_seed(0)
    names = ("affnet_et_ssdlite",) if args.quick else ("affnet_et_ssdlite", "affnet_t_ssdlite", "affnet_ssdlite")
    x = torch.rand(1, 3, 320, 320)
    for name in names:
        det = create_model(name).eval()
        enc = det.backbone
        gm_det = measure_complexity(det, (x,)).gmacs
        gm_enc = measure_complexity(enc, (x,)).gmacs
        with torch.no_grad():
            t = interleaved_timing({"det": lambda: det(x), "enc": lambda: enc(x)}, args.warmup, args.reps)
            out = det(x)
        gf = achieved_gflops(gm_det, t["det"].median)
        rows.append({"case": "forward", "what": f"{name} b1 320", "ms": t["det"].median * 1e3,
                     "ref_ms": t["enc"].median * 1e3, "ratio_ref_over_ours": ratio(t["enc"].median, t["det"].median),
                     "gmacs": gm_det, "encoder_gmacs": gm_enc, "gflops": gf, "frac_fp32_peak": fraction_of_peak(gf, peak)})
        if name == "affnet_et_ssdlite":
            pp = time_fn(lambda: postprocess_detections(out.cls_logits, out.box_deltas, out.priors, (320, 320)),
                         args.warmup, args.reps)
            rows.append({"case": "postprocess", "what": "3,232 priors x 80 classes, untrained logits", "ms": pp * 1e3})
            bsz = 2 if args.quick else 4
            det.train()
            task = DetectionTask()
            xb = torch.rand(bsz, 3, 320, 320)
            tg = [{"boxes": torch.tensor([[40.0, 50, 140, 170], [200, 30, 300, 120]]), "labels": torch.tensor([3, 17])}
                  for _ in range(bsz)]

            def step() -> None:
                det.zero_grad(set_to_none=True)
                task.loss(det(xb), tg).backward()

            ts = time_fn(step, args.warmup, args.reps)
            gf = achieved_gflops(3 * gm_det * bsz, ts)
            rows.append({"case": "train step", "what": f"{name} b{bsz} 320", "ms": ts * 1e3, "gmacs": 3 * gm_det * bsz,
                         "gflops": gf, "frac_fp32_peak": fraction_of_peak(gf, peak)})
    write_results("aff_ssdlite", rows, meta, title="AFFNet + SSDLite detection, CPU",
                  notes=["nms ref = PyTorch greedy loop; forward ref = the AFFNet encoder alone (ratio = encoder share)",
                         "training FLOPs counted as 3x forward; FFTs are not in the MAC count",
                         "timings on the shared development machine are inflated by contention (see load average)"])


if __name__ == "__main__":
    main()
