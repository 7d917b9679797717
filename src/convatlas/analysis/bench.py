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
from typing import Any, Callable, Iterator

import torch

__all__ = [
    "TimingStats",
    "machine_info",
    "cpu_model",
    "matmul_peak_gflops",
    "time_fn",
    "timing_stats",
    "achieved_gflops",
    "num_threads",
    "DTYPES",
    "parse_dtype",
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

    The figure is ``2 n^3 / median_seconds / 1e9``. On the 2-core development machine (idle) expect about
    177 GFLOP/s in fp32 and 411 in bf16 at n = 4096. Use a smaller ``n`` only for quick smoke runs.
    """
    if isinstance(dtype, str):
        dtype = parse_dtype(dtype)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    sec = time_fn(lambda: torch.mm(a, b, out=out), warmup=warmup, reps=reps, device=device)
    return 2.0 * n**3 / sec / 1e9
