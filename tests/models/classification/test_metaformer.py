"""MetaFormer baselines (card: metaformer): IdentityFormer, RandFormer, PoolFormerV2, ConvFormer, CAFormer."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from backbone_checks import (  # noqa: E402
    check_bad_inputs,
    check_bf16_and_channels_last,
    check_contract,
    check_fast_inference_matches,
    check_grad_checkpointing,
    check_reported,
    check_state_dict_roundtrip,
    train_digits,
)

from convatlas import create_model, list_models  # noqa: E402
from convatlas.analysis.complexity import measure_entry  # noqa: E402
from convatlas.identities import identities_for  # noqa: E402
from convatlas.layers.activations import StarReLU  # noqa: E402
from convatlas.models.classification.metaformer import MetaFormer, convert_official_metaformer  # noqa: E402

VARIANTS = list_models(paper="metaformer")
TINY = ("test_metaformer", "test_metaformer_pool", "test_metaformer_rand")


def test_variants_registered() -> None:
    fams = {"identityformer": 5, "randformer": 5, "poolformerv2": 5, "convformer": 4, "caformer": 4}
    for fam, n in fams.items():
        assert len([v for v in VARIANTS if v.startswith(fam + "_") and not v.endswith("_384")]) == n, fam
    # README 384 fine-tunes of ConvFormer / CAFormer (same parameters, MACs at 384)
    assert sorted(v for v in VARIANTS if v.endswith("_384")) == sorted(
        f"{f}_{s}_384" for f in ("convformer", "caformer") for s in ("s18", "s36", "m36", "b36"))
    assert len(VARIANTS) == 31


@pytest.mark.parametrize("name", VARIANTS)
def test_reported_figures(name: str) -> None:
    check_reported(name)


def test_identity_and_rand_exact_counts() -> None:
    """IdentityFormer == PoolFormerV2 counts (pooling has no params); RandFormer adds N^2 frozen entries per block."""
    for size in ("s12", "m48"):
        assert measure_entry(f"identityformer_{size}").params == measure_entry(f"poolformerv2_{size}").params
    assert measure_entry("randformer_s12").params == 11_891_712 + 6 * 196**2 + 2 * 49**2 == 12_127_010
    assert measure_entry("randformer_m48").params == 74_287_248


def test_caformer_macs_include_attention() -> None:
    """Attention matmuls are counted: 3.878 G (conv/linear only, timm on CPU) + 0.229 G = 4.107 G (paper 4.1 G)."""
    g = measure_entry("caformer_s18").gmacs
    attn = (9 * 2 * 196**2 * 320 + 3 * 2 * 49**2 * 512) / 1e9
    assert abs(g - 4.107) < 2e-3 and abs(g - attn - 3.878) < 2e-3, g


@pytest.mark.parametrize("name", TINY)
def test_contract_and_safety(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(2, 3, 64, 64)
    check_contract(model, x, 10)
    check_bad_inputs(model, x, name)
    check_state_dict_roundtrip(model, lambda: create_model(name), x)
    check_bf16_and_channels_last(model, x)
    check_grad_checkpointing(model, x)


def test_any_resolution() -> None:
    model = create_model("test_metaformer").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 45, 77)).shape == (1, 10)
        assert model(torch.randn(1, 3, 7, 9)).shape == (1, 10)


def test_randformer_fixed_resolution_and_frozen_matrix() -> None:
    model = create_model("test_metaformer_rand")
    with pytest.raises(ValueError, match="test_metaformer_rand.*fixes the input size"):
        model(torch.randn(1, 3, 96, 96))
    sd = model.state_dict()
    mats = [k for k in sd if k.endswith("random_matrix")]
    assert len(mats) == 2 and sd[mats[0]].shape == (16, 16) and sd[mats[1]].shape == (4, 4)
    for k, p in model.named_parameters():
        assert p.requires_grad == (not k.endswith("random_matrix")), k
    # RandFormer at 224 fixes 196 / 49 tokens in stages 3 / 4
    with torch.device("meta"):
        big = create_model("randformer_s12")
    assert big.stages[2].blocks[0].token_mixer.num_tokens == 196
    assert big.stages[3].blocks[0].token_mixer.num_tokens == 49


def test_randformer_with_eye_equals_identityformer() -> None:
    torch.manual_seed(0)
    rand = create_model("test_metaformer_rand").eval()
    ident = MetaFormer(depths=(1, 1, 1, 1), dims=(16, 32, 64, 64), num_classes=10, token_mixers="identity",
                       norms="gn1", mlp_head=False).eval()
    sd = rand.state_dict()
    for k in [k for k in sd if k.endswith("random_matrix")]:
        del sd[k]
    ident.load_state_dict(sd, strict=True)
    with torch.no_grad():
        for blk in (rand.stages[2].blocks[0], rand.stages[3].blocks[0]):
            blk.token_mixer.random_matrix.copy_(torch.eye(blk.token_mixer.num_tokens))
        x = torch.randn(2, 3, 64, 64)
        torch.testing.assert_close(rand(x), ident(x))


def test_star_relu() -> None:
    act = StarReLU()
    assert act.scale.shape == (1,) and act.bias.shape == (1,) and act.scale.requires_grad
    x = torch.randn(5, 7)
    torch.testing.assert_close(act(x), torch.relu(x) ** 2)


def test_identities() -> None:
    checks = identities_for("metaformer")
    assert len(checks) >= 3
    for c in checks:
        c.fn()


def test_state_dict_layout() -> None:
    with torch.device("meta"):
        sd = create_model("caformer_s18").state_dict()
    expect = {
        "stem.conv.weight": (64, 3, 7, 7),
        "stem.norm.weight": (64,),
        "stages.1.downsample.norm.weight": (64,),
        "stages.1.downsample.conv.weight": (128, 64, 3, 3),
        "stages.0.blocks.0.token_mixer.pwconv1.weight": (128, 64, 1, 1),
        "stages.0.blocks.0.token_mixer.act1.scale": (1,),
        "stages.0.blocks.0.token_mixer.dwconv.weight": (128, 1, 7, 7),
        "stages.0.blocks.0.mlp.fc1.weight": (256, 64, 1, 1),
        "stages.0.blocks.0.mlp.act.bias": (1,),
        "stages.2.blocks.0.token_mixer.qkv.weight": (960, 320),
        "stages.2.blocks.0.token_mixer.proj.weight": (320, 320),
        "stages.2.blocks.0.res_scale1.scale": (320,),
        "stages.2.blocks.0.mlp.fc1.weight": (1280, 320),
        "head.norm.bias": (512,),
        "head.fc.fc1.weight": (2048, 512),
        "head.fc.norm.weight": (2048,),
        "head.fc.fc2.weight": (1000, 2048),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any(k.endswith("norm1.bias") or ".qkv.bias" in k for k in sd)


def _to_official(sd: dict) -> dict:
    """Inverse of the converter (official layout: Linear 2-D pointwise weights, downsample_layers, flat stages)."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^stem\.norm\.", "downsample_layers.0.post_norm.", k)
        k = re.sub(r"^stem\.", "downsample_layers.0.", k)
        k = re.sub(r"^stages\.(\d+)\.downsample\.norm\.", r"downsample_layers.\1.pre_norm.", k)
        k = re.sub(r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", k)
        k = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", k)
        k = re.sub(r"^head\.norm\.", "norm.", k)
        k = re.sub(r"^head\.fc\.", "head.", k)
        if v.ndim == 4 and v.shape[-2:] == (1, 1):
            v = v.flatten(1)
        out[k] = v.clone()
    return out


@pytest.mark.parametrize("name", ["test_metaformer", "test_metaformer_rand"])
def test_official_converter(name: str) -> None:
    model = create_model(name)
    sd = model.state_dict()
    official = _to_official(sd)
    assert "downsample_layers.0.conv.weight" in official and "norm.weight" in official
    conv = convert_official_metaformer(official, model)
    assert conv.keys() == sd.keys()
    for k in sd:
        assert torch.equal(conv[k], sd[k]), k
    assert convert_official_metaformer(sd, model).keys() == sd.keys()


def test_timm_parity() -> None:
    timm = pytest.importorskip("timm", reason="timm (reference library) not installed")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    for name in ("poolformerv2_s12", "convformer_s18", "caformer_s18"):
        ref = timm.create_model(name).eval()
        ours = create_model(name).eval()
        ours.load_state_dict(ref.state_dict(), strict=True)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(ours.forward_features(x), ref.forward_features(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [0, 1 << 23], ids=["batch_chunked_mlp", "whole_mlp"])
@pytest.mark.parametrize("name", TINY)
def test_fast_inference_path(name: str, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Channels-last in-place inference path (chunk 0: every MLP half runs one sample at a time) == plain path."""
    import convatlas.models.classification.metaformer as mf

    monkeypatch.setattr(mf, "_CHUNK_ABOVE", chunk)
    monkeypatch.setattr(mf, "_CHUNK_ELEMS", max(chunk, 1))
    torch.manual_seed(0)
    model = create_model(name)
    check_fast_inference_matches(model, torch.randn(3, 3, 64, 64))
    with torch.no_grad():  # the input is never modified and the output keeps the (B, C) / (B, C, H, W) contract
        x = torch.randn(3, 3, 64, 64)
        x0 = x.clone()
        feats = model.eval().forward_features(x)
    assert torch.equal(x, x0) and feats.shape[:2] == (3, model.num_features)


@pytest.mark.slow
@pytest.mark.parametrize(
    "mixers,norms,mlp_head,measured",
    [(("sepconv", "sepconv", "attention", "attention"), "ln", True, 0.992), ("pooling", "gn1", False, 0.970)],
    ids=["caformer", "poolformerv2"],
)
def test_learns_digits(mixers, norms, mlp_head, measured) -> None:
    """Reduced CAFormer / PoolFormerV2 (depths 1,1,1,1, dims 16..128), 32x32 digits, 6 epochs AdamW 4e-3.

    Threshold: val acc >= 0.93 (measured 0.992 / 0.970, ~4 s CPU each; chance 0.10).
    """
    torch.manual_seed(0)
    model = MetaFormer(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), num_classes=10, token_mixers=mixers,
                       norms=norms, mlp_head=mlp_head)
    acc = train_digits(model)
    assert acc >= 0.93, (acc, measured)
