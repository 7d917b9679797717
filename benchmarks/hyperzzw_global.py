"""HyperZ·Z·W (card hyperzzw): the 1-D global branch via FFT long convolution vs naive direct convolution, and the
forward/backward speed of the registered Terminator models.

Part 1: ``hyperzzw_global(W, Z, z)`` for pixel-level sequences (B, C, L): a causal convolution of z with the
per-sample, per-channel kernel Z ⊙ W of length L, through :func:`convatlas.ops.fft_conv.fft_conv` (ours) vs a grouped
``F.conv1d`` with B·C groups and an L-tap kernel (naive reference, O(L^2)), forward only, same inputs.
Part 2: Terminator forward+backward (batch 8) at the paper's input sizes, achieved GFLOP/s (MACs counted by
FlopCounterMode; the 1-D FFT convolution is not counted) and fraction of the fp32 matmul peak.

    python -m benchmarks.hyperzzw_global [--quick]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.common import achieved_gflops, base_parser, fraction_of_peak, ratio, setup, time_fn, write_results
from convatlas.analysis.complexity import measure_entry
from convatlas.layers.hyper_kernel import hyperzzw_global
from convatlas.registry import create_model


def naive_global(hk: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    b, c, l = z.shape
    ker = (x * hk).reshape(b * c, 1, l).flip(-1)
    return F.conv1d(F.pad(z.reshape(1, b * c, l), (l - 1, 0)), ker, groups=b * c).reshape(b, c, l)


def main(argv=None) -> None:
    args = base_parser(__doc__).parse_args(argv)
    meta = setup(args)
    peak = meta.get("peak_gflops", {}).get("fp32", float("nan"))
    rows = []
    cases = [(8, 48, 784)] if args.quick else [(8, 48, 784), (8, 48, 1024), (4, 32, 4096)]
    for b, c, l in cases:
        torch.manual_seed(0)
        hk, x, z = torch.randn(c, l), torch.randn(b, c, l), torch.randn(b, c, l)
        err = (hyperzzw_global(hk, x, z) - naive_global(hk, x, z)).abs().max().item()
        t_ours = time_fn(lambda: hyperzzw_global(hk, x, z), args.warmup, args.reps)
        t_ref = time_fn(lambda: naive_global(hk, x, z), args.warmup, args.reps)
        rows.append({"part": "global_branch_1d", "B": b, "C": c, "L": l, "fft_ms": t_ours * 1e3,
                     "direct_ms": t_ref * 1e3, "speedup_vs_direct": ratio(t_ref, t_ours), "max_abs_err": err})
        print(rows[-1])
    models = [("terminator_seqdigits", (1, 64)), ("terminator_smnist", (1, 784))]
    if not args.quick:
        models.append(("terminator_cifar10", (3, 32, 32)))
    for name, shape in models:
        torch.manual_seed(0)
        m = create_model(name).train()
        x = torch.randn(8, *shape)

        def step():
            m.zero_grad(set_to_none=True)
            m(x).sum().backward()

        t = time_fn(step, args.warmup, max(3, args.reps // 2))
        gmacs = 8 * measure_entry(name).gmacs * 3  # forward + ~2x for backward
        gf = achieved_gflops(gmacs, t)
        rows.append({"part": "fwd_bwd_batch8", "model": name, "ms": t * 1e3, "gflops": gf,
                     "frac_fp32_peak": fraction_of_peak(gf, peak)})
        print(rows[-1])
    meta["notes"] = "reference = grouped F.conv1d with an L-tap kernel per (sample, channel); same run, same inputs"
    write_results("hyperzzw_global", rows, meta)


if __name__ == "__main__":
    main()
