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


def test_ablation_counts_follow_from_the_card() -> None:
    """hierarchy-m = RaftMLP-M minus the extra cross-scale embedding inputs (levels 1-3); r-2-cross-emb = r-2 plus
    the 32x32 kernel's inputs. Params and MACs (196/784/3136 tokens) from the card's exact figures."""
    from convatlas.registry import get_entry

    extra_m = [(3 * 64, 96, 3136), (96 * 16, 192, 784), (192 * 16, 384, 196)]  # (inputs dropped, dim, tokens)
    r = get_entry("raftmlp_m_mixer_emb").reported
    assert r.params == 21_413_632 - sum(i * d for i, d, _ in extra_m)
    assert abs(r.gmacs - (4.2673 - sum(i * d * t for i, d, t in extra_m) / 1e9)) < 1e-3
    r2 = get_entry("raftmlp_12_r2_cross_emb").reported
    assert r2.params == 58_162_888 + 3 * 1024 * 768 and abs(r2.gmacs - (11.6191 + 196 * 3 * 1024 * 768 / 1e9)) < 1e-3


def test_mixer_embedding_flattens_p1_p2_c() -> None:
    from convatlas.models.classification.raftmlp import PatchMixerEmbedding

    emb = PatchMixerEmbedding(3, 5, 2).double()
    x = torch.randn(1, 3, 4, 6, dtype=torch.float64)
    out = emb(x)
    for i in range(2):
        for j in range(3):
            vec = x[0, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].permute(1, 2, 0).reshape(-1)  # (p1, p2, c)
            assert torch.allclose(out[0, i, j], emb.fc(vec))


def test_resolution_change_follows_official_shrink_expand() -> None:
    """Off the construction grid a layer = resize(all tokens) -> vertical -> horizontal (norms and residuals on the
    construction grid) -> resize back -> channel block (official RaftShrink / RaftExpansion)."""
    import torch.nn.functional as F

    from convatlas.models.classification.raftmlp import RaftLayer

    torch.manual_seed(0)
    layer = RaftLayer(8, 2, (4, 4), 2, 4, 0.0, 0.0).double().eval()
    x = torch.randn(2, 6, 5, 8, dtype=torch.float64)

    def resize(t, size):
        return F.interpolate(t.permute(0, 3, 1, 2), size=size, mode="bicubic", align_corners=False).permute(0, 2, 3, 1)

    ref = layer[2](resize(layer[1](layer[0](resize(x, (4, 4)))), (6, 5)))
    assert torch.allclose(layer(x), ref, atol=1e-12)
    y = torch.randn(2, 4, 4, 8, dtype=torch.float64)
    assert torch.allclose(layer(y), layer[2](layer[1](layer[0](y))), atol=1e-12)  # no resize on the grid


def test_inputs_round_up_per_level() -> None:
    """Official Level.forward: each level resizes its input up to a multiple of its own patch (36 -> 9x9 tokens
    after patch 4, then 9 -> 10 before patch 2)."""
    m = create_model("test_raftmlp").eval()
    with torch.no_grad():
        maps = m.forward_stages(torch.randn(1, 3, 36, 36))
    assert [tuple(t.shape[-2:]) for t in maps] == [(9, 9), (5, 5)]


def test_official_mixer_embedding_keys_load() -> None:
    from convatlas.models.classification.raftmlp import checkpoint_filter_fn

    m = RaftMLP(levels=[(1, 16, 4, 2, (4,)), (1, 32, 2, 2, (2,))], img_size=32, num_classes=10, embedding="mixer")
    sd = {("levels.%s.fn.1.%s" % (k.split(".")[1], k.split(".")[-1]) if ".0.fc." in k else k): v
          for k, v in m.state_dict().items() if ".0.fc." in k}
    rest = {k: v for k, v in m.state_dict().items() if ".0.fc." not in k}
    out = checkpoint_filter_fn(sd)
    assert set(out) == {k for k in m.state_dict() if ".0.fc." in k}
    m.load_state_dict({**rest, **out}, strict=True)


def test_imagenet_recipe() -> None:
    from convatlas.models.classification.raftmlp import imagenet_train_config

    cfg = imagenet_train_config(1024)
    assert cfg.lr == 1e-3 and cfg.epochs == 305 and cfg.warmup_epochs == 5 and cfg.label_smoothing == 0.1
