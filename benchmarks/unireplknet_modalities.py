"""UniRepLKNet on audio / video / point clouds / time series: training form vs fused, and the adapter's share.

For each modality adapter (card: unireplknet) the same randomly initialised model (eval mode, non-trivial BN
statistics) is timed in its training form and after ``reparameterize()`` (interleaved calls so machine load hits both
alike). Also reported: the time of the modality-specific input stage alone (spectrogram transpose, clip reshape,
point projection encoder, time-series embedding) as a fraction of the fused forward, achieved GFLOP/s of the fused
form and the fraction of the fp32 matmul peak measured in the same run, and the fused-vs-training max relative error.

The default backbone is UniRepLKNet-A (dims 40..320) at reduced input sizes so a run stays short on a CPU;
``--full`` uses UniRepLKNet-S at the official sizes of the registered ``unireplknet_s_*`` models (batch 1).

    python -m benchmarks.unireplknet_modalities --threads 1          # A backbone
    python -m benchmarks.unireplknet_modalities --quick --threads 1  # fewer repetitions
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
    time_fn,
    write_results,
)
from convatlas.analysis.complexity import measure_complexity
from convatlas.models.classification.unireplknet import (
    UniRepLKNetAudio,
    UniRepLKNetPoint,
    UniRepLKNetTimeSeries,
    UniRepLKNetVideo,
    video_to_image,
)

_A = dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320))
_S = dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768))


def _cases(full: bool) -> list[tuple[str, Callable[[], nn.Module], Callable[[], tuple], Callable[[nn.Module, tuple], Any]]]:
    cfg = _S if full else _A
    img = 224 if full else 112
    frames = (16, 224) if full else (16, 56)
    pts = 4096 if full else 1024
    nodes = 350 if full else 8
    return [
        ("audio (B,T,F)", lambda: UniRepLKNetAudio(**cfg, num_classes=35),
         lambda: (torch.randn(1, 128, 128),), lambda m, x: UniRepLKNetAudio.to_image(x[0])),
        (f"video 16x{frames[1]}^2", lambda: UniRepLKNetVideo(**cfg, num_classes=400),
         lambda: (torch.randn(1, 3, frames[0], frames[1], frames[1]),), lambda m, x: video_to_image(x[0])),
        (f"point {pts} pts, 4 views @{img}", lambda: UniRepLKNetPoint(**cfg, num_classes=40, img_size=img),
         lambda: (torch.randn(1, pts, 3),), lambda m, x: m.encoder(x[0])),
        (f"time series {nodes} nodes x 11, 48->24", lambda: UniRepLKNetTimeSeries(
            **cfg, seq_len=48, horizon=24, embed_dim=768 if full else 96, node_channels=11,
            map_size=(192, 192) if full else (48, 96), calendar="h"),
         lambda: (torch.randn(1, 48, nodes * 11), (torch.rand(1, 48, 4) * torch.tensor([13.0, 32, 7, 24])).floor()),
         lambda m, x: m.embed(x[0].reshape(1, 48, nodes, 11).permute(0, 2, 1, 3).reshape(nodes, 48, 11), x[1])),
    ]


def _randomize_bn(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(getattr(m, "gamma", None), nn.Parameter) and m.gamma.ndim == 1:
                m.gamma.fill_(0.5)


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--full", action="store_true", help="UniRepLKNet-S at the official input sizes")
    args = parser.parse_args(argv)
    meta = setup(args, peak_dtypes=("fp32",))
    peak = meta["peak_gflops"]["fp32"]
    rows = []
    for name, build, make_inputs, stage in _cases(args.full):
        torch.manual_seed(0)
        train = build().eval()
        _randomize_bn(train)
        fused = copy.deepcopy(train).reparameterize()
        x = make_inputs()
        with torch.no_grad():
            y0, y1 = train(*x), fused(*x)
            err = ((y1 - y0).abs().max() / y0.abs().max()).item()
            t = interleaved_timing({"train": lambda: train(*x), "fused": lambda: fused(*x)}, args.warmup, args.reps)
            t_stage = time_fn(lambda: stage(fused, x), args.warmup, args.reps)
        with torch.device("meta"):
            meta_model = copy.deepcopy(fused).to("meta")
            gmacs = measure_complexity(meta_model, tuple(v.to("meta") for v in x)).gmacs
        g = achieved_gflops(gmacs, t["fused"].median)
        rows.append({
            "modality": name, "train_ms": t["train"].median * 1e3, "fused_ms": t["fused"].median * 1e3,
            "speedup": ratio(t["train"].median, t["fused"].median), "input_stage_ms": t_stage * 1e3,
            "input_stage_share": t_stage / t["fused"].median, "fused_gmacs": gmacs, "fused_gflops": g,
            "frac_peak_fp32": fraction_of_peak(g, peak), "max_rel_err": err,
        })
    write_results(
        "unireplknet_modalities", rows, meta,
        title=f"UniRepLKNet modality adapters ({'S, official sizes' if args.full else 'A backbone, reduced sizes'}; "
              "CPU fp32, batch 1, eval)",
        notes=[
            "speedup = training-form time / fused time (same weights, interleaved calls).",
            "input_stage = the modality-specific part alone (for the point model: the learned projection encoder "
            "incl. kNN EdgeConv, rasterisation and multi-view attention fusion); share = its time / fused forward.",
            "GFLOP/s = 2 x conv/linear/matmul MACs of the fused model / median time; fraction of the fp32 matmul peak "
            "measured in the same run.",
            "Timings on the shared 2-core development machine are inflated by contention (see load average).",
        ],
    )


if __name__ == "__main__":
    main()
