"""LoCoCo (card lococo): exact compressor params, identities, cache policies, bad input, state dict, bf16, compile.
Training procedure and learning check: test_lococo_chunked_training.py."""

from __future__ import annotations

import pytest
import torch

from convatlas.analysis.complexity import measure_entry
from convatlas.identities import identities_for
from convatlas.layers.kv_conv_compressor import KVCache, KVConvCompressor, drop_tokens, keep_recent
from convatlas.models.sequence.lococo import convert_official_lococo, lococo_param_groups
from convatlas.models.sequence.tiny_lm import TinyLM
from convatlas.registry import create_model, example_inputs, get_entry


pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in tests/conftest.py


@pytest.mark.parametrize("name, params", [("lococo_llama2_7b_compressor", 1_376_513),
                                          ("lococo_llama2_7b_compressor_m128", 344_129)])
def test_lococo_compressor_params_exact(name, params):
    c = measure_entry(name)
    assert c.params == params == get_entry(name).reported.params
    assert 32 * params == {1_376_513: 44_048_416, 344_129: 11_012_128}[params]  # card: whole Llama-2-7B


@pytest.mark.parametrize("ident", identities_for("lococo"), ids=lambda i: i.name[:30])
def test_lococo_identities(ident):
    ident.fn()


def test_lococo_compressor_shapes_and_policies():
    torch.manual_seed(0)
    m = create_model("lococo_llama2_7b_compressor_m128")
    k, v, s = example_inputs("lococo_llama2_7b_compressor_m128", 1)
    out = m(k, v, s)
    assert out.shape == (1, 2, 128, 256)
    cache = KVCache(k, v, s, k.shape[2])
    for policy in (drop_tokens, keep_recent):
        assert policy(cache, 100).k.shape == (1, 2, 100, 128)
    torch.testing.assert_close(keep_recent(cache, 100).k, k[:, :, -100:])
    # official drop_tokens(local_len): the last local_len tokens + the top-score earlier ones
    kept = drop_tokens(KVCache(k, v, torch.zeros_like(s), 512), 100, local_len=5).k
    torch.testing.assert_close(kept[:, :, -5:], k[:, :, -5:])
    # a short cache passes through unchanged
    short = KVCache(k[:, :, :50], v[:, :, :50], s[:, :, :50], 50)
    assert m.memory_saver(short) is short
    # local_len: the last tokens are always kept verbatim among the heavy hitters
    comp = KVConvCompressor(128, 128, 21, local_len=4)
    kept = comp(KVCache(k, v, torch.zeros_like(s), 512)).k[:, :, :64]
    assert all(any(torch.equal(kept[0, 0, j], k[0, 0, t]) for j in range(64)) for t in range(508, 512))


def test_lococo_param_groups_and_rope_scale():
    lm = create_model("test_lococo")
    groups = lococo_param_groups(lm, lr=1e-3, memory_lr_scale=1000, norm_lr_scale=5)
    by = {g["name"]: g for g in groups}
    assert by["memory"]["lr"] == 1.0 and by["norm"]["lr"] == 5e-3 and "base" not in by  # base LM frozen (official)
    assert sum(len(g["params"]) for g in groups) == len([p for p in lm.parameters() if p.requires_grad])
    # official hh_scores: replaced by the last forward's attention mass (not accumulated) unless asked
    lm.eval()
    ids = torch.randint(0, 64, (1, 16))
    _, (c1,) = lm(ids[:, :8], return_caches=True)
    _, (c2,) = lm(ids[:, 8:], caches=[c1], return_caches=True)
    acc = create_model("test_lococo", accumulate_scores=True).eval()
    acc.load_state_dict(lm.state_dict())
    _, (a1,) = acc(ids[:, :8], return_caches=True)
    _, (a2,) = acc(ids[:, 8:], caches=[a1], return_caches=True)
    torch.testing.assert_close(a2.scores[..., :8], c2.scores[..., :8] + c1.scores)
    col_total = c2.scores.sum(-1)
    torch.testing.assert_close(col_total, torch.full_like(col_total, 8.0))  # 8 query rows, each sums to 1
    lm.set_rope_scale(2.0)
    assert all(b.attn.rope_scale == 2.0 for b in lm.blocks)
    from convatlas.models.sequence.tiny_lm import apply_rope

    x = torch.randn(1, 1, 4, 8)
    torch.testing.assert_close(apply_rope(x, torch.arange(4) * 2, scale=2.0), apply_rope(x, torch.arange(4)))


def test_lococo_bad_input():
    m = create_model("lococo_llama2_7b_compressor_m128")
    k = torch.randn(1, 2, 200, 128)
    with pytest.raises(ValueError, match="LoCoCoCompressor.*\\(B, h, S, 128\\)"):
        m(k[..., :64], k[..., :64], torch.rand(1, 2, 200))
    with pytest.raises(ValueError, match="LoCoCoCompressor.*scores"):
        m(k, k, torch.rand(1, 2, 199))
    lm = create_model("test_lococo")
    with pytest.raises(ValueError, match="TinyLM.*token ids"):
        lm(torch.randn(1, 16))
    with pytest.raises(ValueError, match="TinyLM.*\\[0, 64\\)"):
        lm(torch.full((1, 16), 64))
    with pytest.raises(ValueError, match="cache_method"):
        TinyLM(cache_method="lru")


def test_lococo_state_dict_round_trip_and_official_keys():
    torch.manual_seed(0)
    a = create_model("test_lococo").eval()
    torch.manual_seed(1)
    b = create_model("test_lococo").eval()
    b.load_state_dict(a.state_dict())
    ids = torch.randint(0, 64, (2, 40))
    torch.testing.assert_close(a(ids), b(ids))
    official = {f"model.layers.0.self_attn.memory_saver.{k}": v for k, v in a.compressors[0].state_dict().items()}
    official["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(1)
    conv = convert_official_lococo(official)
    assert set(conv) == {f"compressors.0.{k}" for k in a.compressors[0].state_dict()}


def test_lococo_bf16_autocast():
    lm = create_model("test_lococo").eval()
    ids = torch.randint(0, 64, (2, 40))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lm(ids)
    assert torch.isfinite(y.float()).all()
    # bf16 projections/attention; measured worst |err| - 0.02|y| = 0.013 over 15 seeds (logits up to ~2)
    torch.testing.assert_close(y.float(), lm(ids), atol=0.05, rtol=0.02)


@pytest.mark.slow
def test_lococo_compile_compressor():
    comp = KVConvCompressor(16, 16, 5).eval()
    g = torch.Generator().manual_seed(0)
    cache = KVCache(torch.randn(2, 2, 48, 16, generator=g), torch.randn(2, 2, 48, 16, generator=g),
                    torch.rand(2, 2, 48, generator=g), 48)
    fn = torch.compile(lambda c: comp(c).k)
    torch.testing.assert_close(fn(cache), comp(cache).k, atol=1e-5, rtol=1e-5)


# The learning check (official chunk-by-chunk procedure with the detached cache) is in
# tests/models/sequence/test_lococo_chunked_training.py.


def test_lococo_stacked_convs_and_activation_options():
    """Official ``n_convlayer > 1``: Conv1d(2d -> M_c·expand) -> act -> ... -> Conv1d(-> M_c) -> act -> softmax;
    ``hidden_act`` after every conv (official ACT2FN; None there = ``identity`` here)."""
    d, mem, k = 8, 16, 5
    comp = KVConvCompressor(d, mem, k, n_convlayer=3, expand=2, hidden_act="gelu").double()
    convs = [m for m in comp.layers if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(16, 16), (16, 16), (16, 8)]  # M_c = 8
    assert sum(isinstance(m, torch.nn.GELU) for m in comp.layers) == 3
    expect = (2 * d * 16 * k + 16) + (16 * 16 * k + 16) + (16 * 8 * k + 8) + 1
    assert sum(p.numel() for p in comp.parameters()) == expect
    g = torch.Generator().manual_seed(0)
    cache = KVCache(torch.randn(2, 2, 40, d, generator=g, dtype=torch.float64),
                    torch.randn(2, 2, 40, d, generator=g, dtype=torch.float64),
                    torch.rand(2, 2, 40, generator=g, dtype=torch.float64), 40)
    out = comp(cache)
    assert out.k.shape == out.v.shape == (2, 2, mem, d) and out.scores.shape == (2, 2, mem)
    w, w_hard, w_conv = comp.mixing_weights(cache.k[:, :, :32], cache.v[:, :, :32], cache.scores[:, :, :32])
    for t in (w, w_hard, w_conv):
        torch.testing.assert_close(t.sum(-1), torch.ones_like(t.sum(-1)))
    ident = KVConvCompressor(d, mem, k, hidden_act="identity")
    assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.GELU)) for m in ident.layers)
