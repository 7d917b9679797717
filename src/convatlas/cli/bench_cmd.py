"""``convatlas bench MODEL``: latency, throughput, achieved GFLOP/s and fraction of the measured matmul peak."""

from __future__ import annotations

import argparse
import json
import sys

from convatlas.cli.fmt import fmt_num, table

__all__ = ["add_bench_parser", "cmd_bench"]


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def _dtype_list(text: str) -> list[str]:
    from convatlas.analysis.bench import parse_dtype

    vals = [v.strip().lower() for v in text.split(",") if v.strip()]
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one dtype")
    for v in vals:
        try:
            parse_dtype(v)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return vals


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time a model: latency, img/s, GFLOP/s, fraction of matmul peak",
        description="Time MODEL (random weights, eval mode, inference_mode) for each batch size x dtype. Reports "
        "the median latency over --reps runs after --warmup runs, throughput, achieved GFLOP/s (2 x MACs / "
        "time, MACs counted on the meta device) and the fraction of this machine's matmul peak, which is "
        "measured in the same run (fp32 and bf16 matmul of --peak-n squared matrices). bf16/fp16 cast the "
        "model and inputs (pure low-precision inference). Timings on a busy machine are inflated: the load "
        "average is printed with the results.",
    )
    p.add_argument("model", help="registered model name (see `convatlas list`)")
    p.add_argument("--batch", type=_int_list, default=[1], metavar="B[,B...]", help="batch sizes (default 1)")
    p.add_argument("--dtype", type=_dtype_list, default=["fp32"], metavar="D[,D...]",
                   help="fp32, bf16, fp16 or fp64, comma-separated (default fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (warm-up includes compilation)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (4D/5D inputs)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing (default 3)")
    p.add_argument("--reps", type=int, default=10, help="timed runs; the median is reported (default 10)")
    p.add_argument("--resolution", type=int, default=None, help="image side instead of the model's input size")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak measurement")
    p.add_argument("--peak-n", type=int, default=4096, help="matrix side of the peak matmul (default 4096)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from convatlas.analysis.bench import bench_model
    from convatlas.registry import get_entry

    get_entry(args.model)  # unknown name -> one-line error with suggestions, before any timing
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.peak_n < 1:
        raise ValueError(f"--peak-n must be >= 1, got {args.peak_n}")
    from tqdm.auto import tqdm

    n_cases = len(args.batch) * len(args.dtype) + (0 if args.no_peak else len(set(["fp32", "bf16", *args.dtype])))
    with tqdm(total=n_cases, desc="bench", unit="case", leave=False, disable=None, file=sys.stderr) as bar:
        def tick(label: str) -> None:
            bar.set_postfix_str(label, refresh=False)
            bar.update(1)

        res = bench_model(
            args.model, batch_sizes=args.batch, dtypes=args.dtype, compile=args.compile,
            channels_last=args.channels_last, warmup=args.warmup, reps=args.reps, resolution=args.resolution,
            peak=not args.no_peak, peak_n=args.peak_n, on_case=tick,
        )
    if args.json:
        sys.stdout.write(json.dumps(res, indent=2, default=str) + "\n")
        return 0
    m = res["meta"]["machine"]
    rows = [[r["batch"], r["dtype"], "yes" if r["compile"] else "no", "yes" if r["channels_last"] else "no",
             fmt_num(r["latency_ms"]), fmt_num(r["throughput"]), fmt_num(r["gmacs"]), fmt_num(r["gflops_s"]),
             "-" if r["frac_peak"] != r["frac_peak"] else f"{100 * r['frac_peak']:.1f}%"] for r in res["rows"]]
    out = [f"{args.model}: input {res['rows'][0]['input']}, median of {args.reps} runs after {args.warmup} warm-up",
           table(rows, ["batch", "dtype", "compiled", "channels_last", "latency ms", "samples/s", "GMACs",
                        "GFLOP/s", "of peak"], right=(0, 4, 5, 6, 7, 8))]
    peaks = res["meta"]["peak_gflops"]
    if peaks:
        out.append("matmul peak (this run, %d^2): " % args.peak_n
                   + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()))
    out.append(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['threads']} threads, "
               f"load average {m['loadavg']}")
    if m["loadavg"] and m["loadavg"][0] > 0.75 * m["cores"]:
        out.append("warning: the machine is busy; absolute timings are inflated")
    sys.stdout.write("\n".join(out) + "\n")
    return 0
