"""HorFPN decoder conv (card hornet) on CPU: g^nConv ``fpn_bottleneck`` vs UPerNet's plain 3x3 ConvBNReLU.

    python -m benchmarks.horfpn_decoder [--quick] [--threads N]

The UPerNet head fuses the four concatenated FPN levels (4C channels at 1/4 resolution) with one layer: a 3x3
conv + BN + ReLU in the plain head (the reference, plain PyTorch ``nn.Conv2d``), a :class:`GnConvModule` (order 2,
7x7 depthwise or Global-Local Filter, proj_out, BN, ReLU) in HorFPN. Timed in inference (eval, no_grad) and
training (forward + backward), batch 1, at the decoder input of a 256x256 crop (64x64 map); C = 512 as the paper's
head (quick: C = 128). Reported: params, MACs (conv/linear; FFT not counted), median ms, ratio plain/ours
(> 1: HorFPN faster), achieved GFLOP/s (2 x MACs / time) and fraction of the fp32 matmul peak measured in the
same run.
"""

from __future__ import annotations

import torch

from benchmarks.common import achieved_gflops, base_parser, fraction_of_peak, ratio, setup, time_fn, write_results
from convatlas.analysis.complexity import measure_complexity
from convatlas.models.segmentation.horfpn import ConvBNReLU, GnConvModule


def main(argv: list[str] | None = None) -> None:
    args = base_parser(__doc__).parse_args(argv)
    meta = setup(args)
    c, size = (128, 64) if args.quick else (512, 64)
    x = torch.randn(1, 4 * c, size, size)
    layers = {
        "plain 3x3 ConvBNReLU (ref)": ConvBNReLU(4 * c, c, 3),
        "HorFPN gnconv 7x7": GnConvModule(4 * c, c, 2, "dw", 7, proj_out=True, norm="bn", act="relu"),
        "HorFPN gnconv GF (h=32)": GnConvModule(4 * c, c, 2, "gf", gf_size=32, proj_out=True, norm="bn", act="relu"),
    }
    rows, ref = [], {}
    peak = meta["peak_gflops"]["fp32"]
    for name, layer in layers.items():
        gmacs = measure_complexity(layer.eval(), (x,)).gmacs
        params = sum(p.numel() for p in layer.parameters())
        for mode in ("inference", "training"):
            if mode == "inference":
                layer.eval()

                def fn() -> None:
                    with torch.no_grad():
                        layer(x)
            else:
                layer.train()
                xg = x.clone().requires_grad_(True)

                def fn() -> None:
                    layer(xg).sum().backward()
            t = time_fn(fn, args.warmup, args.reps)
            if name.endswith("(ref)"):
                ref[mode] = t
            gf = achieved_gflops(gmacs * (1 if mode == "inference" else 3), t)
            rows.append({"layer": name, "mode": mode, "params": params, "gmacs": gmacs, "ms": t * 1e3,
                         "ratio_ref_over_ours": ratio(ref[mode], t), "gflops": gf,
                         "frac_fp32_peak": fraction_of_peak(gf, peak)})
    write_results("horfpn_decoder", rows, meta, title="HorFPN fpn_bottleneck vs plain 3x3 (UPerNet head), CPU",
                  notes=[f"input (1, {4 * c}, {size}, {size}); training FLOPs counted as 3x forward",
                         "timings on the shared development machine are inflated by contention (see load average)"])


if __name__ == "__main__":
    main()
