"""Timing and machine-peak helpers shared by ``convatlas bench`` and ``benchmarks/``.

Everything here measures; nothing is asserted. Conventions:

- A timing is the **median** of ``reps`` calls after ``warmup`` un-timed calls (:func:`time_fn`).
- "Achieved GFLOP/s" = ``2 * MACs / seconds / 1e9`` (one MAC = two floating-point operations).
- The machine's peak is **measured in the same run** with a square matmul (:func:`matmul_peak_gflops`,
  4096 x 4096 by default), so a fraction of peak is meaningful even on a contended machine.
- :func:`machine_info` records CPU model, cores, torch version, threads and the load average, so a reader can tell
  whether the numbers were taken on a busy machine.

Example::

    from convatlas.analysis.bench import machine_info, matmul_peak_gflops, time_fn
    peak = matmul_peak_gflops(torch.float32)          # GFLOP/s
    sec = time_fn(lambda: model(x), warmup=3, reps=10)  # median seconds
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator

import torch

__all__ = [
    "TimingStats",
    "machine_info",
    "cpu_model",
    "matmul_peak_gflops",
    "time_fn",
    "timing_stats",
    "interleaved_timing",
    "achieved_gflops",
    "num_threads",
    "DTYPES",
    "parse_dtype",
    "prepare_module",
    "bench_model",
]

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp64": torch.float64,
    "float64": torch.float64,
}


def parse_dtype(name: str) -> torch.dtype:
    """``"fp32"``/``"bf16"``/``"fp16"``/``"fp64"`` (or the long names) -> torch dtype; ValueError otherwise."""
    try:
        return DTYPES[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected one of fp32, bf16, fp16, fp64") from None


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux) or ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Machine, software and load facts to store next to every timing.

    Returns a JSON-serialisable dict: ``cpu``, ``cores`` (logical CPUs usable by this process), ``torch``,
    ``threads`` (``torch.get_num_threads()``), ``interop_threads``, ``loadavg`` (1/5/15 min), ``python``,
    ``platform``, ``time_utc``, and ``cuda`` (device name or None).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - Windows
        load = None
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "loadavg": load,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Temporarily set ``torch.set_num_threads(n)`` (no-op for None)."""
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass(frozen=True)
class TimingStats:
    """Seconds per call over ``reps`` timed calls: median (the figure to report), min, max, quartiles."""

    median: float
    min: float
    max: float
    q1: float
    q3: float
    reps: int
    warmup: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timing_stats(
    fn: Callable[[], Any],
    warmup: int = 3,
    reps: int = 10,
    *,
    device: torch.device | str | None = None,
) -> TimingStats:
    """Call ``fn`` ``warmup`` times untimed, then ``reps`` times timed; return the distribution.

    ``device="cuda"`` synchronises around each call (CPU needs no synchronisation).
    """
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    if len(times) >= 2:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    else:
        q1 = q3 = times[0]
    return TimingStats(
        median=statistics.median(times), min=times[0], max=times[-1], q1=q1, q3=q3, reps=reps, warmup=warmup
    )


def interleaved_timing(
    fns: dict[str, Callable[[], Any]],
    warmup: int = 3,
    reps: int = 10,
    *,
    device: torch.device | str | None = None,
) -> dict[str, TimingStats]:
    """Time several functions in alternation (a, b, a, b, ...), so load changes on a shared machine hit all
    of them alike; returns one :class:`TimingStats` per name. Use it for "ours vs reference" ratios."""
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    out = {}
    for k, ts in times.items():
        ts.sort()
        q1, _, q3 = statistics.quantiles(ts, n=4, method="inclusive") if len(ts) >= 2 else (ts[0], 0, ts[0])
        out[k] = TimingStats(median=statistics.median(ts), min=ts[0], max=ts[-1], q1=q1, q3=q3, reps=reps,
                             warmup=warmup)
    return out


def time_fn(fn: Callable[[], Any], warmup: int = 3, reps: int = 10, **kwargs: Any) -> float:
    """Median seconds per call of ``fn`` after ``warmup`` untimed calls (see :func:`timing_stats`)."""
    return timing_stats(fn, warmup, reps, **kwargs).median


def achieved_gflops(gmacs: float, seconds: float) -> float:
    """GFLOP/s achieved by a workload of ``gmacs`` (1e9 multiply-accumulates) that took ``seconds``."""
    return 2.0 * gmacs / seconds if seconds > 0 else float("nan")


def matmul_peak_gflops(
    dtype: torch.dtype | str = torch.float32,
    n: int = 4096,
    *,
    warmup: int = 1,
    reps: int = 3,
    device: torch.device | str = "cpu",
) -> float:
    """This machine's attainable matmul throughput in GFLOP/s, measured now: ``(n, n) @ (n, n)`` in ``dtype``.

    The figure is ``2 n^3 / fastest_seconds / 1e9`` (the best of ``reps`` runs: a peak is the attainable rate,
    and the fastest run is the one least disturbed by other processes). On the 2-core development machine (idle) expect about
    177 GFLOP/s in fp32 and 411 in bf16 at n = 4096. Use a smaller ``n`` only for quick smoke runs.
    """
    if isinstance(dtype, str):
        dtype = parse_dtype(dtype)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    sec = timing_stats(lambda: torch.mm(a, b, out=out), warmup=warmup, reps=reps, device=device).min
    return 2.0 * n**3 / sec / 1e9


def _cast_inputs(inputs: tuple, dtype: torch.dtype, channels_last: bool) -> tuple:
    out = []
    for t in inputs:
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            t = t.to(dtype)
            if channels_last and t.dim() == 4:
                t = t.contiguous(memory_format=torch.channels_last)
            elif channels_last and t.dim() == 5:
                t = t.contiguous(memory_format=torch.channels_last_3d)
        out.append(t)
    return tuple(out)


def prepare_module(
    model: torch.nn.Module,
    inputs: tuple,
    *,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    compile: bool = False,
) -> tuple[Callable[[], Any], tuple]:
    """Put ``model`` in eval mode in ``dtype`` (and channels_last), optionally ``torch.compile`` it.

    Returns ``(call, inputs)`` where ``call()`` runs one inference-mode forward on the cast inputs. Floating
    inputs are cast to ``dtype`` (pure low-precision inference, as timm's ``--model-dtype``); integer inputs
    (token ids, indices) are left alone.
    """
    model = model.eval().to(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    inputs = _cast_inputs(inputs, dtype, channels_last)
    fn = torch.compile(model) if compile else model

    def call() -> Any:
        with torch.inference_mode():
            return fn(*inputs)

    return call, inputs


def bench_model(
    name: str,
    *,
    batch_sizes: Iterable[int] = (1,),
    dtypes: Iterable[str] = ("fp32",),
    compile: bool = False,
    channels_last: bool = False,
    warmup: int = 3,
    reps: int = 10,
    resolution: int | None = None,
    peak: bool = True,
    peak_n: int = 4096,
    on_case: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time registered model ``name`` (random init, eval mode) for every batch size x dtype.

    For each case: median latency after warm-up, throughput (samples/s), measured GMACs of the batch (meta
    device), achieved GFLOP/s = 2 * MACs / time, and its fraction of the matmul peak of that dtype measured in
    the same call (fp32 and bf16, ``peak_n``^2; skipped with ``peak=False``).

    Returns ``{"meta": {...machine, peaks...}, "rows": [...]}``.
    """
    from convatlas.analysis.complexity import measure_complexity
    from convatlas.registry import create_model, example_inputs, get_entry

    entry = get_entry(name)
    batch_sizes = list(batch_sizes)
    dtype_names = list(dtypes)
    for b in batch_sizes:
        if b < 1:
            raise ValueError(f"batch size must be >= 1, got {b}")
    dts = {d: parse_dtype(d) for d in dtype_names}
    if reps < 1 or warmup < 0:
        raise ValueError(f"need reps >= 1 and warmup >= 0, got reps={reps}, warmup={warmup}")
    if resolution is not None and resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")

    def make_inputs(b: int) -> tuple:
        if resolution is not None:
            if entry.example_inputs is not None:
                raise ValueError(f"{name}: --resolution does not apply to a model with custom example inputs")
            c = entry.input_size[0]
            nd = len(entry.input_size) - 1
            return (torch.randn(b, c, *([resolution] * nd)),)
        return example_inputs(entry, b, small=False)

    peaks: dict[str, float] = {}
    if peak:
        for d in dict.fromkeys(["fp32", "bf16", *dtype_names]):
            if on_case:
                on_case(f"matmul peak {d}")
            peaks[d] = matmul_peak_gflops(parse_dtype(d), n=peak_n)
    rows = []
    for b in batch_sizes:
        base_inputs = make_inputs(b)
        with torch.device("meta"):
            meta_model = entry.builder()
        meta_inputs = tuple(t.to("meta") if isinstance(t, torch.Tensor) else t for t in base_inputs)
        gmacs = measure_complexity(meta_model, meta_inputs).gmacs
        del meta_model
        for dn, dt in dts.items():
            if on_case:
                on_case(f"batch {b} {dn}")
            torch.manual_seed(0)
            model = create_model(name)
            call, _ = prepare_module(model, base_inputs, dtype=dt, channels_last=channels_last, compile=compile)
            st = timing_stats(call, warmup=warmup, reps=reps)
            gf = achieved_gflops(gmacs, st.median)
            pk = peaks.get(dn, float("nan"))
            rows.append({
                "model": name,
                "batch": b,
                "dtype": dn,
                "compile": compile,
                "channels_last": channels_last,
                "input": list(base_inputs[0].shape[1:]) if isinstance(base_inputs[0], torch.Tensor) else None,
                "latency_ms": st.median * 1e3,
                "latency_q1_ms": st.q1 * 1e3,
                "latency_q3_ms": st.q3 * 1e3,
                "throughput": b / st.median,
                "gmacs": gmacs,
                "gflops_s": gf,
                "peak_gflops_s": pk,
                "frac_peak": gf / pk if pk == pk and pk > 0 else float("nan"),
            })
            del model, call
    meta = {"machine": machine_info(), "peak_gflops": peaks, "warmup": warmup, "reps": reps}
    return {"meta": meta, "rows": rows}
