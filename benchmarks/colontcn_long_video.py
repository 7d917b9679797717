"""ColonTCN (card colontcn) inference on full-procedure videos: frames/s of the official weight-normalised form
(reference, weight recomputed from g and v every call) vs the folded form (``reparameterize()``), fp32 and bf16
autocast, with achieved GFLOP/s and fraction of the matmul peak measured in the same run.

    python -m benchmarks.colontcn_long_video [--quick]
"""

from __future__ import annotations

import torch

from benchmarks.common import achieved_gflops, base_parser, fraction_of_peak, ratio, setup, time_fn, write_results
from convatlas.registry import create_model

MACS_PER_FRAME = 877_120  # 2048*64 + 13*2*64*64*7 + 64*9 (card layer shapes)


def main(argv=None) -> None:
    args = base_parser(__doc__).parse_args(argv)
    meta = setup(args)
    peaks = meta.get("peak_gflops", {})
    rows = []
    torch.manual_seed(0)
    ref = create_model("colontcn").eval()
    fast = create_model("colontcn").eval()
    fast.load_state_dict(ref.state_dict())
    fast.reparameterize()
    for t in ((3000,) if args.quick else (3000, 20000)):
        x = torch.randn(1, 2048, t)
        with torch.no_grad():
            err = (fast(x) - ref(x)).abs().max().item()
            t_ref = time_fn(lambda: ref(x), args.warmup, args.reps)
            t_fast = time_fn(lambda: fast(x), args.warmup, args.reps)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                t_bf16 = time_fn(lambda: fast(x), args.warmup, args.reps)
        gmacs = MACS_PER_FRAME * t / 1e9
        gf, gf16 = achieved_gflops(gmacs, t_fast), achieved_gflops(gmacs, t_bf16)
        rows.append({"frames": t, "weightnorm_ms": t_ref * 1e3, "folded_ms": t_fast * 1e3,
                     "speedup_vs_weightnorm": ratio(t_ref, t_fast), "folded_frames_per_s": t / t_fast,
                     "bf16_ms": t_bf16 * 1e3, "gflops_fp32": gf,
                     "frac_fp32_peak": fraction_of_peak(gf, peaks.get("fp32", float("nan"))),
                     "gflops_bf16": gf16, "frac_bf16_peak": fraction_of_peak(gf16, peaks.get("bf16", float("nan"))),
                     "max_abs_err": err})
        print(rows[-1])
    meta["notes"] = "batch 1, ResNet-50 feature size 2048, 9 classes; receptive field 98,293 frames"
    write_results("colontcn_long_video", rows, meta)


if __name__ == "__main__":
    main()
