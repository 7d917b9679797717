"""Face MobileNetV2 / ShuffleNetV2 with TVConv, official checkpoint conversion (card: tvconv)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from backbone_checks import check_tiny, train_digits  # noqa: E402

from convatlas import create_model, list_models  # noqa: E402
from convatlas.analysis.complexity import measure_entry  # noqa: E402
from convatlas.layers.tvconv import TVConv  # noqa: E402
from convatlas.models.classification.tvconv_nets import (  # noqa: E402
    FaceMobileNetV2,
    FaceShuffleNetV2,
    convert_official_tvconv,
    load_official_tvconv,
)

# ---------------------------------------------------------------------------------------------------------------
# The official state-dict layout, written from face_recognition/model/{mobilenetv2,shufflenetv2,commons}.py and
# atoms/TVConv.py (key -> shape), independently of our modules.
# ---------------------------------------------------------------------------------------------------------------

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _div8(v: float) -> int:
    n = max(8, int(v + 4) // 8 * 8)
    return n + 8 if n < 0.9 * v else n


def _bn(sd: dict, prefix: str, c: int) -> None:
    for n in _BN:
        sd[prefix + n] = () if n == "num_batches_tracked" else (c,)


def _tvconv(sd: dict, p: str, c: int, hw: int, stride: int, inter: int, layers: int, deployed: bool) -> None:
    for n in ("TVConv_k", "TVConv_k_square", "stride", "channels", "h", "w") if not deployed else ("c", "h", "w"):
        sd[p + n] = ()
    if deployed:
        sd[p + "weight_maps"] = (1, c, 3, 3, hw, hw)
        return
    sd[p + "posi_map"] = (1, 4, hw, hw)
    sd[p + "weight_layers.0.0.weight"] = (inter, 4, 3, 3)
    for i in range(layers + 1):
        if i:
            sd[p + f"weight_layers.{i}.0.weight"] = (inter, inter, 3, 3)
        sd[p + f"weight_layers.{i}.1.weight"] = sd[p + f"weight_layers.{i}.1.bias"] = (inter, hw, hw)
    sd[p + f"weight_layers.{layers + 1}.weight"] = (9 * c, inter, 3, 3)


def _atom(sd: dict, p: str, c: int, hw: int, stride: int, atom: str, inter: int, layers: int, deployed: bool) -> None:
    if atom == "TVConv":
        _tvconv(sd, p, c, hw, stride, inter, layers, deployed)
    else:
        sd[p + "weight"] = (c, 1, 3, 3)


def _output_layer(sd: dict, c: int) -> None:
    _bn(sd, "output_layer.layer1.", c)
    sd["output_layer.layer2.0.weight"], sd["output_layer.layer2.0.bias"] = (512, c), (512,)
    _bn(sd, "output_layer.layer2.1.", 512)


def official_mbv2(width: float, atom: str, size: int = 96, inter: int = 64, layers: int = 3,
                  deployed: bool = False) -> dict[str, tuple]:
    sd: dict[str, tuple] = {}
    cin = _div8(32 * width)
    sd["features.0.0.weight"] = (cin, 3, 3, 3)
    _bn(sd, "features.0.1.", cin)
    idx = 1
    for t, c, n, s, hw in [[1, 16, 1, 1, 1], [6, 24, 2, 2, 2], [6, 32, 3, 2, 4], [6, 64, 4, 2, 8], [6, 96, 3, 1, 8],
                           [6, 160, 3, 2, 16], [6, 320, 1, 1, 16]]:
        cout = _div8(c * width)
        for i in range(n):
            p, hid, j = f"features.{idx}.conv.", int(round(cin * t)), 0
            if t != 1:
                sd[f"{p}0.0.weight"] = (hid, cin, 1, 1)
                _bn(sd, f"{p}0.1.", hid)
                j = 1
            _atom(sd, f"{p}{j}.0.", hid, size // hw, s if i == 0 else 1, atom, inter, layers, deployed)
            _bn(sd, f"{p}{j}.1.", hid)
            sd[f"{p}{j + 1}.weight"] = (cout, hid, 1, 1)
            _bn(sd, f"{p}{j + 2}.", cout)
            cin, idx = cout, idx + 1
    last = _div8(512 * max(1.0, width))
    sd[f"features.{idx}.0.weight"] = (last, cin, 1, 1)
    _bn(sd, f"features.{idx}.1.", last)
    _output_layer(sd, 512)
    return sd


def official_shufflenet(chs: tuple, atom: str, size: int = 96, inter: int = 64, layers: int = 3,
                        deployed: bool = False) -> dict[str, tuple]:
    sd: dict[str, tuple] = {"conv1.0.weight": (chs[0], 3, 3, 3)}
    _bn(sd, "conv1.1.", chs[0])
    cin = chs[0]
    for k, (reps, hw, cout) in enumerate(zip((4, 8, 4), (4, 8, 16), chs[1:4])):
        b = cout // 2
        for i in range(reps):
            p = f"stage{k + 2}.{i}."
            if i == 0:
                _atom(sd, p + "branch1.0.", cin, size // hw, 2, atom, inter, layers, deployed)
                _bn(sd, p + "branch1.1.", cin)
                sd[p + "branch1.2.weight"] = (b, cin, 1, 1)
                _bn(sd, p + "branch1.3.", b)
            sd[p + "branch2.0.weight"] = (b, cin if i == 0 else b, 1, 1)
            _bn(sd, p + "branch2.1.", b)
            _atom(sd, p + "branch2.3.", b, size // hw, 2 if i == 0 else 1, atom, inter, layers, deployed)
            _bn(sd, p + "branch2.4.", b)
            sd[p + "branch2.5.weight"] = (b, b, 1, 1)
            _bn(sd, p + "branch2.6.", b)
        cin = cout
    sd["conv5.0.weight"] = (chs[4], cin, 1, 1)
    _bn(sd, "conv5.1.", chs[4])
    _output_layer(sd, chs[4])
    return sd


def _is_param(key: str) -> bool:
    leaf = key.rsplit(".", 1)[-1]
    return leaf not in ("running_mean", "running_var", "num_batches_tracked", "TVConv_k", "TVConv_k_square",
                        "stride", "channels", "h", "w", "c", "weight_maps")


def _official(name: str, deployed: bool = False) -> dict[str, tuple]:
    atom = "TVConv" if name.startswith("tvconv") else "base"
    w = name.rsplit("_x", 1)[1].replace("_", ".")
    if "shufflenet" in name:
        chs = {"0.5": (24, 48, 96, 192, 1024), "1.0": (24, 116, 232, 464, 1024), "1.5": (24, 176, 352, 704, 1024)}
        return official_shufflenet(chs[w], atom, deployed=deployed)
    return official_mbv2(float(w), atom, deployed=deployed)


NAMES = sorted(n for n in list_models(paper="tvconv") if "deeplab" not in n)  # face models
HEAD_1000 = 512 * 1000  # AM-softmax head of the default build (the official model has no classifier)


def test_variants_registered() -> None:
    assert len(NAMES) == 16
    assert len(list_models(paper="tvconv")) == 19  # + 3 optic disc/cup DeepLabV3+ (segmentation tests)


@pytest.mark.parametrize("name", NAMES)
def test_figures_match_official_layout(name: str) -> None:
    """Registered (deployed-form) figures == the official module shapes; the training form too."""
    dep = sum(math.prod(s) for k, s in _official(name, deployed=True).items() if _is_param(k)) + HEAD_1000
    train = sum(math.prod(s) for k, s in _official(name).items() if _is_param(k)) + HEAD_1000
    from convatlas.registry import get_entry
    from convatlas.verify import _measure

    assert get_entry(name).reported.params == dep
    c = _measure(get_entry(name), 96)
    assert c.params == dep
    assert measure_entry(name).params == train
    r = get_entry(name).reported
    assert abs(c.gmacs - r.gmacs) / r.gmacs <= r.macs_tol


def test_tvconv_and_depthwise_cost_the_same_macs() -> None:
    from convatlas.registry import get_entry
    from convatlas.verify import _measure

    a = _measure(get_entry("tvconv_mobilenetv2_x0_1"), 96).gmacs
    b = measure_entry("mobilenetv2_face_x0_1").gmacs
    assert a == pytest.approx(b, rel=1e-9)


def test_tvconv_resolutions_follow_official_settings() -> None:
    with torch.device("meta"):
        m = create_model("tvconv_mobilenetv2_x1_0")
        s = create_model("tvconv_shufflenetv2_x1_0")
    assert sorted({t.h for t in m.modules() if isinstance(t, TVConv)}) == [6, 12, 24, 48, 96]
    assert sum(isinstance(t, TVConv) for t in m.modules()) == 17
    assert sorted({t.h for t in s.modules() if isinstance(t, TVConv)}) == [6, 12, 24]
    assert {(t.posi_map.shape[1], t.weight_layers[0][0].out_channels, len(t.weight_layers)) for t in
            m.modules() if isinstance(t, TVConv)} == {(4, 64, 5)}  # official training generator: 64 ch, 3 inter


def _fill(shapes: dict[str, tuple], g: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for k, s in shapes.items():
        leaf = k.rsplit(".", 1)[-1]
        if s == ():
            out[k] = torch.tensor(0)
        elif leaf == "running_var":
            out[k] = torch.rand(s, generator=g) + 0.5
        else:
            out[k] = torch.randn(s, generator=g) * (0.3 if leaf != "posi_map" else 1.0)
    return out


@pytest.mark.parametrize("family", ["mbv2", "shufflenet"])
def test_official_checkpoint_converts_strictly_and_outputs_match(family: str) -> None:
    """Synthetic official Lightning checkpoint (official key names/shapes, 32x32 variant) -> strict load; the
    official AM-softmax (D, K) weight and OutputLayer give the same logits; the deployed TVConv_test form
    (weight_maps (1, C, 3, 3, h, w)) loads into the reparameterised model with the same outputs."""
    from convatlas.analysis.bench import num_threads

    with num_threads(1):
        _check_official_conversion(family)


def _check_official_conversion(family: str) -> None:
    g = torch.Generator().manual_seed(0)
    size, k = 32, 7
    if family == "mbv2":
        shapes = official_mbv2(0.1, "TVConv", size=size, inter=8, layers=1)
        model = FaceMobileNetV2(0.1, input_size=size, num_classes=k, inter_chans=8, inter_layers=1)
        offs = {p: f"features.{i}" for i, p in enumerate(model.official_blocks())}
    else:
        shapes = official_shufflenet((24, 48, 96, 192, 1024), "TVConv", size=size, inter=8, layers=1)
        model = FaceShuffleNetV2((24, 48, 96, 192, 1024), input_size=size, num_classes=k, inter_chans=8,
                                 inter_layers=1)
        offs = {"stem": "conv1", **{f"stages.{i}": f"stage{i + 2}" for i in range(3)}, "stages.2.4": "conv5"}
    sd = _fill(shapes, g)
    for name, m in model.named_modules():  # TVConv shape buffers hold the layer's configuration
        if isinstance(m, TVConv):
            pre = max((p for p in offs if name == p or name.startswith(p + ".")), key=len)
            off = offs[pre] + name[len(pre):]
            for leaf, v in (("TVConv_k", 3), ("TVConv_k_square", 9), ("stride", m.stride), ("channels", m.channels),
                            ("h", m.h), ("w", m.w)):
                assert f"{off}.{leaf}" in sd, off
                sd[f"{off}.{leaf}"] = torch.tensor(v)
    ckpt = {"state_dict": {**{"model." + a: v for a, v in sd.items()}, "head.weight": torch.randn(512, k, generator=g)}}
    load_official_tvconv(model, ckpt)
    model.eval()
    x = torch.randn(2, 3, size, size, generator=g)
    with torch.no_grad():
        feat = model.forward_features(x)
        # Official OutputLayer (BN2d -> AvgPool(size/16) -> flatten -> Linear -> BN1d) with the official tensors.
        y = F.batch_norm(feat, sd["output_layer.layer1.running_mean"], sd["output_layer.layer1.running_var"],
                         sd["output_layer.layer1.weight"], sd["output_layer.layer1.bias"])
        y = F.avg_pool2d(y, size // 16).flatten(1)
        y = F.linear(y, sd["output_layer.layer2.0.weight"], sd["output_layer.layer2.0.bias"])
        emb = F.batch_norm(y, sd["output_layer.layer2.1.running_mean"], sd["output_layer.layer2.1.running_var"],
                           sd["output_layer.layer2.1.weight"], sd["output_layer.layer2.1.bias"])
        torch.testing.assert_close(model.forward_head(feat, pre_logits=True), emb, rtol=1e-4, atol=1e-5)
        w = ckpt["state_dict"]["head.weight"]
        official_logits = 32 * (F.normalize(emb) @ F.normalize(w, dim=0)).clamp(-1, 1)
        ref = model(x)
        torch.testing.assert_close(ref, official_logits, rtol=1e-4, atol=1e-4)
        # Deployed form: official TVConv_test weight_maps = weight_layers(posi_map).view(1, C, 3, 3, h, w).
        dep = {}
        for key, v in ckpt["state_dict"].items():
            if ".weight_layers." in key or key.endswith(".posi_map") or key.rsplit(".", 1)[-1] in (
                    "TVConv_k", "TVConv_k_square", "stride", "channels"):
                continue
            dep[key] = v
        for name, m in model.named_modules():
            if isinstance(m, TVConv):
                pre = max((p for p in offs if name == p or name.startswith(p + ".")), key=len)
                off = "model." + offs[pre] + name[len(pre):]
                dep[off + ".weight_maps"] = m.generate_weight().reshape(1, m.channels, 3, 3, m.h, m.w)
                dep[off + ".c"] = torch.tensor(m.channels)
        deployed = FaceMobileNetV2(0.1, input_size=size, num_classes=k, inter_chans=8, inter_layers=1) \
            if family == "mbv2" else FaceShuffleNetV2((24, 48, 96, 192, 1024), input_size=size, num_classes=k,
                                                      inter_chans=8, inter_layers=1)
        load_official_tvconv(deployed, {"state_dict": dep})
        deployed.eval()
        torch.testing.assert_close(deployed(x), ref, rtol=1e-4, atol=1e-4)
    bad = dict(sd)
    bad[next(k for k in bad if k.endswith(".channels"))] = torch.tensor(5)
    with pytest.raises(ValueError, match="channels"):
        convert_official_tvconv(bad, model)


def test_am_softmax_margin_and_labels() -> None:
    m = create_model("test_tvconv").eval()
    x = torch.randn(3, 3, 32, 32)
    y = torch.tensor([1, 2, 3])
    with torch.no_grad():
        plain, margin = m(x), m(x, y)
    diff = plain - margin
    torch.testing.assert_close(diff[torch.arange(3), y], torch.full((3,), 32 * 0.35))
    diff[torch.arange(3), y] = 0
    assert diff.abs().max() == 0
    lin = create_model("test_tvconv", head_type="linear")
    with pytest.raises(ValueError, match="AM-softmax"):
        lin(x, y)
    with pytest.raises(ValueError, match="head_type"):
        create_model("test_tvconv", head_type="arcface")
    with pytest.raises(ValueError, match="TVConv options"):
        FaceMobileNetV2(0.1, atom="base", inter_chans=8)


def test_tiny_contract_reparam_and_safety() -> None:
    model, x = check_tiny("test_tvconv")
    with pytest.raises(ValueError, match="fixes"):
        model(torch.randn(2, 3, 40, 40))
    model.eval()
    with torch.no_grad():
        ref = model(x)
        model.reparameterize()
        assert torch.allclose(model(x), ref, atol=1e-5)


def test_shufflenet_tiny_forward_backward_and_reparam() -> None:
    torch.manual_seed(0)
    m = FaceShuffleNetV2((8, 16, 32, 64, 64), (1, 2, 1), input_size=32, embedding_size=16, num_classes=5,
                         inter_chans=4, inter_layers=1)
    x = torch.randn(2, 3, 32, 32)
    m(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    assert [f.shape[-1] for f in m.forward_stages(x)] == [8, 4, 2]
    m.eval()
    with torch.no_grad():
        ref = m(x)
        m.reparameterize()
        torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_learns_digits() -> None:
    """Reduced TVConv MobileNetV2 (x0.5, 32x32 input, 4 stages) on digits: val acc >= 0.95 (measured 0.997)."""
    torch.manual_seed(0)
    model = FaceMobileNetV2(width_mult=0.5, input_size=32, settings=((1, 16, 1, 1), (4, 24, 1, 2), (4, 32, 1, 2),
                            (4, 64, 1, 2)), last_channel=128, embedding_size=64, num_classes=10, inter_chans=8,
                            head_type="linear")
    acc = train_digits(model, size=32, epochs=6, lr=3e-3)
    assert acc >= 0.95, acc


def _layout_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """'Aligned' 32x32 images: four 8x8 parts at fixed places, each horizontal or vertical stripes at random; the
    label is the texture of the top-left part, so the class depends on *where* a texture is (the card's
    layout-specific stand-in)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, 3, 32, 32, generator=g)
    tex = torch.randint(0, 2, (n, 4), generator=g)
    yy, xx = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    stripes = ((torch.sin(yy * 1.6) > 0).float(), (torch.sin(xx * 1.6) > 0).float())
    for i in range(n):
        for p, (r, c) in enumerate(((4, 4), (4, 20), (20, 4), (20, 20))):
            x[i, :, r:r + 8, c:c + 8] += stripes[int(tex[i, p])]
    return x, tex[:, 0]


@pytest.mark.slow
def test_tvconv_learns_layout_faster_than_depthwise() -> None:
    """Same tiny MobileNetV2 (x0.25, 32x32), one epoch on 1200 layout images: TVConv val acc >= 0.95 and at least
    0.2 above the depthwise atom (measured 1.00 vs 0.52; depthwise needs ~3 epochs to reach 0.99)."""
    from convatlas.analysis.bench import num_threads

    xtr, ytr = _layout_data(1200, 0)
    xva, yva = _layout_data(400, 1)
    accs = {}
    with num_threads(1):
        for atom in ("base", "tvconv"):
            torch.manual_seed(0)
            model = FaceMobileNetV2(0.25, atom=atom, input_size=32, settings=((1, 16, 1, 1), (2, 24, 1, 2),
                                    (2, 32, 1, 2), (2, 64, 1, 2)), last_channel=64, embedding_size=32, num_classes=2,
                                    head_type="linear", **({"inter_chans": 8} if atom == "tvconv" else {}))
            opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
            model.train()
            perm = torch.randperm(1200)
            for i in range(0, 1200, 64):
                idx = perm[i:i + 64]
                loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                accs[atom] = (model(xva).argmax(1) == yva).float().mean().item()
    assert accs["tvconv"] >= 0.95 and accs["tvconv"] >= accs["base"] + 0.2, accs


def test_load_weights_converts_official_lightning_file(tmp_path) -> None:
    """``load_weights`` on an official Lightning checkpoint of the depthwise x0.1 face model (no TVConv buffers to
    fill): converted through checkpoint_filter_fn, AM-softmax weight transposed."""
    from convatlas import load_weights

    g = torch.Generator().manual_seed(0)
    shapes = official_mbv2(0.1, "base")
    sd = {"model." + k: (torch.tensor(0) if s == () else torch.rand(s, generator=g) + 0.5) for k, s in shapes.items()}
    sd["head.weight"] = torch.randn(512, 1000, generator=g)
    path = tmp_path / "official.ckpt.pt"
    torch.save({"state_dict": sd, "epoch": 3}, path)
    model = create_model("mobilenetv2_face_x0_1")
    load_weights(model, path)
    torch.testing.assert_close(model.head.weight, sd["head.weight"].t())
    torch.testing.assert_close(model.embed.weight, sd["model.output_layer.layer2.0.weight"])
