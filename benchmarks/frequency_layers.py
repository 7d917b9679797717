"""Frequency-domain and drop-in layers vs plain convolutions (cards: fdconv, tvconv, aff).

Part 1, drop-in convs (forward, eval, batch 8, C=64): ``nn.Conv2d`` 3x3 vs FDConv (kernel_num 64, paper
setting) and depthwise 3x3 vs TVConv (training form with its weight generator, and the reparameterised
inference form). Part 2, global token mixing: the AFF filter (C=64) vs a 7x7 depthwise conv and vs a direct
(FFT-free) global depthwise conv of image size, across resolutions: FFT-based mixing costs O(N log N) per
channel, the direct global conv O(N^2), a 7x7 conv O(49 N); the table shows where each crossover falls.

Run ``python -m benchmarks.frequency_layers [--quick]``; writes benchmarks/results/frequency_layers.{json,md}.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    achieved_gflops,
    base_parser,
    fraction_of_peak,
    interleaved_timing,
    ratio,
    setup,
    write_results,
)
from convatlas.layers.aff_filter import AFFilter
from convatlas.layers.fdconv import FDConv
from convatlas.layers.tvconv import TVConv
from convatlas.ops.frequency import circular_conv2d


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@torch.no_grad()
def dropin_rows(sizes: list[int], c: int, batch: int, warmup: int, reps: int, peak: float) -> list[dict]:
    rows = []
    for s in sizes:
        x = torch.randn(batch, c, s, s)
        conv = nn.Conv2d(c, c, 3, padding=1, bias=False).eval()
        fd = FDConv.from_conv(conv, kernel_num=64).eval()
        dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False).eval()
        tv = TVConv(c, s, s).eval()
        tv_inf = TVConv(c, s, s).eval()
        tv_inf.load_state_dict(tv.state_dict())
        tv_inf.reparameterize()
        t = interleaved_timing(
            {"conv": lambda: conv(x), "fdconv": lambda: fd(x), "dw": lambda: dw(x), "tvconv": lambda: tv(x),
             "tvconv_inf": lambda: tv_inf(x)}, warmup, reps)
        conv_gmacs = batch * c * c * 9 * s * s / 1e9
        rows.append({
            "part": "drop-in", "res": s, "layer": "conv3x3 / FDConv", "ref_ms": t["conv"].median * 1e3,
            "ours_ms": t["fdconv"].median * 1e3, "slowdown": ratio(t["fdconv"].median, t["conv"].median),
            "ref_params": _params(conv), "ours_params": _params(fd),
            "ref_gflops": achieved_gflops(conv_gmacs, t["conv"].median),
            "ref_frac_peak": fraction_of_peak(achieved_gflops(conv_gmacs, t["conv"].median), peak),
        })
        rows.append({
            "part": "drop-in", "res": s, "layer": "dw3x3 / TVConv (train form)", "ref_ms": t["dw"].median * 1e3,
            "ours_ms": t["tvconv"].median * 1e3, "slowdown": ratio(t["tvconv"].median, t["dw"].median),
            "ref_params": _params(dw), "ours_params": _params(tv),
        })
        rows.append({
            "part": "drop-in", "res": s, "layer": "dw3x3 / TVConv (reparam)", "ref_ms": t["dw"].median * 1e3,
            "ours_ms": t["tvconv_inf"].median * 1e3, "slowdown": ratio(t["tvconv_inf"].median, t["dw"].median),
            "ref_params": _params(dw), "ours_params": _params(tv_inf) + tv_inf.weight_maps.numel(),
        })
    return rows


@torch.no_grad()
def mixer_rows(sizes: list[int], c: int, batch: int, warmup: int, reps: int, direct_max: int) -> list[dict]:
    rows = []
    aff = AFFilter(c).eval()
    dw7 = nn.Conv2d(c, c, 7, padding=3, groups=c, bias=False).eval()
    for s in sizes:
        x = torch.randn(batch, c, s, s)
        fns = {"aff": lambda: aff(x), "dw7": lambda: dw7(x)}
        if s <= direct_max:
            kern = torch.randn(c, s, s)
            fns["global_direct"] = lambda: circular_conv2d(x, kern)
        t = interleaved_timing(fns, warmup, reps)
        n = s * s
        # MACs per image: AFF einsums (2 layers x 4 real block matmuls) + FFT estimate 2 * 2.5 N log2 N per channel.
        aff_mmacs = (8 * (c // 8) * c * s * (s // 2 + 1) + 2 * 2.5 * n * math.log2(n) * c) / 1e6
        row = {
            "part": "mixer", "res": s, "aff_ms": t["aff"].median * 1e3, "dw7_ms": t["dw7"].median * 1e3,
            "aff_over_dw7": ratio(t["aff"].median, t["dw7"].median),
            "aff_mmacs": aff_mmacs, "dw7_mmacs": 49 * c * n / 1e6, "global_direct_mmacs": c * n * n / 1e6,
        }
        if "global_direct" in t:
            row["global_direct_ms"] = t["global_direct"].median * 1e3
            row["direct_over_aff"] = ratio(t["global_direct"].median, t["aff"].median)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = base_parser(__doc__)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args(argv)
    meta = setup(args)
    peak = meta["peak_gflops"].get("fp32", float("nan"))
    drop_sizes = [16, 32] if args.quick else [14, 28, 56]
    mix_sizes = [8, 16, 32, 64] if args.quick else [7, 14, 28, 56, 112, 224]
    rows = dropin_rows(drop_sizes, args.channels, args.batch, args.warmup, args.reps, peak)
    rows += mixer_rows(mix_sizes, args.channels, args.batch, args.warmup, args.reps, direct_max=32 if args.quick else 56)
    notes = [
        "slowdown = ours_ms / ref_ms (same run, interleaved). FDConv: kernel_num 64 (paper), KSM + FBM on; "
        "TVConv train form includes the weight-generating block (run once per forward, input-independent).",
        "Mixer MACs: AFF counts its block-diagonal complex MLP plus an FFT estimate (2 x 2.5 N log2 N per channel); "
        "a direct global depthwise conv costs C*N^2. AFF is a content-adaptive global filter, so the fair "
        "comparison for large kernels is global_direct; dw7 is the local baseline it replaces in mobile nets.",
        "The machine is shared by many processes: absolute times are inflated; see the load average.",
    ]
    write_results("frequency_layers", rows, meta, title="Frequency-domain / drop-in layers vs convolutions",
                  notes=notes)


if __name__ == "__main__":
    main()
