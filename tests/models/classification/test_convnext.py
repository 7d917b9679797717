"""ConvNeXt family (card: convnext): figures, layouts, converter, backbone contract, timm parity."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from convatlas import create_model
from convatlas.analysis.complexity import measure_entry
from convatlas.identities import identities_for
from convatlas.models.classification.convnext import ConvNeXt, ConvNeXtBlock, checkpoint_filter_fn
from convatlas.models.classification.convnext_isotropic import ConvNeXtIsotropic
from convatlas.models.classification.convnext_isotropic import checkpoint_filter_fn as iso_filter_fn
from convatlas.registry import get_entry, list_models

VARIANTS = list_models(paper="convnext")
TIMM_VARIANTS = [n for n in VARIANTS if (get_entry(n).reference or "").startswith("timm:")]
PAPER_MACS = {"convnext_tiny": 4.5, "convnext_small": 8.7, "convnext_base": 15.4, "convnext_large": 34.4,
              "convnext_xlarge": 60.9}  # fmt: skip


def _small(**kw) -> ConvNeXt:
    return ConvNeXt(**{"depths": (1, 2, 1, 1), "dims": (8, 16, 24, 32), "num_classes": 5, **kw})


def _randomise(model: torch.nn.Module) -> None:
    """Non-trivial layer scales and norm affines (gamma=1e-6 would hide block differences)."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("gamma"):
                p.uniform_(0.2, 1.0)
            elif "norm" in n:
                p.normal_(1.0 if n.endswith("weight") else 0.0, 0.1)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


# ---- figures -------------------------------------------------------------------------------------------------
def test_all_variants_registered():
    expected = {"atto", "atto_ols", "femto", "pico", "nano", "tiny", "tiny_hnf", "small", "base", "large",
                "large_mlp", "xlarge", "xxlarge", "isotropic_small", "isotropic_base", "isotropic_large"}  # fmt: skip
    assert {f"convnext_{v}" for v in expected} <= set(VARIANTS)
    assert {"test_convnext", "test_convnext_isotropic"} <= set(list_models("test_convnext*", include_test=True))


@pytest.mark.parametrize("name", VARIANTS)
def test_params_and_macs_match_reported(name):
    rep = get_entry(name).reported
    c = measure_entry(name)  # meta device: no memory, no time
    if rep.params_exact:
        assert c.params == rep.params, f"{name}: {c.params:,} params, timm has {rep.params:,}"
    else:
        assert abs(c.params / rep.params - 1) <= rep.params_tol, f"{name}: {c.params:,} vs {rep.params:,}"
    assert abs(c.gmacs / rep.gmacs - 1) <= rep.macs_tol, f"{name}: {c.gmacs:.3f} GMACs vs {rep.gmacs}"


@pytest.mark.parametrize("name", sorted(PAPER_MACS))
def test_macs_match_paper(name):
    c = measure_entry(name, 224)
    assert abs(c.gmacs / PAPER_MACS[name] - 1) <= 0.03, f"{name}: {c.gmacs:.3f} vs paper {PAPER_MACS[name]}"


def test_tiny_stage_shapes_and_feature_info():
    with torch.device("meta"):
        m = create_model("convnext_tiny")
        feats = m.forward_stages(torch.empty(2, 3, 224, 224))
        logits = m(torch.empty(2, 3, 224, 224))
    assert [tuple(f.shape) for f in feats] == [(2, 96, 56, 56), (2, 192, 28, 28), (2, 384, 14, 14), (2, 768, 7, 7)]
    assert [(i["num_chs"], i["reduction"]) for i in m.feature_info] == [(96, 4), (192, 8), (384, 16), (768, 32)]
    assert tuple(logits.shape) == (2, 1000) and m.num_features == 768


# ---- identities and layouts -----------------------------------------------------------------------------------
def test_registered_identities_pass():
    checks = identities_for("convnext")
    assert len(checks) >= 4
    for c in checks:
        c.fn()


@pytest.mark.parametrize("grad", [True, False], ids=["module_path", "fast_path"])
def test_block_layouts_identical(grad):
    a, b = ConvNeXtBlock(24, conv_mlp=False, ls_init_value=0.5), ConvNeXtBlock(24, conv_mlp=True, ls_init_value=0.5)
    _randomise(a)
    b.load_state_dict({k: v.reshape(b.state_dict()[k].shape) for k, v in a.state_dict().items()})
    assert b.mlp.fc1.weight.ndim == 4 and a.mlp.fc1.weight.ndim == 2
    x = torch.randn(2, 24, 10, 12)
    with torch.set_grad_enabled(grad):
        assert _rel(a(x), b(x)) < 1e-5


def test_model_layouts_identical_and_fast_path_matches_module_path():
    a, b = _small(conv_mlp=False).eval(), _small(conv_mlp=True).eval()
    _randomise(a)
    b.load_state_dict({k: v.reshape(b.state_dict()[k].shape) for k, v in a.state_dict().items()})
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        fa, fb = a(x), b(x)
    ref = a(x)  # grad enabled: module-by-module forward
    assert _rel(fa, ref) < 1e-5 and _rel(fb, ref) < 1e-5


def test_fast_path_chunks_large_maps(monkeypatch):
    import convatlas.ops.residual_mlp as rm

    monkeypatch.setattr(rm, "_CHUNK_ABOVE", 1000)  # force several (uneven) chunks on a small map
    monkeypatch.setattr(rm, "_CHUNK_ELEMS", 4000)
    m = _small().eval()
    _randomise(m)
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        fast = m(x)
    assert _rel(fast, m(x)) < 1e-5


def test_layer_scale_and_drop_path_schedule():
    m = _small(drop_path_rate=0.3, ls_init_value=1e-6)
    rates = [b.drop_path.drop_prob if hasattr(b.drop_path, "drop_prob") else 0.0 for s in m.stages for b in s.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.3, 5).tolist())
    assert all(torch.all(b.gamma == 1e-6) for s in m.stages for b in s.blocks)
    assert all(b.gamma is None for s in _small(ls_init_value=None).stages for b in s.blocks)


def test_init_and_head_init_scale():
    torch.manual_seed(0)
    a = ConvNeXt(depths=(1, 1, 1, 1), dims=(64, 128, 256, 512), num_classes=100)
    torch.manual_seed(0)
    b = ConvNeXt(depths=(1, 1, 1, 1), dims=(64, 128, 256, 512), num_classes=100, head_init_scale=0.001)
    w = a.stages[3].blocks[0].mlp.fc1.weight
    assert 0.017 < w.std().item() < 0.021 and w.abs().max() <= 2.0  # trunc normal std .02 (cut at +-2)
    assert torch.all(a.stages[3].blocks[0].mlp.fc1.bias == 0)
    assert torch.allclose(b.head.fc.weight, a.head.fc.weight * 0.001)


def test_imagenet_recipe_config():
    from convatlas.models.classification.convnext import IMAGENET1K_RECIPE, imagenet_train_config

    cfg = imagenet_train_config("convnext_tiny", total_batch=1024)
    assert cfg.lr == pytest.approx(1e-3) and cfg.epochs == 300 and cfg.warmup_epochs == 20
    assert cfg.weight_decay == 0.05 and cfg.label_smoothing == 0.1 and cfg.ema and cfg.ema_decay == 0.9999
    assert IMAGENET1K_RECIPE["drop_path_rate"]["convnext_small"] == 0.4
    with pytest.raises(ValueError, match="no official"):
        imagenet_train_config("convnext_atto")


# ---- checkpoints ----------------------------------------------------------------------------------------------
def _to_fb_layout(sd: dict) -> dict:
    """Inverse of the card's mapping (what an official facebookresearch/ConvNeXt checkpoint looks like)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("stem.", "downsample_layers.0.")
        k = re.sub(r"stages\.(\d+)\.downsample\.(\d+)\.", r"downsample_layers.\1.\2.", k)
        k = re.sub(r"stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", k)
        k = k.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        k = k.replace("head.norm.", "norm.").replace("head.fc.", "head.")
        if "pwconv" in k and v.ndim == 4:
            v = v.flatten(1)  # official blocks always use Linear
        out[k] = v.clone()
    return out


@pytest.mark.parametrize("conv_mlp", [False, True])
def test_checkpoint_filter_fn_converts_official_layout(conv_mlp):
    src = _small(conv_mlp=conv_mlp).eval()
    _randomise(src)
    fb = {"model": _to_fb_layout(src.state_dict())}
    assert "downsample_layers.1.1.weight" in fb["model"] and "stages.2.0.pwconv1.weight" in fb["model"]
    dst = _small(conv_mlp=conv_mlp).eval()
    dst.load_state_dict(checkpoint_filter_fn(fb, dst), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))
    assert checkpoint_filter_fn(src.state_dict(), dst).keys() == src.state_dict().keys()  # ours: unchanged


def test_create_model_loads_official_checkpoint_file(tmp_path):
    src = create_model("test_convnext").eval()
    _randomise(src)
    path = tmp_path / "convnext_official.pth"
    torch.save({"model": _to_fb_layout(src.state_dict()), "epoch": 3}, path)
    dst = create_model("test_convnext", pretrained=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_isotropic_checkpoint_filter_fn():
    src = ConvNeXtIsotropic(depth=2, dim=16, num_classes=4, ls_init_value=0.5).eval()
    fb = {}
    for k, v in src.state_dict().items():
        k = k.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        fb[k.replace("head.norm.", "norm.").replace("head.fc.", "head.")] = v.clone()
    assert "blocks.1.pwconv2.weight" in fb and "norm.weight" in fb and "head.weight" in fb
    dst = ConvNeXtIsotropic(depth=2, dim=16, num_classes=4, ls_init_value=0.5).eval()
    dst.load_state_dict(iso_filter_fn({"model": fb}, dst), strict=True)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_isotropic_structure():
    with torch.device("meta"):
        s, L = create_model("convnext_isotropic_small"), create_model("convnext_isotropic_large")
        y = s.forward_features(torch.empty(1, 3, 224, 224))
    assert tuple(y.shape) == (1, 384, 14, 14) and len(s.blocks) == 18 and s.stem.kernel_size == (16, 16)
    assert s.blocks[0].gamma is None and L.blocks[0].gamma is not None and len(L.blocks) == 36


# ---- backbone contract ----------------------------------------------------------------------------------------
def test_backbone_contract():
    m = create_model("test_convnext").eval()
    x = torch.randn(2, 3, 64, 96)  # non-square, multiple of 32
    with torch.no_grad():
        f = m.forward_features(x)
        assert f.shape == (2, 32, 2, 3)
        assert m.forward_head(f, pre_logits=True).shape == (2, m.num_features)
        assert m(x).shape == (2, 10)
        m.reset_classifier(7, "max")
        assert m(x).shape == (2, 7)
        m.reset_classifier(0)
        assert m(x).shape == (2, 32)
    m.remove_head()
    assert m.head is None and sum(1 for n, _ in m.named_parameters() if n.startswith("head")) == 0
    with pytest.raises(RuntimeError, match="head was removed"):
        m(x)


def test_head_norm_first_variant():
    m = _small(head_norm_first=True, conv_mlp=True).eval()
    assert "norm_pre.weight" in m.state_dict() and "head.norm.weight" not in m.state_dict()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = m.head.fc(F.layer_norm(m.stages(m.stem(x)).permute(0, 2, 3, 1), (32,), m.norm_pre.weight,
                                     m.norm_pre.bias, 1e-6).mean((1, 2)))  # fmt: skip
        assert _rel(m(x), ref) < 1e-5


def test_features_only():
    fx = create_model("test_convnext", features_only=True, out_indices=(1, 3))
    feats = fx(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 16, 8, 8), (2, 32, 2, 2)]
    assert [i["reduction"] for i in fx.feature_info] == [8, 32]
    assert not any(n.startswith("model.head") for n, _ in fx.named_parameters())


@pytest.mark.parametrize("name", ["test_convnext", "test_convnext_isotropic"])
def test_grad_checkpointing_same_outputs_and_grads(name):
    a = create_model(name, drop_path_rate=0.0)
    b = create_model(name, drop_path_rate=0.0)
    b.load_state_dict(a.state_dict())
    _randomise(a)
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 64, 64)
    ya, yb = a(x), b(x)
    ya.square().sum().backward()
    yb.square().sum().backward()
    assert torch.allclose(ya, yb, atol=1e-6)
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(pa.grad, pb.grad, rtol=1e-5, atol=1e-7), n


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.randn(3, 64, 64), "4-D"),
        (torch.randn(2, 1, 64, 64), "3 input channels"),
        (torch.zeros(2, 3, 64, 64, dtype=torch.int64), "floating"),
        (torch.full((2, 3, 64, 64), float("nan")), "NaN"),
        (torch.randn(2, 3, 64, 80), "multiple of 32"),
    ],
    ids=["rank", "channels", "dtype", "nan", "size"],
)
def test_bad_input_raises(bad, match):
    m = create_model("test_convnext")
    with pytest.raises(ValueError, match=match) as err:
        m(bad)
    assert "test_convnext" in str(err.value)


def test_isotropic_bad_size():
    with pytest.raises(ValueError, match="multiple of 16"):
        create_model("test_convnext_isotropic")(torch.randn(1, 3, 40, 48))


# ---- timm parity ----------------------------------------------------------------------------------------------
@pytest.mark.reference
@pytest.mark.parametrize("name", TIMM_VARIANTS)
def test_state_dict_layout_identical_to_timm(timm, name):
    with torch.device("meta"):
        ours = create_model(name).state_dict()
        ref = timm.create_model(get_entry(name).reference.split(":", 1)[1]).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}


def _timm_model(timm, name):
    """A timm model with random weights, built on meta then materialised (skips the slow truncated-normal init)."""
    with torch.device("meta"):
        m = timm.create_model(name)
    m = m.to_empty(device="cpu").eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.normal_(0.0, 0.02 if p.ndim > 1 else 0.1)
    _randomise(m)
    return m


@pytest.mark.reference
@pytest.mark.parametrize("name", ["convnext_atto", "convnext_tiny", "convnext_tiny_hnf", "convnext_atto_ols"])
def test_outputs_match_timm_both_directions(timm, name):
    ref = _timm_model(timm, name)
    with torch.device("meta"):
        ours = create_model(name)
    ours = ours.to_empty(device="cpu").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expect = ref(x)
        assert _rel(ours(x), expect) < 1e-5  # inference (fused) path
        assert _rel(ours.forward_head(ours.forward_features(x), pre_logits=True),
                    ref.forward_head(ref.forward_features(x), pre_logits=True)) < 1e-5  # fmt: skip
    assert _rel(ours(x).detach(), expect) < 1e-5  # module-by-module path
    back = _timm_model(timm, name)
    back.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(back(x), expect)
