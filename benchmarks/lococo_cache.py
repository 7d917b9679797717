"""LoCoCo bounded KV cache (card lococo): retrieval accuracy at equal cache size, memory and prefill speed.

Part 1 (quality): synthetic long-context retrieval (:mod:`convatlas.data.synthetic_retrieval`), context 4x the
cache. A 1-layer LM is trained with full attention, then evaluated with keep-recent, H2O-style eviction and LoCoCo
(compressors trained with the LM frozen, "inference mode") at the same cache size; compression rate =
sequence length / cache slots. LoCoCo is trained with the official procedure (``lococo_train``: chunk by chunk,
detached cache); ``norms_only`` is the same procedure with the compressors frozen (ablation).

Part 1b (post-training tuning mode, context extension): the LM is trained on 33-token contexts and reads 65 tokens
through the 8-slot cache; inference mode vs post-training mode (+ LoRA on q, k, v, o, with/without linear RoPE
scaling).

Part 2 (efficiency): ``lococo_tiny_lm`` (2 layers, d 128, 128-slot cache, 128-token chunks) prefilling contexts of
growing length with LoCoCo vs the full cache (reference: same model, no compression, one causal pass): median
time, tokens/s, peak cache bytes, achieved GFLOP/s and fraction of the fp32 matmul peak measured in the same run.

    python -m benchmarks.lococo_cache [--quick] [--threads 1]
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from benchmarks.common import achieved_gflops, base_parser, fraction_of_peak, ratio, setup, time_fn, write_results
from convatlas.analysis.complexity import measure_complexity
from convatlas.data.synthetic_retrieval import make_retrieval_batch, retrieval_vocab_size
from convatlas.models.sequence.lococo import lococo_train
from convatlas.models.sequence.tiny_lm import TinyLM
from convatlas.registry import create_model


def _lm(vocab: int, mem: int, method: str) -> TinyLM:
    """The benchmark's one-layer LM with a ``mem``-slot cache of kind ``method`` (``full`` = no compression)."""
    return TinyLM(vocab, dim=64, depth=1, heads=4, cache_method=method, mem_size=mem, block_size=mem,
                  buffer=0, kernel_size=5)


def _accuracy(model: TinyLM, n: int, seed: int, kw: dict) -> float:
    """Last-token retrieval accuracy on 1024 held-out sequences of ``n`` tokens."""
    ids, tg = make_retrieval_batch(1024, n, generator=torch.Generator().manual_seed(10_000 + seed), **kw)
    model.eval()
    with torch.no_grad():
        return (model(ids)[:, -1].argmax(-1) == tg[:, -1]).float().mean().item()


def _train_full_lm(vocab: int, mem: int, ctx: int, steps: int, gen_seed: int, kw: dict,
                   seed_plus_tensors: bool = False) -> TinyLM:
    """A full-attention LM trained on last-token retrieval (AdamW 6e-3, batch 64, ``ctx`` tokens); the data
    generator is seeded with ``gen_seed`` (plus the model's number of parameter tensors with
    ``seed_plus_tensors``, the seeding the recorded quality runs used)."""
    base = _lm(vocab, mem, "full")
    base.block_size = None
    g = torch.Generator().manual_seed(gen_seed + (len(list(base.parameters())) if seed_plus_tensors else 0))
    opt = torch.optim.AdamW(base.parameters(), lr=6e-3)
    for _ in range(steps):
        base.train()
        ids, tg = make_retrieval_batch(64, ctx, generator=g, **kw)
        loss = F.cross_entropy(base(ids)[:, -1], tg[:, -1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return base


def _quality(ctx: int, mem: int, n_keys: int, lm_steps: int, comp_steps: int, seed: int = 0) -> dict:
    kw = dict(n_keys=n_keys, n_values=8, n_filler=32)
    vocab = retrieval_vocab_size(**kw)
    torch.manual_seed(seed)

    def lm(method: str) -> TinyLM:
        return _lm(vocab, mem, method)

    def acc(model: TinyLM) -> float:
        return _accuracy(model, ctx, seed, kw)

    t0 = time.perf_counter()
    base = _train_full_lm(vocab, mem, ctx, lm_steps, seed, kw, seed_plus_tensors=True)
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
    # official procedure: chunk by chunk, detached cache, one step per chunk, compressors lr x1000, norms x5
    ids, tg = make_retrieval_batch(comp_steps * 64, ctx, generator=torch.Generator().manual_seed(seed + 7), **kw)
    lococo_train(conv, ids, tg, batch_size=64, lr=3e-5, memory_lr_scale=1000, norm_lr_scale=5)
    res["lococo"] = acc(conv)
    res["lambda"] = [round(c.normalizer.item(), 3) for c in conv.compressors]
    ablation = lm("conv")  # same procedure, compressors frozen: only embedding/norms adapt
    ablation.load_state_dict(sd, strict=False)
    lococo_train(ablation, ids, tg, batch_size=64, lr=3e-5, memory_lr_scale=0.0, norm_lr_scale=5)
    res["norms_only"] = acc(ablation)
    res["train_s"] = round(time.perf_counter() - t0, 1)
    return res


def _extension(ctx: int, long: int, mem: int, lm_steps: int, comp_steps: int, seed: int = 0) -> dict:
    """Context extension (post-training tuning mode): LM trained with full attention on ``ctx`` tokens, then read
    ``long`` tokens through a ``mem``-slot cache. Inference mode (compressors + norms) vs post-training mode (+ LoRA
    r 8 / alpha 16 on q, k, v, o at lr x100, with and without linear RoPE scaling long/ctx)."""
    kw = dict(n_keys=4, n_values=8, n_filler=32)
    vocab = retrieval_vocab_size(**kw)
    torch.manual_seed(seed)

    def lm(method: str) -> TinyLM:
        return _lm(vocab, mem, method)

    def acc(model: TinyLM, n: int) -> float:
        return _accuracy(model, n, seed, kw)

    t0 = time.perf_counter()
    base = _train_full_lm(vocab, mem, ctx, lm_steps, seed + 1, kw)
    sd = base.state_dict()
    res = {"part": "context_extension", "context": long + 1, "trained_context": ctx + 1, "cache_slots": mem,
           "compression_rate": round((long + 1) / mem, 2), "full": acc(base, long)}
    hh = lm("hh")
    hh.load_state_dict(sd)
    res["hh"] = acc(hh, long)
    ids, tg = make_retrieval_batch(comp_steps * 64, long, generator=torch.Generator().manual_seed(seed + 7), **kw)
    rope_factor = (long + 1) / (ctx + 1)
    for name, mode, rope in (("lococo", "inference", None), ("lococo_post_training", "post_training", rope_factor),
                             ("lococo_post_training_no_rope", "post_training", None)):
        m = lm("conv")
        m.load_state_dict(sd, strict=False)
        lococo_train(m, ids, tg, mode=mode, batch_size=64, lr=3e-5, memory_lr_scale=1000, norm_lr_scale=5,
                     lora_lr_scale=100, rope_scale=rope)
        res[name] = acc(m, long)
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
    settings = [(32, 8, 4, 250, 100)] if args.quick else [(32, 8, 4, 300, 150), (64, 16, 4, 400, 150)]
    for ctx, mem, nk, s1, s2 in settings:
        q = _quality(ctx, mem, nk, s1, s2)
        q["part"] = "retrieval_accuracy"
        print(q)
        rows.append(q)
    ext = _extension(32, 64, 8, 250, 100)
    print(ext)
    rows.append(ext)
    lengths = (256, 1024) if args.quick else (256, 1024, 4096)
    for r in _efficiency(lengths, args, peak):
        print(r)
        rows.append(r)
    meta["notes"] = ("retrieval rows: accuracy on 1024 held-out sequences (chance 1/8); LoCoCo trained with the "
                     "official procedure (lococo_train: chunk by chunk, detached cache, compressors + embedding/norms "
                     "trainable, LM frozen); norms_only = same with the compressors frozen. "
                     "context_extension row: LM trained on 33 tokens, read 65 through the 8-slot cache; inference "
                     "vs post-training mode (LoRA lr x100, RoPE linear scaling 65/33, and without it). "
                     "prefill rows: lococo_tiny_lm (random weights), reference = same model with a full cache in "
                     "one causal pass.")
    write_results("lococo_cache", rows, meta)


if __name__ == "__main__":
    main()
