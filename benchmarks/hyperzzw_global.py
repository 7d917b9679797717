"""HyperZ·Z·W (card hyperzzw): the 1-D global branch via FFT long convolution vs naive direct convolution, and the
forward/backward speed of the registered Terminator models.

Part 1: ``hyperzzw_global(W, Z, z)`` for pixel-level sequences (B, C, L): a causal convolution of z with the
per-sample, per-channel kernel Z ⊙ W of length L, through :func:`convatlas.ops.fft_conv.fft_conv` (ours) vs a grouped
``F.conv1d`` with B·C groups and an L-tap kernel (naive reference, O(L^2)), forward only, same inputs.
Part 2: Terminator forward+backward (batch 8) at the paper's input sizes, achieved GFLOP/s (MACs counted by
FlopCounterMode; the 1-D FFT convolution is not counted) and fraction of the fp32 matmul peak.
Part 3: whole-model ``torch.compile`` (fullgraph, inference) of the tiny test model: cold compile time (fresh
inductor cache, FX-graph cache off), split into this process's CPU time (dynamo/inductor) and the g++ CPU time of
the generated kernels (compile workers disabled so g++ runs as a child of this process), and eager vs compiled
forward time.

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


def compile_row() -> dict:
    """Cold whole-model compile of ``test_hyperzzw`` (see Part 3 of the module docstring)."""
    import os
    import resource
    import tempfile
    import time

    import torch._dynamo
    import torch._inductor.config as inductor_config

    torch.manual_seed(0)
    m = create_model("test_hyperzzw").eval()
    x = torch.randn(2, 3, 8, 8)
    old = {k: os.environ.get(k) for k in ("TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_COMPILE_THREADS")}
    with tempfile.TemporaryDirectory() as d:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = d
        os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
        fx_cache, threads = inductor_config.fx_graph_cache, inductor_config.compile_threads
        inductor_config.fx_graph_cache, inductor_config.compile_threads = False, 1
        torch._dynamo.reset()
        try:
            s0, c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            cm = torch.compile(m, fullgraph=True)
            with torch.no_grad():
                y = cm(x)
            wall = time.perf_counter() - t0
            s1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            with torch.no_grad():
                err = (y - m(x)).abs().max().item()
                t_eager = time_fn(lambda: m(x), 3, 20)
                t_comp = time_fn(lambda: cm(x), 3, 20)
        finally:
            inductor_config.fx_graph_cache, inductor_config.compile_threads = fx_cache, threads
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            torch._dynamo.reset()
    self_cpu = (s1.ru_utime + s1.ru_stime) - (s0.ru_utime + s0.ru_stime)
    gxx_cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    return {"part": "compile_test_hyperzzw", "compile_wall_s": wall, "self_cpu_s": self_cpu, "gxx_cpu_s": gxx_cpu,
            "est_idle_2core_s": self_cpu + gxx_cpu / 2, "max_abs_err_vs_eager": err, "eager_ms": t_eager * 1e3,
            "compiled_ms": t_comp * 1e3, "speedup_compiled": ratio(t_eager, t_comp)}


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
    rows.append(compile_row())
    print(rows[-1])
    meta["notes"] = ("reference = grouped F.conv1d with an L-tap kernel per (sample, channel); same run, same inputs."
                     " compile: est_idle_2core_s = self CPU + g++ CPU / 2 (two compile workers on an idle machine)")
    write_results("hyperzzw_global", rows, meta)


if __name__ == "__main__":
    main()
