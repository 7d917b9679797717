"""WaveMix (card: wavemix)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from backbone_checks import check_reported, check_tiny, train_digits  # noqa: E402

from convatlas import create_model, list_models  # noqa: E402
from convatlas.models.classification.wavemix import WaveBlock, WaveMix, checkpoint_filter_fn  # noqa: E402
from convatlas.ops.wavelets import haar_dwt2d  # noqa: E402


@pytest.mark.parametrize("name", list_models(paper="wavemix"))
def test_reported(name: str) -> None:
    check_reported(name)


def test_level1_block_matches_explicit_computation() -> None:
    torch.manual_seed(0)
    blk = WaveBlock(8, level=1, mult=2, ff_channel=8, dropout=0.0).eval()
    x = torch.randn(2, 8, 6, 6)
    r = blk.reduction(x)
    ll, det = haar_dwt2d(r)
    manual = torch.cat([ll] + [det[:, c, k][:, None] for c in range(2) for k in range(3)], 1)  # c0-LH, c0-HL, ...
    with torch.no_grad():
        assert torch.allclose(blk(x), blk.feedforward1(manual), atol=1e-6)
    assert blk(x).shape == x.shape


def test_multilevel_block_shapes() -> None:
    blk = WaveBlock(16, level=3, ff_channel=8, dropout=0.0)
    assert blk(torch.randn(2, 16, 16, 16)).shape == (2, 16, 16, 16)


def test_tiny_contract_and_safety() -> None:
    model, _ = check_tiny("test_wavemix")
    with pytest.raises(ValueError, match="multiple of 8"):
        model(torch.randn(2, 3, 36, 36))


def test_official_key_mapping() -> None:
    m = create_model("test_wavemix")
    sd = {("conv." + k[5:] if k.startswith("stem.") else "pool.2." + k[5:] if k.startswith("head.") else k): v
          for k, v in m.state_dict().items()}
    m.load_state_dict(checkpoint_filter_fn(sd), strict=True)


@pytest.mark.slow
def test_learns_digits() -> None:
    """WaveMix-Lite-like (stem 3->8->16, 4 level-1 blocks, C=16) on 32x32 digits: val acc >= 0.95 (measured 0.980; card: 0.977)."""
    torch.manual_seed(0)
    model = WaveMix(depth=4, final_dim=16, ff_channel=16, level=1, dropout=0.0, stem="lite", num_classes=10)
    acc = train_digits(model, size=32, epochs=12, lr=3e-3)
    assert acc >= 0.95, acc
