"""ConvNeXt inference throughput: convatlas vs timm, measured in ONE run on the same weights.

    /work/refvenv/bin/python -m benchmarks.convnext_vs_timm            # full grid
    /work/refvenv/bin/python -m benchmarks.convnext_vs_timm --quick    # batch 1 and 16, fewer repetitions
    ... --no-compile                                                   # skip torch.compile (slow to warm up)

Grid: batch {1, 16} x dtype {fp32, bf16} x memory format {NCHW, channels_last} x {eager, torch.compile}.
Both models get the same weights (timm loads convatlas's state dict strictly: the key layouts are identical)
and the outputs are compared once in fp32. Each case times the two models in alternation (ours, timm, ours, ...)
so machine load hits both alike; the figure is the median. Reported: img/s, ratio ours/timm, achieved GFLOP/s
(2 x MACs / time, MACs counted on the meta device) and the fraction of the fp32/bf16 matmul peak measured at
the start of the same run. bf16 = model and input cast to bfloat16 (pure bf16 inference, timm's --model-dtype).

Needs timm (the reference venv); writes benchmarks/results/convnext_vs_timm.{json,md}.
"""

from __future__ import annotations

import sys

import torch

from benchmarks.common import (
    achieved_gflops,
    base_parser,
    interleaved_timing,
    parse_dtype,
    ratio,
    setup,
    write_results,
)

NAME = "convnext_vs_timm"


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--model", default="convnext_tiny", help="convatlas/timm model name (default convnext_tiny)")
    p.add_argument("--batch", default="1,16", help="comma-separated batch sizes (default 1,16)")
    p.add_argument("--dtype", default="fp32,bf16", help="comma-separated dtypes (default fp32,bf16)")
    p.add_argument("--resolution", type=int, default=224, help="image side (default 224)")
    p.add_argument("--no-compile", action="store_true", help="eager only (torch.compile warm-up is slow on CPU)")
    p.add_argument("--no-channels-last", action="store_true", help="NCHW only")
    args = p.parse_args(argv)
    try:
        import timm
    except ImportError:
        print("this benchmark needs timm: run it with /work/refvenv/bin/python -m benchmarks.convnext_vs_timm",
              file=sys.stderr)
        return 2
    import convatlas
    from convatlas.analysis.complexity import measure_entry
    from convatlas.analysis.bench import prepare_module

    meta = setup(args)
    meta["timm"] = timm.__version__
    meta["convatlas"] = convatlas.__version__
    batches = [int(b) for b in args.batch.split(",")]
    dtypes = [d.strip() for d in args.dtype.split(",")]
    layouts = [False] if args.no_channels_last else [False, True]
    compiles = [False] if args.no_compile else [False, True]
    gmacs_per_image = measure_entry(args.model, args.resolution).gmacs

    torch.manual_seed(0)
    ours = convatlas.create_model(args.model).eval()
    with torch.no_grad():  # layer scale 1e-6 would hide block differences in the equality check below
        for n, prm in ours.named_parameters():
            if n.endswith("gamma"):
                prm.uniform_(0.2, 1.0)
    ref = timm.create_model(args.model, pretrained=False).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, args.resolution, args.resolution)
    with torch.inference_mode():
        diff = (ours(x) - ref(x)).abs().max().item()
    meta["max_abs_logit_diff_fp32"] = diff
    print(f"same weights: max |logit difference| fp32 = {diff:.2e}", flush=True)

    rows = []
    for compiled in compiles:
        for dname in dtypes:
            dt = parse_dtype(dname)
            for cl in layouts:
                for b in batches:
                    xb = torch.randn(b, 3, args.resolution, args.resolution)
                    m_ours = convatlas.create_model(args.model)
                    m_ours.load_state_dict(ours.state_dict())
                    m_ref = timm.create_model(args.model, pretrained=False)
                    m_ref.load_state_dict(ours.state_dict())
                    f_ours, _ = prepare_module(m_ours, (xb,), dtype=dt, channels_last=cl, compile=compiled)
                    f_ref, _ = prepare_module(m_ref, (xb,), dtype=dt, channels_last=cl, compile=compiled)
                    label = f"b{b} {dname} {'channels_last' if cl else 'NCHW'} {'compiled' if compiled else 'eager'}"
                    print(f"timing {label} ...", flush=True)
                    if compiled:  # first calls compile; not part of the warm-up count
                        f_ours()
                        f_ref()
                    st = interleaved_timing({"ours": f_ours, "timm": f_ref}, args.warmup, args.reps)
                    peak = meta["peak_gflops"].get(dname, float("nan"))
                    gm = gmacs_per_image * b
                    g_ours, g_ref = achieved_gflops(gm, st["ours"].median), achieved_gflops(gm, st["timm"].median)
                    rows.append({
                        "batch": b,
                        "dtype": dname,
                        "layout": "channels_last" if cl else "NCHW",
                        "mode": "compiled" if compiled else "eager",
                        "ours img/s": b / st["ours"].median,
                        "timm img/s": b / st["timm"].median,
                        "ours/timm": ratio(st["timm"].median, st["ours"].median),
                        "ours ms": st["ours"].median * 1e3,
                        "timm ms": st["timm"].median * 1e3,
                        "ours GFLOP/s": g_ours,
                        "ours % peak": 100 * ratio(g_ours, peak),
                        "timm GFLOP/s": g_ref,
                        "timm % peak": 100 * ratio(g_ref, peak),
                    })
                    del m_ours, m_ref, f_ours, f_ref
    import os

    meta["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    notes = [
        f"{args.model} at {args.resolution}x{args.resolution}: {gmacs_per_image:.3f} GMACs per image "
        "(FlopCounterMode, conv/linear only); GFLOP/s = 2 x MACs x batch / median time.",
        "ours/timm > 1 means convatlas is faster (throughput ratio, measured in alternation in the same run).",
        f"Same weights in both; max |logit difference| in fp32 = {diff:.2e}.",
        "% peak is relative to the matmul peak of the same dtype measured at the start of this run.",
        f"Load average at the end of the run: {meta['loadavg_end']}.",
    ]
    write_results(NAME, rows, meta, title=f"ConvNeXt ({args.model}) throughput: convatlas vs timm {timm.__version__}",
                  notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
