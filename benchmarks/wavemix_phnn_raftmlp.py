"""WaveMix, PHC (PHNN) and RaftMLP building blocks vs the reference formulations (cards: wavemix, phnn, raftmlp).

Each row times ours against a reference measured in the same run (interleaved calls), forward, eval, fp32:

- WaveMix: the Haar DWT as four strided adds (``convatlas.ops.wavelets``) vs the official ``DWTForward`` form (two
  separable grouped-conv filter-bank passes, pytorch_wavelets' ``afb1d``, reproduced here with F.conv2d); and the
  whole CIFAR-10 WaveMix (144/7, level 1) with each DWT implementation.
- PHNN: ``PHConv`` (weight = sum_i kron(A_i, F_i) by one einsum, then conv) vs a loop of ``torch.kron`` per
  component + conv (the official ``kronecker_product2`` style), and vs ``nn.Conv2d`` of the same shape (the cost
  of the weight materialisation);
  and the PHC SEDnet (n = 4, 8 channels) on a 6-second clip.
- RaftMLP: the raft token-mixing block (one permute + Linear) vs an explicit per-raft gather reference, and the
  whole RaftMLP-S at 224.

Run ``python -m benchmarks.wavemix_phnn_raftmlp [--quick]``; writes benchmarks/results/wavemix_phnn_raftmlp.{json,md}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import (
    achieved_gflops, base_parser, fraction_of_peak, interleaved_timing, ratio, setup, write_results,
)
from convatlas import create_model
from convatlas.analysis.complexity import measure_complexity
from convatlas.layers.phc_conv import PHConv
from convatlas.models.classification import wavemix as wavemix_mod
from convatlas.models.classification.raftmlp import RaftTokenMixing
from convatlas.ops.wavelets import haar_dwt2d_multilevel

_S = 2**-0.5


def filterbank_dwt(x: Tensor, levels: int = 1) -> tuple[Tensor, list[Tensor]]:
    """Official-style Haar DWT: row then column two-tap filter banks as grouped strided convs (afb1d)."""
    c = x.shape[1]
    lo = torch.tensor([_S, _S], dtype=x.dtype)
    hi = torch.tensor([_S, -_S], dtype=x.dtype)
    row = torch.stack([lo, hi]).view(2, 1, 1, 2).repeat(c, 1, 1, 1)
    col = torch.stack([lo, hi]).view(2, 1, 2, 1)
    dets = []
    for _ in range(levels):
        y = F.conv2d(x, row, stride=(1, 2), groups=c)  # (B, 2C, H, W/2): (L, H) per channel
        y = F.conv2d(y, col.repeat(2 * c, 1, 1, 1), stride=(2, 1), groups=2 * c)  # (B, 4C, H/2, W/2)
        y = y.view(x.shape[0], c, 4, *y.shape[-2:])  # per channel: LL, LH (row lo, col hi), HL, HH
        x = y[:, :, 0]
        dets.append(y[:, :, [1, 2, 3]])
    return x, dets


def kron_loop_weight(a: Tensor, f: Tensor) -> Tensor:
    """sum_i torch.kron(A_i, F_i) over the channel axes, one torch.kron per component (official
    ``kronecker_product2`` style loop); f (n, C_out/n, C_in/n, k, k)."""
    n, o, i, k, _ = f.shape
    w = torch.zeros(n * o, n * i, k, k)
    for j in range(n):
        w = w + torch.kron(a[j][:, :, None, None], f[j])
    return w


def raft_reference(blk: RaftTokenMixing, x: Tensor) -> Tensor:
    """Vertical raft mixing by explicit gathers: vector (i*h + y) of group o = channel i*C/r + o along H."""
    b, h, w, c = x.shape
    r, o = blk.raft, c // blk.raft
    idx = torch.tensor([i * o + g for g in range(o) for i in range(r)])
    y = x.index_select(3, idx).view(b, h, w, o, r).permute(0, 3, 2, 4, 1).reshape(b, o * w, r * h)
    y = blk.fn(y).view(b, o, w, r, h).permute(0, 4, 2, 1, 3).reshape(b, h, w, o * r)
    out = torch.empty_like(y)
    out[..., idx] = y
    return out


@torch.no_grad()
def wavemix_rows(args, peak: float) -> list[dict]:
    rows = []
    for b, c, s in ([(8, 48, 64)] if args.quick else [(8, 48, 64), (16, 64, 128)]):
        x = torch.randn(b, c, s, s)
        ref_ll, _ = filterbank_dwt(x)
        assert torch.allclose(haar_dwt2d_multilevel(x, 1)[0], ref_ll, atol=1e-5)
        t = interleaved_timing({"ours": lambda: haar_dwt2d_multilevel(x, 3), "ref": lambda: filterbank_dwt(x, 3)},
                               args.warmup, args.reps)
        rows.append({"family": "wavemix", "case": f"Haar DWT 3 levels b{b} C{c} {s}px",
                     "ours_ms": t["ours"].median * 1e3,
                     "ref_ms": t["ref"].median * 1e3, "speedup": ratio(t["ref"].median, t["ours"].median),
                     "reference": "official filter-bank DWT (grouped convs)"})
    model = create_model("wavemix_144_7_cifar10").eval()
    x = torch.randn(32, 3, 32, 32)
    gmacs = measure_complexity(model, (x,)).gmacs
    orig = wavemix_mod.haar_dwt2d_multilevel
    y_ours = model(x)

    def ref_forward() -> Tensor:
        wavemix_mod.haar_dwt2d_multilevel = filterbank_dwt
        try:
            return model(x)
        finally:
            wavemix_mod.haar_dwt2d_multilevel = orig

    assert torch.allclose(ref_forward(), y_ours, atol=1e-4)
    t = interleaved_timing({"ours": lambda: model(x), "ref": ref_forward}, args.warmup, args.reps)
    g = achieved_gflops(gmacs, t["ours"].median)
    rows.append({"family": "wavemix", "case": "wavemix_144_7_cifar10 b32 32px", "ours_ms": t["ours"].median * 1e3,
                 "ref_ms": t["ref"].median * 1e3, "speedup": ratio(t["ref"].median, t["ours"].median),
                 "img_s": 32 / t["ours"].median, "gflops": g, "frac_peak": fraction_of_peak(g, peak),
                 "reference": "same model, official filter-bank DWT"})
    return rows


@torch.no_grad()
def phc_rows(args, peak: float) -> list[dict]:
    rows = []
    for n, c, s in ([(4, 64, 32)] if args.quick else [(4, 64, 32), (4, 256, 16), (8, 256, 16)]):
        b = 16
        phc = PHConv(n, c, c, 3, padding=1, bias=False).eval()
        conv = nn.Conv2d(c, c, 3, padding=1, bias=False).eval()
        x = torch.randn(b, c, s, s)
        f5 = phc.F.reshape(phc.filter_shape)
        assert torch.allclose(kron_loop_weight(phc.A, f5), phc.weight, atol=1e-5)
        t = interleaved_timing({
            "ours": lambda: phc(x), "loop": lambda: F.conv2d(x, kron_loop_weight(phc.A, f5), padding=1),
            "conv": lambda: conv(x)}, args.warmup, args.reps)
        gmacs = b * c * c * 9 * s * s / 1e9
        g = achieved_gflops(gmacs, t["ours"].median)
        rows.append({"family": "phnn", "case": f"PHConv n={n} C={c} {s}px b{b}", "ours_ms": t["ours"].median * 1e3,
                     "ref_ms": t["loop"].median * 1e3, "speedup": ratio(t["loop"].median, t["ours"].median),
                     "conv_ms": t["conv"].median * 1e3, "vs_conv": ratio(t["conv"].median, t["ours"].median),
                     "gflops": g, "frac_peak": fraction_of_peak(g, peak),
                     "reference": "torch.kron loop + conv (vs_conv: nn.Conv2d time / ours)"})
    model = create_model("phc_sednet_n4_8ch").eval()
    x = torch.randn(1, 8, 256, 480)  # 6 s clip -> 60 label frames
    gmacs = measure_complexity(model, (x,)).gmacs
    t = interleaved_timing({"ours": lambda: model(x)}, args.warmup, args.reps)
    g = achieved_gflops(gmacs, t["ours"].median)
    rows.append({"family": "phnn", "case": "phc_sednet_n4_8ch 6 s clip (8x256x480)", "ours_ms": t["ours"].median * 1e3,
                 "gflops": g, "frac_peak": fraction_of_peak(g, peak), "reference": "-"})
    return rows


@torch.no_grad()
def raft_rows(args, peak: float) -> list[dict]:
    rows = []
    blk = RaftTokenMixing(64, 2, (56, 56), "h").eval()
    x = torch.randn(8, 56, 56, 64)
    assert torch.allclose(blk.mix(x), raft_reference(blk, x), atol=1e-5)
    t = interleaved_timing({"ours": lambda: blk.mix(x), "ref": lambda: raft_reference(blk, x)}, args.warmup, args.reps)
    gmacs = 8 * 32 * 56 * 2 * (112 * 224) / 1e9
    g = achieved_gflops(gmacs, t["ours"].median)
    rows.append({"family": "raftmlp", "case": "vertical raft mixing C64 r2 56x56 b8", "ours_ms": t["ours"].median * 1e3,
                 "ref_ms": t["ref"].median * 1e3, "speedup": ratio(t["ref"].median, t["ours"].median), "gflops": g,
                 "frac_peak": fraction_of_peak(g, peak), "reference": "explicit per-raft gather"})
    model = create_model("raftmlp_s").eval()
    b = 2 if args.quick else 8
    x = torch.randn(b, 3, 224, 224)
    gmacs = measure_complexity(model, (x,)).gmacs
    t = interleaved_timing({"ours": lambda: model(x)}, args.warmup, args.reps)
    g = achieved_gflops(gmacs, t["ours"].median)
    rows.append({"family": "raftmlp", "case": f"raftmlp_s b{b} 224px", "ours_ms": t["ours"].median * 1e3,
                 "img_s": b / t["ours"].median, "gflops": g, "frac_peak": fraction_of_peak(g, peak), "reference": "-"})
    return rows


def main(argv: list[str] | None = None) -> None:
    args = base_parser(__doc__).parse_args(argv)
    meta = setup(args)
    peak = meta["peak_gflops"]["fp32"]
    rows = wavemix_rows(args, peak) + phc_rows(args, peak) + raft_rows(args, peak)
    write_results("wavemix_phnn_raftmlp", rows, meta, columns=[
        "family", "case", "ours_ms", "ref_ms", "speedup", "conv_ms", "vs_conv", "img_s", "gflops", "frac_peak",
        "reference"], title="WaveMix / PHNN / RaftMLP blocks vs reference formulations (fp32, eval)",
        notes=["speedup = reference time / ours (same run, interleaved); frac_peak = achieved GFLOP/s over the fp32 "
               "4096^2 matmul peak measured in the same run; DWT and gathers have no MACs."])


if __name__ == "__main__":
    main()
