"""ResNet host + FDConv ResNets (card: fdconv)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from backbone_checks import (  # noqa: E402
    check_fast_inference_matches,
    check_reported,
    check_tiny,
    train_digits,
)

from convatlas import create_model, list_models  # noqa: E402
from convatlas.layers.fdconv import FDConv  # noqa: E402
from convatlas.layers.swap import swap_convs  # noqa: E402
from convatlas.models.classification.resnet import ResNet  # noqa: E402


@pytest.mark.parametrize("name", list_models(paper="fdconv"))
def test_reported(name: str) -> None:
    check_reported(name)


def test_paper_rule_adds_3_6m() -> None:
    with torch.device("meta"):
        base = sum(p.numel() for p in ResNet().parameters())
        model = create_model("fdconv_resnet50")
    added = sum(p.numel() for p in model.parameters()) - base
    assert added == 3_647_120 and round(added / 1e6, 1) == 3.6  # paper: "+3.6M"
    assert len(model.swapped) == 48
    assert all(isinstance(model.get_submodule(n), FDConv) for n in model.swapped)


def test_resnet50_matches_torchvision_state_dict() -> None:
    tv = pytest.importorskip("torchvision", reason="torchvision is only in the reference environment")
    with torch.device("meta"):
        ref = tv.models.resnet50()
        ours = ResNet()
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(ref_sd) == list(our_sd)
    assert all(ref_sd[k].shape == our_sd[k].shape for k in ref_sd)


def test_tiny_contract_and_safety() -> None:
    check_tiny("test_fdconv")


@pytest.mark.slow
def test_learns_digits() -> None:
    """ResNet (basic, widths 32..64) with FDConv (kernel_num 4) in every block conv, 16x16 digits: val acc >= 0.93
    (measured 0.975)."""
    torch.manual_seed(0)
    model = ResNet(block="basic", layers=(1, 1, 1, 1), widths=(32, 32, 64, 64), num_classes=10)
    assert len(swap_convs(model, "fdconv", "fdconv_paper", kernel_num=4)) == 8
    acc = train_digits(model, size=16, epochs=3, lr=3e-3, batch=64)
    assert acc >= 0.93, acc


def test_convert_standard_checkpoint_to_fdconv() -> None:
    """Official ``convert_to_fdconv``: a plain-conv checkpoint loads strictly; every FDConv's static kernel equals the
    source conv weight (measured 7e-8) and the network output at init matches the plain network (measured 2e-5)."""
    from convatlas.layers.fdconv import fdconv_dft_to_weight
    from convatlas.models.classification.fdconv_nets import convert_to_fdconv

    torch.manual_seed(0)
    plain = ResNet(block="basic", layers=(1, 1, 1, 1), widths=(32, 32, 64, 64), num_classes=10).eval()
    fd = create_model("test_fdconv").eval()
    fd.load_state_dict(convert_to_fdconv(plain.state_dict(), fd), strict=True)
    dynamic = [n for n in fd.swapped if fd.get_submodule(n).dynamic]
    assert len(dynamic) == 8
    for n in dynamic:
        m = fd.get_submodule(n)
        w = fdconv_dft_to_weight(m.dft_weight[0] * m.scale, m.out_channels, m.in_channels, m.kernel_size[0])
        torch.testing.assert_close(w, plain.get_submodule(n).weight, rtol=0, atol=1e-6)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = fd(x), plain(x)
    assert ((a - b).norm() / b.norm()).item() < 1e-3
    with pytest.raises(ValueError, match="shape"):
        bad = dict(plain.state_dict())
        bad[dynamic[0] + ".weight"] = torch.zeros(3, 3, 3, 3)
        convert_to_fdconv(bad, fd)


def test_resnet_inference_fast_path_matches_module_forward() -> None:
    """Batch >= 4: channels-last maps, eval BN folded (or applied in place), in-place ReLU/residual; same numbers."""
    check_fast_inference_matches(create_model("test_resnet"), torch.randn(4, 3, 32, 32), stages=True,
                                 channels_last_stages=True)
