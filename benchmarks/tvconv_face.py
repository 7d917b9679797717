"""TVConv inference speed (card: tvconv): the deployed per-pixel depthwise product and the face networks.

Part 1, layer (eval, no grad): our deployed TVConv (contiguous per-tap kernels, in-place ``addcmul_``
accumulation) vs the official ``TVConv_test`` formulation (zero pad -> ``as_strided`` (B, C, 3, 3, h, w) view ->
multiply by the (1, C, 3, 3, h, w) weight maps -> sum), vs the official training-form ``unfold`` formula, and
vs a plain depthwise ``nn.Conv2d`` (oneDNN) of the same shape as the speed reference a translation-invariant layer
gets. Shapes are those of the face MobileNetV2 x1.0 (hidden channels at 48/24/12/6 pixels).
Part 2, networks at 96x96: deployed TVConv MobileNetV2 vs the depthwise MobileNetV2 of the same width (equal MACs
by construction) for widths 0.1 / 0.5 / 1.0; GFLOP/s from the counted MACs (TVConv multiply-adds included).

Run ``python -m benchmarks.tvconv_face [--quick]``; writes benchmarks/results/tvconv_face.{json,md}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import (
    achieved_gflops,
    base_parser,
    fraction_of_peak,
    interleaved_timing,
    ratio,
    setup,
    write_results,
)
from convatlas import create_model
from convatlas.analysis.complexity import measure_complexity
from convatlas.layers.tvconv import TVConv, tvconv_unfold_reference


def official_tvconv_test(x: Tensor, maps: Tensor, stride: int) -> Tensor:
    """Official ``TVConv_test.forward``: as_strided 3x3 windows of the padded input times the weight maps."""
    b, c = x.shape[:2]
    h, w = maps.shape[-2:]
    xp = F.pad(x, (1, 1, 1, 1))
    hp, wp = xp.shape[-2:]
    view = torch.as_strided(xp, (b, c, 3, 3, h, w), (c * hp * wp, hp * wp, wp, 1, wp * stride, stride))
    return (maps * view).sum(dim=(2, 3))


@torch.no_grad()
def layer_rows(shapes: list[tuple[int, int, int]], batches: list[int], warmup: int, reps: int,
               peak: float) -> list[dict]:
    rows = []
    for c, hw, stride in shapes:
        layer = TVConv(c, hw, hw, stride=stride).eval()
        with torch.no_grad():
            layer.posi_map.normal_()
        weight = layer.generate_weight()
        maps = weight.reshape(1, c, 3, 3, hw, hw).contiguous()
        layer.reparameterize()
        dw = nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False).eval()
        for b in batches:
            x = torch.randn(b, c, hw * stride, hw * stride)
            torch.testing.assert_close(layer(x), official_tvconv_test(x, maps, stride), rtol=1e-4, atol=1e-4)
            fns = {"ours": lambda: layer(x), "official_test": lambda: official_tvconv_test(x, maps, stride),
                   "unfold": lambda: tvconv_unfold_reference(x, weight, 3, stride), "dw_conv": lambda: dw(x)}
            t = interleaved_timing(fns, warmup, reps)
            gmacs = b * c * 9 * hw * hw / 1e9
            ours = t["ours"].median
            rows.append({"part": "layer", "shape": f"C{c} {hw * stride}->{hw}", "batch": b,
                         "ours_ms": ours * 1e3, "official_test_ms": t["official_test"].median * 1e3,
                         "unfold_ms": t["unfold"].median * 1e3, "dw_conv_ms": t["dw_conv"].median * 1e3,
                         "speedup_vs_official": ratio(t["official_test"].median, ours),
                         "speedup_vs_unfold": ratio(t["unfold"].median, ours),
                         "ours_over_dw": ratio(ours, t["dw_conv"].median),
                         "gflops": achieved_gflops(gmacs, ours),
                         "frac_peak": fraction_of_peak(achieved_gflops(gmacs, ours), peak)})
    return rows


@torch.no_grad()
def net_rows(widths: list[str], batches: list[int], warmup: int, reps: int, peak: float) -> list[dict]:
    rows = []
    for w in widths:
        tv = create_model(f"tvconv_mobilenetv2_x{w}", num_classes=0).eval()
        tv.reparameterize()
        base = create_model(f"mobilenetv2_face_x{w}", num_classes=0).eval()
        for b in batches:
            x = torch.randn(b, 3, 96, 96)
            gmacs = measure_complexity(tv, (x,)).gmacs
            t = interleaved_timing({"tvconv": lambda: tv(x), "dw": lambda: base(x)}, warmup, reps)
            ours = t["tvconv"].median
            rows.append({"part": "network", "shape": f"MobileNetV2 x{w.replace('_', '.')} 96", "batch": b,
                         "ours_ms": ours * 1e3, "dw_conv_ms": t["dw"].median * 1e3,
                         "ours_over_dw": ratio(ours, t["dw"].median), "gmacs": gmacs,
                         "gflops": achieved_gflops(gmacs, ours),
                         "frac_peak": fraction_of_peak(achieved_gflops(gmacs, ours), peak)})
    return rows


def main(argv: list[str] | None = None) -> None:
    args = base_parser(__doc__).parse_args(argv)
    meta = setup(args)
    peak = meta["peak_gflops"].get("fp32", float("nan"))
    shapes = [(96, 48, 1), (144, 24, 1), (384, 12, 1)] if args.quick else \
        [(96, 48, 1), (144, 24, 2), (144, 24, 1), (384, 12, 1), (960, 6, 1)]
    batches = [1, 8]
    rows = layer_rows(shapes, batches, args.warmup, args.reps, peak)
    rows += net_rows(["0_1", "1_0"] if args.quick else ["0_1", "0_5", "1_0"], batches, args.warmup, args.reps, peak)
    notes = [
        "ours = deployed TVConv (per-tap contiguous kernels, in-place addcmul); official_test = the official "
        "TVConv_test as_strided formulation; unfold = the official training-form formula on the generated kernels; "
        "dw_conv = nn.Conv2d depthwise of the same shape (oneDNN), the translation-invariant reference. All eval, "
        "no grad, fp32, interleaved in one run; outputs of ours and official_test checked equal.",
        "Networks: deployed TVConv MobileNetV2 vs depthwise MobileNetV2 of the same width (same counted MACs); "
        "embedding output (no classifier).",
        "The development machine is shared by many processes: absolute times are inflated; see the load average.",
    ]
    write_results("tvconv_face", rows, meta, title="TVConv deployed inference vs official forms and depthwise conv",
                  notes=notes)


if __name__ == "__main__":
    main()
