"""WaveMix (card: wavemix)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from backbone_checks import check_reported, check_tiny, train_digits  # noqa: E402

from convatlas import create_model, list_models  # noqa: E402
from convatlas.registry import get_entry  # noqa: E402
from convatlas.analysis.complexity import count_params  # noqa: E402
from convatlas.models.classification.wavemix import _VARIANTS, WaveBlock, WaveMix, checkpoint_filter_fn  # noqa: E402
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
    """WaveMix-Lite-like (stem 3->8->16, 4 level-1 blocks, C=16, 22.7 k params) on 16x16 digits, 8 epochs: val acc
    >= 0.95 (measured 0.987; 0.980 at 32x32 / 12 epochs; card: 0.977)."""
    torch.manual_seed(0)
    model = WaveMix(depth=4, final_dim=16, ff_channel=16, level=1, dropout=0.0, stem="lite", num_classes=10)
    acc = train_digits(model, size=16, epochs=8, lr=3e-3)
    assert acc >= 0.95, acc


def _official_count(depth: int, final_dim: int, level: int, in_chans: int, num_classes: int, mult: int = 2,
                    ff_channel: int | None = None, stem: str = "pachify", patch_size: int = 4,
                    upsample: str = "transposed", **_: object) -> int:
    """Closed-form parameter count from the official layer shapes (wavemix/__init__.py, classification.py)."""
    c, f = final_dim, ff_channel or final_dim
    n = c * (c // 4) + c // 4  # reduction 1x1
    for j in range(1, level + 1):
        cin, cout = (c if j == level else c + c // 2), (c if j == 1 else c // 2)
        n += cin * c * mult + c * mult
        n += (c * mult * cout + cout) if upsample != "transposed" else (c * mult * f + f + f * cout * 16 + cout)
        n += 2 * cout  # BN
    if stem == "pachify":
        s = in_chans * (c // 4) * 9 + c // 4 + (c // 4) * (c // 2) * 9 + c // 2 + (c // 2) * c * patch_size**2 + 3 * c
    else:
        s = in_chans * (c // 2) * 9 + c // 2 + (c // 2) * c * 9 + c
    return s + depth * n + c * num_classes + num_classes


@pytest.mark.parametrize("name", sorted(_VARIANTS) + ["wavemix_192_16_l1", "wavemix_192_16_l3", "wavemix_256_16_l3",
                                                       "wavemix_256_16_l4_strided"])
def test_counts_match_official_layer_shapes(name: str) -> None:
    """Independent closed form == built model (meta) == registered figure, for every classification config."""
    with torch.device("meta"):
        m = create_model(name)
    if name in _VARIANTS:
        cfg, size, classes = _VARIANTS[name][:3]
        args = dict(cfg, in_chans=size[0], num_classes=classes)
    else:
        blk = m.layers[0]
        args = dict(depth=len(m.layers), final_dim=m.num_features, level=m.level, in_chans=3, num_classes=1000,
                    ff_channel=blk.feedforward1[3].out_channels,
                    stem="pachify" if isinstance(m.stem[-1], torch.nn.BatchNorm2d) else "strided")
    assert _official_count(**args) == count_params(m) == get_entry(name).reported.params


def test_lite_readme_counts_need_upsampling_where_stated() -> None:
    """README: Lite-8/10 3,566 and Lite-32/7 37,058 only with upsampling; Lite-8/5 7,156, Lite-64/6 520,106 only
    with transposed convs (ff_channel = C)."""
    lite = dict(level=1, stem="lite", num_classes=10)
    assert _official_count(10, 8, in_chans=1, upsample="bilinear", **lite) == 3_566
    assert _official_count(10, 8, in_chans=1, **lite) != 3_566
    assert _official_count(7, 32, in_chans=3, upsample="bilinear", **lite) == 37_058
    assert _official_count(5, 8, in_chans=1, **lite) == 7_156
    assert _official_count(6, 64, in_chans=3, **lite) == 520_106


def test_upsample_block_and_lite_forward() -> None:
    torch.manual_seed(0)
    blk = WaveBlock(8, level=2, ff_channel=8, dropout=0.0, upsample="nearest").eval()
    assert isinstance(blk.feedforward1[4], torch.nn.Upsample) and blk.feedforward2[3].out_channels == 4
    assert blk(torch.randn(2, 8, 8, 8)).shape == (2, 8, 8, 8)
    with pytest.raises(ValueError, match="upsample"):
        WaveBlock(8, upsample="pixelshuffle")
    m = create_model("wavemixlite_8_10_mnist").eval()
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(ValueError, match="wavemixlite_8_10_mnist|WaveMix"):
        m(torch.randn(3, 3, 28, 28))


def test_official_level1_keys_load() -> None:
    """Official Level1Waveblock keys (``layers.i.feedforward.k``) load through ``checkpoint_filter_fn``."""
    m = create_model("wavemix_144_7_cifar10", final_dim=16, ff_channel=16, depth=2)
    sd = {}
    for k, v in m.state_dict().items():
        k = k.replace("feedforward1.", "feedforward.").replace("stem.", "conv.")
        sd["pool.2." + k[5:] if k.startswith("head.") else k] = v
    assert any(".feedforward.0." in k for k in sd)
    m.load_state_dict(checkpoint_filter_fn(sd), strict=True)


def test_ff_channel_is_never_silently_ignored() -> None:
    """Parameter-free upsampling has no transposed conv: an ff_channel other than C is an error, not a no-op."""
    from convatlas.models.classification.wavemix import WaveBlock, WaveMix

    with pytest.raises(ValueError, match="ff_channel=12 only applies to upsample='transposed'"):
        WaveBlock(8, ff_channel=12, upsample="bilinear")
    WaveBlock(8, ff_channel=8, upsample="bilinear")  # equal to C: allowed (the registered configs pass it)
    assert WaveBlock(8).feedforward1[3].out_channels == 16  # official default for the transposed form
    assert WaveMix(final_dim=8, depth=1, num_classes=3).layers[0].feedforward1[3].out_channels == 8  # default C
