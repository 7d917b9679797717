"""AFFNet (card: aff)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from backbone_checks import check_reported, check_tiny, train_digits  # noqa: E402

from convatlas import create_model, list_models  # noqa: E402
from convatlas.models.classification.affnet import AFFNet  # noqa: E402


def test_variants() -> None:
    assert list_models(paper="aff") == ["affnet", "affnet_base", "affnet_et", "affnet_large", "affnet_t"]


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
