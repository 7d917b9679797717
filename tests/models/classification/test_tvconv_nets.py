"""Face MobileNetV2 with TVConv (card: tvconv)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from freqfam_checks import check_tiny, train_digits  # noqa: E402

from convatlas import create_model, list_models  # noqa: E402
from convatlas.analysis.complexity import measure_entry  # noqa: E402
from convatlas.layers.tvconv import TVConv  # noqa: E402
from convatlas.models.classification.tvconv_nets import FaceMobileNetV2  # noqa: E402

# Measured (training form, 1000 classes, 96x96); the paper's table was not available (see the model docstring).
MEASURED = {"tvconv_mobilenetv2_x0_1": 3_391_872, "mobilenetv2_face_x0_1": 837_672,
            "tvconv_mobilenetv2_x1_0": 13_123_144, "mobilenetv2_face_x1_0": 2_754_280}


def test_variants_registered() -> None:
    assert len(list_models(paper="tvconv")) == 10


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_measured_params(name: str) -> None:
    assert measure_entry(name).params == MEASURED[name]


def test_tvconv_resolutions_follow_official_settings() -> None:
    with torch.device("meta"):
        m = create_model("tvconv_mobilenetv2_x1_0")
    hws = sorted({m.h for m in m.modules() if isinstance(m, TVConv)})
    assert hws == [6, 12, 24, 48, 96]
    assert sum(isinstance(x, TVConv) for x in m.modules()) == 17


def test_tiny_contract_reparam_and_safety() -> None:
    model, x = check_tiny("test_tvconv")
    with pytest.raises(ValueError, match="fixes"):
        model(torch.randn(2, 3, 40, 40))
    model.eval()
    with torch.no_grad():
        ref = model(x)
        model.reparameterize()
        assert torch.allclose(model(x), ref, atol=1e-5)


@pytest.mark.slow
def test_learns_digits() -> None:
    """Reduced TVConv MobileNetV2 (x0.5, 32x32 input, 4 stages) on digits: val acc >= 0.95 (measured 0.997)."""
    torch.manual_seed(0)
    model = FaceMobileNetV2(width_mult=0.5, input_size=32, settings=((1, 16, 1, 1), (4, 24, 1, 2), (4, 32, 1, 2),
                            (4, 64, 1, 2)), last_channel=128, embedding_size=64, num_classes=10, inter_chans=8)
    acc = train_digits(model, size=32, epochs=6, lr=3e-3)
    assert acc >= 0.95, acc
