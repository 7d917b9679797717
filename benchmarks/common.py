"""Helpers every benchmark uses. Keep each benchmark script short by building on these five things:

- :func:`machine_info` -> dict (CPU, cores, torch, threads, load average, time). Store it with every result.
- :func:`matmul_peak_gflops` (dtype) -> GFLOP/s of a 4096^2 matmul measured NOW (use :func:`peaks` for fp32+bf16).
- :func:`time_fn` (fn, warmup, reps) -> median seconds; :func:`timing_stats` for min/max/quartiles;
  :func:`interleaved_timing` ({"ours": f, "ref": g}, warmup, reps) alternates calls so contention hits both alike.
- :func:`write_results` (name, rows, meta) -> writes ``benchmarks/results/<name>.json`` and ``.md``.
- :func:`base_parser` (description) -> argparse parser with ``--quick``, ``--threads``, ``--reps``, ``--warmup``,
  ``--no-peak``; :func:`setup` applies it and returns ``meta`` (machine info + peaks + args).

Typical script::

    from benchmarks.common import base_parser, setup, time_fn, write_results, ratio, achieved_gflops

    def main(argv=None):
        args = base_parser(__doc__).parse_args(argv)
        meta = setup(args)                        # threads, machine info, matmul peaks (same run)
        rows = []
        for n in (64, 256):
            ours = time_fn(lambda: fast(x), args.warmup, args.reps)
            ref = time_fn(lambda: naive(x), args.warmup, args.reps)
            rows.append({"n": n, "ours_ms": ours * 1e3, "ref_ms": ref * 1e3, "speedup": ratio(ref, ours)})
        write_results("my_bench", rows, meta)

    if __name__ == "__main__":
        main()

Timings on the shared 2-core development machine are inflated by contention; ``meta["machine"]["loadavg"]`` says
how busy it was (``write_results`` prints a warning line in the markdown when the 1-minute load exceeds the cores).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from convatlas.analysis.bench import (
    TimingStats,
    achieved_gflops,
    interleaved_timing,
    machine_info,
    matmul_peak_gflops,
    num_threads,
    parse_dtype,
    time_fn,
    timing_stats,
)

__all__ = [
    "RESULTS_DIR",
    "TimingStats",
    "achieved_gflops",
    "base_parser",
    "fraction_of_peak",
    "interleaved_timing",
    "machine_info",
    "markdown_table",
    "matmul_peak_gflops",
    "num_threads",
    "parse_dtype",
    "peaks",
    "ratio",
    "setup",
    "time_fn",
    "timing_stats",
    "write_results",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def peaks(dtypes: Iterable[str] = ("fp32", "bf16"), n: int = 4096, reps: int = 3) -> dict[str, float]:
    """Matmul peak GFLOP/s per dtype name, measured now (``{"fp32": ..., "bf16": ...}``)."""
    return {d: round(matmul_peak_gflops(parse_dtype(d), n=n, reps=reps), 1) for d in dtypes}


def ratio(a: float, b: float) -> float:
    """``a / b`` (nan if b is 0 or either is nan); e.g. ``ratio(ours_img_s, timm_img_s)``."""
    if b == 0 or a != a or b != b:
        return float("nan")
    return a / b


def fraction_of_peak(gflops: float, peak: float) -> float:
    """Achieved GFLOP/s as a fraction of the measured peak."""
    return ratio(gflops, peak)


def base_parser(description: str | None = None) -> argparse.ArgumentParser:
    """Parser with the options every benchmark shares: --quick, --threads, --warmup, --reps, --no-peak, --peak-n."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short smoke run (fewer cases and repetitions)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls before timing (default 3, quick 1)")
    p.add_argument("--reps", type=int, default=None, help="timed calls; the median is reported (default 10, quick 3)")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak measurement (fractions become nan)")
    p.add_argument("--peak-n", type=int, default=4096, help="matrix side for the peak matmul (default 4096)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory (default benchmarks/results)")
    return p


def setup(args: argparse.Namespace, peak_dtypes: Sequence[str] = ("fp32", "bf16")) -> dict[str, Any]:
    """Apply ``--threads``, fill ``--warmup``/``--reps`` defaults, measure peaks; return the ``meta`` dict."""
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"error: --threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.warmup is None:
        args.warmup = 1 if args.quick else 3
    if args.reps is None:
        args.reps = 3 if args.quick else 10
    meta: dict[str, Any] = {"machine": machine_info()}
    if args.no_peak:
        meta["peak_gflops"] = {d: float("nan") for d in peak_dtypes}
    else:
        meta["peak_gflops"] = peaks(peak_dtypes, n=args.peak_n)
    meta["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return meta


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    return str(v)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts -> a GitHub markdown table (columns default to the union of keys in first-seen order)."""
    if not rows:
        return "(no rows)\n"
    if columns is None:
        columns = []
        for r in rows:
            for k in r:
                if k not in columns:
                    columns.append(k)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def write_results(
    name: str,
    rows: Sequence[dict[str, Any]],
    meta: dict[str, Any],
    *,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    notes: Sequence[str] = (),
    out_dir: Path | str | None = None,
    echo: bool = True,
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` (meta + rows) and ``<name>.md`` (header, machine line, table, notes).

    ``out_dir`` defaults to ``meta["args"]["out"]`` if present, else ``benchmarks/results``. Returns both paths and
    prints the markdown when ``echo``. Files are written to a temporary name then renamed.
    """
    out = Path(out_dir or meta.get("args", {}).get("out") or RESULTS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    m = meta.get("machine", {})
    peak = meta.get("peak_gflops", {})
    md = [f"# {title or name}", ""]
    md.append(
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, torch {m.get('torch', '?')}, "
        f"{m.get('threads', '?')} threads, load average {m.get('loadavg')} at {m.get('time_utc', '?')} UTC."
    )
    if peak:
        md.append(
            "Matmul peak measured in this run: "
            + ", ".join(f"{k} {_fmt(v)} GFLOP/s" for k, v in peak.items())
            + f" ({meta.get('args', {}).get('peak_n', 4096)}^2)."
        )
    load = m.get("loadavg")
    if load and m.get("cores") and load[0] > 0.75 * m["cores"]:
        md.append(
            f"**Contended machine** (1-min load {load[0]} on {m['cores']} cores): absolute timings are inflated; "
            "ratios measured in the same run are more reliable."
        )
    args = meta.get("args", {})
    if args:
        md.append(f"Median of {args.get('reps')} timed runs after {args.get('warmup')} warm-up runs"
                  + (" (--quick)." if args.get("quick") else "."))
    md += ["", markdown_table(rows, columns)]
    md += [f"- {n}" for n in notes]
    text = "\n".join(md).rstrip() + "\n"
    payload = {"name": name, "title": title or name, "meta": meta, "rows": list(rows), "notes": list(notes)}
    jpath, mpath = out / f"{name}.json", out / f"{name}.md"
    for path, content in ((jpath, json.dumps(_json_safe(payload), indent=2) + "\n"), (mpath, text)):
        tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
        tmp.write_text(content, encoding="utf-8")
        os.replace(tmp, path)
    if echo:
        print(text)
        print(f"wrote {jpath} and {mpath}")
    return jpath, mpath
