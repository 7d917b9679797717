"""AFFNet (card: aff)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from backbone_checks import check_fast_inference_matches, check_reported, check_tiny, train_digits  # noqa: E402

from convatlas import create_model, list_models  # noqa: E402
from convatlas.models.classification.affnet import AFFNet  # noqa: E402


def test_variants() -> None:
    assert list_models(paper="aff") == ["affnet", "affnet_base", "affnet_deeplabv3", "affnet_et", "affnet_et_deeplabv3",
                                        "affnet_et_ssdlite", "affnet_large", "affnet_ssdlite", "affnet_t",
                                        "affnet_t_deeplabv3", "affnet_t_ssdlite"]


@pytest.mark.parametrize("name", ["affnet_et", "affnet_t", "affnet"])
def test_reported(name: str) -> None:
    check_reported(name)


def test_resolution_independent_weights() -> None:
    m = create_model("test_aff").eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64)).shape == m(torch.randn(1, 3, 96, 128)).shape == (1, 10)


def test_tiny_contract_and_safety() -> None:
    model, _ = check_tiny("test_aff")
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.randn(1, 3, 40, 40))


@pytest.mark.slow
def test_learns_digits() -> None:
    """AFFNet-ET-like tiny model (widths 16..48) on 32x32 digits: val acc >= 0.95 (measured 0.985)."""
    torch.manual_seed(0)
    model = AFFNet(layer1=(16, 1), layer2=(24, 1), mv2_exp=2, stem=16, num_classes=10, drop_rate=0.0,
                   layers=((32, 64, 1, False), (40, 80, 1, False), (48, 96, 1, False)))
    acc = train_digits(model, size=32, epochs=8, lr=4e-3)
    assert acc >= 0.95, acc


# ---------------------------------------------------------------------------------------------------------------
# Official layout (cvnets / microsoft TokenMixers affnet.py, config/affnet.py, aff_block.py, mobilenetv2.py),
# written from the official modules, independently of ours: key -> shape.
# ---------------------------------------------------------------------------------------------------------------

OFFICIAL_CFGS = {  # (mv2 t, layer1 (c, n), layer2 (c, n), [(C, ffn, n, no_fuse)] * 3)
    "xx_small": (2, (32, 1), (48, 3), [(64, 128, 2, False), (104, 208, 4, False), (144, 288, 3, False)]),
    "x_small": (4, (32, 1), (48, 3), [(96, 192, 2, False), (160, 320, 4, False), (192, 384, 3, False)]),
    "small": (4, (32, 1), (64, 3), [(128, 256, 2, False), (256, 512, 4, False), (320, 640, 3, False)]),
    "base": (4, (64, 1), (128, 3), [(256, 512, 2, False), (512, 1024, 4, True), (640, 1280, 3, True)]),
    "large": (4, (64, 2), (128, 6), [(256, 512, 4, False), (512, 1024, 18, True), (768, 1536, 6, True)]),
}


def _div8(v: float) -> int:
    n = max(8, int(v + 4) // 8 * 8)
    return n + 8 if n < 0.9 * v else n


def _conv_layer(sd: dict, p: str, cout: int, cin: int, k: int, groups: int = 1, norm: bool = True) -> None:
    sd[p + "block.conv.weight"] = (cout, cin // groups, k, k)
    if norm:
        for n in ("weight", "bias", "running_mean", "running_var"):
            sd[p + "block.norm." + n] = (cout,)
        sd[p + "block.norm.num_batches_tracked"] = ()


def _mv2(sd: dict, p: str, cin: int, cout: int, t: float) -> None:
    h = _div8(int(round(cin * t)))
    if t != 1:
        _conv_layer(sd, p + "block.exp_1x1.", h, cin, 1)
    _conv_layer(sd, p + "block.conv_3x3.", h, h, 3, groups=h)
    _conv_layer(sd, p + "block.red_1x1.", cout, h, 1)


def official_affnet(mode: str, num_classes: int | None = 1000) -> dict[str, tuple]:
    t, l1, l2, rows = OFFICIAL_CFGS[mode]
    sd: dict[str, tuple] = {}
    _conv_layer(sd, "conv_1.", 16, 3, 3)
    cin = 16
    for li, (c, n) in enumerate((l1, l2), start=1):
        for j in range(n):
            _mv2(sd, f"layer_{li}.{j}.", cin, c, t)
            cin = c
    for li, (c, ffn, n, no_fuse) in enumerate(rows, start=3):
        _mv2(sd, f"layer_{li}.0.", cin, c, t)
        p = f"layer_{li}.1."
        for i in range(n):
            q = f"{p}global_rep.{i}."
            sd[q + "norm1.weight"] = sd[q + "norm1.bias"] = sd[q + "norm2.weight"] = sd[q + "norm2.bias"] = (c,)
            sd[q + "filter.w1"] = sd[q + "filter.w2"] = (2, 8, c // 8, c // 8)
            sd[q + "filter.b1"] = sd[q + "filter.b2"] = (2, 8, c // 8)
            _mv2(sd, q + "mlp.", c, c, ffn / c)
        sd[f"{p}global_rep.{n}.weight"] = sd[f"{p}global_rep.{n}.bias"] = (c,)
        _conv_layer(sd, p + "conv_proj.", c, c, 1)
        if not no_fuse:
            _conv_layer(sd, p + "fusion.", c, 2 * c, 1)
        cin = c
    if num_classes is not None:
        e = min(4 * cin, 960)
        _conv_layer(sd, "conv_1x1_exp.", e, cin, 1)
        sd["classifier.fc.weight"], sd["classifier.fc.bias"] = (num_classes, e), (num_classes,)
    return sd


def n_params(shapes: dict[str, tuple]) -> int:
    import math

    return sum(math.prod(s) for k, s in shapes.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def fill(shapes: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.tensor(0) if s == () else torch.rand(s, generator=g) + 0.5 if k.endswith("running_var")
                else 0.2 * torch.randn(s, generator=g)) for k, s in shapes.items()}


_REG = {"xx_small": "affnet_et", "x_small": "affnet_t", "small": "affnet", "base": "affnet_base",
        "large": "affnet_large"}


@pytest.mark.parametrize("mode", sorted(OFFICIAL_CFGS))
def test_registered_params_equal_official_layout(mode: str) -> None:
    from convatlas.registry import get_entry

    assert get_entry(_REG[mode]).reported.params == n_params(official_affnet(mode))
    check_reported(_REG[mode])


@pytest.mark.parametrize("mode", ["xx_small", "base"])
def test_official_checkpoint_converts_strictly(mode: str) -> None:
    """Synthetic official checkpoint -> strict load (meta device); no_fuse / MV2 naming covered by 'base'."""
    from convatlas.models.classification.affnet import convert_official_affnet

    shapes = official_affnet(mode)
    with torch.device("meta"):
        model = create_model(_REG[mode])
        sd = {k: torch.empty(s, dtype=torch.long if k.endswith("tracked") else torch.float) for k, s in shapes.items()}
    missing = model.load_state_dict(convert_official_affnet({"model": sd}), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys


def test_official_checkpoint_outputs_match_official_ops() -> None:
    """Values land where the official ops read them: stem conv+BN+swish and the classifier computed with the
    official tensors equal our model's intermediate results."""
    import torch.nn.functional as F

    from convatlas.models.classification.affnet import convert_official_affnet

    sd = fill(official_affnet("xx_small"))
    model = create_model("affnet_et").eval()
    model.load_state_dict(convert_official_affnet({"state_dict": sd}), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = F.silu(F.batch_norm(F.conv2d(x, sd["conv_1.block.conv.weight"], stride=2, padding=1),
                                  sd["conv_1.block.norm.running_mean"], sd["conv_1.block.norm.running_var"],
                                  sd["conv_1.block.norm.weight"], sd["conv_1.block.norm.bias"]))
        torch.testing.assert_close(model.stem(x), ref)
        f = model.forward_features(x)
        e = F.silu(F.batch_norm(F.conv2d(f, sd["conv_1x1_exp.block.conv.weight"]),
                                sd["conv_1x1_exp.block.norm.running_mean"], sd["conv_1x1_exp.block.norm.running_var"],
                                sd["conv_1x1_exp.block.norm.weight"], sd["conv_1x1_exp.block.norm.bias"]))
        logits = F.linear(e.mean((2, 3)), sd["classifier.fc.weight"], sd["classifier.fc.bias"])
        torch.testing.assert_close(model(x), logits, rtol=1e-4, atol=1e-4)
        u = model.stages[2][1].global_rep[0]
        torch.testing.assert_close(u.filter.w1, sd["layer_3.1.global_rep.0.filter.w1"])
        key = "layer_3.1.global_rep.0.mlp.block.exp_1x1.block.conv.weight"
        torch.testing.assert_close(u.mlp.block[0][0].weight, sd[key])


def test_output_stride_dilates_like_the_official_encoder() -> None:
    m8, m16 = AFFNet(output_stride=8), AFFNet(output_stride=16)
    assert [i["reduction"] for i in m8.feature_info] == [2, 4, 8, 8, 8]
    assert [i["reduction"] for i in m16.feature_info] == [2, 4, 8, 16, 16]
    # OS8: layer-4 MV2 stride 1 with dilation 1; layer-5 MV2 stride 1 with dilation 2 (previous dilation)
    dw4, dw5 = m8.stages[3][0].block[1][0], m8.stages[4][0].block[1][0]
    assert (dw4.stride, dw4.dilation, dw5.stride, dw5.dilation) == ((1, 1), (1, 1), (1, 1), (2, 2))
    with pytest.raises(ValueError, match="output_stride"):
        AFFNet(output_stride=4)


def test_create_model_loads_official_checkpoint_file(tmp_path) -> None:
    """``create_model(name, pretrained=path)`` converts an official cvnets .pt file through checkpoint_filter_fn."""
    sd = fill(official_affnet("xx_small"), seed=1)
    path = tmp_path / "affnet_et_official.pt"
    torch.save({"state_dict": sd}, path)
    model = create_model("affnet_et", pretrained=str(path))
    torch.testing.assert_close(model.stem[0].weight, sd["conv_1.block.conv.weight"])
    torch.testing.assert_close(model.head.bias, sd["classifier.fc.bias"])


def test_inference_fast_path_matches_module_forward() -> None:
    """Folded-BN / in-place / channels-last / complex-matmul inference equals the plain (grad-enabled) forward."""
    check_fast_inference_matches(create_model("test_aff"), torch.randn(2, 3, 64, 64), stages=True,
                                 channels_last_stages=True)