"""One table for all classification backbones: params, MACs, batch-1 latency, batch-16 throughput, achieved
GFLOP/s and fraction of the measured matmul peak, side by side with timm where timm has the model.

    /work/refvenv/bin/python -m benchmarks.backbones_all            # every family: smallest + one mid-size variant
    /work/refvenv/bin/python -m benchmarks.backbones_all --quick    # smallest variant per family, batch 4, few reps
    .venv/bin/python -m benchmarks.backbones_all --models convnext_atto,lsnet_t --batch 8

Every registered classification family is covered (convnext, convnext_isotropic, inceptionnext, metaformer with
its identity / random / pooling / sepconv / attention mixers, hornet, unireplknet, lsnet, deepmad, tvconv nets,
fdconv nets, affnet, wavemix, raftmlp, phnn), each at its registered input size (``Reported.resolution`` else
``input_size``). Families with ``reparameterize()`` (UniRepLKNet, LSNet, TVConv nets) get two rows: the training
form and the fused deploy form, with the fused/train speed-up and their max logit difference.

Where the registry entry names a timm reference (``reference="timm:<name>"``) and timm is importable, timm's model
gets our weights (strict ``load_state_dict``; else its own init, flagged) and both are timed in alternation (ours,
timm, ours, ...) so machine load hits both alike. Without timm (e.g. the project venv) the timm columns are empty.

Figures: fp32, NCHW input, eager, ``torch.inference_mode``; medians of repeated runs. GMACs per image from
``convatlas.analysis.complexity`` (meta device; fused forms measured on the fused module); GFLOP/s = 2 x GMACs x
batch / median time; '% peak' relative to a 4096^2 fp32 matmul timed at the start of the same run.
Writes benchmarks/results/backbones_all.{json,md}. ~3-5 min on an idle 2-core machine (default arguments).
"""

from __future__ import annotations

import copy
import os
import sys
import time
from typing import Any

import torch
from torch import nn

from benchmarks.common import achieved_gflops, base_parser, interleaved_timing, ratio, setup, write_results

NAME = "backbones_all"

#: (family, model) in table order: the smallest real variant of each family, then a mid-size one (~tiny).
FULL: tuple[tuple[str, str], ...] = (
    ("convnext", "convnext_atto"), ("convnext", "convnext_tiny"),
    ("convnext_isotropic", "convnext_isotropic_small"),
    ("inceptionnext", "inception_next_atto"), ("inceptionnext", "inception_next_tiny"),
    ("metaformer/identity", "identityformer_s12"), ("metaformer/random", "randformer_s12"),
    ("metaformer/pool", "poolformerv2_s12"), ("metaformer/conv", "convformer_s18"),
    ("metaformer/caformer", "caformer_s18"),
    ("hornet", "hornet_tiny_7x7"), ("hornet", "hornet_tiny_gf"),
    ("unireplknet", "unireplknet_a"), ("unireplknet", "unireplknet_t"),
    ("lsnet", "lsnet_t"), ("lsnet", "lsnet_b"),
    ("deepmad", "deepmad_r18"), ("deepmad", "deepmad_29m_224"),
    ("tvconv", "tvconv_shufflenetv2_x0_5"), ("tvconv", "tvconv_mobilenetv2_x0_1"),
    ("fdconv", "fdconv_resnet50_host"), ("fdconv", "fdconv_resnet50"),
    ("affnet", "affnet_et"), ("affnet", "affnet"),
    ("wavemix", "wavemixlite_8_10_mnist"), ("wavemix", "wavemix_144_7_cifar10"),
    ("raftmlp", "raftmlp_s"), ("raftmlp", "raftmlp_m"),
    ("phnn", "phc_resnet18_large_n4"), ("phnn", "phc_resnet50_large_n4"),
)
QUICK: tuple[tuple[str, str], ...] = tuple(
    fm for i, fm in enumerate(FULL) if i == 0 or FULL[i - 1][0].split("/")[0] != fm[0].split("/")[0]
    or fm[0].startswith("metaformer")
)


def _timm():
    try:
        import timm
    except ImportError:
        return None
    return timm


def _randomise_scales(model: nn.Module) -> None:
    """Layer scales initialised at 1e-6 would hide block differences in the equality check: make them O(1)."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(("gamma", "gamma1", "gamma2", "layer_scale.weight")):
                p.uniform_(0.2, 1.0)


def _fused(model: nn.Module) -> nn.Module | None:
    """Deploy form via ``reparameterize()`` (in place or returned), or None when the family has none."""
    if not callable(getattr(model, "reparameterize", None)):
        return None
    fused = copy.deepcopy(model)
    out = fused.reparameterize()
    return (out if isinstance(out, nn.Module) else fused).eval()


def _time(fns: dict[str, Any], warmup: int, reps: int) -> dict[str, float]:
    st = interleaved_timing(fns, warmup, reps)
    return {k: v.median for k, v in st.items()}


def _bench_one(family: str, name: str, args, peak: float, timm) -> list[dict[str, Any]]:
    import convatlas
    from convatlas.analysis.complexity import measure_complexity, measure_entry
    from convatlas.registry import get_entry

    entry = get_entry(name)
    res = entry.reported.resolution if entry.reported is not None and entry.reported.resolution else None
    shape = tuple(entry.input_size) if res is None else (entry.input_size[0], *([res] * (len(entry.input_size) - 1)))
    c = measure_entry(name, shape)
    torch.manual_seed(0)
    ours = convatlas.create_model(name).eval()
    _randomise_scales(ours)
    x1, xb = torch.randn(1, *shape), torch.randn(args.batch, *shape)
    forms: dict[str, nn.Module] = {"ours": ours}
    fused = _fused(ours)
    if fused is not None:
        forms["fused"] = fused
    ref, ref_note, tname, ref_note_same = None, "", None, False
    if entry.reference and entry.reference.startswith("timm:"):
        tname = entry.reference.split(":", 1)[1]
        if timm is None:
            ref_note = "timm not installed"
        else:
            ref = timm.create_model(tname, pretrained=False).eval()
            try:
                ref.load_state_dict(ours.state_dict(), strict=True)
                ref_note = f"timm {tname}, same weights"
            except RuntimeError:
                ref_note = f"timm {tname}, own init (state dicts differ)"
            else:
                ref_note_same = True
            forms["timm"] = ref
    x2 = torch.randn(2, *shape)
    with torch.inference_mode():
        y = ours(x2)
        diffs = {k: (m(x2) - y).abs().max().item() for k, m in forms.items() if k != "ours"}
    if "timm" in diffs and not ref_note_same:
        diffs["timm"] = float("nan")
    calls1 = {k: (lambda m=m: m(x1)) for k, m in forms.items()}
    callsb = {k: (lambda m=m: m(xb)) for k, m in forms.items()}

    def wrap(fs):
        def mk(f):
            def g():
                with torch.inference_mode():
                    f()
            return g
        return {k: mk(f) for k, f in fs.items()}

    print(f"timing {name} ({', '.join(forms)}) at {'x'.join(map(str, shape))} ...", flush=True)
    t1 = _time(wrap(calls1), args.warmup, args.reps)
    tb = _time(wrap(callsb), max(1, args.warmup // 2), max(3, args.reps // 2))
    rows = []
    for form in [k for k in forms if k != "timm"]:
        gmacs = c.gmacs
        params = c.params
        if form == "fused":
            cf = measure_complexity(forms["fused"], (x1,))
            gmacs, params = cf.gmacs, cf.params
        g = achieved_gflops(gmacs * args.batch, tb[form])
        row: dict[str, Any] = {
            "family": family, "model": name, "form": "train" if (form == "ours" and fused is not None) else
            ("fused" if form == "fused" else "-"), "input": "x".join(map(str, shape)),
            "params (M)": params / 1e6, "GMACs": gmacs,
            "b1 ms": t1[form] * 1e3, f"b{args.batch} img/s": args.batch / tb[form],
            "GFLOP/s": g, "% peak": 100 * ratio(g, peak),
        }
        if form == "fused":
            row["fused/train b1"] = ratio(t1["ours"], t1["fused"])
            row[f"fused/train b{args.batch}"] = ratio(tb["ours"], tb["fused"])
            row["max |dlogit|"] = diffs["fused"]
        if "timm" in forms and form == "ours":
            row["timm b1 ms"] = t1["timm"] * 1e3
            row[f"timm b{args.batch} img/s"] = args.batch / tb["timm"]
            row["b1 ours/timm"] = ratio(t1["timm"], t1["ours"])
            row[f"b{args.batch} ours/timm"] = ratio(tb["timm"], tb["ours"])
            row["max |dlogit|"] = diffs["timm"]
        row["reference"] = ref_note
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__)
    p.add_argument("--models", default=None, help="comma-separated model names (default: the family table)")
    p.add_argument("--batch", type=int, default=None, help="throughput batch size (default 16; --quick 4)")
    p.add_argument("--name", default=NAME, help=f"results file stem (default {NAME})")
    args = p.parse_args(argv)
    args.batch = args.batch or (4 if args.quick else 16)
    import convatlas

    meta = setup(args, peak_dtypes=("fp32",))
    timm = _timm()
    meta["timm"] = timm.__version__ if timm is not None else None
    meta["convatlas"] = convatlas.__version__
    if args.models:
        fam = {m: f for f, m in FULL}
        from convatlas.registry import get_entry

        table = [(fam.get(m, get_entry(m).paper), m) for m in args.models.split(",")]
    else:
        table = list(QUICK if args.quick else FULL)
    peak = meta["peak_gflops"]["fp32"]
    rows: list[dict[str, Any]] = []
    notes = [
        f"fp32, NCHW input, eager, torch.inference_mode, {meta['machine'].get('threads')} threads; b1 = batch-1 "
        f"latency (median of {args.reps} runs after {args.warmup} warm-up), b{args.batch} = throughput "
        f"(median of {max(3, args.reps // 2)} runs after {max(1, args.warmup // 2)} warm-up).",
        "ours/timm = timm time / our time (> 1: convatlas faster), timed in alternation in this run; "
        "max |dlogit| = largest logit difference against timm (same weights) or, on fused rows, against the "
        "training form.",
        "fused/train = training-form time / fused-form time (> 1: the re-parameterised deploy form is faster).",
        "'% peak' is relative to the 4096^2 fp32 matmul timed at the start of the run; it is not the FMA ceiling "
        "(oneDNN's 1x1 convolutions can exceed the MKL matmul figure on this AMD CPU).",
    ]
    if timm is None:
        notes.append("timm is not installed in this interpreter: timm columns are empty "
                     "(run with /work/refvenv/bin/python for the comparison).")
    b = args.batch
    cols = ["family", "model", "form", "input", "params (M)", "GMACs", "b1 ms", f"b{b} img/s", "GFLOP/s", "% peak",
            "timm b1 ms", f"timm b{b} img/s", "b1 ours/timm", f"b{b} ours/timm", "fused/train b1",
            f"fused/train b{b}", "max |dlogit|", "reference"]
    t0 = time.time()
    failures = []
    for family, name in table:
        try:
            rows += _bench_one(family, name, args, peak, timm)
        except Exception as e:  # one broken model must not lose the whole table
            failures.append(f"{name}: {type(e).__name__}: {e}")
            print(f"FAILED {name}: {e}", file=sys.stderr, flush=True)
        meta["elapsed_s"] = round(time.time() - t0, 1)
        meta["loadavg_end"] = list(os.getloadavg())
        write_results(args.name, rows, meta, title="All classification backbones: convatlas (and timm)",
                      notes=notes + [f"failed: {f}" for f in failures], echo=False, columns=cols)
    write_results(args.name, rows, meta, title="All classification backbones: convatlas (and timm)",
                  notes=notes + [f"failed: {f}" for f in failures]
                  + [f"Run time {meta['elapsed_s']} s; load average at the end {meta['loadavg_end']}."],
                  columns=cols)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
