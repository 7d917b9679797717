"""InceptionNeXt (card: inceptionnext): figures, contract, safety, identities, timm parity, learning."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

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
from convatlas.identities import identities_for  # noqa: E402
from convatlas.layers.token_mixers import InceptionDWConv2d  # noqa: E402
from convatlas.models.classification.inceptionnext import InceptionNeXt  # noqa: E402

VARIANTS = list_models(paper="inceptionnext")


def test_variants_registered() -> None:
    assert VARIANTS == sorted(
        ["inception_next_atto", "inception_next_tiny", "inception_next_small", "inception_next_base",
         "inception_next_base_384"]
    )


@pytest.mark.parametrize("name", VARIANTS)
def test_reported_figures(name: str) -> None:
    check_reported(name)


def test_contract_and_safety() -> None:
    torch.manual_seed(0)
    model = create_model("test_inceptionnext")
    x = torch.randn(2, 3, 64, 64)
    check_contract(model, x, 10)
    check_bad_inputs(model, x, "test_inceptionnext")
    check_state_dict_roundtrip(model, lambda: create_model("test_inceptionnext"), x)
    check_bf16_and_channels_last(model, x)
    check_grad_checkpointing(model, x)


def test_any_resolution_and_small_input_error() -> None:
    model = create_model("test_inceptionnext").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 45, 77)).shape == (1, 10)
    with pytest.raises(ValueError, match="spatial size"):
        model(torch.randn(1, 3, 16, 16))


def test_split_order_and_branch_widths() -> None:
    m = InceptionDWConv2d(96)  # tiny stage 1: gc = 12, identity 60
    assert m.split_indexes == (60, 12, 12, 12)
    assert m.dwconv_w.weight.shape == (12, 1, 1, 11) and m.dwconv_h.weight.shape == (12, 1, 11, 1)
    atto = InceptionDWConv2d(40, band_kernel_size=9, branch_ratio=0.25)
    assert atto.split_indexes == (10, 10, 10, 10)
    # centred deltas everywhere -> identity on all channels
    with torch.no_grad():
        for conv in (m.dwconv_hw, m.dwconv_w, m.dwconv_h):
            conv.weight.zero_()
            conv.bias.zero_()
            kh, kw = conv.kernel_size
            conv.weight[:, 0, kh // 2, kw // 2] = 1.0
        x = torch.randn(2, 96, 9, 9)
        torch.testing.assert_close(m(x), x)
    # band weights zero, square = centre 3x3 of a 7x7: equals a channel-masked depthwise conv on that slice
    k7 = torch.randn(12, 1, 7, 7)
    with torch.no_grad():
        m.dwconv_hw.weight.copy_(k7[:, :, 2:5, 2:5])
        m.dwconv_w.weight.zero_()
        m.dwconv_h.weight.zero_()
        y = m(x)
    ref = F.conv2d(x[:, 60:72], k7[:, :, 2:5, 2:5], padding=1, groups=12)
    torch.testing.assert_close(y[:, 60:72], ref)
    torch.testing.assert_close(y[:, 72:], torch.zeros_like(y[:, 72:]))
    with pytest.raises(ValueError):
        InceptionDWConv2d(4, branch_ratio=0.125)


def test_identities() -> None:
    checks = identities_for("inceptionnext")
    assert checks
    for c in checks:
        c.fn()


def test_timm_parity() -> None:
    timm = pytest.importorskip("timm", reason="timm (reference library) not installed")
    for name in ("inception_next_atto",):
        ref = timm.create_model(name).eval()
        ours = create_model(name).eval()
        ours.load_state_dict(ref.state_dict(), strict=True)
        x = torch.randn(2, 3, 96, 96)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(
                ours.forward_head(ours.forward_features(x), pre_logits=True),
                ref.forward_head(ref.forward_features(x), pre_logits=True), rtol=1e-5, atol=1e-5)


def test_timm_state_dict_layout() -> None:
    """Key names and shapes of the card (tiny, one block) without timm."""
    with torch.device("meta"):
        sd = create_model("inception_next_tiny").state_dict()
    expect = {
        "stem.0.weight": (96, 3, 4, 4),
        "stages.0.blocks.0.gamma": (96,),
        "stages.0.blocks.0.token_mixer.dwconv_hw.weight": (12, 1, 3, 3),
        "stages.0.blocks.0.token_mixer.dwconv_w.weight": (12, 1, 1, 11),
        "stages.0.blocks.0.token_mixer.dwconv_h.weight": (12, 1, 11, 1),
        "stages.0.blocks.0.norm.running_var": (96,),
        "stages.0.blocks.0.mlp.fc1.weight": (384, 96, 1, 1),
        "stages.0.blocks.0.mlp.fc2.weight": (96, 384, 1, 1),
        "stages.1.downsample.1.weight": (192, 96, 2, 2),
        "head.fc1.weight": (2304, 768),
        "head.norm.weight": (2304,),
        "head.fc2.weight": (1000, 2304),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    assert "stages.3.blocks.0.mlp.fc1.weight" in sd and sd["stages.3.blocks.0.mlp.fc1.weight"].shape[0] == 3 * 768


def test_fast_inference_path() -> None:
    torch.manual_seed(0)
    check_fast_inference_matches(create_model("test_inceptionnext"), torch.randn(2, 3, 64, 64))


@pytest.mark.slow
def test_learns_digits() -> None:
    """Reduced MetaNeXt (depths 1,1,1,1, dims 16..128, 242,550 params), 32x32 digits, 6 epochs AdamW 4e-3.

    Threshold: val acc >= 0.93 (measured 0.975, ~4 s CPU; chance is 0.10).
    """
    torch.manual_seed(0)
    model = InceptionNeXt(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), num_classes=10)
    acc = train_digits(model)
    assert acc >= 0.93, acc
