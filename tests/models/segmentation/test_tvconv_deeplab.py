"""Optic disc/cup DeepLabV3+ with TVConv ASPP (card: tvconv)."""

from __future__ import annotations

import math

import pytest
import torch

from convatlas import create_model
from convatlas.analysis.complexity import measure_entry
from convatlas.layers.tvconv import TVConv
from convatlas.models.segmentation.tvconv_deeplab import TVConvDeepLabV3Plus, convert_torchvision_mobilenetv2_backbone

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(sd: dict, p: str, c: int) -> None:
    for n in _BN:
        sd[p + n] = () if n == "num_batches_tracked" else (c,)


def _mbv2_features(prefix: str = "features.") -> dict[str, tuple]:
    """torchvision MobileNetV2 ``features.0-17`` (official baseline_mobilenetv2.py, width 1.0)."""
    sd: dict[str, tuple] = {f"{prefix}0.0.weight": (32, 3, 3, 3)}
    _bn(sd, f"{prefix}0.1.", 32)
    cin, i = 32, 1
    for t, c, n, _s in [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                        [6, 320, 1, 1]]:
        for _ in range(n):
            h, j, p = cin * t, 0, f"{prefix}{i}.conv."
            if t != 1:
                sd[f"{p}0.0.weight"] = (h, cin, 1, 1)
                _bn(sd, f"{p}0.1.", h)
                j = 1
            sd[f"{p}{j}.0.weight"] = (h, 1, 3, 3)
            _bn(sd, f"{p}{j}.1.", h)
            sd[f"{p}{j + 1}.weight"] = (c, h, 1, 1)
            _bn(sd, f"{p}{j + 2}.", c)
            cin, i = c, i + 1
    return sd


def official_odoc(atom: str, hw: int = 16, inter: int = 64, layers: int = 3) -> dict[str, tuple]:
    """Official DeepLabV3(IntermediateLayerGetter(MobileNetV2), DeepLabHeadV3Plus) state-dict shapes."""
    feats = _mbv2_features()
    sd: dict[str, tuple] = {}
    for k, s in feats.items():
        i = int(k.split(".")[1])
        rest = k.split(".", 2)[2]
        sd[f"backbone.{'low' if i < 4 else 'high'}_level_features.{i if i < 4 else i - 4}.{rest}"] = s
    h = "classifier."
    sd[h + "project.0.weight"] = (48, 24, 1, 1)
    _bn(sd, h + "project.1.", 48)
    a = h + "aspp."
    sd[a + "convs.0.0.weight"] = (256, 320, 1, 1)
    _bn(sd, a + "convs.0.1.", 256)
    for b in (1, 2, 3):
        p = f"{a}convs.{b}."
        if atom == "base":
            sd[p + "0.weight"] = (256, 320, 3, 3)
            _bn(sd, p + "1.", 256)
            continue
        q = p + "0.conv."
        sd[q + "0.0.weight"] = (1920, 320, 1, 1)
        _bn(sd, q + "0.1.", 1920)
        if atom == "DW":
            sd[q + "1.0.weight"] = (1920, 1, 3, 3)
        else:  # TVConv buffers + generator (od_oc_segmentation/networks/TVConv.py defaults)
            t = q + "1.0."
            for n in ("TVConv_k", "TVConv_k_square", "stride", "channels", "h", "w"):
                sd[t + n] = ()
            sd[t + "posi_map"] = (1, 4, hw, hw)
            sd[t + "weight_layers.0.0.weight"] = (inter, 4, 3, 3)
            for i in range(layers + 1):
                if i:
                    sd[t + f"weight_layers.{i}.0.weight"] = (inter, inter, 3, 3)
                sd[t + f"weight_layers.{i}.1.weight"] = sd[t + f"weight_layers.{i}.1.bias"] = (inter, hw, hw)
            sd[t + f"weight_layers.{layers + 1}.weight"] = (9 * 1920, inter, 3, 3)
        _bn(sd, q + "1.1.", 1920)
        sd[q + "2.weight"] = (256, 1920, 1, 1)
        _bn(sd, q + "3.", 256)
    sd[a + "convs.4.1.weight"] = (256, 320, 1, 1)
    _bn(sd, a + "convs.4.2.", 256)
    sd[a + "project.0.weight"] = (256, 1280, 1, 1)
    _bn(sd, a + "project.1.", 256)
    sd[h + "classifier.0.weight"] = (256, 304, 3, 3)
    _bn(sd, h + "classifier.1.", 256)
    sd[h + "classifier.3.weight"], sd[h + "classifier.3.bias"] = (2, 256, 1, 1), (2,)
    return sd


def _n_params(sd: dict[str, tuple]) -> int:
    skip = ("running_mean", "running_var", "num_batches_tracked", "TVConv_k", "TVConv_k_square", "stride",
            "channels", "h", "w")
    return sum(math.prod(s) for k, s in sd.items() if k.rsplit(".", 1)[-1] not in skip)


@pytest.mark.parametrize("name,atom", [("tvconv_deeplabv3plus_odoc", "TVConv"), ("dw_deeplabv3plus_odoc", "DW"),
                                       ("deeplabv3plus_odoc", "base")])
def test_params_equal_official_and_checkpoint_loads(name: str, atom: str) -> None:
    """Registered exact count == the official model's sum(p.numel()); an official checkpoint (same key layout, the
    TVConv shape buffers dropped) loads strictly."""
    from convatlas.registry import get_entry

    shapes = official_odoc(atom)
    assert measure_entry(name).params == _n_params(shapes) == get_entry(name).reported.params
    with torch.device("meta"):
        model = create_model(name)
        sd = {k: torch.empty(s) for k, s in shapes.items() if k.rsplit(".", 1)[-1] not in (
            "TVConv_k", "TVConv_k_square", "stride", "channels", "h", "w")}
    for k in sd:
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.empty((), dtype=torch.long, device="meta")
    res = model.load_state_dict(sd, strict=True)
    assert not res.missing_keys and not res.unexpected_keys


def test_backbone_shapes_and_torchvision_init() -> None:
    with torch.device("meta"):
        m = create_model("tvconv_deeplabv3plus_odoc")
        f = m.backbone(torch.randn(1, 3, 256, 256))
    assert f["low_level"].shape == (1, 24, 64, 64) and f["out"].shape == (1, 320, 16, 16)
    assert {t.h for t in m.modules() if isinstance(t, TVConv)} == {16}
    tv = _mbv2_features()
    tv["features.18.0.weight"] = (1280, 320, 1, 1)
    tv["classifier.1.weight"] = (1000, 1280)
    conv = convert_torchvision_mobilenetv2_backbone({k: torch.zeros(s) for k, s in tv.items()})
    assert set(conv) == {k for k in m.state_dict() if k.startswith("backbone.")}


def test_tiny_forward_backward_reparam_and_errors() -> None:
    torch.manual_seed(0)
    m = create_model("test_tvconv_deeplabv3plus")
    x = torch.randn(2, 3, 64, 64)
    y = m(x)
    assert y.shape == (2, 2, 64, 64)
    y.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    with torch.no_grad():
        ref = m(x)
        m.reparameterize()
        torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="fixes the resolution"):
        m(torch.randn(1, 3, 96, 96))
    with pytest.raises(ValueError, match="atom"):
        TVConvDeepLabV3Plus("cond", input_size=64)
    with pytest.raises(ValueError, match="TVConv options"):
        TVConvDeepLabV3Plus("base", input_size=64, inter_chans=4)


def test_load_official_checkpoint_training_and_deployed_forms() -> None:
    """Official checkpoint (DataParallel 'module.' keys, TVConv shape buffers) of the 64x64 test model loads
    strictly; its TVConv_test form (weight_maps (1, C, 3, 3, h, w), buffers c/h/w) gives the same output."""
    from convatlas.models.segmentation.tvconv_deeplab import load_official_odoc

    g = torch.Generator().manual_seed(0)
    shapes = official_odoc("TVConv", hw=4, inter=4, layers=1)
    sd = {}
    for k, s in shapes.items():
        leaf = k.rsplit(".", 1)[-1]
        val = {"TVConv_k": 3, "TVConv_k_square": 9, "stride": 1, "channels": 1920, "h": 4, "w": 4}.get(leaf)
        if s == ():
            sd["module." + k] = torch.tensor(0 if val is None else val)
        else:
            sd["module." + k] = torch.rand(s, generator=g) + 0.5 if leaf == "running_var" else \
                0.1 * torch.randn(s, generator=g)
    model = load_official_odoc(create_model("test_tvconv_deeplabv3plus"), {"state_dict": sd}).eval()
    x = torch.randn(1, 3, 64, 64, generator=g)
    with torch.no_grad():
        ref = model(x)
        dep = {}
        for k, v in sd.items():
            if ".weight_layers." in k or k.endswith("posi_map") or k.rsplit(".", 1)[-1] in (
                    "TVConv_k", "TVConv_k_square", "stride", "channels"):
                continue
            dep[k] = v
        for name, m in model.named_modules():
            if isinstance(m, TVConv):
                dep[f"module.{name}.weight_maps"] = m.generate_weight().reshape(1, 1920, 3, 3, 4, 4)
                dep[f"module.{name}.c"] = torch.tensor(1920)
        deployed = load_official_odoc(create_model("test_tvconv_deeplabv3plus"), dep).eval()
        torch.testing.assert_close(deployed(x), ref, rtol=1e-4, atol=1e-4)
    sd[next(k for k in sd if k.endswith(".h"))] = torch.tensor(16)
    with pytest.raises(ValueError, match="model has 4"):
        load_official_odoc(create_model("test_tvconv_deeplabv3plus"), sd)
