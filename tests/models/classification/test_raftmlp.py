"""RaftMLP (card: raftmlp)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from backbone_checks import check_reported, check_tiny, train_digits  # noqa: E402

from convatlas import create_model, list_models  # noqa: E402
from convatlas.models.classification.raftmlp import RaftMLP, RaftTokenMixing  # noqa: E402


@pytest.mark.parametrize("name", list_models(paper="raftmlp"))
def test_reported(name: str) -> None:
    check_reported(name)


def test_vertical_block_param_formula() -> None:
    blk = RaftTokenMixing(64, 2, (56, 56), "h")
    assert sum(p.numel() for p in blk.parameters()) == 50_640


def test_r1_is_mlp_along_h_and_rC_is_dense_per_column() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 4, 4, 3, dtype=torch.float64)  # (B, h, w, C)
    blk = RaftTokenMixing(3, 1, (4, 4), "h").double()
    out = blk.mix(x)
    for c in range(3):
        for col in range(4):
            assert torch.allclose(out[0, :, col, c], blk.fn(x[0, :, col, c]), atol=1e-12)
    dense = RaftTokenMixing(3, 3, (4, 4), "h").double()
    out = dense.mix(x)
    for col in range(4):
        vec = x[0, :, col, :].T.reshape(-1)  # index i*h + y with raft member i = channel i
        assert torch.allclose(out[0, :, col, :].T.reshape(-1), dense.fn(vec), atol=1e-12)


def test_raft_grouping_is_strided() -> None:
    torch.manual_seed(0)
    blk = RaftTokenMixing(8, 2, (4, 4), "w")  # C/r = 4: channels o and o + 4 share a raft
    x = torch.randn(1, 4, 4, 8)
    x2 = x.clone()
    x2[..., 1] += 1.0
    diff = (blk.mix(x2) - blk.mix(x)).abs().amax((0, 1, 2))
    assert diff[1] > 0 and diff[5] > 0
    assert torch.all(diff[[0, 2, 3, 4, 6, 7]] == 0)


def test_resolution_change_is_interpolated() -> None:
    m = create_model("test_raftmlp").eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 48, 48)).shape == (1, 10)
        assert m(torch.randn(1, 3, 30, 30)).shape == (1, 10)  # resized up to a multiple of 8


def test_tiny_contract_and_safety() -> None:
    check_tiny("test_raftmlp")


@pytest.mark.slow
def test_learns_digits() -> None:
    """Two-level RaftMLP (dims 32/64, patch 4/2, r 2, depth 1/1) on 32x32 digits: val acc >= 0.95 (measured 0.997)."""
    torch.manual_seed(0)
    model = RaftMLP(levels=[(1, 32, 4, 2, (4, 8)), (1, 64, 2, 2, (2, 4))], img_size=32, num_classes=10)
    acc = train_digits(model, size=32, epochs=8, lr=3e-3)
    assert acc >= 0.95, acc


def test_official_key_mapping() -> None:
    import re

    from convatlas.models.classification.raftmlp import checkpoint_filter_fn

    m = create_model("test_raftmlp")
    names = {"0": "1", "1": "3", "2": "5"}

    def official(k: str) -> str:  # the card's official layout
        if k.startswith("norm."):
            return "heads.0.1." + k[5:]
        if k.startswith("head."):
            return "classifier." + k[5:]
        if mt := re.match(r"levels\.(\d+)\.0\.fc\.(.*)", k):
            return f"levels.{mt[1]}.fn.0.fc.{mt[2]}"
        mt = re.match(r"levels\.(\d+)\.(\d+)\.(\d)\.(norm|fn\.\d+)\.(.*)", k)
        norm = "norm.1" if (mt[4] == "norm" and mt[3] != "2") else mt[4]
        return f"levels.{mt[1]}.fn.{int(mt[2]) + 1}.{names[mt[3]]}.{norm}.{mt[5]}"

    sd = {official(k): v for k, v in m.state_dict().items()}
    assert "levels.0.fn.2.1.norm.1.weight" in sd and "levels.0.fn.2.5.norm.weight" in sd
    m.load_state_dict(checkpoint_filter_fn(sd), strict=True)
