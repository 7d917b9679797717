"""Structural re-parameterisation: training form vs fused inference form (cards: unireplknet, lsnet).

For each case the same randomly initialised network (eval mode) is timed in its multi-branch training form and
after ``reparameterize()`` (dilated branches + BNs merged into one large DW kernel; ConvBN/RepVGGDW fused), in
alternation so machine load hits both alike. Reports medians, the speed-up (training / fused), and achieved GFLOP/s
of the fused form (its conv/linear MACs x 2 / time) with the fraction of the fp32 matmul peak measured in the
same run. The fused output is checked against the training form (max relative error) in every case.

    python -m benchmarks.reparam --threads 1     # batch 1 and 16, 224 px (recorded results: --threads 1)
    python -m benchmarks.reparam --quick         # batch 1 only, fewer repetitions

On a machine shared by other processes use ``--threads 1``: with 2 threads on 2 busy cores, PyTorch's OpenMP
workers spin-wait on each other and small depthwise convs become up to ~1000x slower.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
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
from convatlas import create_model
from convatlas.analysis.complexity import measure_complexity
from convatlas.layers.dilated_reparam import DilatedReparamBlock


def _macs(build: Callable[[], nn.Module], shape: tuple[int, ...], fused: bool) -> float:
    with torch.device("meta"):
        m = build()
        if fused:
            m.reparameterize()
        return measure_complexity(m, (torch.empty(*shape),)).gmacs


def _case(name: str, build: Callable[[], nn.Module], shape: tuple[int, ...], args: Any, peak: float) -> dict[str, Any]:
    torch.manual_seed(0)
    train = build().eval()
    with torch.no_grad():  # non-trivial BN statistics so the fused kernel is not a no-op
        for m in train.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(getattr(m, "gamma", None), nn.Parameter) and m.gamma.ndim == 1:
                m.gamma.fill_(0.5)  # layer scale 1e-6 would hide the residual branches from the error check
    fused = copy.deepcopy(train)
    fused.reparameterize()
    x = torch.randn(*shape)
    with torch.no_grad():
        y0, y1 = train(x), fused(x)
        err = ((y1 - y0).abs().max() / y0.abs().max()).item()
        t = interleaved_timing({"train": lambda: train(x), "fused": lambda: fused(x)}, args.warmup, args.reps)
    g_fused = _macs(build, shape, True) * 1.0
    g_train = _macs(build, shape, False)
    return {
        "case": name,
        "batch": shape[0],
        "train_ms": t["train"].median * 1e3,
        "fused_ms": t["fused"].median * 1e3,
        "speedup": ratio(t["train"].median, t["fused"].median),
        "train_gmacs": g_train,
        "fused_gmacs": g_fused,
        "fused_gflops": achieved_gflops(g_fused, t["fused"].median),
        "frac_peak_fp32": fraction_of_peak(achieved_gflops(g_fused, t["fused"].median), peak),
        "max_rel_err": err,
    }


def main(argv: list[str] | None = None) -> None:
    args = base_parser(__doc__).parse_args(argv)
    meta = setup(args, peak_dtypes=("fp32",))
    peak = meta["peak_gflops"]["fp32"]
    batches = (1,) if args.quick else (1, 16)
    cases: list[tuple[str, Callable[[], nn.Module], tuple[int, ...]]] = []
    for b in batches:
        cases += [
            ("DilatedReparamBlock C=160 K=13 @14x14", lambda: _Wrap(DilatedReparamBlock(160, 13)), (b, 160, 14, 14)),
            ("unireplknet_a @224", lambda: create_model("unireplknet_a"), (b, 3, 224, 224)),
            ("lsnet_t @224", lambda: create_model("lsnet_t"), (b, 3, 224, 224)),
        ]
        if not args.quick:
            cases.append(("unireplknet_t @224", lambda: create_model("unireplknet_t"), (b, 3, 224, 224)))
    rows = [_case(n, f, s, args, peak) for n, f, s in cases]
    write_results(
        "reparam", rows, meta, title="Re-parameterisation: training form vs fused (CPU, fp32, eval)",
        notes=[
            "speedup = training-form time / fused time (same weights, same run, interleaved calls).",
            "GFLOP/s = 2 x conv/linear MACs of the fused form / median time; fraction of the fp32 matmul peak "
            "measured in the same run. Whole networks stay far below peak (depthwise convs, norms, "
            "permutes); the isolated block can exceed the single-thread matmul figure because that peak was "
            "measured under contention while the block's working set stays in cache.",
            "Timings on the shared 2-core development machine are inflated by contention (see load average); "
            "recorded with --threads 1 for that reason.",
        ],
    )


class _Wrap(nn.Module):
    """Gives a bare layer the model-level ``reparameterize()`` the benchmark calls."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)

    def reparameterize(self) -> "_Wrap":
        self.m.reparameterize()
        return self


if __name__ == "__main__":
    main()
