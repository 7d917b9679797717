"""SGConv GConv layer (card sgconv) on CPU: ours vs a naive transcription of the official forward, at LRA sizes.

    python -m benchmarks.sgconv_layer [--quick] [--threads N]

For each LRA configuration (bidirectional, GLU, cat_randn, the task's d_model / kernel_dim / length; batch kept
small) one GConv layer is timed in inference (no_grad) and training (forward + backward):

- ours: :class:`convatlas.layers.sgconv.GConv` (kernel assembled from the sub-kernels, FFT convolution through
  :func:`convatlas.ops.fft_conv.fft_conv` with a 5-smooth FFT size, fused skip term);
- naive: the official ``gconv_standalone``/S4-framework forward written out in plain PyTorch (same kernel
  assembly, ``rfft(u, 2L) · rfft(k, 2L)`` einsum over a channel axis, ``irfft``, ``u·D``, GELU, einsum output
  linear + GLU). Both compute the same function (checked before timing, float32 tolerance).

Reported: median times, speed-up, achieved GFLOP/s of ours (flop model: three real FFTs of size n at
2.5·n·log2 n per sequence-channel, the spectral product, and the 2·H·2H output linear per position) and its
fraction of the fp32 matmul peak measured in the same run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from benchmarks.common import achieved_gflops, base_parser, fraction_of_peak, ratio, setup, time_fn, write_results
from convatlas.layers.sgconv import GConv

CASES = [  # name, d_model, length, kernel_dim, batch, extra GConv kwargs (LRA configs)
    ("listops", 128, 2048, 1, 4, {}),
    ("pathfinder", 256, 1024, 32, 8, {}),
    ("text", 256, 4096, 2, 2, {}),
    ("pathx", 256, 16384, 64, 1, dict(mode="cat_cos", decay_min=1, decay_max=3, init_scale=1)),
]


def naive_forward(layer: GConv, u: torch.Tensor) -> torch.Tensor:
    """The official forward, transcribed: (B, H, L) -> (B, H, L)."""
    seq = u.shape[-1]
    s = layer.num_scales
    pieces = [F.interpolate(layer.kernel_list[i], scale_factor=2 ** (max(0, i - 1) + layer.init_scale), mode="linear")
              * layer.multiplier ** (s - i - 1) for i in range(s)]
    k = torch.cat(pieces, -1)
    k = k[..., :seq] if k.shape[-1] > seq else F.pad(k, (0, seq - k.shape[-1]))
    k = k / layer.kernel_norm
    k = F.pad(k[0:1], (0, seq)) + F.pad(k[1:2].flip(-1), (seq, 0))
    y_f = torch.einsum("bhl,chl->bchl", torch.fft.rfft(u, n=2 * seq), torch.fft.rfft(k, n=2 * seq))
    y = torch.fft.irfft(y_f, n=2 * seq)[..., :seq]
    y = y + torch.einsum("bhl,ch->bchl", u, layer.D)
    y = F.gelu(y.flatten(1, 2))
    lin = layer.output_linear[0]
    y = torch.einsum("bul,vu->bvl", y, lin.weight) + lin.bias[:, None]
    return F.glu(y, dim=1)


def flops(b: int, h: int, seq: int) -> float:
    n = 2 * seq
    fft = 2.5 * n * math.log2(n)
    return b * h * (3 * fft + 6 * (n // 2 + 1)) + 2 * b * seq * h * 2 * h


def main(argv=None) -> None:
    args = base_parser(__doc__).parse_args(argv)
    meta = setup(args)
    peak = meta.get("peak_gflops", {}).get("fp32", float("nan"))
    rows = []
    torch.manual_seed(0)
    for name, h, seq, kd, b, extra in CASES[:2] if args.quick else CASES:
        layer = GConv(h, seq, kernel_dim=kd, bidirectional=True, **extra)
        u = torch.randn(b, h, seq)
        with torch.no_grad():
            layer(u)  # freezes kernel_norm (first call)
            ref, ours = naive_forward(layer, u), layer(u)[0]
        err = (ref - ours).abs().max().item() / ref.abs().max().item()
        assert err < 1e-4, f"{name}: ours != official transcription (rel err {err:.1e})"
        with torch.no_grad():
            t_ours = time_fn(lambda: layer(u), args.warmup, args.reps)
            t_naive = time_fn(lambda: naive_forward(layer, u), args.warmup, args.reps)
        ut = u.clone().requires_grad_(True)

        def train_ours() -> None:
            layer(ut)[0].sum().backward()

        def train_naive() -> None:
            naive_forward(layer, ut).sum().backward()

        tt_ours = time_fn(train_ours, args.warmup, args.reps)
        tt_naive = time_fn(train_naive, args.warmup, args.reps)
        gf = achieved_gflops(flops(b, h, seq) / 2e9, t_ours)  # achieved_gflops takes GMACs
        row = {
            "task": name, "B": b, "H": h, "L": seq, "kernel_dim": kd, "scales": layer.num_scales,
            "kernel_params": sum(p.numel() for p in layer.kernel_list), "rel_err_vs_naive": err,
            "ours_ms": t_ours * 1e3, "naive_ms": t_naive * 1e3, "speedup": ratio(t_naive, t_ours),
            "ours_train_ms": tt_ours * 1e3, "naive_train_ms": tt_naive * 1e3, "train_speedup": ratio(tt_naive, tt_ours),
            "ours_gflops": gf, "frac_fp32_peak": fraction_of_peak(gf, peak),
        }
        print(row, flush=True)
        rows.append(row)
    meta["notes"] = ("naive = the official GConv forward transcribed in plain PyTorch (FFT size 2L, einsum over a "
                     "channel axis); ours = GConv (fft_conv, 5-smooth FFT size, fused skip). Inference: no_grad; "
                     "train: forward + backward of sum(). FLOP model: 3 real FFTs (2.5 n log2 n) + spectral "
                     "product + output linear.")
    write_results("sgconv_layer", rows, meta)


if __name__ == "__main__":
    main()
