"""PHC ResNets / VGG (card: phnn)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from backbone_checks import check_reported, check_tiny, train_digits  # noqa: E402

from convatlas import create_model, list_models  # noqa: E402
from convatlas.analysis.complexity import count_params  # noqa: E402
from convatlas.layers.phc_conv import PHConv  # noqa: E402
from convatlas.models.classification.phnn import PHCResNet, add_grayscale_channel  # noqa: E402

VARIANTS = list_models(paper="phnn", task="classification")  # SEDnet: tests/models/audio


def test_all_variants_registered() -> None:
    assert len(VARIANTS) == 22  # Large ResNet18/50/152 + VGG19 x {real, n2, n3, n4}; ResNet18/50 x {real, n2, n4}


def _official_resnet_params(block: str, layers: tuple, widths: tuple, n: int, cin: int, classes: int = 10) -> int:
    """Parameter count of the official phcresnet.py / real resnet.py layout, derived from layer shapes alone:
    PHConv = n^3 + C_out*C_in*k^2/n (its unused bias excluded), conv = C_out*C_in*k^2, BN = 2C, Linear head."""
    conv = (lambda ci, co, k: ci * co * k * k) if n == 1 else (lambda ci, co, k: n**3 + ci * co * k * k // n)
    exp = 1 if block == "basic" else 4
    total, inp = conv(cin, widths[0], 3) + 2 * widths[0], widths[0]
    for i, (planes, depth) in enumerate(zip(widths[1:], layers)):
        for j in range(depth):
            if block == "basic":
                total += conv(inp, planes, 3) + conv(planes, planes, 3) + 4 * planes
            else:
                total += conv(inp, planes, 1) + conv(planes, planes, 3) + conv(planes, exp * planes, 1) + 12 * planes
            if (i > 0 and j == 0) or inp != exp * planes:  # projection shortcut
                total += conv(inp, exp * planes, 1) + 2 * exp * planes
            inp = exp * planes
    return total + inp * classes + classes


@pytest.mark.parametrize("name", [v for v in VARIANTS if v.startswith("phc_resnet")])
def test_resnet_counts_follow_from_official_shapes(name: str) -> None:
    """Registered counts == the shape formula (which also reproduces the card's measured Large / real figures)."""
    from convatlas.registry import get_entry

    arch, rest = name[len("phc_"):].split("_", 1)
    n = 1 if rest.endswith("real") else int(rest[-1])
    block, layers = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet50": ("bottleneck", (3, 4, 6, 3)),
                     "resnet152": ("bottleneck", (3, 8, 36, 3))}[arch]
    widths = (60, 60, 120, 240, 516) if "large" in rest else (64, 64, 128, 256, 512)
    expected = _official_resnet_params(block, layers, widths, n, 3 if n in (1, 3) else 4)
    if name == "phc_resnet152_large_real":  # official real ResNet152Large builds BasicBlocks (see phnn.py)
        assert _official_resnet_params("basic", layers, widths, 1, 3) == 52_578_694  # card's official count
    assert get_entry(name).reported.params == expected


@pytest.mark.parametrize("name", VARIANTS)
def test_reported_params(name: str) -> None:
    check_reported(name)


def test_params_scale_as_one_over_n() -> None:
    real = count_params(create_model("phc_resnet50_large_real", num_classes=10).to("meta"))
    for n in (2, 3, 4):
        m = torch.nn.Module()
        with torch.device("meta"):
            m = create_model(f"phc_resnet50_large_n{n}")
        ratio = count_params(m) / real
        assert abs(ratio - 1 / n) < 0.01, (n, ratio)


def test_tiny_contract_and_safety() -> None:
    check_tiny("test_phnn")


def test_vgg_and_quaternion_forward() -> None:
    torch.manual_seed(0)
    vgg = create_model("phc_vgg19_large_n3").eval()
    with torch.no_grad():
        assert vgg(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    q = PHCResNet(layers=(1, 1, 1, 1), widths=(8, 8, 8, 16, 16), n=4, algebra="quaternion")
    assert q(torch.randn(2, 4, 16, 16)).shape == (2, 10)


@pytest.mark.slow
def test_learns_digits() -> None:
    """PHC-ResNet (n = 4, widths 16..64, 1 block/stage, gray+RGB input) on 16x16 digits: val acc >= 0.95 (measured 0.997)."""
    torch.manual_seed(0)
    model = PHCResNet(layers=(1, 1, 1, 1), widths=(16, 16, 32, 64, 64), n=4, in_chans=4)
    acc = train_digits(model, size=16, epochs=6, lr=3e-3, transform=add_grayscale_channel)
    assert acc >= 0.95, acc


@pytest.mark.parametrize("kind", ["resnet", "vgg"])
def test_official_checkpoint_layout_loads(kind: str) -> None:
    """Official keys (conv1/bn1/layerX/linear or features.N/classifier.N; PHConv a/s/bias) load strictly."""
    import re

    from convatlas.models.classification.phnn import PHCVGG, checkpoint_filter_fn

    if kind == "resnet":
        model = PHCResNet(block="bottleneck", layers=(1, 1, 1, 1), widths=(8, 8, 8, 16, 16), n=4)
    else:
        model = PHCVGG(cfg=(8, "M", 16, 16, "M"), hidden=8, n=4)
    flat = {}
    if kind == "vgg":
        i = 0
        for si, st in enumerate(model.stages):
            for li in range(len(st)):
                flat[f"stages.{si}.{li}"] = i
                i += 1
    official = {}
    for k, v in model.state_dict().items():
        mod, _, leaf = k.rpartition(".")
        if isinstance(model.get_submodule(mod), PHConv) and leaf in ("A", "F"):
            m = model.get_submodule(mod)
            v = v.reshape(m.filter_shape) if leaf == "F" else v
            leaf = leaf.lower() if leaf == "A" else "s"
            official[_official_name(mod, kind, flat) + ".bias"] = torch.zeros(m.out_channels)  # unused bias
        official[_official_name(mod, kind, flat) + "." + leaf] = v
    assert any(re.search(r"\.s$", k) for k in official)
    model.load_state_dict(checkpoint_filter_fn(official, model), strict=True)


def _official_name(mod: str, kind: str, flat: dict) -> str:
    import re

    if kind == "resnet":
        mod = re.sub(r"^stem\.0", "conv1", mod)
        mod = re.sub(r"^stem\.1", "bn1", mod)
        mod = re.sub(r"^stages\.(\d)", lambda m: f"layer{int(m[1]) + 1}", mod)
        return re.sub(r"^head", "linear", mod)
    if mod.startswith("stages."):
        return f"features.{flat[mod]}"
    mod = re.sub(r"^pre_logits\.", "classifier.", mod)
    return re.sub(r"^head", "classifier.6", mod)


def test_cifar_recipe() -> None:
    """Official main.py + configs: SGD 0.9, wd 5e-4, cosine without warm-up, 200 epochs, batch 128, lr 0.1 / 0.01."""
    from convatlas.models.classification.phnn import cifar_train_config

    res, vgg = cifar_train_config("resnet"), cifar_train_config("vgg", epochs=3)
    assert (res.optimizer, res.momentum, res.weight_decay, res.epochs, res.batch_size) == ("sgd", 0.9, 5e-4, 200, 128)
    assert (res.lr, vgg.lr, vgg.epochs, res.warmup_epochs, res.min_lr) == (0.1, 0.01, 3, 0.0, 0.0)
    res.validate()
    with pytest.raises(ValueError, match="arch"):
        cifar_train_config("mlp")
