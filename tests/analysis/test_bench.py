"""analysis.bench and benchmarks/common.py: fields and arithmetic of timings (never wall-clock thresholds)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from convatlas import registry
from convatlas.analysis import bench
from convatlas.registry import ModelEntry


def _tiny(**kw) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 5))


@pytest.fixture
def tiny_model(monkeypatch):
    registry._discover()
    monkeypatch.setitem(registry._REGISTRY, "zz_bench_tiny", ModelEntry(
        name="zz_bench_tiny", builder=_tiny, paper="convnext", input_size=(3, 8, 8), num_classes=5, family="fake"))
    return "zz_bench_tiny"


def test_timing_stats_counts_calls_and_orders():
    calls = []
    st = bench.timing_stats(lambda: calls.append(1), warmup=2, reps=5)
    assert len(calls) == 7 and st.reps == 5 and st.warmup == 2
    assert st.min <= st.q1 <= st.median <= st.q3 <= st.max
    assert bench.time_fn(lambda: None, warmup=0, reps=1) >= 0
    with pytest.raises(ValueError):
        bench.timing_stats(lambda: None, reps=0)


def test_achieved_gflops_and_dtypes():
    assert bench.achieved_gflops(1.0, 0.5) == 4.0  # 1 GMAC = 2 GFLOP in 0.5 s
    assert math.isnan(bench.achieved_gflops(1.0, 0.0))
    assert bench.parse_dtype("BF16") is torch.bfloat16 and bench.parse_dtype("fp32") is torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        bench.parse_dtype("int3")


def test_machine_info_fields():
    info = bench.machine_info()
    for key in ("cpu", "cores", "torch", "threads", "loadavg", "time_utc"):
        assert key in info
    assert info["threads"] == torch.get_num_threads() and len(info["loadavg"]) == 3
    json.dumps(info)


def test_matmul_peak_small():
    assert bench.matmul_peak_gflops(torch.float32, n=64, reps=1) > 0


def test_num_threads_restores():
    before = torch.get_num_threads()
    with bench.num_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_bench_model_fields(tiny_model):
    res = bench.bench_model(tiny_model, batch_sizes=(1, 2), dtypes=("fp32", "bf16"), warmup=0, reps=1,
                            peak_n=64)
    rows = res["rows"]
    assert [(r["batch"], r["dtype"]) for r in rows] == [(1, "fp32"), (1, "bf16"), (2, "fp32"), (2, "bf16")]
    assert set(res["meta"]["peak_gflops"]) == {"fp32", "bf16"}
    for r in rows:
        assert r["gmacs"] == pytest.approx(r["batch"] * 6932e-9)  # conv 6912 + linear 20 MACs per image
        assert r["throughput"] == pytest.approx(r["batch"] / (r["latency_ms"] / 1e3))
        assert r["gflops_s"] == pytest.approx(2 * r["gmacs"] / (r["latency_ms"] / 1e3))
        assert r["frac_peak"] == pytest.approx(r["gflops_s"] / res["meta"]["peak_gflops"][r["dtype"]])
        assert r["input"] == [3, 8, 8]
    assert "loadavg" in res["meta"]["machine"]


def test_bench_model_channels_last_no_peak(tiny_model):
    res = bench.bench_model(tiny_model, warmup=0, reps=1, peak=False, channels_last=True, resolution=12)
    (r,) = res["rows"]
    assert r["channels_last"] and r["input"] == [3, 12, 12] and math.isnan(r["frac_peak"])
    with pytest.raises(ValueError):
        bench.bench_model(tiny_model, batch_sizes=(0,), peak=False)


def test_common_write_results(tmp_path):
    common = pytest.importorskip("benchmarks.common", reason="benchmarks/ is not on the path")
    args = common.base_parser("x").parse_args(["--quick", "--no-peak", "--out", str(tmp_path)])
    meta = common.setup(args)
    assert args.reps == 3 and args.warmup == 1 and math.isnan(meta["peak_gflops"]["fp32"])
    rows = [{"case": "a", "ours_ms": 1.5, "ref_ms": 3.0, "speedup": common.ratio(3.0, 1.5)}]
    jpath, mpath = common.write_results("unit", rows, meta, notes=["a note"], echo=False)
    data = json.loads(jpath.read_text())
    assert data["rows"][0]["speedup"] == 2.0 and data["meta"]["peak_gflops"]["fp32"] is None
    md = mpath.read_text()
    assert "| case | ours_ms | ref_ms | speedup |" in md and "| a | 1.50 | 3.00 | 2.00 |" in md
    assert "load average" in md and "- a note" in md
    assert math.isnan(common.ratio(1.0, 0.0))
