"""LoCoCo bounded KV cache (card lococo): retrieval accuracy at equal cache size, memory and prefill speed.

Part 1 (quality): synthetic long-context retrieval (:mod:`convatlas.data.synthetic_retrieval`), context 4x the
cache. A 1-layer LM is trained with full attention, then evaluated with keep-recent, H2O-style eviction and LoCoCo
(compressors trained with the LM frozen, "inference mode") at the same cache size; compression rate =
sequence length / cache slots.

Part 2 (efficiency): ``lococo_tiny_lm`` (2 layers, d 128, 128-slot cache, 128-token chunks) prefilling contexts of
growing length with LoCoCo vs the full cache (reference: same model, no compression, one causal pass): median
time, tokens/s, peak cache bytes, achieved GFLOP/s and fraction of the fp32 matmul peak measured in the same run.

    python -m benchmarks.lococo_cache [--quick]
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from benchmarks.common import achieved_gflops, base_parser, fraction_of_peak, ratio, setup, time_fn, write_results
from convatlas.analysis.complexity import measure_complexity
from convatlas.data.synthetic_retrieval import make_retrieval_batch, retrieval_vocab_size
from convatlas.models.sequence.tiny_lm import TinyLM
from convatlas.registry import create_model


def _quality(ctx: int, mem: int, n_keys: int, lm_steps: int, comp_steps: int, seed: int = 0) -> dict:
    kw = dict(n_keys=n_keys, n_values=8, n_filler=32)
    vocab = retrieval_vocab_size(**kw)
    torch.manual_seed(seed)

    def lm(method: str) -> TinyLM:
        return TinyLM(vocab, dim=64, depth=1, heads=4, cache_method=method, mem_size=mem, block_size=mem,
                      buffer=0, kernel_size=5)

    def acc(model: TinyLM) -> float:
        ids, tg = make_retrieval_batch(1024, ctx, generator=torch.Generator().manual_seed(10_000 + seed), **kw)
        model.eval()
        with torch.no_grad():
            return (model(ids)[:, -1].argmax(-1) == tg[:, -1]).float().mean().item()

    def train(model: TinyLM, params, opt, steps: int) -> None:
        g = torch.Generator().manual_seed(seed + len(params))
        for _ in range(steps):
            model.train()
            ids, tg = make_retrieval_batch(64, ctx, generator=g, **kw)
            loss = F.cross_entropy(model(ids)[:, -1], tg[:, -1])
            opt.zero_grad()
            loss.backward()
            opt.step()

    t0 = time.perf_counter()
    base = lm("full")
    base.block_size = None
    train(base, list(base.parameters()), torch.optim.AdamW(base.parameters(), lr=6e-3), lm_steps)
    res = {"context": ctx + 1, "cache_slots": mem, "compression_rate": round((ctx + 1) / mem, 2), "facts": n_keys,
           "full": acc(base)}
    sd = base.state_dict()
    for method in ("recent", "hh"):
        m = lm(method)
        m.load_state_dict(sd)
        res[method] = acc(m)
    conv = lm("conv")
    conv.load_state_dict(sd, strict=False)
    res["lococo_untrained"] = acc(conv)
    conv.detach_cache = False
    conv.requires_grad_(False)
    params = conv.compressor_parameters()
    for p in params:
        p.requires_grad_(True)
    train(conv, params, torch.optim.Adam(params, lr=3e-2), comp_steps)
    res["lococo"] = acc(conv)
    res["lambda"] = [round(c.normalizer.item(), 3) for c in conv.compressors]
    res["train_s"] = round(time.perf_counter() - t0, 1)
    return res


def _efficiency(lengths, args, peak: float) -> list[dict]:
    rows = []
    torch.manual_seed(0)
    lococo = create_model("lococo_tiny_lm").eval()
    full = create_model("lococo_tiny_lm", cache_method="full", block_size=None).eval()
    full.load_state_dict(lococo.state_dict(), strict=False)
    for n in lengths:
        ids = torch.randint(0, 256, (1, n))
        with torch.no_grad():
            t_conv = time_fn(lambda: lococo(ids), args.warmup, args.reps)
            cache_bytes = sum(c.nbytes() for c in lococo.last_caches)
            t_full = time_fn(lambda: full(ids), args.warmup, args.reps)
            full(ids)
            full_bytes = sum(c.nbytes() for c in full.last_caches)
            macs = measure_complexity(lococo, (ids,)).gmacs
        gf = achieved_gflops(macs, t_conv)
        rows.append({
            "part": "prefill", "tokens": n, "lococo_ms": t_conv * 1e3, "full_cache_ms": t_full * 1e3,
            "speedup_vs_full": ratio(t_full, t_conv), "lococo_tok_per_s": n / t_conv,
            "lococo_cache_kib": cache_bytes / 1024, "full_cache_kib": full_bytes / 1024,
            "max_cache_tokens": lococo.max_cache_len, "lococo_gflops": gf,
            "frac_fp32_peak": fraction_of_peak(gf, peak),
        })
    return rows


def main(argv=None) -> None:
    args = base_parser(__doc__).parse_args(argv)
    meta = setup(args)
    peak = meta.get("peak_gflops", {}).get("fp32", float("nan"))
    rows = []
    settings = [(32, 8, 4, 250, 120)] if args.quick else [(32, 8, 4, 300, 200), (64, 16, 4, 400, 200)]
    for ctx, mem, nk, s1, s2 in settings:
        q = _quality(ctx, mem, nk, s1, s2)
        q["part"] = "retrieval_accuracy"
        print(q)
        rows.append(q)
    lengths = (256, 1024) if args.quick else (256, 1024, 4096)
    for r in _efficiency(lengths, args, peak):
        print(r)
        rows.append(r)
    meta["notes"] = ("retrieval rows: accuracy on 1024 held-out sequences (chance 1/8); LoCoCo compressors trained "
                     "with the LM frozen and detach_cache=False. prefill rows: lococo_tiny_lm (random weights), "
                     "reference = same model with a full cache in one causal pass.")
    write_results("lococo_cache", rows, meta)


if __name__ == "__main__":
    main()
